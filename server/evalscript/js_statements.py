"""Statements of the vectoriser's walk: ``evaluatePixel``'s body over a chunk of pixels.

Branches run on all pixels under a mask (``pc``) and ``return`` sets a per-pixel ``done`` mask,
so no statement loops over pixels in Python; loops are unrolled while their condition is the same
for every pixel (a counter), and function calls are inlined (``invoke``) with a bounded depth.
Expressions are the base class's (``js_expressions.ExpressionWalker``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from server.evalscript.js_expressions import ExpressionWalker
from server.evalscript.js_scope import Frame, Scope, bind_tdz, var_names
from server.evalscript.js_values import Unsupported, Value, both, either, negate, select, stored, truthy

MAX_INLINE_DEPTH = 8


class Walker(ExpressionWalker):
    """Evaluates ``evaluatePixel`` over one chunk of pixels."""

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
        for var in var_names(node["body"]["body"]):  # hoisted: undefined until assigned
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
        bind_tdz(body, inner)
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
        bind_tdz([stmt for clause in clauses for stmt in clause["consequent"]], inner)
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
