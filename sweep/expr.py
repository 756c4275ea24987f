"""Constraint expressions: arithmetic and comparisons over configuration fields and derived facts.

    macs_per_cycle <= 20000
    native_dim % dpe_lanes == 0 and tile_engines * native_dim <= 2048
    weight_format in ["msfp12", "msfp16"] or latencies.mvm < 8
    max(ivrf_depth, asvrf_depth) * native_dim * 16 <= 2 ** 30

The grammar: numbers, strings, true/false, names (a configuration field, ``latencies.X`` or a derived fact),
``+ - * / // % **``, comparisons (chains allowed), ``in`` / ``not in`` a bracketed list, ``and``, ``or``,
``not``, parentheses and the functions ``min``, ``max``, ``abs`` and ``log2``.  Nothing else parses.

The text is parsed by Python's ``ast`` module (which only parses) and every node is checked against
that grammar before anything is evaluated; evaluation is a walk over the checked tree, never ``eval``.
"""
from __future__ import annotations

import ast
import math
import operator
from dataclasses import dataclass

MAX_LENGTH = 1000
MAX_EXPONENT = 256

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge,
            ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
FUNCTIONS = {"min": min, "max": max, "abs": abs, "log2": math.log2}
_CONSTANTS = {"true": True, "false": False}


class ExpressionError(ValueError):
    """Text that is not a constraint expression; the message says where and why."""


class UnknownName(KeyError):
    """A name the expression uses has no value for this point (a fact of an invalid configuration)."""


@dataclass(frozen=True)
class Expression:
    """A parsed, checked constraint.  ``names`` are the fields and facts it reads."""

    text: str
    tree: ast.Expression
    names: frozenset[str]

    def __call__(self, values: dict) -> bool:
        """True when the constraint holds for ``values`` (name -> value); :class:`UnknownName` when a name it
        reads has no value, :class:`ExpressionError` when it cannot be computed (a division by zero, a
        comparison of a string with a number)."""
        try:
            return bool(_evaluate(self.tree.body, values))
        except (TypeError, ZeroDivisionError, ValueError, OverflowError) as exc:
            raise ExpressionError(f"{self.text!r}: {exc}") from None


def parse(text: str) -> Expression:
    """Parse and check ``text``; :class:`ExpressionError` if it is outside the grammar."""
    if not isinstance(text, str):
        raise ExpressionError(f"must be a string, not {text!r}")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"{text!r}: not an expression ({exc.msg} at column {exc.offset})") from None
    except (ValueError, RecursionError, MemoryError):
        raise ExpressionError(f"{text!r}: not an expression") from None
    for node in ast.walk(tree.body):
        _check(node, text)
    return Expression(text, tree, frozenset(_names(tree.body)))


def dotted(node: ast.AST) -> str | None:
    """``latencies.mvm`` for an attribute chain over a name, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _names(node: ast.AST) -> set[str]:
    """The fields and facts an expression reads (not the functions it calls, nor true/false)."""
    name = dotted(node)
    if name is not None:
        return set() if name in _CONSTANTS else {name}
    children = node.args if isinstance(node, ast.Call) else ast.iter_child_nodes(node)
    return set().union(*(_names(c) for c in children))


def _check(node: ast.AST, text: str) -> None:
    allowed = (ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.BinOp, ast.Compare, ast.Call, ast.Name,
               ast.Attribute, ast.Constant, ast.List, ast.Tuple, ast.Load, *_BINARY, *_COMPARE, *_UNARY)
    if not isinstance(node, allowed):
        raise ExpressionError(f"{text!r}: {type(node).__name__} is not allowed in a constraint")
    if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float, str)):
        raise ExpressionError(f"{text!r}: the constant {node.value!r} is not allowed")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords or not node.args:
            raise ExpressionError(f"{text!r}: only the functions {', '.join(FUNCTIONS)} can be called, "
                                  "with positional arguments")
    if isinstance(node, ast.Attribute) and dotted(node) is None:
        raise ExpressionError(f"{text!r}: '.{node.attr}' must follow a name (as in latencies.mvm)")


def _evaluate(node: ast.AST, values: dict):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.Name, ast.Attribute)):
        name = dotted(node)
        if name in _CONSTANTS:
            return _CONSTANTS[name]
        if name not in values:
            raise UnknownName(name)
        return values[name]
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_evaluate(e, values) for e in node.elts]
    if isinstance(node, ast.BoolOp):
        result = isinstance(node.op, ast.And)
        for v in node.values:
            result = _evaluate(v, values)
            if isinstance(node.op, ast.And) and not result or isinstance(node.op, ast.Or) and result:
                return result
        return result
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_evaluate(node.operand, values))
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left, values), _evaluate(node.right, values)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ExpressionError(f"exponent {right} is larger than {MAX_EXPONENT}")
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.Compare):
        left = _evaluate(node.left, values)
        for op, comparator in zip(node.ops, node.comparators):
            right = _evaluate(comparator, values)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.Call):
        return FUNCTIONS[node.func.id](*(_evaluate(a, values) for a in node.args))
    raise AssertionError(f"unchecked node {type(node).__name__}")  # _check admits nothing else
