"""Sentinel Hub's runtime helpers and the Math functions, reimplemented over arrays.

Each one repeats the operations of its JavaScript version in ``js/runtime.js`` (or V8's, for
Math) in the same order, so the results are the same doubles: ``index`` is (x - y) / (x + y) with 0
for a zero sum, ``colorBlend`` interpolates ``((b - a) / run) * dx + a``. Math functions whose
V8 (fdlibm) and numpy results differ in the last bit (exp, log, tanh, pow with other exponents
than 0, 1 and 2...: measured on 200,000 values each) are deliberately absent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from server.evalscript.js_values import Unsupported, Value, as_number, constant_table

JAVA_DOUBLE_MAX_VAL = 1.7976931348623157e308
_MATH_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "abs": np.abs,
    "sqrt": np.sqrt,
    "floor": np.floor,
    "ceil": np.ceil,
    "trunc": np.trunc,
    "sign": lambda x: np.where(x == 0, x, np.sign(x)),  # Math.sign(-0) is -0
}
MATH_CONSTANTS = {"PI": math.pi, "E": math.e}


def _arg(args: list[Value], i: int) -> Any:
    if i >= len(args):
        raise Unsupported("a missing argument")
    return as_number(args[i])


def _index(args: list[Value]) -> Value:
    x, y = _arg(args, 0), _arg(args, 1)
    total = np.add(x, y)
    return Value("num", np.where(total == 0, np.float64(0), np.divide(np.subtract(x, y), total)))


def _inverse(args: list[Value]) -> Value:
    x = _arg(args, 0)
    if args[0].kind == "bool":  # x === 0 is never true for a boolean: 1 / false is Infinity
        return Value("num", np.divide(np.float64(1), x))
    return Value("num", np.where(x == 0, np.float64(JAVA_DOUBLE_MAX_VAL), np.divide(np.float64(1), x)))


def _stops(args: list[Value]) -> tuple[Any, np.ndarray, np.ndarray] | None:
    """(value, intervals, values table) of valueMap/valueInterpolate, or None for no intervals."""
    if len(args) < 3:
        raise Unsupported("a colour map without intervals or values")
    if args[0].kind != "num":
        raise Unsupported("a colour map of a non-number")  # value === intervals[k] is never true
    value = _arg(args, 0)
    intervals, values = constant_table(args[1]), constant_table(args[2])
    if args[1].kind == "vec" and not args[1].data:
        return None
    if intervals is None or intervals.ndim != 1 or values is None or len(values) < len(intervals):
        raise Unsupported("a colour map with non-constant intervals or values")
    return value, intervals, values


def _as_result(table: np.ndarray, picked: np.ndarray) -> Value:
    if table.ndim == 1:
        return Value("num", picked)
    return Value("vec", tuple(Value("num", picked[..., c]) for c in range(table.shape[1])))


def _value_map(args: list[Value]) -> Value:
    stops = _stops(args)
    if stops is None:
        return args[0]
    value, intervals, values = stops
    # the first k with value <= intervals[k], else the last value (also for NaN)
    position = np.full(np.shape(value), len(values) - 1, dtype=np.intp)
    for k in range(len(intervals) - 1, -1, -1):
        position = np.where(value <= intervals[k], k, position)
    return _as_result(values, np.take(values, position, axis=0))


def _value_interpolate(args: list[Value]) -> Value:
    stops = _stops(args)
    if stops is None:
        return args[0]
    value, intervals, values = stops
    if len(intervals) > 1 and not np.all(np.diff(intervals) > 0):
        raise Unsupported("colorBlend intervals that do not increase")
    last = len(intervals) - 1
    table = values[: last + 1].reshape(last + 1, -1)  # one column per colour channel
    scalar = np.ndim(value) == 0  # a constant value: computed as one pixel
    value = np.asarray(value, dtype=np.float64).reshape(-1) if scalar else np.asarray(value, dtype=np.float64)
    # Segment j = how many stops lie below the value: 0 is below the first stop, last + 1 above
    # the last one, and j in 1..last interpolates from stop j-1, as runtime.js's loop finds it.
    # Each segment is slope * (value - origin) + base: slope 0 and base = the end value outside.
    count = np.zeros(value.shape, dtype=np.uint8)
    for stop in intervals:
        np.add(count, value > stop, out=count, casting="unsafe")
    segment = count.astype(np.intp)
    origin = np.concatenate([intervals[:1], intervals[:-1], intervals[-1:]])
    dx = value - origin.take(segment)
    # value === intervals[j] returns values[j] itself (no interpolation); NaN never matches
    on_stop = np.concatenate([[np.nan], intervals[1:], [np.nan]]).take(segment) == value
    hit = bool(on_stop.any())
    odd = ~np.isfinite(value)  # NaN and +-Infinity: 0 * dx would be NaN, runtime.js gives an end value
    has_odd = bool(odd.any())
    channels = []
    for c in range(table.shape[1]):
        column = table[:, c]
        with np.errstate(all="ignore"):
            slope = np.diff(column) / np.diff(intervals)  # (b - a) / run, per segment
        slope = np.concatenate([[0.0], slope, [0.0]])
        base = np.concatenate([column[:1], column[:-1], column[-1:]])
        result = slope.take(segment) * dx + base.take(segment)  # __lerp's operation order
        if hit:
            result[on_stop] = np.concatenate([column[:1], column[1:], column[-1:]]).take(segment[on_stop])
        if has_odd:  # below the first stop: the first value; above it or NaN: the last
            result[odd] = np.where(value[odd] <= intervals[0], column[0], column[-1])
        channels.append(result[0] if scalar else result)
    if values.ndim == 1:
        return Value("num", channels[0])
    return Value("vec", tuple(Value("num", channel) for channel in channels))


def _math_minmax(fn: Callable[[Any, Any], Any], empty: float) -> Callable[[list[Value]], Value]:
    """Math.min/max: NaN wins, and between zeros -0 is the smaller (numpy's pick is arbitrary)."""

    def apply(args: list[Value]) -> Value:
        result: Any = np.float64(empty)
        for i in range(len(args)):
            value = _arg(args, i)
            picked = fn(result, value)
            zeros = (result == 0) & (value == 0)
            if np.any(zeros):
                signs = fn(np.copysign(np.float64(1), result), np.copysign(np.float64(1), value))
                picked = np.where(zeros, np.copysign(np.float64(0), signs), picked)
            result = picked
        return Value("num", result)

    return apply


def _math_unary(fn: Callable[[Any], Any]) -> Callable[[list[Value]], Value]:
    def apply(args: list[Value]) -> Value:
        return Value("num", fn(_arg(args, 0)) if args else np.float64("nan"))

    return apply


def _math_round(args: list[Value]) -> Value:
    """JavaScript rounds halves up (toward +Infinity); the fraction x - floor(x) is exact.

    -0.5 <= x < 0 rounds to -0, as in JavaScript (it matters to a later division).
    """
    x = _arg(args, 0) if args else np.float64("nan")
    down = np.floor(x)
    rounded = np.where(np.subtract(x, down) >= 0.5, down + 1, down)
    return Value("num", np.where((x < 0) & (x >= -0.5), np.float64(-0.0), rounded))


def power(base: Value, exponent: Value) -> Value:
    """``x ** y`` and ``Math.pow(x, y)`` for a constant y of 0, 1 or 2, which V8 computes exactly
    (1, x and x * x: fdlibm's fast paths). Other exponents go through a pow() whose last bit
    differs from numpy's, so they stay in V8.
    """
    if exponent.kind != "num" or np.ndim(exponent.data) != 0 or float(exponent.data) not in (0.0, 1.0, 2.0):
        raise Unsupported("** or Math.pow with an exponent other than 0, 1 or 2")
    x = as_number(base)
    y = float(exponent.data)
    if y == 0:
        return Value("num", np.ones_like(x) if isinstance(x, np.ndarray) else np.float64(1))
    return Value("num", x * x if y == 2 else x)


def _math_pow(args: list[Value]) -> Value:
    if len(args) < 2:
        raise Unsupported("Math.pow with one argument")
    return power(args[0], args[1])


BUILTINS: dict[str, Callable[[list[Value]], Value]] = {
    "index": _index,
    "inverse": _inverse,
    "valueMap": _value_map,
    "valueInterpolate": _value_interpolate,
    "colorBlend": _value_interpolate,
    "Math.min": _math_minmax(np.minimum, math.inf),
    "Math.max": _math_minmax(np.maximum, -math.inf),
    "Math.round": _math_round,
    "Math.pow": _math_pow,
    **{f"Math.{name}": _math_unary(fn) for name, fn in _MATH_UNARY.items()},
}


# ---- visualizer objects (their settings come from V8's report on the script's globals) --------


def visualizer(spec: dict[str, Any]) -> dict[str, Any]:
    """A reported visualizer as arrays; ``Unsupported`` for settings this module cannot follow."""
    kind = spec.get("type")
    if kind == "highlight":
        settings = {key: spec.get(key) for key in ("minValue", "maxValue", "gain", "offset", "gamma")}
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in settings.values()):
            raise Unsupported("a HighlightCompressVisualizer setting")
        if settings["gamma"] != 1:
            raise Unsupported("HighlightCompressVisualizer gamma (Math.pow)")
        return {"type": kind, **{key: np.float64(v) for key, v in settings.items()}}
    pairs = spec.get("pairs")
    if kind not in ("ramp-floor", "ramp-round", "colormap") or not isinstance(pairs, list) or not pairs:
        raise Unsupported("a visualizer")
    try:
        positions = np.array([p[0] for p in pairs], dtype=np.float64)
        colors = np.array([p[1] for p in pairs], dtype=np.float64)
    except (TypeError, ValueError, IndexError):
        raise Unsupported("visualizer colours") from None
    if colors.shape != (len(pairs), 3) or not np.all(np.isfinite(positions)) or np.any(np.diff(positions) < 0):
        raise Unsupported("visualizer positions or colours")
    return {"type": kind, "positions": positions, "colors": colors}


