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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from server.evalscript.contract import OutputSpec
from server.evalscript.js_builtins import BUILTINS, MATH_CONSTANTS, power, visualizer, visualizer_call
from server.evalscript.js_values import (
    NUMERIC,
    Fallback,
    TimeLimit,
    Unsupported,
    Value,
    as_number,
    both,
    constant,
    constant_table,
    either,
    negate,
    select,
    stored,
    truthy,
)

CHUNK_PIXELS = 16384  # 128 KB float64 temporaries: cache-resident, below glibc's mmap threshold
MAX_STEPS = 20000  # nodes visited per evaluation, inlined functions included
# Each visited node can leave one chunk-sized array alive; chunks shrink for long scripts so
# that bound stays under V8's default heap cap.
MEMORY_BUDGET = 256 * 1024 * 1024
MAX_INLINE_DEPTH = 8
_NAME = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")
_FUNCTION_EXPRESSIONS = ("ArrowFunctionExpression", "FunctionExpression")
_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": np.divide,
    "%": np.fmod,  # JavaScript's remainder keeps the dividend's sign, as fmod does
}


@dataclass(slots=True)
class Scope:
    """One block's bindings; ``function`` marks the scope ``var`` declarations go to."""

    parent: Scope | None
    function: bool = False
    names: dict[str, Value] = field(default_factory=dict)
    consts: set[str] = field(default_factory=set)

    def find(self, name: str) -> Scope | None:
        """The scope that binds ``name``, or None for a global."""
        scope: Scope | None = self
        while scope is not None:
            if name in scope.names:
                return scope
            scope = scope.parent
        return None

    def function_scope(self) -> Scope:
        """The enclosing function's scope, where ``var`` lives."""
        scope = self
        while not scope.function and scope.parent is not None:
            scope = scope.parent
        return scope


@dataclass(slots=True)
class Frame:
    """One function invocation: which pixels returned, and what they returned."""

    done: Any = False
    result: Value | None = None
    output: bool = False  # evaluatePixel's own frame: what it returns is stored as numbers


@dataclass(frozen=True, slots=True)
class Program:
    """What the walker needs from the script: its functions and what V8 says its globals are."""

    functions: dict[str, dict[str, Any]]
    globals: dict[str, Value]
    intact: frozenset[str]
    bands: tuple[str, ...]
    output: OutputSpec


