from datetime import UTC, datetime

import pytest

from server.errors import InvalidTime
from server.models import parse_time


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("2022", datetime(2022, 1, 1, tzinfo=UTC), datetime(2022, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        ("2022-02", datetime(2022, 2, 1, tzinfo=UTC), datetime(2022, 2, 28, 23, 59, 59, 999999, tzinfo=UTC)),
        ("2022-10-05", datetime(2022, 10, 5, tzinfo=UTC), datetime(2022, 10, 5, 23, 59, 59, 999999, tzinfo=UTC)),
        (
            "2022-10-05T11:54:11Z",
            datetime(2022, 10, 5, 11, 54, 11, tzinfo=UTC),
            datetime(2022, 10, 5, 11, 54, 11, 999999, tzinfo=UTC),
        ),
    ],
)
def test_instants_cover_their_precision(text, start, end):
    parsed = parse_time(text)
    assert (parsed.start, parsed.end) == (start, end)


def test_intervals_and_open_ends():
    parsed = parse_time("2022-01/2022-03")
    assert parsed.start == datetime(2022, 1, 1, tzinfo=UTC)
    assert parsed.end == datetime(2022, 3, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert parse_time("../2020-01-01").start is None
    assert parse_time("2020-01-01/").end is None
    assert parse_time("2020-01-01/2020-02-01/P1D").end.month == 2  # period ignored
    assert parse_time(None) is None and parse_time("") is None and parse_time("latest") is None


@pytest.mark.parametrize(
    "text",
    [
        "yesterday",
        "2022-13",
        "2022-02-30",
        "2022/2021",
        "1/2/3/4",
        "2022-01-01\x00",
        "20221005",
        "2022-10-05T25:00:00Z",
    ],
)
def test_malformed_times_raise(text):
    with pytest.raises(InvalidTime) as info:
        parse_time(text, "time")
    assert info.value.parameter == "time"