def visualizer_call(spec: dict[str, Any], method: str, args: list[Value]) -> Value:
    """``process(value)`` of any visualizer, ``processList(values)`` of HighlightCompress."""
    if method == "processList" and spec["type"] == "highlight":
        if not args or args[0].kind != "vec":
            raise Unsupported("processList() of a non-array")
        return Value("vec", tuple(_highlight(spec, item) for item in args[0].data))
    if method != "process" or not args:
        raise Unsupported(f"visualizer.{method}()")
    if spec["type"] == "highlight":
        return _highlight(spec, args[0])
    value = np.asarray(as_number(args[0]), dtype=np.float64)
    rgb = _color_map(spec, value) if spec["type"] == "colormap" else _color_ramp(spec, value)
    return Value("vec", tuple(Value("num", channel / 255) for channel in rgb))


def _highlight(spec: dict[str, Any], item: Value) -> Value:
    """HighlightCompressVisualizer.process: linear to 0.92, then compressed up to 1."""
    x = (as_number(item) - spec["minValue"]) / (spec["maxValue"] - spec["minValue"])
    compressed = np.minimum(np.float64(1), 0.92 + ((x - 0.92) * 0.08) / 1.08)
    y = np.where(~(x > 0), np.float64(0), np.where(x <= 0.92, x, compressed))
    return Value("num", spec["gain"] * y + spec["offset"])