class Walker:
    """Evaluates ``evaluatePixel`` over one chunk of pixels."""

    def __init__(self, program: Program, samples: dict[str, np.ndarray], probing: bool = False) -> None:
        self.program = program
        self.samples = samples
        self.probing = probing  # the build's walk over made-up values: never hand a tile to V8
        self.steps = 0
        self.depth = 0
        self.pc: Any = True  # the pixels the code being walked runs for

    # ---- statements -------------------------------------------------------------------------

    def call_function(self, name: str, args: list[Value]) -> Value:
        """Inline a top-level function: parameters bound, body walked, returns merged by mask."""
        return self.invoke(self.program.functions[name], None, args, name)

    def invoke(self, node: dict[str, Any], closure: Scope | None, args: list[Value], name: str) -> Value:
        """Walk a function body (declaration, function expression or arrow) for these arguments."""
        if self.depth >= MAX_INLINE_DEPTH:
            raise Unsupported("functions nested too deep")
        if node.get("async") or node.get("generator"):
            raise Unsupported("an async or generator function")
        scope = Scope(closure, function=True)
        for i, param in enumerate(node["params"]):
            if param["type"] != "Identifier":
                raise Unsupported("a parameter pattern")
            scope.names[param["name"]] = args[i] if i < len(args) else Value("undef")
        if node["body"]["type"] != "BlockStatement":  # an arrow with an expression body
            self.depth += 1
            try:
                return self.expr(node["body"], scope)
            finally:
                self.depth -= 1
        for var in _var_names(node["body"]["body"]):  # hoisted: undefined until assigned
            scope.names.setdefault(var, Value("undef"))
        for stmt in node["body"]["body"]:  # hoisted with their body: callable from the first line
            if stmt["type"] == "FunctionDeclaration":
                scope.names[stmt["id"]["name"]] = Value("closure", (stmt, scope))
        frame = Frame(output=name == "evaluatePixel" and self.depth == 0)
        self.depth += 1
        saved = self.pc
        try:
            exits = self.block(node["body"]["body"], scope, frame, fresh=False)
        finally:
            self.depth -= 1
            self.pc = saved
        if exits:
            assert frame.result is not None
            return frame.result
        if name != "evaluatePixel":
            raise Unsupported(f"{name}() can end without a return")
        # pixels that fell off the end returned undefined (runtime.js stores zeros for them)
        return Value("undef") if frame.result is None else select(frame.done, frame.result, Value("undef"))

    def block(self, body: list[dict[str, Any]], scope: Scope, frame: Frame, fresh: bool = True) -> bool:
        """Walk statements; True when every pixel of ``pc`` has returned by the end."""
        inner = Scope(scope) if fresh else scope
        _bind_tdz(body, inner)
        for stmt in body:
            if self.statement(stmt, inner, frame):
                return True
        return False

    def statement(self, node: dict[str, Any], scope: Scope, frame: Frame) -> bool:
        """Walk one statement; True when every pixel of ``pc`` has returned."""
        self.tick()
        kind = node["type"]
        if kind == "VariableDeclaration":
            for decl in node["declarations"]:
                self.declare(node["kind"], decl, scope)
            return False
        if kind == "ExpressionStatement":
            self.effect(node["expression"], scope)
            return False
        if kind == "ReturnStatement":
            value = Value("undef") if node["argument"] is None else self.expr(node["argument"], scope)
            self.ret(value, frame)
            return True
        if kind == "IfStatement":
            test = truthy(self.expr(node["test"], scope))
            saved = self.pc
            try:
                self.pc = both(saved, test)
                exits = self.branch(node["consequent"], scope, frame)
                self.pc = both(saved, negate(test))
                exits_else = node["alternate"] is not None and self.branch(node["alternate"], scope, frame)
            finally:
                self.pc = saved
            return exits and exits_else
        if kind == "BlockStatement":
            return self.block(node["body"], scope, frame)
        if kind == "EmptyStatement" or (kind == "FunctionDeclaration" and self.hoisted(node, scope)):
            return False
        if kind in ("ForStatement", "WhileStatement"):
            return self.loop(node, scope, frame)
        if kind == "ForOfStatement":
            return self.for_of(node, scope, frame)
        if kind == "SwitchStatement":
            self.switch(node, scope, frame)
            return False
        raise Unsupported(f"a {kind}")

    def hoisted(self, node: dict[str, Any], scope: Scope) -> bool:
        """A function declaration is bound when its function is entered (``invoke``): True."""
        bound = scope.names.get(node["id"]["name"]) if scope.function else None
        if bound is None or bound.kind != "closure" or bound.data[0] is not node:
            raise Unsupported("a function declared in a block, or replaced before its declaration")
        return True

    def switch(self, node: dict[str, Any], scope: Scope, frame: Frame) -> None:
        """``switch``, by masks: where each pixel enters, and which pixels are still running.

        A pixel enters at its first ``case`` that is ``===`` the discriminant (else at
        ``default``) and falls through until a ``break``. The break must end its case: one inside
        an ``if`` would need a mask of its own, and such scripts stay in V8.
        """
        clauses = node["cases"]
        entries = self.switch_entries(self.expr(node["discriminant"], scope), clauses, scope)
        inner = Scope(scope)  # one scope for the whole switch body
        _bind_tdz([stmt for clause in clauses for stmt in clause["consequent"]], inner)
        running: Any = False
        saved = self.pc
        try:
            for clause, entry in zip(clauses, entries, strict=True):
                running = either(running, entry)
                body = clause["consequent"]
                ends_with_break = bool(body) and body[-1]["type"] == "BreakStatement" and body[-1]["label"] is None
                if ends_with_break:
                    body = body[:-1]
                self.pc = both(saved, running)
                if self.pc is not False:
                    for stmt in body:
                        if self.statement(stmt, inner, frame):
                            ends_with_break = True  # every running pixel returned
                            break
                if ends_with_break:
                    running = False
        finally:
            self.pc = saved

    def switch_entries(self, discriminant: Value, clauses: list[dict[str, Any]], scope: Scope) -> list[Any]:
        """Per clause, the pixels that enter there: the first ``===`` case, else ``default``."""
        matched_any: Any = False
        entries: list[Any] = []
        for clause in clauses:  # case tests are evaluated in order, as JavaScript does
            if clause["test"] is None:
                entries.append(None)
                continue
            hit = truthy(self.binary("===", discriminant, self.expr(clause["test"], scope)))
            entries.append(both(hit, negate(matched_any)))
            matched_any = either(matched_any, hit)
        return [negate(matched_any) if entry is None else entry for entry in entries]

    def loop_test(self, node: dict[str, Any] | None, scope: Scope) -> bool:
        """A loop condition; it must be the same for every pixel (a counter, not a band value)."""
        if node is None:
            return True
        test = truthy(self.expr(node, scope))
        if isinstance(test, np.ndarray):
            raise Unsupported("a loop condition that depends on the pixel")
        return bool(test)

    def loop(self, node: dict[str, Any], scope: Scope, frame: Frame) -> bool:
        """``for (init; test; update)`` and ``while (test)``, unrolled (``tick`` bounds it).

        Each iteration gets its own copy of the loop's let bindings, as JavaScript specifies
        (it matters to arrow functions created in the body).
        """
        current = Scope(scope)
        init = node.get("init")
        if init is not None and init["type"] == "VariableDeclaration":
            for decl in init["declarations"]:
                self.declare(init["kind"], decl, current)
        elif init is not None:
            self.effect(init, current)
        while self.loop_test(node["test"], current):
            if self.branch(node["body"], current, frame):
                return True  # every pixel returned inside the loop
            current = Scope(scope, names=dict(current.names), consts=set(current.consts))
            if node.get("update") is not None:
                self.effect(node["update"], current)
        return False

    def for_of(self, node: dict[str, Any], scope: Scope, frame: Frame) -> bool:
        """``for (const x of array)`` over an array of known length."""
        left, items = node["left"], self.expr(node["right"], scope)
        if items.kind != "vec" or node.get("await"):
            raise Unsupported("for...of over a non-array")
        if left["type"] != "VariableDeclaration" or len(left["declarations"]) != 1:
            raise Unsupported("a for...of target")
        target = left["declarations"][0]["id"]
        if target["type"] != "Identifier":
            raise Unsupported("a for...of pattern")
        for item in items.data:
            current = Scope(scope)
            self.tick()
            self.bind(left["kind"], target["name"], item, current)
            if self.branch(node["body"], current, frame):
                return True
        return False

    def branch(self, node: dict[str, Any], scope: Scope, frame: Frame) -> bool:
        """Walk an ``if`` branch under the current ``pc``."""
        if self.pc is False:  # a constant condition: this branch never runs
            return False
        if node["type"] == "BlockStatement":
            return self.block(node["body"], scope, frame)
        if node["type"] in ("VariableDeclaration", "FunctionDeclaration", "ClassDeclaration"):
            raise Unsupported("a declaration as an if branch")
        return self.statement(node, scope, frame)

    def ret(self, value: Value, frame: Frame) -> None:
        """A ``return`` for the pixels of ``pc`` that have not returned yet."""
        if frame.output:
            value = stored(value)
        mask = both(self.pc, negate(frame.done))
        frame.result = value if frame.result is None else select(mask, value, frame.result)
        frame.done = either(frame.done, mask)

    def declare(self, kind: str, decl: dict[str, Any], scope: Scope) -> None:
        """``let``/``const``/``var`` with an identifier or an array pattern."""
        target = decl["id"]
        value = Value("undef") if decl["init"] is None else self.expr(decl["init"], scope)
        if target["type"] == "ArrayPattern":  # const [r, g, b] = colorBlend(...)
            if value.kind != "vec" or kind == "var":
                raise Unsupported("array destructuring of a non-array")
            for i, element in enumerate(target["elements"]):
                if element is None:
                    continue
                if element["type"] != "Identifier" or i >= len(value.data):
                    raise Unsupported("a destructuring pattern")
                self.bind(kind, element["name"], value.data[i], scope)
            return
        if target["type"] != "Identifier":
            raise Unsupported("a destructuring pattern")
        self.bind(kind, target["name"], value, scope)

    def bind(self, kind: str, name: str, value: Value, scope: Scope) -> None:
        """Bind a declared name; ``var`` merges under ``pc`` like an assignment."""
        if kind == "var":
            home = scope.function_scope()
            old = home.names.get(name, Value("undef"))
            home.names[name] = select(self.pc, value, old) if self.pc is not True else value
            return
        scope.names[name] = value
        if kind == "const":
            scope.consts.add(name)

    def effect(self, node: dict[str, Any], scope: Scope) -> None:
        """An expression statement: assignments and ++/-- to local variables only."""
        kind = node["type"]
        if kind == "AssignmentExpression" and node["left"]["type"] == "Identifier":
            name = node["left"]["name"]
            value = self.expr(node["right"], scope)
            if node["operator"] != "=":
                value = self.arith(node["operator"][:-1], self.lookup(name, scope), value)  # a += b
            self.assign(name, value, scope)
            return
        if kind == "UpdateExpression" and node["argument"]["type"] == "Identifier":
            name = node["argument"]["name"]
            one = Value("num", np.float64(1))
            self.assign(
                name, self.arith("+" if node["operator"] == "++" else "-", self.lookup(name, scope), one), scope
            )
            return
        if kind == "SequenceExpression":
            for item in node["expressions"]:
                self.effect(item, scope)
            return
        raise Unsupported(f"a {kind} statement")

    def assign(self, name: str, value: Value, scope: Scope) -> None:
        """Assign under ``pc``: pixels outside it keep the old value."""
        home = scope.find(name)
        if home is None or name in home.consts or home.names[name].kind == "tdz":
            raise Unsupported(f"an assignment to {name}")  # a global, a const, or before its let
        old = home.names[name]
        home.names[name] = value if self.pc is True else select(self.pc, value, old)

    # ---- expressions ------------------------------------------------------------------------

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


