"""Scripts sent with a request (``EVALSCRIPT``, base64 as Sentinel Hub clients send it).

Why a module of its own: a request script is untrusted input. It is decoded, size-checked and
compiled only as a whitelisted expression (``server/evalscript/expression.py``), never as
Python. Two spellings are accepted:

- a plain expression, ``(B08-B04)/(B08+B04)`` or ``B04*2.5;B03*2.5;B02*2.5`` (float32 output);
- a JSON object ``{"expression": ..., "rescale": [min, max], "colormap": "rdylgn", "units": "DN"}``
  for a visual output.

- a Sentinel Hub JavaScript evalscript (V3, or V1), run in V8 worker processes with time and
  heap limits (``server/evalscript/js_script.py``).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from functools import lru_cache

from server.errors import EvalscriptError, InvalidParameter
from server.evalscript.contract import Evalscript
from server.evalscript.expression import ExpressionEvalscript
from server.evalscript.js_script import JavaScriptEvalscript, looks_like_javascript

# The one EVALSCRIPT size limit of every endpoint (XYZ, WMS, WMTS, WCS), in decoded UTF-8 bytes;
# Sentinel Hub's custom scripts are rarely above 10 KB.
MAX_SCRIPT_BYTES = 32 * 1024
# The base64 length of MAX_SCRIPT_BYTES bytes: any valid base64 text longer than this decodes to
# more than MAX_SCRIPT_BYTES, so the cheap length check gives the same answer as decoding.
MAX_ENCODED_LENGTH = 4 * math.ceil(MAX_SCRIPT_BYTES / 3)


def too_long(parameter: str) -> InvalidParameter:
    """The refusal of a script above the limit, naming the limit (one message for every endpoint)."""
    return InvalidParameter(f"{parameter} is longer than {MAX_SCRIPT_BYTES} bytes (decoded)", parameter=parameter)


def check_encoded_length(encoded: str, parameter: str = "EVALSCRIPT") -> None:
    """Refuse base64 text that cannot decode to at most ``MAX_SCRIPT_BYTES`` (before any decoding)."""
    if len(encoded.strip()) > MAX_ENCODED_LENGTH:
        raise too_long(parameter)


def decode_evalscript(encoded: str, parameter: str = "EVALSCRIPT") -> str:
    """Base64 (standard or URL-safe, padding optional) -> UTF-8 text, or a 400 naming the parameter."""
    text = encoded.strip()
    if not text:
        raise InvalidParameter(f"{parameter} is empty", parameter=parameter)
    check_encoded_length(text, parameter)
    text = text.replace("-", "+").replace("_", "/").replace(" ", "+")
    text += "=" * (-len(text) % 4)
    try:
        decoded = base64.b64decode(text, validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidParameter(f"{parameter} is not base64-encoded UTF-8 text", parameter=parameter) from None
    if "\x00" in decoded:
        raise InvalidParameter(f"{parameter} contains NUL bytes", parameter=parameter)
    if len(decoded.encode("utf-8")) > MAX_SCRIPT_BYTES:
        raise too_long(parameter)
    return decoded


@lru_cache(maxsize=256)
def compile_request_script(
    text: str,
    band_names: frozenset[str],
    default_units: str,
    parameter: str = "EVALSCRIPT",
    require_default: bool = True,
) -> Evalscript:
    """Compile decoded request text for a collection's bands (cached: clients repeat scripts per tile).

    ``require_default=False`` accepts a JavaScript script without a ``default`` output (the
    Process and Statistical APIs ask for outputs by id)."""
    stripped = text.strip()
    if not stripped.startswith("{") and looks_like_javascript(stripped):
        try:
            return JavaScriptEvalscript(
                text, parameter, band_names, parameter=parameter, require_default=require_default
            )
        except EvalscriptError as exc:
            raise EvalscriptError(exc.public_message, parameter=parameter) from None
    expression, rescale, colormap, units = stripped, None, None, default_units
    if stripped.startswith("{"):
        try:
            spec = json.loads(stripped)
        except json.JSONDecodeError:
            raise EvalscriptError(f"{parameter} is not valid JSON", parameter=parameter) from None
        unknown = set(spec) - {"expression", "rescale", "colormap", "units"} if isinstance(spec, dict) else {"?"}
        if unknown or not isinstance(spec.get("expression"), str):
            raise EvalscriptError(
                f"{parameter} JSON takes 'expression' (text), 'rescale', 'colormap' and 'units' only",
                parameter=parameter,
            )
        expression = spec["expression"]
        rescale = _parse_rescale(spec.get("rescale"), parameter)
        colormap = spec.get("colormap")
        units = spec.get("units", default_units)
        if colormap is not None and not isinstance(colormap, str):
            raise EvalscriptError(f"{parameter}: 'colormap' must be a name", parameter=parameter)
        if units not in ("REFLECTANCE", "DN"):
            raise EvalscriptError(f"{parameter}: 'units' must be REFLECTANCE or DN", parameter=parameter)
    try:
        return ExpressionEvalscript(
            expression, set(band_names), units=units, rescale=rescale, colormap=colormap, name=parameter
        )
    except EvalscriptError as exc:
        raise EvalscriptError(f"{parameter}: {exc.public_message}", parameter=parameter) from None


def _parse_rescale(value: object, parameter: str) -> tuple[float, float] | None:
    if value is None:
        return None
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)
        and value[0] != value[1]
    ):
        return float(value[0]), float(value[1])
    raise EvalscriptError(f"{parameter}: 'rescale' must be [min, max]", parameter=parameter)
