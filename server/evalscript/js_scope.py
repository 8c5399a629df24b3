"""Bindings of the vectoriser's walk (``js_vector.py``): scopes, function frames, the program.

Why a module of its own: the statement walker (``js_statements.py``) and the expression walker
(``js_expressions.py``) both read and write these, and JavaScript's hoisting rules (``var`` is
function-scoped, ``let``/``const`` are in a temporal dead zone until declared) live here once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from server.evalscript.contract import OutputSpec
from server.evalscript.js_values import Value


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


def bind_tdz(statements: list[dict[str, Any]], scope: Scope) -> None:
    """let/const declared in ``statements`` are in their temporal dead zone until declared."""
    for stmt in statements:
        if stmt["type"] == "VariableDeclaration" and stmt["kind"] != "var":
            for decl in stmt["declarations"]:
                if decl["id"]["type"] == "Identifier":
                    scope.names[decl["id"]["name"]] = Value("tdz")


def var_names(body: list[dict[str, Any]]) -> Iterator[str]:
    """``var`` names declared anywhere in a function body (they are function-scoped)."""
    for stmt in body:
        kind = stmt.get("type")
        if kind == "VariableDeclaration" and stmt["kind"] == "var":
            for decl in stmt["declarations"]:
                if decl["id"]["type"] == "Identifier":
                    yield decl["id"]["name"]
        elif kind == "BlockStatement":
            yield from var_names(stmt["body"])
        elif kind == "IfStatement":
            yield from var_names([stmt["consequent"]])
            if stmt["alternate"] is not None:
                yield from var_names([stmt["alternate"]])
        elif kind == "SwitchStatement":
            yield from var_names([inner for clause in stmt["cases"] for inner in clause["consequent"]])
        elif kind in ("ForStatement", "WhileStatement", "ForOfStatement"):
            heads = [stmt.get("init"), stmt.get("left")]
            yield from var_names([h for h in heads if h is not None and h.get("type") == "VariableDeclaration"])
            yield from var_names([stmt["body"]])
