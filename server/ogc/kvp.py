"""Case-insensitive OGC key-value parameters.

Why its own type: OGC parameter names are case-insensitive while values are not (Leaflet sends
``layers=``, OpenLayers ``LAYERS=``), a repeated parameter with two different values is
ambiguous and refused, and vendor parameters a client puts in the base URL (``maxcc``, ``time``)
arrive the same way as the rest.
"""

from __future__ import annotations

from collections.abc import Iterable

from server.errors import InvalidParameter, MissingParameter
from server.evalscript.request_script import check_encoded_length

MAX_VALUE_LENGTH = 8192  # every value but EVALSCRIPT, whose bound is the script size limit
# Parameters that may legitimately repeat (WCS 2.0 gives one SUBSET per axis).
REPEATABLE = frozenset({"SUBSET"})


class KVP:
    """Parameters by upper-cased name."""

    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        self._values: dict[str, str] = {}
        self._repeated: dict[str, list[str]] = {}
        for key, value in items:
            name = key.upper()
            if name == "EVALSCRIPT":
                check_encoded_length(value, name)
            elif "\x00" in value or len(value) > MAX_VALUE_LENGTH:
                raise InvalidParameter(f"{name} is not a valid value", parameter=name)
            if name in REPEATABLE:
                self._repeated.setdefault(name, []).append(value)
                continue
            if name in self._values and self._values[name] != value:
                raise InvalidParameter(f"{name} is given twice with different values", parameter=name)
            self._values[name] = value

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of ``name`` (any case), or ``default``."""
        return self._values.get(name.upper(), default)

    def get_all(self, name: str) -> list[str]:
        """Every value of a repeatable parameter (``SUBSET``), in request order."""
        return list(self._repeated.get(name.upper(), []))

    def require(self, name: str) -> str:
        """The value of ``name``; ``MissingParameterValue`` when absent or empty."""
        value = self._values.get(name.upper())
        if value is None or value.strip() == "":
            raise MissingParameter(f"parameter {name.upper()} is required", parameter=name.upper())
        return value

    def __contains__(self, name: str) -> bool:
        return name.upper() in self._values or name.upper() in self._repeated
