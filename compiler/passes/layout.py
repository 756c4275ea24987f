"""Layout: NCHW tensors become pixel-major native vectors.

A tensor on the NPU is a grid of pixels, each ``Ct = ceil(C / N)`` native
vectors (pixel (y, x), tile t at ``((y + pt) * Wp + x + pl) * Ct + t``).  This
pass decides, for every tensor a windowed operation reads, how much padding
its buffer needs on each side and what the padding holds (0, or -inf before a
MaxPool whose input may be negative), so producers write straight into the
interior of their consumer's padded buffer.
"""
from __future__ import annotations

from compiler.ir import Graph
from compiler.lowering.core import NEG_INF, PadReq


def nonnegative(g: Graph, tensor: str, depth: int = 0) -> bool:
    """True when the tensor provably holds no negative values (Relu/Sigmoid outputs, pools of them)."""
    p = g.producer_of(tensor)
    if p is None or p.target != "npu" or depth > 20:
        return False
    if p.epilogue:
        last = p.epilogue[-1].kind
        if last in ("relu", "sigm"):
            return True
        return False
    if p.op in ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Reshape", "Flatten",
                "Transpose", "Squeeze", "Unsqueeze", "Identity"):
        return nonnegative(g, p.inputs[0], depth + 1)
    if p.op == "Concat":
        return all(nonnegative(g, i, depth + 1) for i in p.inputs)
    return False


def plan_padding(g: Graph) -> dict[str, PadReq]:
    from compiler.lowering.conv import conv_params, needed_pad
    from compiler.lowering.pool import pool_params

    reqs: dict[str, PadReq] = {}
    for node in g.nodes.values():
        if node.target != "npu" or node.op not in ("Conv", "MaxPool", "AveragePool"):
            continue
        x = node.inputs[0]
        shape = g.shape(x)
        if node.op == "Conv":
            p = conv_params(node, shape, g.value(node.inputs[1]).shape)
            fill = 0.0
        else:
            p = pool_params(node, shape)
            fill = NEG_INF if node.op == "MaxPool" and not nonnegative(g, x) else 0.0
        reqs.setdefault(x, PadReq()).merge(needed_pad(p), fill)
    return reqs
