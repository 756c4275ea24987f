"""The compiler driver: a list of named passes, ONNX in, .npu model file out.

    load_model -> to_graph -> fold_qdq -> fold_constants -> remove_identities
    -> canonicalize_linear -> canonicalize_elementwise -> fold_batchnorm   (graph passes, once)
    -> partition -> fuse_epilogues -> plan_padding -> segments -> lower
    -> allocate (weights, constants, buffers) -> schedule_dma -> emit -> package

A node that lowering cannot map after all is moved to the host and the
partition is redone (unless host fallback is off).
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass, field

import numpy as np
import onnx

from compiler import hostgraph
from compiler.frontend import load_model, to_graph
from compiler.ir import Graph, copy_graph
from compiler.kernels import LoweringError
from compiler.lowering.core import Shared
from compiler.passes.allocate import allocate_buffers, allocate_constants, allocate_weights
from compiler.passes.canonicalize import canonicalize_elementwise, canonicalize_linear
from compiler.passes.emit import emit
from compiler.passes.fold_batchnorm import fold_batchnorm
from compiler.passes.fold_constants import fold_constants
from compiler.passes.fold_qdq import fold_qdq
from compiler.passes.fuse_epilogues import fuse_epilogues
from compiler.passes.layout import plan_concat_groups, plan_padding, plan_pixel_groups
from compiler.passes.lower import HostSegment, NpuSegment, lower_npu_segment, segment_io
from compiler.passes.partition import partition, segments
from compiler.passes.schedule import schedule_dma
from compiler.passes.simplify import remove_identities
from compiler.passes.tiling import estimate_tiles
from npu.config import NpuConfig, get_config
from npu.errors import CompileError
from npu.program import Program, analyze
from npu.weights import WeightImage, tile_matrix

MAX_REPARTITIONS = 64


@dataclass
class Compiled:
    """Everything the packager and the report need."""

    config: NpuConfig
    graph: Graph
    segments: list
    streaming: bool
    weights: WeightImage
    constants: list
    timings: dict = field(default_factory=dict)
    onnx_model: onnx.ModelProto | None = None


def resolve_config(config, fmt: str | None) -> NpuConfig:
    cfg = get_config(config)
    if fmt:
        cfg = cfg.replace(weight_format=fmt, act_format=fmt, name=cfg.name)
    return cfg


def graph_passes(model: onnx.ModelProto) -> Graph:
    g = to_graph(model)
    fold_qdq(g)
    fold_constants(g)
    remove_identities(g)
    canonicalize_linear(g)
    canonicalize_elementwise(g)
    fold_batchnorm(g)
    return g


def compile_graph(source, config="brainslice-128", fmt=None, input_shapes=None, host_fallback=True,
                  progress=None) -> Compiled:
    t0 = time.perf_counter()
    cfg = resolve_config(config, fmt)
    model = load_model(source, input_shapes)
    base = graph_passes(model)
    t_front = time.perf_counter()
    force_host: dict[str, str] = {}  # node -> why lowering gave it up
    streaming = estimate_tiles(base, cfg) > cfg.mrf_tiles  # saves lowering big models twice
    for _ in range(MAX_REPARTITIONS):
        g = copy_graph(base)
        partition(g, host_fallback, force_host)
        fuse_epilogues(g)
        pads = plan_padding(g)
        groups = plan_concat_groups(g, cfg.native_dim)
        pixel_groups = plan_pixel_groups(g, cfg.native_dim, groups, cfg.block)
        capacity = cfg.mrf_tiles // 2 if streaming else cfg.mrf_tiles
        shared = Shared()
        try:
            segs = lower(g, cfg, shared, pads, capacity, progress, groups, pixel_groups)
            total = sum(c.tiles for c in shared.chunks)
            if not streaming and total > cfg.mrf_tiles:
                streaming = True
                continue
            if streaming and total <= cfg.mrf_tiles:
                streaming = False  # the estimate was high; chunks cut for half the MRF fit pinned too
            t_lower = time.perf_counter()
            consts = allocate(segs, shared, cfg, streaming)
        except LoweringError as exc:
            # a node that cannot be mapped (or does not fit) runs on the host; partition again
            op = g.nodes[exc.node].op if exc.node in g.nodes else exc.op
            if not host_fallback:
                raise CompileError(f"cannot run on the NPU: {exc.args[0].split(': ', 1)[-1] if exc.args else exc}",
                                   node=exc.node, op=op, hint="drop --no-host-fallback to run it on the host") from None
            if exc.node is None or exc.node in force_host or exc.node not in base.nodes:
                raise
            why = (exc.args[0] if exc.args else str(exc)).split("\n")[0].split("): ", 1)[-1]
            force_host[exc.node] = why
            force_host.update({n: why for n in getattr(exc, "nodes", ()) if n in base.nodes})
            continue
        break
    else:
        raise CompileError("partitioning did not converge")
    images = [tile_matrix(c.matrix, cfg)[0] for c in shared.chunks]
    weights = WeightImage.concat(images) if images else WeightImage.empty(cfg, 0)
    t_end = time.perf_counter()
    return Compiled(cfg, g, segs, streaming, weights, consts,
                    timings={"frontend_s": t_front - t0, "lower_s": t_lower - t_front, "backend_s": t_end - t_lower,
                             "total_s": t_end - t0}, onnx_model=model)


def allocate(segs: list, shared: Shared, cfg: NpuConfig, streaming: bool) -> list:
    """Weights, constants and every segment's buffers get addresses; programs are emitted and checked."""
    allocate_weights(shared.chunks, cfg, streaming)
    consts = list(shared.consts.values())
    top = allocate_constants(consts, cfg)
    for seg in segs:
        if isinstance(seg, NpuSegment):
            seg.steps = schedule_dma(seg.steps, cfg, streaming)
            seg.memory = allocate_buffers(seg.steps, cfg, top)
            instructions, seg.regions = emit(seg.steps, cfg)
            seg.program = Program(cfg, instructions)
            analyze(seg.program)  # every static rule, now rather than at run time
    return consts


