"""Pooling as MFU passes over the kernel taps.

MaxPool: the first tap is copied into an accumulator in ASVRF 0, every
other tap is a ``vv_max`` pass, the last one writes the result (inputs that
may be negative get a -inf padding ring).  AveragePool: ``vv_add`` passes and
a ``vv_mul`` by 1/k.  GlobalAveragePool: one pass per input row into a row
accumulator, one per column into the result, then 1/(H*W).
"""
from __future__ import annotations

import numpy as np

from compiler.attrs import window
from compiler.chain_ir import ChainOp, ChainSpec, LoweringError, Ref, channel_vector
from compiler.ir import EpOp, Graph, Node
from compiler.lowering import NEG_INF, Lowering, OutGrid
from compiler.ops.base import OpDef, float_shape, nonnegative, register
from compiler.ops.conv import conv_params, needed_pad
from npu.isa import Space


def pool_params(node: Node, in_shape) -> dict:
    a = window(node)
    kh, kw = a.kernel
    p = conv_params(node, in_shape, (0, 0, kh, kw))
    if a.ceil_mode:
        H, W = in_shape[2], in_shape[3]
        pads = p["pads"]
        oh = -(-(H + pads[0] + pads[2] - ((kh - 1) * p["dh"] + 1)) // p["sh"]) + 1
        ow = -(-(W + pads[1] + pads[3] - ((kw - 1) * p["dw"] + 1)) // p["sw"]) + 1
        # the last window must start inside the (left-padded) input
        if (oh - 1) * p["sh"] >= H + pads[0]:
            oh -= 1
        if (ow - 1) * p["sw"] >= W + pads[1]:
            ow -= 1
        p["oh"], p["ow"] = oh, ow
    return p


def _grid_input(lw: Lowering, node: Node):
    src = lw.placement(node.inputs[0])
    slots = src.grid_slots()
    if slots is None:
        raise LoweringError("pooling input is not in grid form")
    return src, slots


def lower_pool(lw: Lowering, node: Node) -> None:
    src, slots = _grid_input(lw, node)
    v = src.view
    p = pool_params(node, lw.g.shape(node.inputs[0]))
    t, l, b, r = needed_pad(p)
    if v.pad[0] < t or v.pad[1] < l or v.pad[2] < b or v.pad[3] < r:
        raise LoweringError(f"input buffer padding {v.pad} is smaller than the {(t, l, b, r)} the window needs")
    is_max = node.op == "MaxPool"
    kh, kw = p["kh"], p["kw"]
    req = lw.pads.get(node.inputs[0])
    if is_max and any(needed_pad(p)) and not nonnegative(lw.g, node.inputs[0]) and \
            (req is None or req.fill != NEG_INF):
        raise LoweringError("MaxPool padding must read as -inf, but another reader of its input needs zeros")
    # windows that count fewer than kh*kw inputs: padding excluded from the count, or (ceil_mode)
    # windows hanging over the padded input
    include = window(node).count_include_pad
    rescale = not is_max and (any(needed_pad(p)) if not include else any(
        a > b for a, b in zip(needed_pad(p)[2:], p["pads"][2:])))
    if rescale and (node.epilogue or node.outputs[0] in lw.concat_plan["parts"]):
        raise LoweringError("AveragePool with partial windows and fused operations")
    oh, ow, ct = p["oh"], p["ow"], v.ct
    out = lw.new_grid(node.outputs[0], oh, ow, ct, slots=slots)
    out.nonneg = src.nonneg
    grid = OutGrid(oh, ow, ct, slots)
    taps = [(ky * p["dh"], kx * p["dw"]) for ky in range(kh) for kx in range(kw)]
    base = v.at(-p["pads"][0], -p["pads"][1])
    so, si = p["sh"] * v.Wp * v.pitch, p["sw"] * v.pitch

    def tap_ref(k):
        dy, dx = taps[k]
        return Ref(v.buf, base + (dy * v.Wp + dx) * v.pitch, so, si)

    epilogue = list(node.epilogue) + lw.merge_ops(node.outputs[0])
    if not is_max:
        epilogue.insert(0, EpOp("mul", const=np.array([1.0 / (kh * kw)])))
    dst = out.view.pixel_ref()
    if len(taps) == 1:
        lw.finish(ChainSpec(tap_ref(0), ct, (oh, ow)), lw.assign(epilogue), 0, ct, grid, [dst])
        return
    acc = lw.buffer(f"{node.name}.acc", oh * ow * ct, Space.ASVRF, 0)
    aref = Ref(acc, 0, ow * ct, ct)
    op = "vv_max" if is_max else "vv_add"
    lw.chain(ChainSpec(tap_ref(0), ct, (oh, ow), writes=[aref]))
    for k in range(1, len(taps) - 1):
        lw.chain(ChainSpec(tap_ref(k), ct, (oh, ow), ops=[ChainOp(op, 0, aref)], writes=[aref]))
    spec = ChainSpec(tap_ref(len(taps) - 1), ct, (oh, ow))
    lw.finish(spec, lw.assign(epilogue, start=1), 0, ct, grid, [dst], prefix=[ChainOp(op, 0, aref)])
    if rescale:
        _rescale_border(lw, p, out, slots, lw.g.shape(node.inputs[0]), include)


def _rescale_border(lw: Lowering, p: dict, out, slots, in_shape, include_pad: bool) -> None:
    """A window's count is (rows inside) x (columns inside) -- of the input, or of the padded input
    with count_include_pad -- so the 1/(kh*kw) average is corrected row by row and column by column
    (corners get both factors)."""
    H, W = in_shape[2], in_shape[3]
    v = out.view
    pt, pl, pb, pr = p["pads"]

    def inside(o, stride, pad, k, dil, size, after):
        lo, hi = (-pad, size + after) if include_pad else (0, size)
        return sum(lo <= o * stride - pad + j * dil < hi for j in range(k))

    def scale(ref, iters, factor):
        vec = channel_vector(np.full(len(slots), factor), slots, v.ct, lw.n)
        lw.chain(ChainSpec(ref, v.ct, iters, ops=[ChainOp("vv_mul", 0, Ref(lw.const(vec, Space.MULVRF, 0)))],
                           writes=[ref]))

    for y in range(p["oh"]):
        c = inside(y, p["sh"], pt, p["kh"], p["dh"], H, pb)
        if c and c != p["kh"]:
            scale(Ref(v.buf, v.at(y, 0), 0, v.pitch), (1, p["ow"]), p["kh"] / c)
    for x in range(p["ow"]):
        c = inside(x, p["sw"], pl, p["kw"], p["dw"], W, pr)
        if c and c != p["kw"]:
            scale(Ref(v.buf, v.at(0, x), v.Wp * v.pitch, 0), (p["oh"], 1), p["kw"] / c)


def lower_global_pool(lw: Lowering, node: Node) -> None:
    src, slots = _grid_input(lw, node)
    v = src.view
    ct = v.ct
    is_max = node.op == "GlobalMaxPool"
    op = "vv_max" if is_max else "vv_add"
    out = lw.new_grid(node.outputs[0], 1, 1, ct, slots=slots)
    out.nonneg = src.nonneg
    grid = OutGrid(1, 1, ct, slots)
    epilogue = list(node.epilogue)
    if not is_max:
        epilogue.insert(0, EpOp("mul", const=np.array([1.0 / (v.H * v.W)])))
    dst = [out.view.pixel_ref()]
    if v.H * v.W == 1:
        lw.finish(ChainSpec(v.pixel_ref(), ct, (1, 1)), lw.assign(epilogue), 0, ct, grid, dst)
        return
    # rows: accumulate row y of the input into a W-pixel accumulator
    if v.H > 1:
        accw = lw.buffer(f"{node.name}.row", v.W * ct, Space.ASVRF, 0)
        aref = Ref(accw, 0, 0, ct)
        row = lambda y: Ref(v.buf, v.at(y, 0), 0, v.pitch)
        lw.chain(ChainSpec(row(0), ct, (1, v.W), writes=[aref]))
        for y in range(1, v.H):
            lw.chain(ChainSpec(row(y), ct, (1, v.W), ops=[ChainOp(op, 0, aref)], writes=[aref]))
        col = lambda x: Ref(accw, x * ct, 0, 0)
    else:
        col = lambda x: Ref(v.buf, v.at(0, x), 0, 0)
    if v.W == 1:
        lw.finish(ChainSpec(col(0), ct, (1, 1)), lw.assign(epilogue), 0, ct, grid, dst)
        return
    acc = lw.buffer(f"{node.name}.acc", ct, Space.ASVRF, 0)
    aref = Ref(acc, 0, 0, 0)
    lw.chain(ChainSpec(col(0), ct, (1, 1), writes=[aref]))
    for x in range(1, v.W - 1):
        lw.chain(ChainSpec(col(x), ct, (1, 1), ops=[ChainOp(op, 0, aref)], writes=[aref]))
    spec = ChainSpec(col(v.W - 1), ct, (1, 1))
    lw.finish(spec, lw.assign(epilogue, start=1), 0, ct, grid, dst, prefix=[ChainOp(op, 0, aref)])


# ---------------------------------------------------------------------- records
def pool_reason(g: Graph, node: Node) -> str | None:
    shape = float_shape(g, node.inputs[0])
    if len(shape) != 4 or shape[0] != 1:
        return "only 2-D pooling with batch 1 runs on the NPU"
    if node.attr("storage_order", 0) or len([o for o in node.outputs if o]) > 1:
        return "MaxPool indices output"
    return None


def global_pool_reason(g: Graph, node: Node) -> str | None:
    shape = float_shape(g, node.inputs[0])
    return "only batch 1 runs on the NPU" if len(shape) != 4 or shape[0] != 1 else None


def pool_window(g: Graph, node: Node):
    """MaxPool's padding reads as -inf unless its input is provably nonnegative (then zeros will do)."""
    x = node.inputs[0]
    fill = NEG_INF if node.op == "MaxPool" and not nonnegative(g, x) else 0.0
    return needed_pad(pool_params(node, g.shape(x))), fill


register(
    *(OpDef(op, npu=pool_reason, lower=lower_pool, window=pool_window, absorbs=True, keeps_sign=True,
            concat_part=True) for op in ("MaxPool", "AveragePool")),
    *(OpDef(op, npu=global_pool_reason, lower=lower_global_pool, absorbs=True, keeps_sign=True)
      for op in ("GlobalAveragePool", "GlobalMaxPool")),
)
