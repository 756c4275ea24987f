"""Fold inference BatchNormalization into the preceding Conv or Gemm.

``y = (x - mean) * gamma / sqrt(var + eps) + beta`` is a per-channel scale and
shift: when x is a Conv/Gemm output read by nothing else, the scale goes into
the weight rows and the shift into the bias.  A BatchNormalization that cannot
be folded (after a Concat, say) stays and is lowered to vv_mul + vv_add.
"""
from __future__ import annotations

import numpy as np

from compiler.ir import Graph


def bn_scale_shift(g: Graph, node) -> tuple[np.ndarray, np.ndarray] | None:
    vals = [g.value(i) for i in node.inputs[1:5]]
    if any(v is None for v in vals):
        return None
    gamma, beta, mean, var = (v.astype(np.float64) for v in vals)
    scale = gamma / np.sqrt(var + float(node.attr("epsilon", 1e-5)))
    return scale, beta - mean * scale


def fold_batchnorm(g: Graph) -> int:
    folded = 0
    for node in list(g.nodes.values()):
        if node.op != "BatchNormalization" or node.name not in g.nodes:
            continue
        if node.attr("training_mode", 0) or len([o for o in node.outputs if o]) > 1:
            continue
        ss = bn_scale_shift(g, node)
        prev = g.producer_of(node.inputs[0])
        if ss is None or prev is None or prev.op not in ("Conv", "Gemm") or prev.epilogue:
            continue
        if len(g.consumers_of(node.inputs[0])) != 1 or node.inputs[0] in g.outputs:
            continue
        w = g.value(prev.inputs[1])
        if w is None or (prev.op == "Gemm" and not prev.attr("_canonical")):
            continue
        scale, shift = ss
        cout = w.shape[0]
        b = g.value(prev.inputs[2]) if len(prev.inputs) > 2 and prev.inputs[2] else np.zeros(cout)
        if b is None or scale.shape != (cout,):
            continue
        w2 = (w.astype(np.float64) * scale.reshape(-1, *([1] * (w.ndim - 1)))).astype(np.float32)
        b2 = (b.astype(np.float64) * scale + shift).astype(np.float32)
        wname, bname = g.fresh_name(f"{prev.name}.weight_bn"), g.fresh_name(f"{prev.name}.bias_bn")
        g.const(wname, w2)
        g.const(bname, b2)
        with g.edit(prev):
            prev.inputs = [prev.inputs[0], wname, bname]
        prev.fused.append(node.name)
        prev.proto = None
        g.bypass(node)
        folded += 1
    return folded
