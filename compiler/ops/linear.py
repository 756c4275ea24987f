"""Linear algebra: canonical Gemm on the NPU as mv_mul chains; products of two activations, Einsum and
the integer matrix products on the host.

compiler/passes/canonicalize.py turns Gemm and MatMul with a constant 2-D weight into the one form
the NPU maps: ``Gemm`` with weight [M, K] and bias [M] on a [B, K] input (an activation of higher
rank is flattened to rows first).  A MatMul left after it multiplies two activations.
"""
from __future__ import annotations

import numpy as np

from compiler.chain_ir import LoweringError, Ref
from compiler.ir import EpOp, Graph, Node
from compiler.lowering import ColGroup, Lowering, OutGrid, split_columns
from compiler.ops.base import OpDef, ct, float_shape, prod, register, weight_shape


def lower_gemm(lw: Lowering, node: Node) -> None:
    """Canonical Gemm (weight [M, K], bias [M]) on a [B, K] input."""
    n, g = lw.n, lw.g
    x = node.inputs[0]
    w = g.value(node.inputs[1]).astype(np.float32)
    bias = g.value(node.inputs[2])
    M, K = w.shape
    B = g.shape(x)[0]
    src = lw.placement(x)
    v = src.view
    mt = lw.ct(M)
    epilogue = list(node.epilogue)
    if bias is not None and np.any(bias):
        epilogue.insert(0, EpOp("add", const=np.asarray(bias, np.float64)))
    out = lw.new_grid(node.outputs[0], 1, B, mt)
    out_grid = OutGrid(1, B, mt, out.slots)
    if B == 1:
        emap = src.emap
        total = v.H * v.W * v.ct
        m = np.zeros((mt * n, total * n), np.float32)
        m[:M, emap] = w
        if v.contiguous or v.H == 1 and not v.pad[1] and not v.pad[3] and v.pitch == v.ct:
            groups = [ColGroup(c0, c, c0) for c0, c in split_columns(total, 1, lw.capacity)]
        elif v.pitch == v.ct:
            unit = v.W * v.ct
            groups = []
            for c0, c in split_columns(total, unit, lw.capacity):
                r0, nr = c0 // unit, c // unit
                groups.append(ColGroup(c0, c, r0 * v.Wp * v.ct, (unit, v.Wp * v.ct) if nr > 1 else (0, 0)))
        else:
            raise LoweringError("Gemm input is a strided view")
        read = Ref(v.buf, v.at(0, 0), 0, 0)
    else:
        slots = src.grid_slots()
        if slots is None or (v.H, v.W) != (1, B):
            raise LoweringError("batched Gemm input is not one pixel per row")
        m = np.zeros((mt * n, v.ct * n), np.float32)
        m[:M, slots] = w
        groups = [ColGroup(c0, c, c0) for c0, c in split_columns(v.ct, 1, lw.capacity)]
        read = Ref(v.buf, v.at(0, 0), 0, v.pitch)
    lw.mvm(read=read, groups=groups, matrix=m, out=out_grid, dst=out.view.pixel_ref(), epilogue=epilogue,
           name=node.name)


def gemm_reason(g: Graph, node: Node) -> str | None:
    if not node.attr("_canonical") or len(float_shape(g, node.inputs[0])) != 2:
        return "only Gemm/MatMul with constant weights (and no transA) run on the NPU"
    return None


def gemm_tiles(g: Graph, node: Node, n: int) -> int:
    w = weight_shape(g, node)
    return ct(w[0], n) * ct(w[1], n) if w is not None and len(w) == 2 else 0


def matmul_macs(g: Graph, node: Node) -> int:
    """Output elements x the reduced dimension (A's last, or its first with Gemm's transA)."""
    a = g.shape(node.inputs[0])
    k = a[-2] if node.attr("transA", 0) else a[-1]
    return prod(g.shape(node.outputs[0])) * int(k)


def einsum_macs(g: Graph, node: Node) -> int:
    """The product of every index's size (one multiply-add per point of the summation space) per
    product of two operands; ``...`` dimensions broadcast as numpy's do."""
    terms = str(node.attr("equation")).replace(" ", "").split("->")[0].split(",")
    if len(terms) < 2:
        return 0  # a transpose, trace or sum of one operand multiplies nothing
    sizes: dict[str, int] = {}
    for term, name in zip(terms, node.inputs):
        shape = g.shape(name)
        head, ell, tail = term.partition("...")
        n_ell = len(shape) - len(head) - len(tail) if ell else 0
        labels = list(head) + [f"...{n_ell - j}" for j in range(n_ell)] + list(tail)
        for label, dim in zip(labels, shape):
            sizes[label] = max(sizes.get(label, 1), int(dim))
    return (len(terms) - 1) * prod(list(sizes.values()))


register(
    OpDef("Gemm", npu=gemm_reason, lower=lower_gemm, macs=matmul_macs, tiles=gemm_tiles, absorbs=True),
    OpDef("MatMul", macs=matmul_macs,
          host_why="a product of two activations (attention's Q.K^T and .V): the NPU's weights are constants"),
    OpDef("MatMulInteger", macs=matmul_macs),
    OpDef("QLinearMatMul", macs=matmul_macs),
    OpDef("Einsum", macs=einsum_macs),
)
