"""Channel concatenation: a prefix view of a concatenation group's shared buffer
(compiler/passes/layout.py plans the groups), else one copy chain per part."""
from __future__ import annotations

import numpy as np

from compiler.chain_ir import ChainSpec, LoweringError, Placement, View, standard_grid
from compiler.ir import Graph, Node
from compiler.lowering import Lowering
from compiler.ops.base import OpDef, grid_ok, register


def lower_concat(lw: Lowering, node: Node) -> None:
    """Channel concatenation: a prefix view of its group's shared buffer, else one copy chain per part
    (every part keeping whole tiles)."""
    shape = lw.g.shape(node.outputs[0])
    gid = lw.concat_plan["concats"].get(node.name)
    if gid is not None:
        g = lw.group_buffers.get(gid)
        if g is None or any(t not in lw.placements or lw.placements[t].view.buf is not g.buf for t in node.inputs):
            raise LoweringError("concatenation parts were produced outside this segment")
        C = shape[1]
        view = View(g.buf, g.H, g.W, lw.ct(C), g.pad, g.pitch, 0)
        out = Placement(view, tuple(shape), lw.n, slots=np.arange(C))
        out.nonneg = all(lw.placement(t).nonneg for t in node.inputs)
        lw.placements[node.outputs[0]] = out
        return
    parts = [lw.placement(t) for t in node.inputs]
    grid = standard_grid(tuple(shape))
    axis = node.attr("axis", 1) % len(shape)
    chan_axis = 1 if len(shape) in (3, 4) and shape[0] == 1 and len(shape) == 4 else len(shape) - 1
    if len(shape) == 3 and shape[0] == 1:
        chan_axis = 1
    if grid is None or axis != chan_axis:
        raise LoweringError("Concat along a non-channel axis")
    H, W, _ = grid
    slots, ct = [], 0
    for p in parts:
        s = p.grid_slots()
        if s is None or (p.view.H, p.view.W) != (H, W):
            raise LoweringError("Concat part is not in grid form")
        slots.append(s + ct * lw.n)
        ct += p.view.ct
    out = lw.new_grid(node.outputs[0], H, W, ct, shape=shape, slots=np.concatenate(slots))
    t0 = 0
    for p in parts:
        v = p.view
        lw.chain(ChainSpec(v.pixel_ref(), v.ct, (H, W), writes=[out.view.pixel_ref().shifted(t0)]))
        t0 += v.ct
    out.nonneg = all(p.nonneg for p in parts)



def concat_reason(g: Graph, node: Node) -> str | None:
    return None if grid_ok(g.shape(node.outputs[0])) else "unsupported rank"


register(OpDef("Concat", npu=concat_reason, lower=lower_concat, keeps_sign=True))
