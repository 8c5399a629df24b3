"""A colour ramp read from a JavaScript evalscript, so its numpy twin and its legend keep no copy.

Why the JavaScript file holds them: it is the script a user can take to Sentinel Hub as it is,
so it must be complete on its own; the ``.py`` twin reads ``const STOPS = [...]`` and
``const COLORS = [0xRRGGBB, ...]`` from it at load time (and its digest covers the twin:
``python_script.PythonEvalscript``), and a gradient legend written without items takes the
same stops (``script_ramp``, used by ``config.loader``).
"""

from __future__ import annotations

import re
from pathlib import Path

from server.errors import ConfigError

_ARRAY = r"const\s+{name}\s*=\s*\[(?P<body>[^\]]*)\]"


def _array(source: str, name: str, path: Path) -> list[str]:
    match = re.search(_ARRAY.format(name=name), source)
    if match is None:
        raise ConfigError(f"{path}: no 'const {name} = [...]' to read the colour ramp from")
    return [item.strip() for item in match["body"].split(",") if item.strip()]


def js_ramp(path: Path) -> tuple[list[float], list[int]]:
    """``STOPS`` (numbers) and ``COLORS`` (``0xRRGGBB`` integers) of a JavaScript file."""
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the colour ramp ({exc.strerror})") from None
    try:
        stops = [float(item) for item in _array(source, "STOPS", path)]
        colours = [int(item, 16) for item in _array(source, "COLORS", path)]
    except ValueError:
        raise ConfigError(f"{path}: STOPS must be numbers and COLORS 0xRRGGBB values") from None
    if len(stops) != len(colours) or len(stops) < 2:
        raise ConfigError(f"{path}: STOPS and COLORS must have the same length (2 or more)")
    return stops, colours


def js_colour_ramp(path: Path) -> tuple[list[float], list[list[float]]]:
    """``STOPS`` and ``COLORS`` of a JavaScript file, colours as [r, g, b] in 0..1 (``colorBlend``'s)."""
    stops, colours = js_ramp(path)
    return stops, [[(c >> 16 & 255) / 255, (c >> 8 & 255) / 255, (c & 255) / 255] for c in colours]


def script_ramp(path: Path) -> tuple[list[float], list[int]]:
    """The ramp of a layer's evalscript file: its own for ``.js``, its JavaScript twin's for ``.py``.

    A ``.py`` script keeps its ramp in the ``.js`` file of the same name (``js_colour_ramp``), so
    that file is where every reader of the ramp looks.
    """
    script = path if path.suffix == ".js" else path.with_suffix(".js")
    if not script.is_file():
        raise ConfigError(f"{path}: no colour ramp (STOPS and COLORS) in a JavaScript file of the same name")
    return js_ramp(script)
