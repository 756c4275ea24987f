"""Exporter idioms of the activation unit's functions, fused into one node each.

PyTorch and HuggingFace export GELU as ``0.5 * x * (1 + Erf(x / sqrt 2))`` (before opset 20) or, in its
tanh form, as ``0.5 * x * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 * Pow(x, 3))))``; SiLU/swish as
``Mul(x, Sigmoid(x))`` and Keras's hard swish as ``Mul(x, HardSigmoid(x))``.  Each becomes one node the
NPU runs as one MFU activation (compiler/ops/eltwise.py): ``Gelu`` (``approximate`` "none" or "tanh"),
``QuickGelu`` with ``alpha`` 1 (x * sigmoid(x)) and ``HardSwish``.  A fused node keeps, for the host,
an ONNX node onnxruntime runs: its com.microsoft contrib operator (Gelu, FastGelu, QuickGelu) or the
standard HardSwish.  Only nodes whose intermediate results have no other reader are fused.
"""
from __future__ import annotations

import math

import numpy as np
from onnx import helper

from compiler.ir import Graph, Node

CONTRIB = "com.microsoft"


def _scalar(g: Graph, t: str) -> float | None:
    v = g.value(t) if t else None
    if v is None or v.size != 1 or v.dtype.kind != "f":
        return None
    return float(np.asarray(v).reshape(-1)[0])


def _near(value: float | None, want: float, tol: float = 1e-3) -> bool:
    return value is not None and abs(value - want) <= tol * abs(want)


def _only_reader(g: Graph, t: str) -> Node | None:
    """The one node reading ``t`` (once, as an input), when ``t`` is not a graph output."""
    users = g.consumers_of(t)
    if len(users) != 1 or t in g.outputs or users[0].epilogue:
        return None
    return users[0]


def _other(node: Node, t: str) -> str | None:
    """The other input of a two-input node that reads ``t`` once."""
    if len(node.inputs) != 2 or node.inputs.count(t) != 1:
        return None
    return node.inputs[1] if node.inputs[0] == t else node.inputs[0]


def _half_x_times(g: Graph, x: str, u: str) -> tuple[list[Node], Node] | None:
    """``0.5 * x * u`` from the readers of ``u``, in any association: (intermediate nodes, final node)."""
    c1 = _only_reader(g, u)
    if c1 is None or c1.op != "Mul":
        return None
    o = _other(c1, u)
    if o == x:  # (x * u) * 0.5
        c2 = _only_reader(g, c1.outputs[0])
        if c2 is not None and c2.op == "Mul" and _near(_scalar(g, _other(c2, c1.outputs[0])), 0.5):
            return [c1], c2
        return None
    if _near(_scalar(g, o), 0.5):  # x * (u * 0.5)
        c2 = _only_reader(g, c1.outputs[0])
        if c2 is not None and c2.op == "Mul" and _other(c2, c1.outputs[0]) == x:
            return [c1], c2
        return None
    h = g.producer_of(o) if o else None  # (x * 0.5) * u
    if h is not None and h.op == "Mul" and _other(h, x) is not None and _near(_scalar(g, _other(h, x)), 0.5):
        extra = [h] if _only_reader(g, h.outputs[0]) is c1 else []
        return extra, c1
    return None


def _plus_one(g: Graph, t: str) -> Node | None:
    add = _only_reader(g, t)
    if add is not None and add.op == "Add" and _near(_scalar(g, _other(add, t)), 1.0):
        return add
    return None


def _gelu_erf(g: Graph, erf: Node):
    d = g.producer_of(erf.inputs[0])
    if d is None or _only_reader(g, d.outputs[0]) is not erf:
        return None
    if d.op == "Div" and _near(_scalar(g, d.inputs[1]), math.sqrt(2.0)):
        x = d.inputs[0]
    elif d.op == "Mul" and any(_near(_scalar(g, i), 1 / math.sqrt(2.0)) for i in d.inputs):
        x = next(i for i in d.inputs if not _near(_scalar(g, i), 1 / math.sqrt(2.0)))
    else:
        return None
    add = _plus_one(g, erf.outputs[0])
    tail = add and _half_x_times(g, x, add.outputs[0])
    if not tail:
        return None
    return x, [d, erf, add, *tail[0]], tail[1]


