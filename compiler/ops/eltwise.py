"""Elementwise operators: activations, binary arithmetic with a tensor or a per-channel constant,
inference BatchNormalization, and ``Eltwise``, the node they become.

Each elementwise operator is a list of :class:`~compiler.ir.EpOp` on one input (its ``epilogue``):
compiler/passes/fuse_epilogues.py appends it to the chain that produces that input or, when it
cannot, turns the node into an ``Eltwise`` that reads the input and applies the ops.
"""
from __future__ import annotations

import numpy as np

from compiler.chain_ir import ChainSpec, LoweringError, standard_grid
from compiler.ir import EpOp, Graph, Node
from compiler.lowering import Lowering, OutGrid
from compiler.ops.base import OpDef, always, float_shape, grid_ok, optional_input, producer_absorbs, register
from compiler.passes.fold_batchnorm import bn_scale_shift


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


# ---------------------------------------------------------------------- NPU checks
def unary_reason(g: Graph, node: Node) -> str | None:
    if not grid_ok(float_shape(g, node.inputs[0])):
        return "unsupported rank"
    return None


def clip_reason(g: Graph, node: Node) -> str | None:
    lo, hi = optional_input(node, 1), optional_input(node, 2)
    if (lo and g.value(lo) is None) or (hi and g.value(hi) is None):
        return "Clip bounds must be constants"
    return unary_reason(g, node)


def binary_reason(g: Graph, node: Node) -> str | None:
    if len(node.inputs) != 2:
        return "only two-input Sum runs on the NPU"
    a, b = node.inputs
    sa, sb = g.shape(a), g.shape(b)
    if sa is None or sb is None:
        return "unknown operand shape"
    va, vb = g.value(a), g.value(b)
    if va is None and vb is None:
        if tuple(sa) != tuple(sb):
            return "broadcasting between two tensors"
    else:
        c, t = (va, sb) if va is not None else (vb, sa)
        if not _const_broadcast_ok(c, t):
            return "constant operand is neither a scalar nor per-channel"
    if not grid_ok(g.shape(node.outputs[0])):
        return "unsupported rank"
    return None


def _const_broadcast_ok(c: np.ndarray, shape) -> bool:
    if c.size == 1:
        return True
    grid = standard_grid(tuple(shape))
    if grid is None:
        return False
    C = grid[2]
    if c.size != C:
        return False
    # per-channel: [C,1,1] / [1,C,1,1] for NCHW, [C] / [1,C] for [B, C]
    dims = [d for d in c.shape]
    if len(shape) == 4:
        return len(dims) >= 3 and dims[-3] == C and all(d == 1 for d in dims[-2:])
    return dims[-1] == C


def batchnorm_reason(g: Graph, node: Node) -> str | None:
    if any(g.value(i) is None for i in node.inputs[1:5]) or len([o for o in node.outputs if o]) > 1:
        return "BatchNormalization needs constant statistics (inference mode)"
    return unary_reason(g, node)


# ---------------------------------------------------------------------- as MFU operations
def _per_channel(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, np.float64)
    return c.reshape(-1) if c.size > 1 else c.reshape(1)


def unary(kind: str):
    """The epilogue of an activation that is one MFU op."""
    def epilogue(g: Graph, node: Node):
        return node.inputs[0], [EpOp(kind)]
    return epilogue


def neg(g: Graph, node: Node):
    return node.inputs[0], [EpOp("mul", const=np.array([-1.0]))]


def leaky_relu(g: Graph, node: Node):
    return node.inputs[0], [EpOp("lrelu", alpha=float(node.attr("alpha", 0.01)))]


def clip(g: Graph, node: Node):
    if g.opset < 11 or "min" in node.attrs or "max" in node.attrs:
        lo, hi = node.attr("min"), node.attr("max")
    else:
        lo, hi = (g.value(t) if t else None for t in (optional_input(node, 1), optional_input(node, 2)))
    ops = []
    if lo is not None and float(np.asarray(lo)) == 0.0:
        ops.append(EpOp("relu"))
    elif lo is not None:
        ops.append(EpOp("max", const=np.asarray([float(np.asarray(lo))])))
    if hi is not None:
        ops.append(EpOp("min", const=np.asarray([float(np.asarray(hi))])))
    return node.inputs[0], ops


