"""The part of OGC CQL2 the Catalog API filters with: comparisons of item properties, and/or/not.

Why a subset: Sentinel Hub clients filter on ``eo:cloud_cover`` and on a few equality terms
(``sar:instrument_mode='IW'``, ``sat:orbit_state='ascending'``) that sentinelhub-py adds for a
data collection, in CQL2 text (its default) or CQL2 JSON. Text is parsed into the JSON form, and
only the JSON form is evaluated. Anything outside the subset is a 400 naming ``filter``.
"""

from __future__ import annotations

import re
from typing import Any

from server.errors import InvalidParameter

Filter = dict[str, Any]
_COMPARISONS = {"=", "<>", "<", "<=", ">", ">="}
_MAX_DEPTH = 32
_MAX_TEXT = 4000
_TOKEN = re.compile(
    r"\s*(?:(?P<number>-?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)|(?P<string>'(?:[^']|'')*')"
    r"|(?P<op><>|!=|<=|>=|=|<|>)|(?P<paren>[(),])|(?P<quoted>\"[^\"]+\")"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_:.\-]*))"
)


def _bad(message: str) -> InvalidParameter:
    return InvalidParameter(f"filter: {message}", parameter="filter")


def _tokens(text: str) -> list[tuple[str, str]]:
    found, position = [], 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise _bad(f"cannot read the text at character {position + 1}")
        kind = match.lastgroup or ""
        found.append((kind, match.group(kind)))
        position = match.end()
    return found


class _TextParser:
    """Recursive descent over the tokens: or > and > not > comparison."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.at = 0

    def peek_word(self) -> str:
        kind, value = self.tokens[self.at] if self.at < len(self.tokens) else ("", "")
        return value.upper() if kind == "word" else ""

    def take(self) -> tuple[str, str]:
        if self.at >= len(self.tokens):
            raise _bad("the expression ends too early")
        self.at += 1
        return self.tokens[self.at - 1]

    def parse(self) -> Filter:
        tree = self.expression(0)
        if self.at != len(self.tokens):
            raise _bad(f"unexpected '{self.tokens[self.at][1][:20]}'")
        return tree

    def expression(self, depth: int) -> Filter:
        if depth > _MAX_DEPTH:
            raise _bad("nested too deeply")
        args = [self.conjunction(depth)]
        while self.peek_word() == "OR":
            self.take()
            args.append(self.conjunction(depth))
        return args[0] if len(args) == 1 else {"op": "or", "args": args}

    def conjunction(self, depth: int) -> Filter:
        args = [self.negation(depth)]
        while self.peek_word() == "AND":
            self.take()
            args.append(self.negation(depth))
        return args[0] if len(args) == 1 else {"op": "and", "args": args}

    def negation(self, depth: int) -> Filter:
        if self.peek_word() == "NOT":
            self.take()
            return {"op": "not", "args": [self.negation(depth + 1)]}
        if self.at < len(self.tokens) and self.tokens[self.at] == ("paren", "("):
            self.take()
            inner = self.expression(depth + 1)
            if self.take() != ("paren", ")"):
                raise _bad("a parenthesis is not closed")
            return inner
        return self.comparison()

    def operand(self) -> Any:
        kind, value = self.take()
        if kind == "number":
            return float(value)
        if kind == "string":
            return value[1:-1].replace("''", "'")
        if kind == "quoted":
            return {"property": value[1:-1]}
        if kind == "word" and value.upper() in ("TRUE", "FALSE"):
            return value.upper() == "TRUE"
        if kind == "word" and value.upper() not in ("AND", "OR", "NOT", "IN"):
            return {"property": value}
        raise _bad(f"expected a property or a value, got '{value[:20]}'")

    def comparison(self) -> Filter:
        left = self.operand()
        if self.peek_word() == "IN":
            self.take()
            if self.take() != ("paren", "("):
                raise _bad("IN needs a parenthesised list")
            values = [self.operand()]
            while self.tokens[self.at : self.at + 1] == [("paren", ",")]:
                self.take()
                values.append(self.operand())
            if self.take() != ("paren", ")"):
                raise _bad("an IN list is not closed")
            return {"op": "in", "args": [left, values]}
        kind, op = self.take()
        if kind != "op":
            raise _bad(f"expected a comparison operator, got '{op[:20]}'")
        return {"op": "<>" if op == "!=" else op, "args": [left, self.operand()]}


def parse_filter(value: Any, lang: Any) -> Filter | None:
    """The request's ``filter`` in CQL2 JSON (text is parsed), checked against the subset."""
    if value is None or value == "":
        return None
    lang = lang or ("cql2-text" if isinstance(value, str) else "cql2-json")
    if lang not in ("cql2-text", "cql2-json"):
        raise InvalidParameter("filter-lang must be cql2-text or cql2-json", parameter="filter-lang")
    if lang == "cql2-text":
        if not isinstance(value, str) or len(value) > _MAX_TEXT:
            raise _bad(f"cql2-text must be a string of at most {_MAX_TEXT} characters")
        tree = _TextParser(value).parse()
    else:
        if not isinstance(value, dict):
            raise _bad("cql2-json must be an object")
        tree = value
    _check(tree, 0)
    return tree


