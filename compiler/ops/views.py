"""Layout-only operators (Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Identity): the output is
the input's buffer read through a new element map, so they cost no instructions."""
from __future__ import annotations

import numpy as np

from compiler.chain_ir import Placement, View, standard_grid
from compiler.ir import Graph, Node
from compiler.lowering import Lowering
from compiler.ops.base import OpDef, optional_input, register


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
        grid = standard_grid(out_shape)
        if grid is not None and grid[0] * grid[1] == src.view.H * src.view.W:
            alt = Placement(View(src.view.buf, grid[0], grid[1], src.view.ct, offset=src.view.offset),
                            out_shape, lw.n, emap_=out.emap_, nonneg=src.nonneg)
            if alt.grid_slots() is not None:
                out = alt
    lw.placements[node.outputs[0]] = out


def view_reason(g: Graph, node: Node) -> str | None:
    shape = optional_input(node, 1)
    if node.op in ("Reshape", "Squeeze", "Unsqueeze") and shape is not None and g.value(shape) is None:
        return "shape must be constant"
    return None


register(*(OpDef(op, npu=view_reason, lower=lower_view, view=True, keeps_sign=True)
           for op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity")))
