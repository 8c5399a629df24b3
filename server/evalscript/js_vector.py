"""Vectorised evaluation of simple JavaScript evalscripts: ``evaluatePixel`` over whole arrays.

Why: V8 calls ``evaluatePixel`` once per pixel, ~10 ns each plus a process hop, so a true-colour
tile costs ~2.5 ms in JavaScript where three numpy multiplies take 0.25 ms. Most evalscripts are
straight-line arithmetic, ``index``, ``colorBlend`` and ``if``/ternary choices, which numpy can
run on whole arrays with the same IEEE double operations in the same order, so the results are
the same bits. This module runs those in-process; every other script, or any tile where a
data-dependent condition cannot be proven (an array index out of range, a variable that may be
undefined), runs in V8 as before, and V8 stays the reference the tests compare against.

How: acorn (in a V8 worker, ``js_worker.parse``) gives the ESTree; V8 reports what each global
the functions use is after the script's top level and ``setup()`` ran (a numeric constant, a
runtime helper or visualizer class still intact, a top-level function whose text matches the
tree); then this module walks the tree with numpy values. Branches run on all pixels under a
mask (``pc``), returns set a per-pixel ``done`` mask, so there is no per-pixel Python. Loops are
unrolled while their condition is the same for every pixel (a counter); arrow functions and
``map`` are inlined. Nothing from the script is ever executed as Python: the walker only knows a
fixed set of node types and numpy ufuncs, its steps are counted (``MAX_STEPS``), the script's
time limit applies, and chunks shrink for long scripts so memory stays bounded.

The walk is split by what it evaluates: ``js_statements.py`` (``Walker``: statements, masks,
unrolled loops, inlined functions) extends ``js_expressions.py`` (``ExpressionWalker``:
expression nodes as numpy operations), both over ``js_scope.py``'s bindings and
``js_values.py``'s values; this module turns V8's report into a ``VectorPlan`` and runs it
chunk by chunk.

A V1 script (bands as variables, a top-level ``return``) is walked as V8 runs it: its body inside
the ``evaluatePixel`` wrapper of ``js_worker.wrap_v1``, its helper functions declared in that body.

Deliberately left to V8: loops whose condition depends on the pixel, ``break``/``continue``,
``**``/``Math.pow`` and transcendental functions (``exp``, ``log``, ``tanh``...: libm and V8 may
differ in the last bit), strings, array element assignment (arrays are shared references in
JavaScript), objects other than multi-output returns and multi-temporal scripts (ORBIT/TILE: the
``scenes`` argument never reaches this module). The differential fuzzer in
``tests/test_js_vector.py`` checks the rest against V8.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from server.evalscript.contract import OutputSpec
from server.evalscript.js_builtins import BUILTINS, visualizer
from server.evalscript.js_scope import Program
from server.evalscript.js_statements import Walker
from server.evalscript.js_values import NUMERIC, TimeLimit, Unsupported, Value, as_number, constant

CHUNK_PIXELS = 16384  # 128 KB float64 temporaries: cache-resident, below glibc's mmap threshold
# Each visited node can leave one chunk-sized array alive; chunks shrink for long scripts so
# that bound stays under V8's default heap cap.
MEMORY_BUDGET = 256 * 1024 * 1024
_NAME = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")
_FUNCTION_EXPRESSIONS = ("ArrowFunctionExpression", "FunctionExpression")


def _identifiers(node: Any) -> Iterator[str]:
    """Every identifier a subtree reads (property names of ``a.b`` and object keys excluded)."""
    if isinstance(node, list):
        for item in node:
            yield from _identifiers(item)
        return
    if not isinstance(node, dict):
        return
    if node.get("type") == "Identifier":
        yield node["name"]
        return
    for key, child in node.items():
        if key == "property" and node.get("type") == "MemberExpression" and not node.get("computed"):
            continue
        if key == "key" and node.get("type") == "Property" and not node.get("computed"):
            continue
        yield from _identifiers(child)


def top_level_functions(ast: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, node) of ``function f() {}`` and of ``const f = (x) => ...`` / ``= function () {}``."""
    for node in ast["body"]:
        if node.get("type") == "FunctionDeclaration":
            yield node["id"]["name"], node
        elif node.get("type") == "VariableDeclaration":
            for decl in node["declarations"]:
                init = decl.get("init") or {}
                if decl["id"]["type"] == "Identifier" and init.get("type") in _FUNCTION_EXPRESSIONS:
                    yield decl["id"]["name"], init


def global_names(ast: dict[str, Any] | None) -> list[str] | None:
    """Names V8 must describe for ``ast`` to be vectorised, or None when it cannot be."""
    if not isinstance(ast, dict) or ast.get("type") != "Program":
        return None
    functions = list(top_level_functions(ast))
    if not any(name == "evaluatePixel" for name, _ in functions):
        return None
    names = sorted({name for _, fn in functions for name in _identifiers(fn["body"])} | {"evaluatePixel"})
    names += [name for name, _ in functions if name not in names]
    if len(names) > 512 or not all(_NAME.match(n) for n in names):
        return None
    return names


