"""Inline band-math expressions, checked against a whitelist and evaluated with numexpr.

Why a whitelist over the Python AST: expressions may later come from requests (``EVALSCRIPT``),
so nothing but declared band names, numbers, arithmetic, comparisons, ``where`` and a fixed set of
math functions may pass; numexpr then evaluates them without Python ``eval``. Several
expressions separated by ``;`` give several output bands (``B04;B03;B02``).
"""

from __future__ import annotations

import ast
import hashlib

import numexpr
import numpy as np
from rio_tiler.colormap import cmap as colormaps
from rio_tiler.errors import InvalidColorMapName

from server.errors import EvalscriptError
from server.evalscript.contract import InputSpec, OutputSpec, Samples, SampleType

MAX_EXPRESSION_LENGTH = 2000
FUNCTIONS = frozenset(
    {
        "where",
        "sqrt",
        "exp",
        "log",
        "log10",
        "log1p",
        "abs",
        "sin",
        "cos",
        "tan",
        "arcsin",
        "arccos",
        "arctan",
        "arctan2",
        "sinh",
        "cosh",
        "tanh",
        "arcsinh",
        "arccosh",
        "arctanh",
        "minimum",
        "maximum",
    }
)
_NODES = (
    ast.Expression,
    ast.BinOp,
    ast.UnaryOp,
    ast.Compare,
    ast.Call,
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.Pow,
    ast.Mod,
    ast.USub,
    ast.UAdd,
    ast.Lt,
    ast.LtE,
    ast.Gt,
    ast.GtE,
    ast.Eq,
    ast.NotEq,
    ast.BitAnd,
    ast.BitOr,
    ast.Invert,
)


def _check(expr: str, allowed_names: set[str]) -> set[str]:
    """Return the band names ``expr`` uses, or raise ``EvalscriptError`` saying what is wrong."""
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError:
        raise EvalscriptError(f"expression '{expr[:80]}' is not valid syntax", parameter="expression") from None
    used: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, _NODES):
            raise EvalscriptError(
                f"expression uses '{type(node).__name__}', which is not allowed", parameter="expression"
            )
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords:
                raise EvalscriptError("expression calls a function that is not allowed", parameter="expression")
        elif isinstance(node, ast.Name):
            if node.id in FUNCTIONS:
                continue
            if node.id not in allowed_names:
                raise EvalscriptError(f"expression uses unknown band '{node.id}'", parameter="expression")
            used.add(node.id)
        elif isinstance(node, ast.Constant) and (
            isinstance(node.value, bool) or not isinstance(node.value, int | float)
        ):
            raise EvalscriptError("expression constants must be numbers", parameter="expression")
    return used


class ExpressionEvalscript:
    """A layer defined by ``expression`` (+ optional ``rescale`` and ``colormap``).

    With a colormap, the first expression is rescaled to 0-255 and coloured (RGBA, AUTO); with
    ``rescale`` only, bands are stretched to 0..1 (AUTO); with neither, raw float32 values.
    """

    mosaicking = "SIMPLE"
    runtime = "numexpr"  # what evaluates it (``eotiler layers``)

    def __init__(
        self,
        expression: str,
        band_names: set[str],
        *,
        units: str = "REFLECTANCE",
        rescale: tuple[float, float] | None = None,
        colormap: str | None = None,
        name: str = "expression",
    ) -> None:
        if len(expression) > MAX_EXPRESSION_LENGTH or "\x00" in expression:
            raise EvalscriptError("expression is too long or contains NUL bytes", parameter="expression")
        self.name = name
        self.parts = [p.strip() for p in expression.split(";") if p.strip()]
        if not self.parts:
            raise EvalscriptError("expression is empty", parameter="expression")
        used: set[str] = set()
        for part in self.parts:
            used |= _check(part, band_names)
        self.rescale = rescale
        self.colormap = self._load_colormap(colormap) if colormap else None
        if self.colormap is not None and rescale is None:
            raise EvalscriptError("a colormap needs 'rescale' (min, max)", parameter="rescale")
        self.inputs = InputSpec(tuple(sorted(used)) + ("dataMask",), units)
        if self.colormap is not None:
            self.output = OutputSpec(4, SampleType.AUTO)
        elif rescale is not None:
            self.output = OutputSpec(len(self.parts), SampleType.AUTO)
        else:
            self.output = OutputSpec(len(self.parts), SampleType.FLOAT32)
        text = f"{expression}|{units}|{rescale}|{colormap}"
        self.digest = hashlib.sha256(text.encode()).hexdigest()

    @staticmethod
    def _load_colormap(name: str) -> np.ndarray:
        try:
            table = colormaps.get(name.lower())
        except InvalidColorMapName:
            raise EvalscriptError(f"unknown colormap '{name}'", parameter="colormap") from None
        lut = np.zeros((256, 4), dtype=np.float32)
        for key, rgba in table.items():
            lut[int(key)] = rgba
        return lut / 255.0

    def evaluate(self, samples: Samples) -> np.ndarray:
        """Evaluate every expression with numexpr over the sample arrays."""
        arrays = {name: samples[name] for name in self.inputs.data_bands}
        bands = []
        for part in self.parts:
            try:
                value = numexpr.evaluate(part, local_dict=arrays)
            except (ValueError, TypeError, KeyError, ZeroDivisionError) as exc:
                raise EvalscriptError(f"expression '{part[:80]}' failed: {exc}", parameter="expression") from exc
            bands.append(np.broadcast_to(np.asarray(value, dtype=np.float32), samples.shape))
        stacked = np.stack(bands)
        if self.rescale is None:
            return stacked
        low, high = self.rescale
        scaled = (stacked - low) / (high - low if high != low else 1.0)
        if self.colormap is None:
            return np.clip(scaled, 0, 1)
        with np.errstate(over="ignore"):  # +-1.8e308 from nan_to_num(inf): clipped below anyway
            idx = np.clip(np.rint(np.nan_to_num(scaled[0], nan=0.0) * 255), 0, 255).astype(np.uint8)
        rgba = self.colormap[idx]
        return np.moveaxis(rgba, -1, 0)
