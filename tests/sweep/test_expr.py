"""Constraint expressions parse into a checked tree and evaluate without eval."""
import pytest

from sweep.expr import ExpressionError, UnknownName, parse

VALUES = {"macs_per_cycle": 8192, "native_dim": 128, "dpe_lanes": 16, "tile_engines": 4, "latencies.mvm": 8,
          "weight_format": "msfp16", "clock_mhz": 300.0}


@pytest.mark.parametrize("text,expected", [
    ("macs_per_cycle <= 20000", True),
    ("macs_per_cycle > 20000", False),
    ("native_dim % dpe_lanes == 0 and tile_engines * native_dim <= 1024", True),
    ("128 <= native_dim < 256", True),
    ("weight_format in ['msfp12', 'msfp16']", True),
    ("weight_format not in ['msfp12']", True),
    ("latencies.mvm < 8 or not (clock_mhz > 250)", False),
    ("max(native_dim, 2 ** 10) == 1024 and log2(native_dim) == 7 and abs(-3) == 3", True),
    ("native_dim / dpe_lanes // 2 == 4 and -native_dim + 1 < 0", True),
    ("true and not false", True),
])
def test_expressions_evaluate(text, expected):
    assert parse(text)(VALUES) is expected


def test_names_are_the_fields_and_facts_read():
    e = parse("max(native_dim, latencies.mvm) <= macs_per_cycle and true")
    assert e.names == {"native_dim", "latencies.mvm", "macs_per_cycle"}


@pytest.mark.parametrize("text,message", [
    ("__import__('os').system('true')", "only the functions"),
    ("native_dim.__class__", None),  # parses as a dotted name, which no configuration has
    ("(lambda: 1)()", "only the functions"),
    ("[x for x in range(3)]", "ListComp is not allowed"),
    ("native_dim[0]", "Subscript is not allowed"),
    ("a if b else c", "IfExp is not allowed"),
    ("open(x)", "only the functions"),
    ("max(a, key=b)", "only the functions"),
    ("native_dim <=", "not an expression"),
    ("x := 3", "not an expression"),
    ("None == native_dim", "not allowed"),
    ("1" * 2000, "longer than"),
])
def test_anything_else_is_rejected(text, message):
    if message is None:
        with pytest.raises(UnknownName):
            parse(text)(VALUES)
        return
    with pytest.raises(ExpressionError, match=message):
        parse(text)


def test_evaluation_errors_are_expression_errors():
    with pytest.raises(ExpressionError, match="division by zero"):
        parse("native_dim / (tile_engines - 4) > 1")(VALUES)
    with pytest.raises(ExpressionError, match="larger than"):
        parse("2 ** 100000 > 1")(VALUES)
    with pytest.raises(ExpressionError):
        parse("weight_format < 3")(VALUES)
    with pytest.raises(UnknownName):
        parse("peak_tops > 1")({})
