"""Fusion of bias, activations, BatchNormalization and residual adds into chains.

Every NPU elementwise node becomes an :class:`~compiler.ir.EpOp` list: it is
appended to the epilogue of its producer (Conv, Gemm, pools, or another
elementwise node) when that producer's result has no other reader; otherwise
it becomes a standalone ``Eltwise`` node.  The MFU stage assignment later
splits epilogues that do not fit one chain.
"""
from __future__ import annotations

import numpy as np

from compiler.ir import EpOp, Graph, Node
from compiler.passes.fold_batchnorm import bn_scale_shift

FUSE_INTO = {"Conv", "Gemm", "Eltwise", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"}
BINARY_KIND = {"Add": "add", "Sum": "add", "Sub": "sub", "Mul": "mul", "Max": "max", "Min": "min"}


def _per_channel(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, np.float64)
    return c.reshape(-1) if c.size > 1 else c.reshape(1)


def to_epilogue(g: Graph, node: Node) -> tuple[str, list[EpOp]] | None:
    """(main input, ops) of an NPU elementwise node, or None if it is not elementwise."""
    op = node.op
    x = node.inputs[0] if node.inputs else None
    if op == "Relu":
        return x, [EpOp("relu")]
    if op == "LeakyRelu":
        return x, [EpOp("lrelu", alpha=float(node.attr("alpha", 0.01)))]
    if op == "Sigmoid":
        return x, [EpOp("sigm")]
    if op == "Tanh":
        return x, [EpOp("tanh")]
    if op == "Clip":
        if g.opset < 11 or "min" in node.attrs or "max" in node.attrs:
            lo, hi = node.attr("min"), node.attr("max")
        else:
            lo = g.value(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] else None
            hi = g.value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
        ops = []
        if lo is not None and float(np.asarray(lo)) == 0.0:
            ops.append(EpOp("relu"))
        elif lo is not None:
            ops.append(EpOp("max", const=np.asarray([float(np.asarray(lo))])))
        if hi is not None:
            ops.append(EpOp("min", const=np.asarray([float(np.asarray(hi))])))
        return x, ops
    if op == "BatchNormalization":
        scale, shift = bn_scale_shift(g, node)
        return x, [EpOp("mul", const=scale), EpOp("add", const=shift)]
    if op in BINARY_KIND:
        a, b = node.inputs
        kind = BINARY_KIND[op]
        va, vb = g.value(a), g.value(b)
        if vb is not None:
            return a, [EpOp(kind, const=_per_channel(vb))]
        if va is not None:
            kind = {"sub": "rsub"}.get(kind, kind)
            return b, [EpOp(kind, const=_per_channel(va))]
        # two tensors: read the one whose producer can absorb the op, the other is the MFU operand
        pa, pb = g.producer_of(a), g.producer_of(b)
        swap = (kind != "sub" and pb is not None and _absorbs(g, pb, b)
                and not (pa is not None and _absorbs(g, pa, a)))
        if swap:
            return b, [EpOp(kind, tensor=a)]
        return a, [EpOp(kind, tensor=b)]
    return None


def _absorbs(g: Graph, producer: Node, tensor: str) -> bool:
    return (producer.target == "npu" and producer.op in FUSE_INTO and len(g.consumers_of(tensor)) == 1
            and tensor not in g.outputs)


def fuse_epilogues(g: Graph) -> int:
    fused = 0
    for node in g.topo():
        if node.target != "npu" or node.name not in g.nodes:
            continue
        ep = to_epilogue(g, node)
        if ep is None:
            continue
        x, ops = ep
        prev = g.producer_of(x)
        out = node.outputs[0]
        if prev is not None and _absorbs(g, prev, x) and prev.outputs[0] == x:
            prev.epilogue.extend(ops)
            prev.fused.append(node.name)
            g.remove(node.name)
            prev.outputs = [out] + prev.outputs[1:]
            prev.proto = None
            g.rebuild()
            fused += 1
        else:
            # the original proto stays: it is what the host would run if lowering gives the node up
            node.op, node.inputs, node.epilogue, node.attrs = "Eltwise", [x], ops, {}
            node.fused.append(node.name)
            g.rebuild()
    return fused