def _is_literal(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and not (isinstance(value, float) and value != value)


def _operand(value: Any) -> bool:
    return _is_literal(value) or (isinstance(value, dict) and isinstance(value.get("property"), str))


def _check_comparison(op: str, args: list[Any]) -> None:
    if len(args) != 2:
        raise _bad(f"'{op}' takes two arguments")
    if op == "in":
        if not (_operand(args[0]) and isinstance(args[1], list) and all(_is_literal(v) for v in args[1])):
            raise _bad("'in' compares a property with a list of values")
    elif not (_operand(args[0]) and _operand(args[1])):
        raise _bad(f"'{op}' compares properties and plain values")


def _check(node: Any, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise _bad("nested too deeply")
    if not isinstance(node, dict) or not isinstance(node.get("args"), list):
        raise _bad("every node needs 'op' and a list 'args'")
    op, args = str(node.get("op", "")).lower(), node["args"]
    if op in ("and", "or"):
        if not args:
            raise _bad(f"'{op}' needs arguments")
        for arg in args:
            _check(arg, depth + 1)
    elif op == "not":
        if len(args) != 1:
            raise _bad("'not' takes one argument")
        _check(args[0], depth + 1)
    elif op in _COMPARISONS or op == "in":
        _check_comparison(op, args)
    else:
        raise _bad(f"operator '{str(node.get('op'))[:20]}' is not supported (and, or, not, =, <>, <, <=, >, >=, in)")


def _value(side: Any, properties: dict[str, Any]) -> Any:
    if isinstance(side, dict):
        name = side["property"]
        return properties.get(name, properties.get(name.removeprefix("properties.")))
    return side


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _compare(op: str, left: Any, right: Any) -> bool:
    """Numbers with numbers, text with text (equality ignores case, as Sentinel Hub's enum values do)."""
    if _number(left) and _number(right):
        pass
    elif isinstance(left, str) and isinstance(right, str):
        if op in ("=", "<>"):
            return (left.lower() == right.lower()) == (op == "=")
    elif left is None or right is None or type(left) is not type(right):
        return False
    elif op not in ("=", "<>"):
        return False
    if op == "=":
        return bool(left == right)
    if op == "<>":
        return bool(left != right)
    return bool({"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op])


def matches(tree: Filter | None, properties: dict[str, Any]) -> bool:
    """Whether an item with ``properties`` passes the (checked) filter."""
    if tree is None:
        return True
    op, args = str(tree["op"]).lower(), tree["args"]
    if op == "and":
        return all(matches(a, properties) for a in args)
    if op == "or":
        return any(matches(a, properties) for a in args)
    if op == "not":
        return not matches(args[0], properties)
    left = _value(args[0], properties)
    if op == "in":
        return any(_compare("=", left, v) for v in args[1])
    return _compare(op, left, _value(args[1], properties))
