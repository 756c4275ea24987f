"""Elementwise chains, Concat copies and layout-only views (Reshape, Flatten, Transpose, ...)."""
from __future__ import annotations

import numpy as np

from compiler.ir import Node
from compiler.kernels import ChainSpec, LoweringError, Placement
from compiler.lowering.core import Lowering, OutGrid


def lower_eltwise(lw: Lowering, node: Node) -> None:
    """``Eltwise`` (made by the fusion pass): v_rd x -> epilogue ops -> v_wr, walking every pixel."""
    src = lw.placement(node.inputs[0])
    v = src.view
    needs_grid = any(op.tensor is not None or (op.const is not None and np.asarray(op.const).size > 1)
                     for op in node.epilogue)
    slots = src.grid_slots()
    if needs_grid and slots is None:
        raise LoweringError("per-channel operand on a tensor that is not in grid form")
    out_shape = lw.g.shape(node.outputs[0])
    if slots is not None:
        out = lw.new_grid(node.outputs[0], v.H, v.W, v.ct, shape=out_shape, slots=slots)
    else:
        out = lw.new_grid(node.outputs[0], v.H, v.W, v.ct, shape=out_shape, slots=np.zeros(0, np.int64))
        out.slots = None
        out.emap_ = src.emap
    grid = OutGrid(v.H, v.W, v.ct, slots if slots is not None else np.arange(v.ct * lw.n))
    spec = ChainSpec(v.pixel_ref(), v.ct, (v.H, v.W))
    lw.finish(spec, lw.assign(node.epilogue + lw.merge_ops(node.outputs[0])), 0, v.ct, grid,
              [out.view.pixel_ref()])
    out.nonneg = bool(node.epilogue) and node.epilogue[-1].kind in ("relu", "sigm")


def lower_concat(lw: Lowering, node: Node) -> None:
    """Channel concatenation: a prefix view of its group's shared buffer, else one copy chain per part
    (every part keeping whole tiles)."""
    shape = lw.g.shape(node.outputs[0])
    gid = lw.concat_plan["concats"].get(node.name)
    if gid is not None:
        g = lw.group_buffers.get(gid)
        if g is None or any(t not in lw.placements or lw.placements[t].view.buf is not g.buf for t in node.inputs):
            raise LoweringError("concatenation parts were produced outside this segment")
        from compiler.kernels import View

        C = shape[1]
        view = View(g.buf, g.H, g.W, lw.ct(C), g.pad, g.pitch, 0)
        out = Placement(view, tuple(shape), lw.n, slots=np.arange(C))
        out.nonneg = all(lw.placement(t).nonneg for t in node.inputs)
        lw.placements[node.outputs[0]] = out
        return
    parts = [lw.placement(t) for t in node.inputs]
    from compiler.kernels import standard_grid

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


def lower_view(lw: Lowering, node: Node) -> None:
    """Reshape/Flatten/Squeeze/Unsqueeze/Transpose/Identity: same buffer, new element map."""
    src = lw.placement(node.inputs[0])
    in_shape = tuple(lw.g.shape(node.inputs[0]))
    out_shape = tuple(lw.g.shape(node.outputs[0]))
    emap = src.emap
    if node.op == "Transpose":
        perm = node.attr("perm") or list(reversed(range(len(in_shape))))
        emap = emap.reshape(in_shape).transpose(perm).ravel()
    out = Placement(src.view, out_shape, lw.n, emap_=np.ascontiguousarray(emap), nonneg=src.nonneg)
    if out.grid_slots() is None and src.view.contiguous:
        # an unpadded buffer can be re-read as whatever pixel grid the new shape has
        from compiler.kernels import View, standard_grid

        grid = standard_grid(out_shape)
        if grid is not None and grid[0] * grid[1] == src.view.H * src.view.W:
            alt = Placement(View(src.view.buf, grid[0], grid[1], src.view.ct, offset=src.view.offset),
                            out_shape, lw.n, emap_=out.emap_, nonneg=src.nonneg)
            if alt.grid_slots() is not None:
                out = alt
    lw.placements[node.outputs[0]] = out