def _gelu_tanh(g: Graph, tanh: Node):
    scale = g.producer_of(tanh.inputs[0])
    if scale is None or scale.op != "Mul" or _only_reader(g, scale.outputs[0]) is not tanh:
        return None
    k = [i for i in scale.inputs if _near(_scalar(g, i), math.sqrt(2.0 / math.pi))]
    if len(k) != 1:
        return None
    s = g.producer_of(_other(scale, k[0]) or "")
    if s is None or s.op != "Add" or _only_reader(g, s.outputs[0]) is not scale or len(s.inputs) != 2:
        return None
    for x, cubic in (s.inputs, s.inputs[::-1]):
        m = g.producer_of(cubic)
        if m is None or m.op != "Mul" or _only_reader(g, cubic) is not s:
            continue
        c = [i for i in m.inputs if _near(_scalar(g, i), 0.044715)]
        p = g.producer_of(_other(m, c[0]) or "") if len(c) == 1 else None
        if p is None or p.op != "Pow" or p.inputs[0] != x or not _near(_scalar(g, p.inputs[1]), 3.0) \
                or _only_reader(g, p.outputs[0]) is not m:
            continue
        add = _plus_one(g, tanh.outputs[0])
        tail = add and _half_x_times(g, x, add.outputs[0])
        if tail:
            return x, [p, m, s, scale, tanh, add, *tail[0]], tail[1]
    return None


def _times_self(g: Graph, mul: Node):
    """``Mul(x, Sigmoid(x))`` -> swish, ``Mul(x, HardSigmoid(x))`` (1/6, 1/2) -> hardswish."""
    if len(mul.inputs) != 2:
        return None
    for x, s in (mul.inputs, mul.inputs[::-1]):
        p = g.producer_of(s)
        if p is None or p.inputs[:1] != [x] or p.domain not in ("", "ai.onnx"):
            continue
        if p.op == "Sigmoid" or (p.op == "HardSigmoid" and _near(p.attr("alpha", 0.2), 1 / 6)
                                 and _near(p.attr("beta", 0.5), 0.5)):
            alone = _only_reader(g, s) is mul
            return x, [p] if alone else [], mul, "QuickGelu" if p.op == "Sigmoid" else "HardSwish"
    return None


def _replace(g: Graph, x: str, dead: list[Node], last: Node, op: str, attrs: dict, host) -> None:
    for n in dead:
        if n.name in g.nodes:
            g.remove(n.name)
    out = last.outputs[0]
    name = last.name
    g.remove(name)
    node = Node(name, op, [x], [out], attrs, "", proto=host(x, out, name),
                fused=[n.name for n in dead] + [name])
    g.add(node)


def fuse_activations(g: Graph) -> int:
    """Fuse the idioms in the module docstring; returns how many were fused."""
    # the op a pattern ends on -> (its matcher, the fused op and attributes, the host's contrib op)
    gelus = {"Erf": (_gelu_erf, {"approximate": "none"}, "Gelu"), "Tanh": (_gelu_tanh, {"approximate": "tanh"},
                                                                            "FastGelu")}
    fused = 0
    for node in list(g.nodes.values()):
        if node.name not in g.nodes or node.domain not in ("", "ai.onnx"):
            continue
        if node.op in gelus:
            match, attrs, contrib = gelus[node.op]
            hit = match(g, node)
            if hit:
                x, dead, last = hit
                _replace(g, x, dead, last, "Gelu", attrs,
                         lambda x, y, n, op=contrib: helper.make_node(op, [x], [y], name=n, domain=CONTRIB))
                fused += 1
        elif node.op == "Mul":
            hit = _times_self(g, node)
            if hit:
                x, dead, last, op = hit
                if op == "QuickGelu":
                    _replace(g, x, dead, last, op, {"alpha": 1.0},
                             lambda x, y, n: helper.make_node("QuickGelu", [x], [y], name=n, domain=CONTRIB,
                                                              alpha=1.0))
                else:
                    _replace(g, x, dead, last, op, {}, lambda x, y, n: helper.make_node("HardSwish", [x], [y], name=n))
                fused += 1
    if fused and any(n.proto is not None and n.proto.domain == CONTRIB for n in g.nodes.values()):
        g.onnx_opsets.setdefault(CONTRIB, 1)
    return fused
