"""Vectorised versions of the Sentinel Hub evalscript helpers users know.

Semantics follow Sentinel Hub's documentation of the evalscript V3 utility functions:
``index`` returns 0 where the sum is 0,
``valueMap`` intervals are (from, to], ``valueInterpolate``/``colorBlend`` clamp to the end
values. Each helper takes numpy arrays (or scalars) and returns arrays of the same shape, so a
script runs once per tile instead of once per pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

JAVA_DOUBLE_MAX_VAL = 1.7976931348623157e308

ArrayLike = np.ndarray | float | int


def index(x: ArrayLike, y: ArrayLike) -> np.ndarray:
    """Normalised difference (x - y) / (x + y); 0 where x + y == 0.

    Divided in place and the zero sums set afterwards (when there are any): four passes over a
    tile instead of the seven of a masked division, the same values.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    shape = np.broadcast_shapes(x.shape, y.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        total = np.add(x, y, out=np.empty(shape))
        out = np.subtract(x, y, out=np.empty(shape))
        np.divide(out, total, out=out)
    zero = total == 0
    if zero.any():
        out[zero] = 0.0
    return out


def inverse(x: ArrayLike) -> np.ndarray:
    """1 / x, with ``JAVA_DOUBLE_MAX_VAL`` where x == 0."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(x == 0, JAVA_DOUBLE_MAX_VAL, 1.0 / np.where(x == 0, 1.0, x))


def value_map(value: ArrayLike, intervals: Sequence[float], values: Sequence[object]) -> np.ndarray:
    """Discrete classes: v <= i0 -> values[0]; i(k-1) < v <= i(k) -> values[k]; above -> last."""
    v = np.asarray(value, dtype=np.float64)
    if not intervals:
        return v
    idx = np.searchsorted(np.asarray(intervals, dtype=np.float64), v, side="left")
    idx = np.clip(idx, 0, len(values) - 1)
    table = np.asarray(values, dtype=np.float64)
    out = table[idx]
    return np.moveaxis(out, -1, 0) if table.ndim == 2 else out


def value_interpolate(value: ArrayLike, intervals: Sequence[float], values: Sequence[object]) -> np.ndarray:
    """Piecewise-linear interpolation, clamped at the ends; colour values interpolate per channel.

    Returns an array of shape ``value.shape`` for scalar values, or ``(channels, *value.shape)``
    when ``values`` are colours. NaN input takes the last value.
    """
    v = np.asarray(value, dtype=np.float64)
    xs = np.asarray(intervals, dtype=np.float64)
    table = np.asarray(values, dtype=np.float64)
    nan = np.isnan(v)
    safe = np.where(nan, xs[-1], v) if nan.any() else v
    if _bracketed(safe, xs, table):
        out = _interp_columns(safe, xs, table.reshape(len(xs), -1))
        return out[0] if table.ndim == 1 else out
    if table.ndim == 1:
        return np.interp(safe, xs, table)
    return np.stack([np.interp(safe, xs, table[:, c]) for c in range(table.shape[1])])


_BRACKET_MAX_STOPS = 32  # beyond this many stops a comparison per stop costs more than np.interp's search
_BRACKET_MIN_SIZE = 4096  # below this the setup outweighs the saving


def _bracketed(value: np.ndarray, xs: np.ndarray, table: np.ndarray) -> bool:
    """Whether ``_interp_columns`` gives np.interp's bits here: a large array, a few strictly
    increasing finite stops and finite values (no -0.0, which np.interp returns as is at a stop)."""
    return (
        value.size >= _BRACKET_MIN_SIZE
        and 2 <= len(xs) <= _BRACKET_MAX_STOPS
        and bool(np.isfinite(xs).all() and np.isfinite(table).all())
        and bool((xs[1:] > xs[:-1]).all())
        and not bool((np.signbit(table) & (table == 0)).any())
    )


def _interp_columns(value: np.ndarray, xs: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``np.interp(value, xs, table[:, c])`` for every column c, bit for bit, in one pass.

    Why: np.interp searches each pixel's interval again for every colour channel, which is most
    of a colour ramp's cost. Here the interval index is counted once (one uint8 comparison per
    stop), and each channel is np.interp's own formula ``slope[j] * (x - xp[j]) + fp[j]`` with
    two gathers from its tables. The values are first clipped to the stops, so a value below
    them computes ``slope[0] * 0 + fp[0]`` and one at or above the last stop falls in an extra
    interval of slope 0 from the last value: np.interp's end values, without masks per channel.
    """
    clipped = np.clip(value, xs[0], xs[-1])
    counted = np.zeros(value.shape, dtype=np.uint8)  # _BRACKET_MAX_STOPS stops fit in a byte
    for stop in xs[1:]:
        counted += clipped >= stop
    index = counted.astype(np.intp)
    offset = clipped
    # mode="clip": every index is in range, and np.take buffers ``out`` in its default mode
    offset -= np.take(xs, index, mode="clip")
    slopes = np.zeros_like(table)  # the last row: the interval past the last stop
    slopes[:-1] = (table[1:] - table[:-1]) / (xs[1:] - xs[:-1])[:, None]
    out = np.empty((table.shape[1], *value.shape))
    for c in range(table.shape[1]):
        channel = out[c]
        np.take(slopes[:, c], index, out=channel, mode="clip")
        channel *= offset
        channel += np.take(table[:, c], index, mode="clip")
    return out


def color_blend(value: ArrayLike, limits: Sequence[float], colors: Sequence[Sequence[float]]) -> np.ndarray:
    """Deprecated Sentinel Hub alias of ``valueInterpolate`` over colours."""
    return value_interpolate(value, limits, colors)


def combine(color1: Sequence[float], color2: Sequence[float], amount: ArrayLike) -> np.ndarray:
    """a * color1 + (1 - a) * color2, per channel."""
    a = np.asarray(amount, dtype=np.float64)
    return np.stack([a * c1 + (1 - a) * c2 for c1, c2 in zip(color1, color2, strict=True)])


def normalize_rgb(rgb: Sequence[float]) -> list[float]:
    """Divide 0-255 colour components by 255."""
    return [c / 255 for c in rgb]


def hex_rgb(color: str) -> list[float]:
    """``#RRGGBB`` -> [r, g, b] in 0..1 (used by palettes in evalscripts and legends)."""
    color = color.lstrip("#")
    return [int(color[i : i + 2], 16) / 255 for i in (0, 2, 4)]


# Sentinel Hub spellings, so ported scripts read the same.
valueMap = value_map
valueInterpolate = value_interpolate
colorBlend = color_blend
normalizeRGB = normalize_rgb