def _count_below(value: np.ndarray, positions: np.ndarray, strict: bool) -> np.ndarray:
    """How many (sorted) positions lie below the value (``<`` when strict, else ``<=``)."""
    count = np.zeros(value.shape, dtype=np.intp)
    for position in positions:
        count += value > position if strict else value >= position
    return count


def _color_ramp(spec: dict[str, Any], value: np.ndarray) -> list[np.ndarray]:
    """ColorRamp/ColorGradient process() in 0..255: the end colours outside, else interpolated."""
    positions, colors = spec["positions"], spec["colors"]
    last = len(positions) - 1
    rounding = np.floor if spec["type"] == "ramp-floor" else (lambda x: _math_round([Value("num", x)]).data)
    k = np.clip(_count_below(value, positions, strict=True), 1, max(last, 1))
    inside = (value > positions[0]) & ~(value >= positions[last])
    start = np.where(value <= positions[0], 0, last)  # below the first stop, else above or NaN
    if last >= 1:
        t = (value - positions.take(k - 1)) / (positions.take(k) - positions.take(k - 1))
    channels = []
    for c in range(3):
        ends = colors[:, c].take(start)
        if last >= 1:
            a, b = colors[:, c].take(k - 1), colors[:, c].take(k)
            ends = np.where(inside, rounding(a + (b - a) * t), ends)
        channels.append(ends)
    return channels


def _color_map(spec: dict[str, Any], value: np.ndarray) -> list[np.ndarray]:
    """ColorMapVisualizer.process: the colour of the last position <= value (else the first)."""
    index = np.maximum(_count_below(value, spec["positions"], strict=False) - 1, 0)
    return [spec["colors"][:, c].take(index) for c in range(3)]
