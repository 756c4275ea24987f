"""Partitioning: which nodes run on the NPU and which on the host (onnxruntime).

:func:`npu_reason` says why a node cannot run on the NPU (None when it can):
the checks every operator shares, then its record's own (compiler/ops/);
:func:`partition` marks every node and :func:`segments` cuts the topological
order into alternating NPU and host segments, keeping runs of one kind
together so tensors cross between the two as rarely as possible.
"""
from __future__ import annotations

import heapq

import numpy as np

from compiler.ir import Graph, Node
from compiler.ops import OPS
from compiler.ops.base import float_shape
from npu.errors import CompileError
from npu.numerics import MFU_FORMATS

FP16_MAX = float(np.finfo(MFU_FORMATS["fp16"]).max)  # the largest value of the MFUs' (only) number format


def npu_reason(g: Graph, node: Node) -> str | None:
    """Why `node` cannot run on the NPU, or None."""
    if node.domain not in ("", "ai.onnx"):
        return f"operator domain {node.domain!r} is not supported on the NPU"
    d = OPS.get(node.op)
    if d is None or d.npu is None:
        return (d.host_why if d is not None else "") or f"{node.op} is not an NPU operation"
    data_in = [i for i in node.inputs if i and g.value(i) is None]
    for t in data_in + [o for o in node.outputs if o][:1]:
        if float_shape(g, t) is None:
            return f"tensor {t!r} has no static float shape"
        if 0 in float_shape(g, t):
            return f"tensor {t!r} of shape {list(float_shape(g, t))} is empty"
    for t in node.inputs:
        v = g.value(t) if t else None
        # the NPU's number formats would turn them into other values (weights quantize NaN to 0)
        if v is not None and v.dtype.kind == "f" and not np.isfinite(v).all():
            return f"constant {t!r} holds NaN or inf"
        # MFU operands (biases, scales, elementwise constants) are fp16 on the NPU: larger ones become inf
        if v is not None and v.dtype.kind == "f" and v.size and np.abs(v).max() > FP16_MAX:
            return f"constant {t!r} holds values beyond fp16's range (|x| > {FP16_MAX:g})"
    return d.npu(g, node)


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
    # In topological order every producer is decided before its views.
    for node in g.topo():
        if node.target == "npu" and OPS[node.op].view and node.name not in force_host:
            p = g.producer_of(node.inputs[0])
            if p is None or p.target == "host":
                node.target, node.reason = "host", "layout change of a host tensor"
    _keep_islands_on_the_host(g, force_host)


def _keep_islands_on_the_host(g: Graph, force_host: dict[str, str]) -> None:
    """Elementwise and layout nodes that sit between host operators only (attention's scaling between
    Q.K^T and Softmax) run on the host too: a round trip to the NPU for them costs two transfers and a
    segment and saves nothing.  A group of such nodes stays on the NPU when an NPU node with weights,
    a pool or another chain of its own reads or feeds it, or when none of its neighbours is on the
    host (a model of elementwise nodes alone)."""
    def cheap(n: Node) -> bool:
        d = OPS.get(n.op)
        return n.target == "npu" and d is not None and (d.epilogue is not None or d.view) and n.name not in force_host

    seen: set[str] = set()
    for start in list(g.nodes.values()):
        if start.name in seen or not cheap(start):
            continue
        group, stack, host_in, host_out, npu_near = [], [start], False, False, False
        seen.add(start.name)
        while stack:
            n = stack.pop()
            group.append(n)
            producers = [g.producer_of(t) for t in g.node_inputs(n)]
            consumers = [c for o in n.outputs if o for c in g.consumers_of(o)]
            for m, upstream in [(p, True) for p in producers if p is not None] + [(c, False) for c in consumers]:
                if cheap(m):
                    if m.name not in seen:
                        seen.add(m.name)
                        stack.append(m)
                elif m.target == "host":
                    host_in, host_out = host_in or upstream, host_out or not upstream
                else:
                    npu_near = True
        if host_in and host_out and not npu_near:
            for n in group:
                n.target, n.reason = "host", "elementwise work between host operators (a round trip would cost more)"


def segments(g: Graph) -> list[tuple[str, list]]:
    """Topological order cut into [(target, nodes)], staying on one target while any node of it is ready
    (among the ready nodes of a target, the first in the graph's order goes first)."""
    indeg = {n: g.nx.in_degree(n) for n in g.nx.nodes}
    rank = {name: i for i, name in enumerate(g.nodes)}
    ready: dict[str, list[tuple[int, str]]] = {}  # target -> heap of (rank, node)

    def push(name: str) -> None:
        heapq.heappush(ready.setdefault(g.nodes[name].target, []), (rank[name], name))

    for n, d in indeg.items():
        if d == 0:
            push(n)
    out: list[tuple[str, list]] = []
    current = None
    while any(ready.values()):
        if not out or not ready.get(current):  # switch to the target whose next node comes first
            current = min((h[0], t) for t, h in ready.items() if h)[1]
            out.append((current, []))
        _, pick = heapq.heappop(ready[current])
        out[-1][1].append(g.nodes[pick])
        for succ in g.nx.successors(pick):
            indeg[succ] -= 1
            if indeg[succ] == 0:
                push(succ)
    assert sum(len(s[1]) for s in out) == len(g.nodes), "graph has a cycle"
    return out