def lower(g: Graph, cfg: NpuConfig, shared: Shared, pads, capacity: int, progress=None, groups=None,
          pixel_groups=None) -> list:
    out = []
    parts = segments(g)
    total = sum(len(nodes) for _, nodes in parts)
    done = 0

    def tick(count: int = 1):
        nonlocal done
        done += count
        if progress is not None:
            progress(done, total)

    for k, (target, nodes) in enumerate(parts):
        if target == "npu":
            out.append(lower_npu_segment(g, k, nodes, cfg, shared, pads, capacity, tick, groups, pixel_groups))
        else:
            ins, outs = segment_io(g, nodes)
            out.append(HostSegment(k, nodes, ins, outs))
            tick(len(nodes))
    return out


# ---------------------------------------------------------------------- packaging
def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def package(c: Compiled, preprocessing: dict | None = None) -> tuple[dict, dict[str, bytes]]:
    """The manifest and members of the .npu file."""
    from compiler.report import build_report, node_macs
    from npu.modelfile import TensorSpec

    g = c.graph
    members: dict[str, bytes] = {}
    plan = []
    for seg in c.segments:
        if isinstance(seg, NpuSegment):
            prog = f"npu/{seg.index}.bin"
            members[prog] = seg.program.to_bytes()
            ins = []
            for k, spec in enumerate(seg.inputs):
                d = {"tensor": spec.tensor, "kind": spec.kind, "vectors": spec.vectors}
                if spec.kind == "stream":
                    d["emap"] = f"npu/{seg.index}.in{k}.npy"
                    members[d["emap"]] = _npy(spec.emap.astype(np.int64))
                    d["shape"] = list(g.shape(spec.tensor))
                else:
                    d["im2col"] = spec.im2col
                ins.append(d)
            outs = []
            for k, spec in enumerate(seg.outputs):
                name = f"npu/{seg.index}.out{k}.npy"
                members[name] = _npy(spec.emap.astype(np.int64))
                outs.append({"tensor": spec.tensor, "shape": list(spec.shape), "vectors": spec.vectors, "emap": name})
            plan.append({"kind": "npu", "program": prog, "inputs": ins, "outputs": outs,
                         "regions": [list(r) for r in seg.regions], "memory": seg.memory,
                         "macs": sum(node_macs(g, n) for n in seg.nodes)})
        else:
            name = f"host/{seg.index}.onnx"
            members[name] = hostgraph.build(g, seg).SerializeToString()
            plan.append({"kind": "host", "model": name, "inputs": seg.inputs, "outputs": seg.outputs})
    members["weights.bin"] = c.weights.to_bytes()
    consts = {}
    const_list = []
    for k, b in enumerate(c.constants):
        key = f"c{k}"
        consts[key] = b.const
        const_list.append({"key": key, "space": int(b.space), "mfu": b.mfu, "addr": b.addr})
    buf = io.BytesIO()
    np.savez(buf, **consts)
    members["constants.npz"] = buf.getvalue()
    const_outputs = {}
    for o in g.outputs:
        if g.value(o) is not None:
            name = f"const/{len(const_outputs)}.npy"
            members[name] = _npy(np.asarray(g.value(o)))
            const_outputs[o] = name

    def spec(name):
        t = g.tensors[name]
        return TensorSpec(name, tuple(t.shape or ()), t.dtype).to_dict()

    report = build_report(c)
    manifest = {
        "config": c.config.to_dict(),
        "inputs": [spec(i) for i in g.inputs],
        "outputs": [spec(o) for o in g.outputs],
        "preprocessing": preprocessing or {"kind": "none"},
        "plan": plan,
        "weights": {"member": "weights.bin", "mode": "streaming" if c.streaming else "pinned",
                    "tiles": c.weights.tiles},
        "constants": {"member": "constants.npz", "vectors": const_list},
        "const_outputs": const_outputs,
        # no wall-clock figures: the same model and options give the same file (content-addressed stores)
        "compiler": {"report": dict(report.to_dict(), compile_time_s=0.0)},
    }
    return manifest, members