def hard_sigmoid(g: Graph, node: Node):
    """clip(alpha x + beta, 0, 1) = hsigm(z) with z = 6 alpha x + 6 beta - 3 (hsigm is PyTorch's 1/6, 1/2)."""
    alpha, beta = float(node.attr("alpha", 0.2)), float(node.attr("beta", 0.5))
    if np.float32(alpha) == np.float32(1 / 6) and beta == 0.5:
        return node.inputs[0], [EpOp("hsigm")]
    return node.inputs[0], [EpOp("mul", const=np.array([6 * alpha])), EpOp("add", const=np.array([6 * beta - 3])),
                            EpOp("hsigm")]


def gelu(g: Graph, node: Node):
    return node.inputs[0], [EpOp("gelut" if node.attr("approximate", "none") == "tanh" else "gelu")]


def quick_gelu_reason(g: Graph, node: Node) -> str | None:
    if float(node.attr("alpha", 1.702)) != 1.0:
        return "QuickGelu runs on the NPU only as swish (alpha 1)"
    return unary_reason(g, node)


def batchnorm(g: Graph, node: Node):
    scale, shift = bn_scale_shift(g, node)
    return node.inputs[0], [EpOp("mul", const=scale), EpOp("add", const=shift)]


def binary(kind: str):
    """The epilogue of a two-input op: a constant operand, or a tensor the MFU reads."""
    def epilogue(g: Graph, node: Node):
        a, b = node.inputs
        va, vb = g.value(a), g.value(b)
        if vb is not None:
            return a, [EpOp(kind, const=_per_channel(vb))]
        if va is not None:
            return b, [EpOp({"sub": "rsub"}.get(kind, kind), const=_per_channel(va))]

        # two tensors: read the one whose producer can absorb the op, the other is the MFU operand
        if kind != "sub" and producer_absorbs(g, b) and not producer_absorbs(g, a):
            return b, [EpOp(kind, tensor=a)]
        return a, [EpOp(kind, tensor=b)]
    return epilogue


register(
    OpDef("Relu", npu=unary_reason, epilogue=unary("relu")),
    OpDef("LeakyRelu", npu=unary_reason, epilogue=leaky_relu),
    OpDef("Sigmoid", npu=unary_reason, epilogue=unary("sigm")),
    OpDef("Tanh", npu=unary_reason, epilogue=unary("tanh")),
    OpDef("HardSwish", npu=unary_reason, epilogue=unary("hswish")),
    OpDef("HardSigmoid", npu=unary_reason, epilogue=hard_sigmoid),
    # Gelu (opset 20, or fused from its exporter idioms by compiler/passes/activations.py), QuickGelu(alpha=1)
    OpDef("Gelu", npu=unary_reason, epilogue=gelu),
    OpDef("QuickGelu", npu=quick_gelu_reason, epilogue=unary("swish")),
    OpDef("Clip", npu=clip_reason, epilogue=clip),
    OpDef("Neg", npu=unary_reason, epilogue=neg),
    OpDef("Add", npu=binary_reason, epilogue=binary("add")),
    OpDef("Sum", npu=binary_reason, epilogue=binary("add")),
    OpDef("Sub", npu=binary_reason, epilogue=binary("sub")),
    OpDef("Mul", npu=binary_reason, epilogue=binary("mul")),
    OpDef("Max", npu=binary_reason, epilogue=binary("max")),
    OpDef("Min", npu=binary_reason, epilogue=binary("min")),
    OpDef("BatchNormalization", npu=batchnorm_reason, epilogue=batchnorm),
    # made by fuse_epilogues after partitioning, so never asked whether the NPU takes it
    OpDef("Eltwise", npu=always, lower=lower_eltwise, absorbs=True, concat_part=True),
)
