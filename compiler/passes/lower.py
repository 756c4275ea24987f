"""Lowering pass: every NPU segment of the partitioned graph becomes a list of chain steps.

Segment inputs arrive on the network input queue (converted on the host to
the native layout, or as im2col patches for a first convolution); segment
outputs leave on the output queue, read and written by the chains that use
them where that is exact (compiler/passes/queue_io.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from compiler.chain_ir import NETQ, ChainSpec, LoweringError, Ref, standard_grid
from compiler.ir import Graph, Node
from compiler.lowering import InputSpec, Lowering, OutputSpec, PadReq, Shared
from compiler.ops import OPS
from compiler.passes.partition import segments
from compiler.passes.batch_wavefront import wavefront_batches
from compiler.passes.queue_io import stream_queues
from npu.config import NpuConfig


@dataclass
class NpuSegment:
    index: int
    nodes: list[Node]
    steps: list
    buffers: list
    inputs: list[InputSpec]
    outputs: list[OutputSpec]
    program: object = None
    regions: list = field(default_factory=list)
    memory: dict = field(default_factory=dict)


@dataclass
class HostSegment:
    index: int
    nodes: list[Node]
    inputs: list[str]
    outputs: list[str]


def segment_io(g: Graph, nodes: list[Node]) -> tuple[list[str], list[str]]:
    produced = {o for n in nodes for o in n.outputs if o}
    names = {n.name for n in nodes}
    ins: dict[str, None] = {}  # ordered set
    for n in nodes:
        for t in g.node_inputs(n):
            if t not in produced and g.value(t) is None:
                ins[t] = None
    outs = []
    for n in nodes:
        for o in n.outputs:
            if not o:
                continue
            if o in g.outputs or any(c not in names for c in g.consumers.get(o, ())):
                outs.append(o)
    return list(ins), outs


def lower_npu_segment(g: Graph, index: int, nodes: list[Node], config: NpuConfig, shared: Shared,
                      pads: dict[str, PadReq], capacity: int, tick=None, concat_plan=None,
                      pixel_groups=None) -> NpuSegment:
    lw = Lowering(g, config, shared, pads, capacity)
    lw.concat_plan = concat_plan or lw.concat_plan
    lw.pixel_groups = pixel_groups or {}
    ins, outs = segment_io(g, nodes)
    names = {n.name for n in nodes}
    lw.im2col = {}
    for t in ins:
        users = g.consumers_of(t)
        if len(users) == 1 and users[0].op == "Conv" and users[0].inputs[0] == t and t not in g.outputs \
                and users[0].name in names and g.shape(t)[1] < lw.n:
            lw.im2col[t] = users[0].name
    for t in ins:
        if t in lw.im2col:
            continue
        shape = tuple(g.shape(t))
        grid = standard_grid(shape)
        if grid is None:  # the node reading it moves to the host (the driver falls back on the named node)
            reader = next((n for n in g.consumers_of(t) if n.name in names), None)
            raise LoweringError(f"segment input {t!r} of shape {list(shape)} has no native layout",
                                node=reader.name if reader else None, op=reader.op if reader else None)
        H, W, C = grid
        lw.region = f"input {t}"
        p = lw.new_grid(t, H, W, lw.ct(C), shape=shape)
        v = p.view
        lw.inputs.append(InputSpec(t, "stream", H * W * v.ct, emap=p.emap))
        lw.chain(ChainSpec(NETQ, v.ct, (H, W), writes=[v.pixel_ref()]))
    for node in nodes:
        lw.region = node.name
        lw.node = node
        try:
            OPS[node.op].lower(lw, node)
        except LoweringError as exc:
            exc.node = exc.node or node.name
            exc.op = exc.op or node.op
            raise
        if tick is not None:
            tick()
    for t in outs:
        p = lw.placement(t)
        v = p.view
        lw.region = f"output {t}"
        lw.chain(ChainSpec(v.pixel_ref(), v.ct, (v.H, v.W), writes=[Ref(None)]))
        lw.outputs.append(OutputSpec(t, tuple(g.shape(t)), v.H * v.W * v.ct, np.asarray(p.emap)))
    # the copies through the queues fold into their consumer/producer where that is exact (queue_io.py); batched
    # Gemm layers run sequence by sequence in a wavefront on the pipelined machine (batch_wavefront.py)
    steps = wavefront_batches(stream_queues(lw.steps), {n.name for n in nodes if n.op == "Gemm"}, config.pipelined)
    return NpuSegment(index, nodes, steps, lw.buffers, lw.inputs, lw.outputs)


def node_ticker(progress, total: int):
    """``tick(count=1)``: counts nodes lowered and reports (done, total) to ``progress`` (None: nobody)."""
    done = 0

    def tick(count: int = 1):
        nonlocal done
        done += count
        if progress is not None:
            progress(done, total)
    return tick


def lower_graph(g: Graph, cfg: NpuConfig, shared: Shared, pads, capacity: int, progress=None, groups=None,
                pixel_groups=None) -> list:
    """The graph cut into segments (compiler/passes/partition.py), every NPU segment lowered."""
    out = []
    parts = segments(g)
    tick = node_ticker(progress, sum(len(nodes) for _, nodes in parts))
    for k, (target, nodes) in enumerate(parts):
        if target == "npu":
            out.append(lower_npu_segment(g, k, nodes, cfg, shared, pads, capacity, tick, groups, pixel_groups))
        else:
            ins, outs = segment_io(g, nodes)
            out.append(HostSegment(k, nodes, ins, outs))
            tick(len(nodes))
    return out
