"""Expressions of the vectoriser's walk: ESTree expression nodes evaluated with numpy over a chunk.

Each node becomes the IEEE double operations V8 performs, in the same order, on whole arrays
(``js_values.Value``); ``pc`` is the mask of pixels the code being walked runs for, so a
conditional evaluates both sides under their masks and merges them. Calls of script functions
are inlined by the statement walker (``js_statements.Walker.invoke``), which extends this class:
function bodies are statements.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from server.evalscript.js_builtins import BUILTINS, MATH_CONSTANTS, power, visualizer_call
from server.evalscript.js_scope import Program, Scope
from server.evalscript.js_values import (
    NUMERIC,
    Fallback,
    Unsupported,
    Value,
    as_number,
    both,
    constant_table,
    negate,
    select,
    truthy,
)

MAX_STEPS = 20000  # nodes visited per evaluation, inlined functions included
_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": np.divide,
    "%": np.fmod,  # JavaScript's remainder keeps the dividend's sign, as fmod does
}


class ExpressionWalker:
    """Evaluates expressions over one chunk of pixels (statements: ``js_statements.Walker``)."""

    def __init__(self, program: Program, samples: dict[str, np.ndarray], probing: bool = False) -> None:
        self.program = program
        self.samples = samples
        self.probing = probing  # the build's walk over made-up values: never hand a tile to V8
        self.steps = 0
        self.depth = 0
        self.pc: Any = True  # the pixels the code being walked runs for

    def call_function(self, name: str, args: list[Value]) -> Value:
        """Inline a top-level function: parameters bound, body walked, returns merged by mask."""
        return self.invoke(self.program.functions[name], None, args, name)

    def invoke(self, node: dict[str, Any], closure: Scope | None, args: list[Value], name: str) -> Value:
        """Walk a function body for these arguments: a statement walk (``js_statements.Walker``)."""
        raise NotImplementedError

    def tick(self) -> None:
        """Count one node: the walk is bounded whatever the script."""
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise Unsupported("too many operations")

    def lookup(self, name: str, scope: Scope) -> Value:
        """A name's value; pixels still undefined under ``pc`` send the tile to V8."""
        home = scope.find(name)
        if home is None:
            value = self.program.globals.get(name)
            if value is None:
                raise Unsupported(f"the global {name}")
            return value
        value = home.names[name]
        if value.kind in ("undef", "tdz"):
            raise Unsupported(f"{name} read while undefined")
        if value.undef is not None:
            if np.any(value.undef & self.pc) and not self.probing:
                raise Fallback(f"{name} is undefined on some pixels")
            # defined wherever this code runs; other pixels are never observed from here (every
            # assignment and return merges under pc)
            return Value(value.kind, value.data)
        return value

    def expr(self, node: dict[str, Any], scope: Scope) -> Value:  # noqa: C901, PLR0911, PLR0912 - one case per node type
        """Evaluate one expression node."""
        self.tick()
        kind = node["type"]
        if kind == "Literal":
            value = node.get("value")
            if isinstance(value, bool):
                return Value("bool", value)
            if isinstance(value, int | float):
                return Value("num", np.float64(value))
            raise Unsupported("a non-numeric literal")
        if kind == "Identifier":
            return self.lookup(node["name"], scope)
        if kind == "ArrayExpression":
            items: list[Value] = []
            for element in node["elements"]:
                if element is None:
                    raise Unsupported("an array hole")
                if element["type"] == "SpreadElement":
                    spread = self.expr(element["argument"], scope)
                    if spread.kind != "vec":
                        raise Unsupported("spreading a non-array")
                    items.extend(spread.data)
                else:
                    items.append(self.expr(element, scope))
            return Value("vec", tuple(items))
        if kind == "ObjectExpression":
            entries: dict[str, Value] = {}
            for prop in node["properties"]:
                if prop["type"] != "Property" or prop["computed"] or prop["kind"] != "init" or prop["method"]:
                    raise Unsupported("an object property")
                key = prop["key"].get("name") if prop["key"]["type"] == "Identifier" else prop["key"].get("value")
                if not isinstance(key, str):
                    raise Unsupported("an object key")
                entries[key] = self.expr(prop["value"], scope)
            return Value("obj", entries)
        if kind == "BinaryExpression":
            return self.binary(node["operator"], self.expr(node["left"], scope), self.expr(node["right"], scope))
        if kind == "LogicalExpression":
            return self.logical(node, scope)
        if kind == "UnaryExpression":
            argument = self.expr(node["argument"], scope)
            if node["operator"] == "-":
                return Value("num", np.negative(as_number(argument)))
            if node["operator"] == "+":
                return Value("num", as_number(argument))
            if node["operator"] == "!":
                return Value("bool", np.logical_not(truthy(argument)))
            raise Unsupported(f"the operator {node['operator']}")
        if kind == "ConditionalExpression":
            test = truthy(self.expr(node["test"], scope))
            saved = self.pc
            try:
                self.pc = both(saved, test)
                yes = self.expr(node["consequent"], scope) if self.pc is not False else None
                self.pc = both(saved, negate(test))
                no = self.expr(node["alternate"], scope) if self.pc is not False else None
            finally:
                self.pc = saved
            if yes is None or no is None:
                return yes or no  # type: ignore[return-value]
            return select(test, yes, no)
        if kind == "MemberExpression":
            return self.member(node, scope)
        if kind == "CallExpression":
            return self.call(node, scope)
        if kind in ("ArrowFunctionExpression", "FunctionExpression"):
            return Value("closure", (node, scope))  # ``this`` and ``arguments`` are not supported
        raise Unsupported(f"a {kind}")

    def logical(self, node: dict[str, Any], scope: Scope) -> Value:
        """``&&``/``||`` return an operand, not a boolean; the right side runs only where needed."""
        if node["operator"] not in ("&&", "||"):
            raise Unsupported(f"the operator {node['operator']}")  # ?? needs null and undefined
        left = self.expr(node["left"], scope)
        test = truthy(left)
        run_right = negate(test) if node["operator"] == "||" else test
        saved = self.pc
        try:
            self.pc = both(saved, run_right)
            if self.pc is False:
                return left
            right = self.expr(node["right"], scope)
        finally:
            self.pc = saved
        return select(run_right, right, left)

    def binary(self, op: str, left: Value, right: Value) -> Value:
        """Arithmetic and comparisons (numbers only; booleans convert, strings do not exist here)."""
        if op in ("+", "-", "*", "/", "%"):
            return self.arith(op, left, right)
        if op == "**":
            if left.kind not in NUMERIC or right.kind not in NUMERIC:
                raise Unsupported("** on a non-number")
            return power(left, right)
        if op in ("<", "<=", ">", ">=", "==", "!="):
            a, b = as_number(left), as_number(right)
            fn = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal}.get(op)
            if fn is not None:
                return Value("bool", fn(a, b))
            # loose equality compares a boolean as the number it converts to
            return Value("bool", np.equal(a, b) if op == "==" else np.not_equal(a, b))
        if op in ("===", "!=="):
            if left.kind not in NUMERIC or right.kind not in NUMERIC:
                raise Unsupported("=== on non-numbers")
            if left.kind != right.kind:
                return Value("bool", op == "!==")
            same = np.equal(left.data, right.data)
            return Value("bool", same if op == "===" else np.logical_not(same))
        raise Unsupported(f"the operator {op}")

    @staticmethod
    def arith(op: str, left: Value, right: Value) -> Value:
        """``+ - * / %`` on numbers, as IEEE doubles, like V8."""
        if left.kind not in NUMERIC or right.kind not in NUMERIC:
            raise Unsupported(f"{op} on a {left.kind} and a {right.kind}")  # + would join strings
        fn = _ARITH.get(op)
        if fn is None:
            raise Unsupported(f"the operator {op}")
        return Value("num", fn(as_number(left), as_number(right)))

    def member(self, node: dict[str, Any], scope: Scope) -> Value:
        """``samples.B04``, ``Math.PI``, ``array[i]`` (a per-pixel gather from a constant table), ``.length``."""
        obj = self.expr(node["object"], scope)
        if not node["computed"]:
            return self.property(obj, node["property"]["name"])
        return self.element(obj, self.expr(node["property"], scope))

    def property(self, obj: Value, name: str) -> Value:
        """``obj.name``: a band of the samples, a Math member, an array's length, an output."""
        if obj.kind == "samples":
            if name not in self.program.bands:
                raise Unsupported(f"samples.{name} is not an input band")
            return Value("num", self.samples[name])
        if obj.kind == "math":
            if name in MATH_CONSTANTS:
                return Value("num", np.float64(MATH_CONSTANTS[name]))
            return Value("func", f"Math.{name}")
        if obj.kind == "vec" and name == "length":
            return Value("num", np.float64(len(obj.data)))
        if obj.kind == "vec" and name in ("includes", "map", "concat"):
            return Value("method", (obj, name))
        if obj.kind == "obj" and name in obj.data:
            return obj.data[name]
        if obj.kind == "visual" and name in ("process", "processList"):
            return Value("method", (obj, name))
        raise Unsupported(f"the property {name} of a {obj.kind}")

    def element(self, obj: Value, key: Value) -> Value:
        """``array[i]``: a constant index, or a per-pixel gather from a constant table."""
        if obj.kind != "vec" or key.kind != "num":
            raise Unsupported(f"indexing a {obj.kind}")
        if np.ndim(key.data) == 0:
            index = float(key.data)
            if not index.is_integer() or not 0 <= index < len(obj.data):
                raise Unsupported("an array index out of range")
            return obj.data[int(index)]
        table = constant_table(obj)
        if table is None:
            raise Unsupported("indexing a non-constant array per pixel")
        position = key.data
        valid = (position == np.floor(position)) & (position >= 0) & (position < table.shape[0])
        if not np.all(valid | ~np.asarray(self.pc)) and not self.probing:
            raise Fallback("an array index out of range")  # V8 throws or yields undefined there
        picked = np.take(table, np.where(valid, position, 0).astype(np.intp), axis=0)
        if table.ndim == 1:
            return Value("num", picked)
        return Value("vec", tuple(Value("num", picked[:, c]) for c in range(table.shape[1])))

    def call(self, node: dict[str, Any], scope: Scope) -> Value:
        """A call: a top-level function (inlined), a function expression, a helper, Math, a method."""
        callee = self.expr(node["callee"], scope)
        args = []
        for arg in node["arguments"]:
            if arg["type"] == "SpreadElement":
                raise Unsupported("spread arguments")
            args.append(self.expr(arg, scope))
        if callee.kind == "closure":
            function, closure = callee.data
            return self.invoke(function, closure, args, "a function expression")
        if callee.kind == "method":
            return self.call_method(callee.data[0], callee.data[1], args)
        if callee.kind != "func":
            raise Unsupported(f"calling a {callee.kind}")
        name = callee.data
        if name in self.program.functions:
            return self.call_function(name, args)
        if name not in self.program.intact or name not in BUILTINS:
            raise Unsupported(f"{name}()")
        return BUILTINS[name](args)

    def call_method(self, target: Value, method: str, args: list[Value]) -> Value:
        """``visualizer.process(v)``, ``array.map(fn)``, ``array.concat(...)``, ``array.includes(v)``."""
        if target.kind == "visual":
            return visualizer_call(target.data, method, args)
        if method == "concat":  # arrays are spread, other values appended
            if "Array.prototype.concat" not in self.program.intact:
                raise Unsupported("concat()")
            items = list(target.data)
            for arg in args:
                if arg.kind == "vec":
                    items.extend(arg.data)
                elif arg.kind in NUMERIC:
                    items.append(arg)
                else:
                    raise Unsupported(f"concat() of a {arg.kind}")
            return Value("vec", tuple(items))
        if method == "map":
            if "Array.prototype.map" not in self.program.intact or not args or args[0].kind != "closure":
                raise Unsupported("map() without a function expression")
            function, closure = args[0].data
            return Value(
                "vec",
                tuple(
                    self.invoke(function, closure, [item, Value("num", np.float64(i)), target], "map callback")
                    for i, item in enumerate(target.data)
                ),
            )
        if "Array.prototype.includes" not in self.program.intact or not args:
            raise Unsupported("includes()")
        table = constant_table(target)
        if table is None or table.ndim != 1 or np.isnan(table).any():
            raise Unsupported("includes() on a non-constant array")
        value = as_number(args[0]) if args[0].kind in NUMERIC else None
        if value is None or args[0].kind == "bool":
            raise Unsupported("includes() of a non-number")
        return Value("bool", np.isin(value, table))
