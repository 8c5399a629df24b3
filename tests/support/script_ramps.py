"""The colour ramp or class palette of a shipped evalscript, read by the tests on their own.

The server reads ``STOPS``/``COLORS``/``PALETTE`` with ``server.evalscript.colour_ramp``; this
reads them with different means (Python literal syntax for the stops, every ``0xRRGGBB`` on the
``COLORS`` line or between ``const PALETTE = [`` and its closing line) so a test comparing the
two catches a server that reads the wrong values.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

from server.resources import default_config_path


def layer_script(layer: str) -> Path:
    """The JavaScript file that holds a shipped layer's ramp (the ``.py`` twin reads it too)."""
    config = yaml.safe_load(default_config_path().read_text())
    scripts = (default_config_path().parent / config["evalscripts_dir"]).resolve()
    return (scripts / config["layers"][layer]["evalscript"]).with_suffix(".js")


def script_ramp(path: Path) -> tuple[list[float], list[tuple[int, int, int]]]:
    """(stops, [(r, g, b) 0..255]) of ``const STOPS = [...]`` and ``const COLORS = [...]``."""
    lines = path.read_text().splitlines()
    stops_line = next(line for line in lines if line.startswith("const STOPS"))
    colors_line = next(line for line in lines if line.startswith("const COLORS"))
    stops = [float(v) for v in ast.literal_eval(stops_line.split("=", 1)[1].strip().rstrip(";"))]
    hexes = re.findall(r"0x([0-9a-fA-F]{6})\b", colors_line)
    return stops, [(int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)) for h in hexes]


def script_palette(path: Path) -> list[tuple[int, int, int]]:
    """[(r, g, b) 0..255] by class of ``const PALETTE = [ ... ]`` written one colour per line."""
    text = path.read_text()
    body = text[text.index("const PALETTE = [") : text.index("].map(")]
    return [(int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)) for h in re.findall(r"0x([0-9a-fA-F]{6})\b", body)]
