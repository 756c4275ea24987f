"""Bring linear layers to one form: Gemm with a constant weight [out, in] and bias [out].

Gemm (transA=0, constant B and C) and MatMul with a 2-D constant right operand
become ``Gemm`` with ``transB=1``, alpha folded into the weight and beta into
the bias, so later passes (BatchNorm folding, lowering) see one layout.
"""
from __future__ import annotations

import numpy as np

from compiler.ir import Graph


def canonicalize_linear(g: Graph) -> int:
    changed = 0
    for node in list(g.nodes.values()):
        if node.op == "Gemm":
            if node.attr("transA", 0) or g.value(node.inputs[1]) is None:
                continue
            if node.attr("_canonical"):
                continue
            w = g.value(node.inputs[1]).astype(np.float32)
            if node.attr("transB", 0) == 0:
                w = w.T
            w = w * np.float32(node.attr("alpha", 1.0))
            m = w.shape[0]
            c = g.value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else np.zeros(m, np.float32)
            if c is None:
                continue
            c = np.asarray(c, np.float32) * np.float32(node.attr("beta", 1.0))
            if c.size == 1:
                c = np.full(m, c.reshape(-1)[0], np.float32)
            elif c.shape not in ((m,), (1, m)):
                continue
        elif node.op == "MatMul":
            w = g.value(node.inputs[1])
            shape = g.shape(node.inputs[0])
            if w is None or w.ndim != 2 or shape is None or len(shape) != 2:
                continue
            w = w.astype(np.float32).T
            c = np.zeros(w.shape[0], np.float32)
        else:
            continue
        wname = g.fresh_name(f"{node.name}.weight")
        g.const(wname, np.ascontiguousarray(w))
        bname = g.fresh_name(f"{node.name}.bias")
        g.const(bname, c.reshape(-1))
        node.op = "Gemm"
        node.inputs = [node.inputs[0], wname, bname]
        node.attrs = {"transB": 1, "_canonical": 1}
        node.proto = None
        changed += 1
    g.rebuild()
    return changed