def _globals(
    report: dict[str, Any], declared: dict[str, dict[str, Any]], intact: frozenset[str]
) -> tuple[dict[str, Value], dict[str, dict[str, Any]]]:
    """The globals V8 described, as values; top-level functions only where V8 holds their text.

    A function V8 holds under a name but whose source differs from the declaration (the script
    reassigned it) is left out, so a call to it is ``Unsupported``.
    """
    values: dict[str, Value] = {}
    functions: dict[str, dict[str, Any]] = {}
    for name, entry in report.items():
        if name == "__intact" or not isinstance(entry, dict):
            continue
        kind = entry.get("kind")
        if kind == "constant":
            values[name] = constant(entry.get("value"))
        elif kind == "boolean":
            values[name] = Value("bool", bool(entry.get("value")))
        elif kind == "math":
            values[name] = Value("math")
        elif kind == "visualizer":
            values[name] = Value("visual", visualizer(entry))
        elif kind == "builtin" and name in BUILTINS and name in intact:
            values[name] = Value("func", name)
        elif kind == "function" and name in declared and entry.get("text") == declared[name].get("text"):
            values[name] = Value("func", name)
            functions[name] = declared[name]
    return values, functions


class VectorPlan:
    """A script ``evaluatePixel`` this module runs exactly; ``evaluate`` fills (bands, h, w)."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.chunk = CHUNK_PIXELS

    @classmethod
    def build(
        cls, ast: dict[str, Any], report: dict[str, Any], bands: tuple[str, ...], output: OutputSpec
    ) -> VectorPlan:
        """Check what V8 reports against the tree, then walk it once on probe values.

        Raises ``Unsupported`` with the reason when the script must stay in V8.
        """
        declared: dict[str, dict[str, Any]] = {}
        for name, node in top_level_functions(ast):
            if name in declared or node.get("generator") or node.get("async"):
                raise Unsupported(f"function {name}")
            declared[name] = node
        intact = frozenset(report.get("__intact", []))
        values, functions = _globals(report, declared, intact)
        if "evaluatePixel" not in functions:
            raise Unsupported("evaluatePixel is not the declared function")
        params = functions["evaluatePixel"]["params"]
        if not params or params[0]["type"] != "Identifier":
            raise Unsupported("evaluatePixel takes no samples parameter")
        plan = cls(Program(functions, values, intact, bands, output))
        # Every branch is walked whatever the values, so one walk finds any construct this module
        # refuses, and counts the steps each chunk will take.
        probe = {name: np.array([0.0, 1.0, 2.0, 3.0, 0.25, 0.5, 6.0]) for name in bands}
        try:
            steps = plan.evaluate_chunk(probe, np.empty((output.bands, 7)), probing=True)
        except RecursionError:
            raise Unsupported("nesting too deep") from None
        plan.chunk = max(256, min(CHUNK_PIXELS, MEMORY_BUDGET // (8 * max(steps, 1))))
        return plan

    def evaluate(self, arrays: dict[str, np.ndarray], out: np.ndarray, time_limit: float) -> None:
        """Fill ``out`` (bands, h, w) from (h, w) float64 band arrays, chunk by chunk.

        Raises ``Fallback`` when some pixel needs V8 (the caller then runs the whole image there),
        and ``TimeLimit`` past ``time_limit`` seconds: the walk is bounded per chunk, but a request
        script gets no more time in-process than V8 would give it.
        """
        started = time.monotonic()
        flat = {name: np.ascontiguousarray(a).reshape(-1) for name, a in arrays.items()}
        target = out.reshape(out.shape[0], -1)
        total = target.shape[1]
        for start in range(0, total, self.chunk):
            stop = min(total, start + self.chunk)
            self.evaluate_chunk({k: v[start:stop] for k, v in flat.items()}, target[:, start:stop])
            if time.monotonic() - started > time_limit:
                raise TimeLimit("evalscript exceeded its time limit")

    def evaluate_chunk(self, samples: dict[str, np.ndarray], out: np.ndarray, probing: bool = False) -> int:
        """Walk ``evaluatePixel`` once over one chunk of pixels; returns the nodes visited."""
        walker = Walker(self.program, samples, probing)
        with np.errstate(all="ignore"):
            result = walker.call_function("evaluatePixel", [Value("samples")])
            if result.kind == "obj":  # a multi-output return: OGC services use "default"
                if self.program.output.id not in result.data:
                    raise Unsupported("no default output returned")
                picked = result.data[self.program.output.id]
                undef = result.undef if picked.undef is None or result.undef is None else result.undef | picked.undef
                result = Value(picked.kind, picked.data, picked.undef if undef is None else undef)
            if probing:  # made-up values may leave pixels undefined that real ones would not
                result = Value(result.kind, result.data)
            self.store(result, out)
        return walker.steps

    def store(self, result: Value, out: np.ndarray) -> None:
        """Write what ``evaluatePixel`` returned as runtime.js's ``__eotiler_store`` would."""
        bands = out.shape[0]
        if result.undef is not None and np.any(result.undef):
            out[...] = 0  # some pixels fell off the end or returned undefined: zeros, as in V8
            if result.kind in NUMERIC and bands == 1:
                out[0] = np.where(result.undef, 0.0, as_number(result))
                return
            if result.kind != "vec" or len(result.data) != bands:
                raise Unsupported("evaluatePixel returns different shapes")
            for b, item in enumerate(result.data):
                if item.kind not in NUMERIC:
                    raise Unsupported("a non-numeric output value")
                out[b] = np.where(result.undef, 0.0, as_number(item))
            return
        if result.kind == "undef":
            out[...] = 0
        elif result.kind in NUMERIC:
            if bands != 1:
                raise Unsupported("a number returned for a multi-band output")
            out[0] = as_number(result)
        elif result.kind == "vec" and len(result.data) == bands:
            for b, item in enumerate(result.data):
                if item.kind not in NUMERIC or item.undef is not None:
                    raise Unsupported("a non-numeric output value")
                out[b] = as_number(item)
        else:
            raise Unsupported("evaluatePixel returns a shape the output does not declare")