# ---- building a plan ------------------------------------------------------------------------


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


def _bind_tdz(statements: list[dict[str, Any]], scope: Scope) -> None:
    """let/const declared in ``statements`` are in their temporal dead zone until declared."""
    for stmt in statements:
        if stmt["type"] == "VariableDeclaration" and stmt["kind"] != "var":
            for decl in stmt["declarations"]:
                if decl["id"]["type"] == "Identifier":
                    scope.names[decl["id"]["name"]] = Value("tdz")


def _var_names(body: list[dict[str, Any]]) -> Iterator[str]:
    """``var`` names declared anywhere in a function body (they are function-scoped)."""
    for stmt in body:
        kind = stmt.get("type")
        if kind == "VariableDeclaration" and stmt["kind"] == "var":
            for decl in stmt["declarations"]:
                if decl["id"]["type"] == "Identifier":
                    yield decl["id"]["name"]
        elif kind == "BlockStatement":
            yield from _var_names(stmt["body"])
        elif kind == "IfStatement":
            yield from _var_names([stmt["consequent"]])
            if stmt["alternate"] is not None:
                yield from _var_names([stmt["alternate"]])
        elif kind == "SwitchStatement":
            yield from _var_names([inner for clause in stmt["cases"] for inner in clause["consequent"]])
        elif kind in ("ForStatement", "WhileStatement", "ForOfStatement"):
            heads = [stmt.get("init"), stmt.get("left")]
            yield from _var_names([h for h in heads if h is not None and h.get("type") == "VariableDeclaration"])
            yield from _var_names([stmt["body"]])


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
