"""Partitioning: which nodes run on the NPU and which on the host (onnxruntime).

:func:`npu_reason` says why a node cannot run on the NPU (None when it can);
:func:`partition` marks every node and :func:`segments` cuts the topological
order into alternating NPU and host segments, keeping runs of one kind
together so tensors cross between the two as rarely as possible.
"""
from __future__ import annotations

import numpy as np

from compiler.ir import Graph, Node
from npu.errors import CompileError

ELEMENTWISE_UNARY = {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip"}
ELEMENTWISE_BINARY = {"Add", "Sub", "Mul", "Max", "Min", "Sum"}
VIEWS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity"}
POOLS = {"MaxPool", "AveragePool"}
GLOBAL_POOLS = {"GlobalAveragePool", "GlobalMaxPool"}
NPU_OPS = ({"Conv", "Gemm", "BatchNormalization", "Concat", "LSTM", "GRU", "Eltwise"} | ELEMENTWISE_UNARY
           | ELEMENTWISE_BINARY | VIEWS | POOLS | GLOBAL_POOLS)


def _float_shape(g: Graph, name: str) -> tuple[int, ...] | None:
    t = g.tensors.get(name)
    if t is None or t.shape is None or t.value is not None:
        return None
    if t.dtype not in ("float32", "float16", "float64"):
        return None
    return t.shape


def _grid_ok(shape) -> bool:
    from compiler.kernels import standard_grid

    return shape is not None and standard_grid(tuple(shape)) is not None


def npu_reason(g: Graph, node: Node) -> str | None:
    """Why `node` cannot run on the NPU, or None."""
    if node.domain not in ("", "ai.onnx"):
        return f"operator domain {node.domain!r} is not supported on the NPU"
    if node.op not in NPU_OPS:
        return f"{node.op} is not an NPU operation"
    outs = [o for o in node.outputs if o]
    data_in = [i for i in node.inputs if i and g.value(i) is None]
    for t in data_in + outs[:1]:
        if _float_shape(g, t) is None:
            return f"tensor {t!r} has no static float shape"
    x = node.inputs[0]
    shape = _float_shape(g, x)
    op = node.op
    if op == "Conv":
        if len(shape) != 4 or shape[0] != 1:
            return "only 2-D convolutions with batch 1 run on the NPU"
        if g.value(node.inputs[1]) is None or (len(node.inputs) > 2 and node.inputs[2] and g.value(node.inputs[2]) is None):
            return "weights must be constants"
    elif op == "Gemm":
        if not node.attr("_canonical") or len(shape) != 2:
            return "only Gemm/MatMul with constant weights on a 2-D input run on the NPU"
    elif op == "BatchNormalization":
        if any(g.value(i) is None for i in node.inputs[1:5]) or len([o for o in node.outputs if o]) > 1:
            return "BatchNormalization needs constant statistics (inference mode)"
        if not _grid_ok(shape):
            return "unsupported rank"
    elif op in ELEMENTWISE_BINARY:
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
            if op not in ("Add", "Sum", "Sub", "Max", "Min", "Mul"):
                return "unsupported"
        else:
            c, t = (va, sb) if va is not None else (vb, sa)
            if not _const_broadcast_ok(c, t):
                return "constant operand is neither a scalar nor per-channel"
        if not _grid_ok(g.shape(outs[0])):
            return "unsupported rank"
    elif op in ELEMENTWISE_UNARY:
        if op == "Clip":
            lo = node.inputs[1] if len(node.inputs) > 1 and node.inputs[1] else None
            hi = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
            if (lo and g.value(lo) is None) or (hi and g.value(hi) is None):
                return "Clip bounds must be constants"
        if not _grid_ok(shape):
            return "unsupported rank"
    elif op in POOLS:
        if len(shape) != 4 or shape[0] != 1:
            return "only 2-D pooling with batch 1 runs on the NPU"
        if node.attr("storage_order", 0) or len(outs) > 1:
            return "MaxPool indices output"
    elif op in GLOBAL_POOLS:
        if len(shape) != 4 or shape[0] != 1:
            return "only batch 1 runs on the NPU"
    elif op == "Concat":
        if not _grid_ok(g.shape(outs[0])):
            return "unsupported rank"
    elif op in VIEWS:
        if op in ("Reshape", "Squeeze", "Unsqueeze") and len(node.inputs) > 1 and node.inputs[1] and \
                g.value(node.inputs[1]) is None:
            return "shape must be constant"
    elif op in ("LSTM", "GRU"):
        return _rnn_reason(g, node, shape)
    return None


def _const_broadcast_ok(c: np.ndarray, shape) -> bool:
    from compiler.kernels import standard_grid

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


def _rnn_reason(g: Graph, node: Node, shape) -> str | None:
    from compiler.attrs import rnn

    a = rnn(node)
    if a.direction not in ("forward", "reverse", "bidirectional"):
        return f"direction {a.direction!r}"
    ndir = 2 if a.direction == "bidirectional" else 1
    if len(shape) != 3 or shape[1] != 1:
        return "only batch 1 runs on the NPU"
    ins = node.inputs + [""] * 8
    if any(g.value(i) is None for i in ins[1:3]) or (ins[3] and g.value(ins[3]) is None):
        return "weights must be constants"
    if ins[4]:
        lens = g.value(ins[4])
        if lens is None or np.any(np.asarray(lens) != shape[0]):
            return "sequence_lens shorter than the sequence"  # every sequence full length is fine
    for k in (5, 6) if node.op == "LSTM" else (5,):
        if ins[k] and tuple(g.shape(ins[k]) or ()) != (ndir, 1, int(node.attr("hidden_size") or 0)):
            return "initial state of an unexpected shape"
    if node.op == "LSTM" and ins[7]:
        return "peephole connections"
    if a.activations and a.activations not in (("sigmoid", "tanh", "tanh"), ("sigmoid", "tanh")):
        return "non-default activations"
    if a.clip is not None or a.input_forget:
        return "clip/input_forget"
    if node.op == "GRU" and not a.linear_before_reset:
        return "GRU with linear_before_reset=0"
    return None


def partition(g: Graph, host_fallback: bool = True, force_host: dict[str, str] | None = None) -> None:
    """Mark every node npu or host; without fallback an unsupported node is a CompileError.

    ``force_host`` maps nodes that lowering gave up on to the reason."""
    force_host = force_host or {}
    for node in g.nodes.values():
        reason = force_host[node.name] if node.name in force_host else npu_reason(g, node)
        if reason is None:
            node.target, node.reason = "npu", ""
            continue
        if not host_fallback:
            raise CompileError(f"cannot run on the NPU: {reason}", node=node.name, op=node.op,
                               hint="drop --no-host-fallback to run it on the host with onnxruntime")
        node.target, node.reason = "host", reason
    # A view of a tensor that arrives from the host is done on the host: the NPU then receives the
    # tensor already in the shape its consumer wants (a flattened image becomes dense vectors).
    changed = True
    while changed:
        changed = False
        for node in g.nodes.values():
            if node.target == "npu" and node.op in VIEWS and node.name not in force_host:
                p = g.producer_of(node.inputs[0])
                if p is None or p.target == "host":
                    node.target, node.reason, changed = "host", "layout change of a host tensor", True


def segments(g: Graph) -> list[tuple[str, list]]:
    """Topological order cut into [(target, nodes)], staying on one target while any node of it is ready."""
    import networkx as nx

    indeg = {n: g.nx.in_degree(n) for n in g.nx.nodes}
    rank = {name: i for i, name in enumerate(g.nodes)}
    ready = sorted([n for n, d in indeg.items() if d == 0], key=rank.get)
    out: list[tuple[str, list]] = []
    current = None
    while ready:
        same = [n for n in ready if g.nodes[n].target == current]
        pick = same[0] if same else ready[0]
        ready.remove(pick)
        node = g.nodes[pick]
        if node.target != current or not out:
            current = node.target
            out.append((current, []))
        out[-1][1].append(node)
        for succ in g.nx.successors(pick):
            indeg[succ] -= 1
            if indeg[succ] == 0:
                ready.append(succ)
                ready.sort(key=rank.get)
    assert sum(len(s[1]) for s in out) == len(g.nodes), "graph has a cycle"
    _ = nx
    return out
