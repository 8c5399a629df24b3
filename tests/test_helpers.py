"""Helpers against the numeric examples of Sentinel Hub's utility-functions documentation."""

import numpy as np
import pytest

from server.evalscript.contract import OutputSpec, SampleType
from server.evalscript.helpers import (
    JAVA_DOUBLE_MAX_VAL,
    colorBlend,
    combine,
    index,
    inverse,
    valueInterpolate,
    valueMap,
)
from server.evalscript.postprocess import to_sample_type


def test_index():
    assert index(0.5, 0.3) == pytest.approx(0.25)
    assert index(0.0, 0.0) == 0.0
    np.testing.assert_allclose(index(np.array([0.2, 0.0]), np.array([0.2, 0.0])), [0.0, 0.0])


def test_index_gives_the_bits_of_its_definition():
    """(x - y) / (x + y) in double, +0.0 where the sum is 0 (also -0.0 and opposite values), NaN
    and infinities carried as the division gives them; scalars give a 0-d array."""
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.uniform(-1, 1, 5000), [0.0, -0.0, 0.3, np.nan, np.inf, 2.0, np.inf, -0.0]])
    y = np.concatenate([rng.uniform(-1, 1, 5000), [0.0, 0.0, -0.3, 1.0, 1.0, np.inf, np.inf, -0.0]])
    with np.errstate(divide="ignore", invalid="ignore"):
        quotient = (x - y) / (x + y)
    expected = np.where(x + y == 0, 0.0, quotient)
    got = index(x.reshape(2, -1), y.reshape(2, -1))
    assert got.shape == (2, len(x) // 2) and got.dtype == np.float64
    assert got.ravel().tobytes() == expected.tobytes()
    assert not np.signbit(got.ravel()[[5000, 5001, 5002, 5007]]).any()
    scalar = index(0.5, 0.25)
    assert scalar.shape == () and scalar == (0.5 - 0.25) / 0.75
    assert index(np.array([0.5, 0.0]), 0.5).tolist() == [0.0, -1.0]


def test_inverse():
    assert inverse(4.0) == 0.25
    assert inverse(0.0) == JAVA_DOUBLE_MAX_VAL


@pytest.mark.parametrize(("value", "expected"), [(-1, 10), (0, 10), (0.5, 20), (1, 20), (1.5, 30), (9, 30)])
def test_value_map_intervals_are_left_open(value, expected):
    assert valueMap(value, [0, 1, 2], [10, 20, 30]) == expected


@pytest.mark.parametrize(("value", "expected"), [(-5, 0), (0.5, 50), (1.5, 150), (3, 200)])
def test_value_interpolate_clamps(value, expected):
    assert valueInterpolate(value, [0, 1, 2], [0, 100, 200]) == pytest.approx(expected)


def test_color_blend_interpolates_per_channel():
    out = colorBlend(np.array([0.25]), [0, 1], [[0, 0, 0], [1, 0.5, 0]])
    np.testing.assert_allclose(out[:, 0], [0.25, 0.125, 0.0])


def test_combine():
    np.testing.assert_allclose(combine([1, 0, 0], [0, 0, 1], 0.25), [0.25, 0, 0.75])


def test_sample_type_auto_rounds_and_clamps():
    values = np.array([[[0.16, -0.5, 1.7, np.nan]]], dtype=np.float32)
    out = to_sample_type(values, OutputSpec(1, SampleType.AUTO), np.ones((1, 4), bool))
    assert out.data.tolist() == [[[41, 0, 255, 0]]] and out.dtype == np.uint8


def test_sample_type_uint16_and_float_nodata():
    values = np.array([[[40.6, 70000.0]]], dtype=np.float32)
    assert to_sample_type(values, OutputSpec(1, SampleType.UINT16), np.ones((1, 2), bool)).data.tolist() == [
        [[41, 65535]]
    ]
    out = to_sample_type(values, OutputSpec(1, SampleType.FLOAT32), np.array([[True, False]]))
    assert out.data[0, 0, 0] == pytest.approx(40.6) and np.isnan(out.data[0, 0, 1])


def test_fourth_band_is_alpha():
    values = np.zeros((4, 1, 2), dtype=np.float32)
    values[3] = [1, 0]
    out = to_sample_type(values, OutputSpec(4, SampleType.AUTO), np.ones((1, 2), bool))
    assert out.shape == (3, 1, 2) and out.mask[:, 0, :].tolist() == [[False, True]] * 3
