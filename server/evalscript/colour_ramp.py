"""Colour ramps and palettes read from a JavaScript evalscript, so its numpy twin and its legend
keep no copy.

Why the JavaScript file holds them: it is the script a user can take to Sentinel Hub as it is,
so it must be complete on its own; the ``.py`` twin reads ``const STOPS = [...]`` and
``const COLORS = [0xRRGGBB, ...]`` (a ramp) or ``const PALETTE = [0xRRGGBB, ...]`` (one colour
per class) from it at load time (and its digest covers the twin:
``python_script.PythonEvalscript``), and a legend written without colours takes the same ones
(``script_ramp``, ``script_palette``; ``catalog.layers.with_script_legend``).
"""

from __future__ import annotations

import re
from pathlib import Path

from server.errors import ConfigError

_ARRAY = r"const\s+{name}\s*=\s*\[(?P<body>[^\]]*)\]"
_LINE_COMMENT = re.compile(r"//[^\n]*")  # a palette names its classes in comments


def _source(path: Path) -> str:
    try:
        return _LINE_COMMENT.sub("", path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the colours ({exc.strerror})") from None


def _array(source: str, name: str, path: Path) -> list[str]:
    match = re.search(_ARRAY.format(name=name), source)
    if match is None:
        raise ConfigError(f"{path}: no 'const {name} = [...]' to read the colours from")
    return [item.strip() for item in match["body"].split(",") if item.strip()]


def _colours(source: str, name: str, path: Path) -> list[int]:
    try:
        return [int(item, 16) for item in _array(source, name, path)]
    except ValueError:
        raise ConfigError(f"{path}: {name} must hold 0xRRGGBB values") from None


def _unit_rgb(colours: list[int]) -> list[list[float]]:
    """0xRRGGBB -> [r, g, b] in 0..1, as ``normalizeRGB(int2rgb(c))`` gives them in JavaScript."""
    return [[(c >> 16 & 255) / 255, (c >> 8 & 255) / 255, (c & 255) / 255] for c in colours]


def js_ramp(path: Path) -> tuple[list[float], list[int]]:
    """``STOPS`` (numbers) and ``COLORS`` (``0xRRGGBB`` integers) of a JavaScript file."""
    source = _source(path)
    try:
        stops = [float(item) for item in _array(source, "STOPS", path)]
    except ValueError:
        raise ConfigError(f"{path}: STOPS must be numbers") from None
    colours = _colours(source, "COLORS", path)
    if len(stops) != len(colours) or len(stops) < 2:
        raise ConfigError(f"{path}: STOPS and COLORS must have the same length (2 or more)")
    return stops, colours


def js_colour_ramp(path: Path) -> tuple[list[float], list[list[float]]]:
    """``STOPS`` and ``COLORS`` of a JavaScript file, colours as [r, g, b] in 0..1 (``colorBlend``'s)."""
    stops, colours = js_ramp(path)
    return stops, _unit_rgb(colours)


def js_palette(path: Path) -> list[list[float]]:
    """``PALETTE`` of a JavaScript file (the colour of class 0, 1, ...) as [r, g, b] in 0..1."""
    return _unit_rgb(_colours(_source(path), "PALETTE", path))


def _script_js(path: Path) -> Path:
    """A layer's script file, or for a ``.py`` its JavaScript twin, which holds the colours."""
    script = path if path.suffix == ".js" else path.with_suffix(".js")
    if not script.is_file():
        raise ConfigError(f"{path}: no JavaScript file of the same name to read the colours from")
    return script


def script_ramp(path: Path) -> tuple[list[float], list[int]]:
    """The ramp of a layer's evalscript file: its own for ``.js``, its JavaScript twin's for ``.py``."""
    return js_ramp(_script_js(path))


def script_palette(path: Path) -> list[int]:
    """The class palette (``0xRRGGBB`` by class) of a layer's evalscript file or its JavaScript twin."""
    script = _script_js(path)
    return _colours(_source(script), "PALETTE", script)
