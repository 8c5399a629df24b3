"""The values the vectoriser (``js_vector.py``) computes with: JavaScript values over many pixels.

Why a model of its own: JavaScript mixes numbers, booleans, arrays and objects freely, numpy
arrays do not. Each value carries its JavaScript type, so the walker can refuse (``Unsupported``)
whatever would not give the bits V8 gives, e.g. ``+`` on arrays (string concatenation), or a
variable that is a number on some pixels and a boolean on others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


class Unsupported(Exception):
    """The script uses something this module does not reproduce exactly: it runs in V8."""


class TimeLimit(Exception):
    """The vectorised evaluation ran past the script's time limit (a 400, as in V8)."""


class Fallback(Exception):
    """This tile's data takes a path that cannot be vectorised exactly: this tile runs in V8."""


@dataclass(slots=True)
class Value:
    """A JavaScript value over the pixels of a chunk.

    ``kind``: ``num`` (float64 array or scalar), ``bool`` (bool array or scalar), ``vec`` (a JS
    array: tuple of Values), ``obj`` (a multi-output object: dict of Values), ``samples``,
    ``math``, ``func`` (name of a runtime helper, Math function or top-level function),
    ``closure`` (a function expression and the scope it closes over), ``visual`` (a visualizer's
    settings), ``method`` (``(target, name)``: ``includes``/``map`` of an array, ``process`` of a
    visualizer), ``undef``, ``tdz`` (a let/const not declared yet).
    ``undef`` on num/bool/vec values marks pixels where a ``let x;`` was never assigned.
    """

    kind: str
    data: Any = None
    undef: np.ndarray | None = None


NUMERIC = ("num", "bool")


def both(a: Any, b: Any) -> Any:
    """Mask intersection; stays a Python bool while both sides are scalars."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.logical_and(a, b)
    return bool(a) and bool(b)


def either(a: Any, b: Any) -> Any:
    """Mask union; stays a Python bool while both sides are scalars."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.logical_or(a, b)
    return bool(a) or bool(b)


def negate(a: Any) -> Any:
    """Mask complement; stays a Python bool for a scalar."""
    return np.logical_not(a) if isinstance(a, np.ndarray) else not bool(a)


def as_number(value: Value) -> Any:
    """The value as float64 numbers, as JavaScript's ToNumber gives them (true -> 1)."""
    if value.kind == "num":
        return value.data
    if value.kind == "bool":
        data = value.data
        return data.astype(np.float64) if isinstance(data, np.ndarray) else np.float64(data)
    raise Unsupported(f"a {value.kind} used as a number")


def truthy(value: Value) -> Any:
    """Where the value is truthy: non-zero and not NaN for numbers; objects always."""
    if value.kind == "bool":
        return value.data if isinstance(value.data, np.ndarray) else bool(value.data)
    if value.kind == "num":
        x = value.data
        truth = (x != 0) & (x == x)  # NaN is falsy
        return truth if isinstance(truth, np.ndarray) else bool(truth)
    if value.kind in ("vec", "obj", "samples", "math", "func", "method", "visual", "closure"):
        return True
    raise Unsupported(f"a {value.kind} used as a condition")


def select(mask: Any, a: Value, b: Value) -> Value:
    """``mask ? a : b`` per pixel; both sides must have the same JavaScript type."""
    if mask is True or (isinstance(mask, np.bool_) and mask):
        return a
    if mask is False or (isinstance(mask, np.bool_) and not mask):
        return b
    if b.kind == "undef" and a.kind != "undef":  # `let x;` assigned on some pixels only
        undef = ~mask if a.undef is None else (~mask | a.undef)
        return Value(a.kind, a.data, undef)
    if a.kind == "undef" and b.kind != "undef":
        undef = mask if b.undef is None else (mask | b.undef)
        return Value(b.kind, b.data, undef)
    if a.kind != b.kind:
        raise Unsupported(f"a value that is {a.kind} on some pixels and {b.kind} on others")
    undef = None
    if a.undef is not None or b.undef is not None:
        undef = np.where(mask, False if a.undef is None else a.undef, False if b.undef is None else b.undef)
    if a.kind in NUMERIC:
        return Value(a.kind, np.where(mask, a.data, b.data), undef)
    if a.kind == "vec":
        if len(a.data) != len(b.data):
            raise Unsupported("arrays of different lengths on different pixels")
        return Value("vec", tuple(select(mask, x, y) for x, y in zip(a.data, b.data, strict=True)), undef)
    if a.kind == "obj" and a.data.keys() == b.data.keys():
        return Value("obj", {k: select(mask, a.data[k], b.data[k]) for k in a.data}, undef)
    if a.kind in ("samples", "math") or (a.kind == "func" and a.data == b.data):
        return a
    raise Unsupported(f"a choice between two {a.kind} values")


def stored(value: Value) -> Value:
    """A returned value as the output store sees it: booleans become 1/0 (``+v`` in runtime.js)."""
    if value.kind == "bool":
        return Value("num", as_number(value), value.undef)
    if value.kind == "vec":
        return Value("vec", tuple(stored(item) for item in value.data), value.undef)
    if value.kind == "obj":
        return Value("obj", {key: stored(item) for key, item in value.data.items()}, value.undef)
    return value


def constant(json_value: Any) -> Value:
    """A constant reported by V8 (numbers, non-finite ones as strings; nested lists)."""
    if isinstance(json_value, list):
        return Value("vec", tuple(constant(item) for item in json_value))
    if isinstance(json_value, str):
        if json_value not in ("NaN", "Infinity", "-Infinity"):
            raise Unsupported("a non-numeric constant")
        return Value("num", np.float64(json_value.replace("Infinity", "inf")))
    if isinstance(json_value, bool) or not isinstance(json_value, int | float):
        raise Unsupported("a non-numeric constant")
    return Value("num", np.float64(json_value))


def constant_table(value: Value) -> np.ndarray | None:
    """A vec of scalar numbers (1-D) or of equal-length vecs of them (2-D) as an array."""
    if value.kind != "vec" or not value.data:
        return None
    items = value.data
    if all(v.kind == "num" and np.ndim(v.data) == 0 for v in items):
        return np.array([v.data for v in items], dtype=np.float64)
    rows = [constant_table(v) for v in items]
    if all(r is not None and r.ndim == 1 for r in rows) and len({r.shape for r in rows if r is not None}) == 1:
        return np.stack([r for r in rows if r is not None])
    return None
