"""The operator record, the registry and the checks operators share.

One :class:`OpDef` per ONNX operator type holds everything the compiler
knows about it; each module of compiler/ops/ defines and :func:`register` s
the records of one family of operators, and importing :mod:`compiler.ops`
imports every family, so a pass that imports :mod:`compiler.ops` sees them all.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from compiler.chain_ir import standard_grid
from compiler.ir import EpOp, Graph, Node

FLOAT_DTYPES = ("float32", "float16", "float64")


def no_macs(g: Graph, node: Node) -> int:
    return 0


def no_tiles(g: Graph, node: Node, n: int) -> int:
    return 0


def always(g: Graph, node: Node) -> str | None:
    return None


@dataclass(frozen=True)
class OpDef:
    """What the compiler knows about one ONNX operator type.

    Members
    -------
    op : the ONNX op type ("Eltwise" is the fused elementwise node compiler/passes/fuse_epilogues.py makes).
    npu : ``npu(g, node)`` says why the NPU cannot take a node (a str) or returns None when it can; it runs
        after the checks every operator shares (compiler/passes/partition.py).  None for an operator
        that runs only on the host.
    lower : ``lower(lw, node)`` appends the node's chains to a :class:`compiler.lowering.Lowering`.  An
        elementwise operator has none: fusion turns it into its producer's epilogue or an ``Eltwise``.
    macs : ``macs(g, node)``, the multiply-accumulates of one inference of the node (the ONNX
        computation, not the padded NPU mapping); host operators count theirs too.
    tiles : ``tiles(g, node, n)``, the native weight tiles its mv_mul chains need on an N = n NPU (the
        estimate that chooses pinned or streamed weights before lowering).
    epilogue : ``epilogue(g, node)`` -> ``(input, [EpOp])``: the node as MFU operations on one input, so
        that it fuses into the chain producing that input (or becomes an ``Eltwise``).
    absorbs : its chains end in the MFUs: its consumers' epilogue operations fuse into them.
    window : ``window(g, node)`` -> ``((top, left, bottom, right), fill)``: the padding its windowed reads
        need around input 0's buffer, and the value the padding must hold.
    view : layout only; the output is the input's buffer read through a new element map.
    keeps_sign : the output is nonnegative when every float input is (integer inputs are shapes and axes).
    concat_part : its lowering can add its result into a concatenation group's shared buffer.
    host_why : for a host-only operator (``npu`` None), why, as the report shows it (default: "<op> is not
        an NPU operation").
    """

    op: str
    npu: Callable[[Graph, Node], str | None] | None = None
    lower: Callable | None = None
    macs: Callable[[Graph, Node], int] = no_macs
    tiles: Callable[[Graph, Node, int], int] = no_tiles
    epilogue: Callable[[Graph, Node], tuple[str, list[EpOp]]] | None = None
    absorbs: bool = False
    window: Callable | None = None
    view: bool = False
    keeps_sign: bool = False
    concat_part: bool = False
    host_why: str = ""

    def __post_init__(self):
        if (self.npu is None) != (self.lower is None and self.epilogue is None):
            raise ValueError(f"{self.op}: an operator the NPU takes needs a lowering or an epilogue, and only "
                             "such an operator has one")


#: ONNX op type -> record, filled by the modules of compiler/ops/ as they are imported.
OPS: dict[str, OpDef] = {}


def register(*defs: OpDef) -> None:
    for d in defs:
        if d.op in OPS:
            raise ValueError(f"operator {d.op} is registered twice")
        OPS[d.op] = d


# ---------------------------------------------------------------------- shared checks
def float_shape(g: Graph, name: str) -> tuple[int, ...] | None:
    """The static shape of a float, non-constant tensor (None otherwise)."""
    t = g.tensors.get(name)
    if t is None or t.shape is None or t.value is not None or t.dtype not in FLOAT_DTYPES:
        return None
    return t.shape


def grid_ok(shape) -> bool:
    return shape is not None and standard_grid(tuple(shape)) is not None


def optional_input(node: Node, k: int) -> str | None:
    """The name of optional input k, None when absent."""
    return node.inputs[k] if len(node.inputs) > k and node.inputs[k] else None


def ct(channels: int, n: int) -> int:
    """Native vectors (or tiles) of `channels` on an N = n NPU."""
    return -(-int(channels) // n)


def nonnegative(g: Graph, tensor: str, depth: int = 0) -> bool:
    """True when the tensor provably holds no negative values (Relu/Sigmoid outputs, pools and views of them)."""
    p = g.producer_of(tensor)
    if p is None or p.target != "npu" or depth > 20:
        return False
    if p.epilogue:
        return p.epilogue[-1].kind in ("relu", "sigm")
    d = OPS.get(p.op)
    if d is None or not d.keeps_sign:
        return False
    return all(nonnegative(g, i, depth + 1) for i in p.inputs
               if i and getattr(g.tensors.get(i), "dtype", "float32") in FLOAT_DTYPES)


def producer_absorbs(g: Graph, tensor: str) -> bool:
    """The NPU chain producing `tensor` can take more epilogue operations (nothing else reads its result)."""
    p = g.producer_of(tensor)
    return (p is not None and p.target == "npu" and OPS[p.op].absorbs and len(g.consumers_of(tensor)) == 1
            and tensor not in g.outputs)


def weight_shape(g: Graph, node: Node) -> tuple[int, ...] | None:
    """The shape of input 1 when it is a constant (a weight), else None."""
    w = optional_input(node, 1)
    return g.shape(w) if w is not None and g.value(w) is not None else None


def prod(shape) -> int:
    return int(np.prod(shape, dtype=np.int64)) if shape is not None else 0


def node_macs(g: Graph, node: Node) -> int:
    """The node's multiply-accumulates (0 for an operator without a record or a shape the count needs)."""
    d = OPS.get(node.op)
    if d is None:
        return 0
    try:
        return int(d.macs(g, node))
    except (TypeError, IndexError, ValueError, KeyError):
        return 0  # an unknown shape (None) or an attribute the count needs is missing
