"""The compiler driver: ONNX in, .npu model file out, through one list of named passes.

:data:`PASSES` is the pipeline in order; every :class:`Pass` reads and writes
the :class:`Compilation`.  The passes from ``partition`` on run again when
lowering gives a node up after all (a layout it cannot read, weights or
activations that do not fit): the node moves to the host and partitioning
starts over from the graph the passes before it made.

``compile_graph(dump_after=["fuse_epilogues"])`` prints the IR after the named
passes (``npu compile --dump-after``); ``verify=True``, or ``NPU_VERIFY_IR=1``
in the environment, checks it after every pass (compiler/verify.py).
"""
from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx

from compiler import hostgraph
from compiler.chain_ir import LoweringError
from compiler.frontend import load_model, to_graph
from compiler.ir import Graph, copy_graph
from compiler.lowering import Shared
from compiler.passes.allocate import allocate_buffers, allocate_constants, allocate_weights
from compiler.passes.canonicalize import canonicalize_elementwise, canonicalize_linear
from compiler.passes.emit import emit
from compiler.passes.fold_batchnorm import fold_batchnorm
from compiler.passes.fold_constants import fold_constants
from compiler.passes.recurrent_loops import rewrite_recurrent_loops
from compiler.passes.fold_qdq import fold_qdq
from compiler.passes.fuse_epilogues import fuse_epilogues
from compiler.passes.layout import plan_concat_groups, plan_padding, plan_pixel_groups
from compiler.passes.lower import NpuSegment, lower_graph
from compiler.passes.partition import partition
from compiler.passes.schedule import schedule_dma
from compiler.passes.simplify import remove_identities
from compiler.passes.tiling import estimate_tiles
from compiler.verify import verify as verify_ir
from npu.config import NpuConfig, get_config
from npu.errors import CompileError
from npu.program import Program, analyze
from npu.weights import WeightImage, tile_matrix

MAX_REPARTITIONS = 64
VERIFY_ENV = "NPU_VERIFY_IR"


@dataclass
class Compilation:
    """What the passes share: the graph, what each planning pass decided, and the results."""

    config: NpuConfig
    host_fallback: bool = True
    progress: Callable[[int, int], None] | None = None
    onnx_model: onnx.ModelProto | None = None
    graph: Graph | None = None
    streaming: bool = False                                    # weights stream from DRAM (else pinned)
    force_host: dict[str, str] = field(default_factory=dict)   # node -> why lowering gave it up
    pads: dict = field(default_factory=dict)                   # tensor -> PadReq
    concat_groups: dict | None = None
    pixel_groups: dict[str, int] = field(default_factory=dict)
    shared: Shared = field(default_factory=Shared)             # weight chunks and constants of all segments
    segments: list = field(default_factory=list)               # NpuSegment | HostSegment, in order
    constants: list = field(default_factory=list)
    vrf_base: dict = field(default_factory=dict)               # first address after the constants, per memory
    weights: WeightImage | None = None
    timings: dict[str, float] = field(default_factory=dict)    # seconds per pass, and "total_s"

    @property
    def npu_segments(self) -> list[NpuSegment]:
        return [s for s in self.segments if isinstance(s, NpuSegment)]

    def dump(self) -> str:
        """The IR as text, and once lowered a line per segment."""
        lines = [self.graph.dump()]
        for seg in self.segments:
            if isinstance(seg, NpuSegment):
                size = f", {len(seg.program)} instructions" if seg.program is not None else ""
                lines.append(f"segment {seg.index} (npu): {len(seg.nodes)} nodes, {len(seg.steps)} steps{size}")
            else:
                lines.append(f"segment {seg.index} (host): {len(seg.nodes)} nodes")
        return "\n".join(lines)


@dataclass(frozen=True)
class Pass:
    name: str
    run: Callable[[Compilation], object]


def resolve_config(config, fmt: str | None) -> NpuConfig:
    cfg = get_config(config)
    if fmt:
        cfg = cfg.replace(weight_format=fmt, act_format=fmt, name=cfg.name)
    return cfg


# ---------------------------------------------------------------------- the passes that need more than the graph
def _to_graph(c: Compilation) -> None:
    # Keras recurrent layers (ONNX Loops) become the recurrent nodes they are, where that checks out
    c.onnx_model = rewrite_recurrent_loops(c.onnx_model)
    c.graph = to_graph(c.onnx_model)


def _estimate_tiles(c: Compilation) -> None:
    c.streaming = estimate_tiles(c.graph, c.config) > c.config.mrf_tiles


def _plan_padding(c: Compilation) -> None:
    c.pads = plan_padding(c.graph)


def _plan_concat_groups(c: Compilation) -> None:
    c.concat_groups = plan_concat_groups(c.graph, c.config.native_dim)


def _plan_pixel_groups(c: Compilation) -> None:
    c.pixel_groups = plan_pixel_groups(c.graph, c.config.native_dim, c.concat_groups, c.config.block)


def _lower(c: Compilation) -> None:
    """Lower every segment, with chunks cut for the whole MRF (pinned) or half of it (streaming); pinned
    chunks that overflow the MRF after all are cut again for streaming."""
    cfg = c.config
    for streaming in (c.streaming, True):
        c.streaming, c.shared = streaming, Shared()
        capacity = cfg.mrf_tiles // 2 if streaming else cfg.mrf_tiles
        c.segments = lower_graph(c.graph, cfg, c.shared, c.pads, capacity, c.progress, c.concat_groups,
                                 c.pixel_groups)
        total = sum(chunk.tiles for chunk in c.shared.chunks)
        if streaming or total <= cfg.mrf_tiles:
            break
    if c.streaming and total <= cfg.mrf_tiles:
        c.streaming = False  # the estimate was high; chunks cut for half the MRF fit pinned too


def _allocate_weights(c: Compilation) -> None:
    allocate_weights(c.shared.chunks, c.config, c.streaming)


def _allocate_constants(c: Compilation) -> None:
    c.constants = list(c.shared.consts.values())
    c.vrf_base = allocate_constants(c.constants, c.config)


def _schedule_dma(c: Compilation) -> None:
    for seg in c.npu_segments:
        seg.steps = schedule_dma(seg.steps, c.config, c.streaming)


def _allocate_buffers(c: Compilation) -> None:
    for seg in c.npu_segments:
        seg.memory = allocate_buffers(seg.steps, c.config, c.vrf_base)


def _emit(c: Compilation) -> None:
    for seg in c.npu_segments:
        instructions, seg.regions = emit(seg.steps, c.config)
        seg.program = Program(c.config, instructions)
        analyze(seg.program)  # every static rule, now rather than at run time


def _quantize_weights(c: Compilation) -> None:
    images = [tile_matrix(chunk.matrix, c.config)[0] for chunk in c.shared.chunks]
    c.weights = WeightImage.concat(images) if images else WeightImage.empty(c.config, 0)


def _on_graph(fn: Callable[[Graph], object]) -> Callable[[Compilation], object]:
    return lambda c: fn(c.graph)


#: The pipeline.  Each comment says what the pass must come after.
PASSES: tuple[Pass, ...] = (
    Pass("to_graph", _to_graph),
    # before every pattern below: a Q/DQ pair between two layers hides them from each other
    Pass("fold_qdq", _on_graph(fold_qdq)),
    # before the canonicalizations: they need weights, shapes and Reshape targets as constants
    Pass("fold_constants", _on_graph(fold_constants)),
    # after fold_constants (Cast of a constant folds, not bypasses); before the patterns that look at producers
    Pass("remove_identities", _on_graph(remove_identities)),
    # before fold_batchnorm, which folds into canonical Gemm only
    Pass("canonicalize_linear", _on_graph(canonicalize_linear)),
    # before partition: Div by a constant, ReduceMean and Pad become operations the NPU takes
    Pass("canonicalize_elementwise", _on_graph(canonicalize_elementwise)),
    # after canonicalize_linear: BN after a Gemm folds into its weight
    Pass("fold_batchnorm", _on_graph(fold_batchnorm)),
    # on the final weights: chooses pinned or streamed weights before lowering cuts chunks
    Pass("estimate_tiles", _estimate_tiles),
    # -- from here on, the passes run again when lowering gives a node up (REDO_FROM)
    # on the graph in its final form: every node npu or host
    Pass("partition", lambda c: partition(c.graph, c.host_fallback, c.force_host)),
    # after partition: only an NPU chain absorbs NPU elementwise nodes
    Pass("fuse_epilogues", _on_graph(fuse_epilogues)),
    # after fusion: a MaxPool's -inf padding depends on whether its fused producer ends in Relu
    Pass("plan_padding", _plan_padding),
    # after fusion: which producers write concatenation parts is settled
    Pass("plan_concat_groups", _plan_concat_groups),
    # after plan_concat_groups: parts of a concatenation group are not pixel-grouped
    Pass("plan_pixel_groups", _plan_pixel_groups),
    # after every plan: segments to chain steps on symbolic buffers
    Pass("lower", _lower),
    # after lower: every weight chunk and constant is known
    Pass("allocate_weights", _allocate_weights),
    Pass("allocate_constants", _allocate_constants),
    # before allocate_buffers: the m_rd steps it inserts shift every buffer's lifetime
    Pass("schedule_dma", _schedule_dma),
    # after allocate_constants: activation buffers start above the constants
    Pass("allocate_buffers", _allocate_buffers),
    # after allocation: instructions need addresses
    Pass("emit", _emit),
    Pass("quantize_weights", _quantize_weights),
)
PASS_NAMES = tuple(p.name for p in PASSES)
REDO_FROM = PASS_NAMES.index("partition")


def compile_graph(source, config="brainslice-128", fmt=None, input_shapes=None, host_fallback=True,
                  progress=None, dump_after=(), verify: bool | None = None, dump=print) -> Compilation:
    """Run :data:`PASSES` on an ONNX model (path, bytes or ModelProto).

    ``dump_after`` names passes (or "all") after which ``dump`` gets the IR as text; ``verify`` checks
    the IR after every pass (default: the NPU_VERIFY_IR environment variable)."""
    t0 = time.perf_counter()
    dump_after = set(PASS_NAMES if "all" in dump_after else dump_after)
    unknown = dump_after - set(PASS_NAMES)
    if unknown:
        raise CompileError(f"no pass named {', '.join(sorted(unknown))}", hint=f"passes: {', '.join(PASS_NAMES)}")
    if verify is None:
        verify = os.environ.get(VERIFY_ENV, "") not in ("", "0")
    c = Compilation(resolve_config(config, fmt), host_fallback, progress)
    c.onnx_model = load_model(source, input_shapes)

    def run(passes: tuple[Pass, ...], attempt: int) -> None:
        for p in passes:
            t = time.perf_counter()
            p.run(c)
            c.timings[p.name] = c.timings.get(p.name, 0.0) + time.perf_counter() - t
            if verify:
                verify_ir(c.graph, p.name, partitioned=PASS_NAMES.index(p.name) >= REDO_FROM)
            if p.name in dump_after:
                dump(f"# IR after {p.name}" + (f" (partitioning attempt {attempt})" if attempt > 1 else ""))
                dump(c.dump())

    run(PASSES[:REDO_FROM], 1)
    base = c.graph
    for attempt in range(1, MAX_REPARTITIONS + 1):
        c.graph = copy_graph(base)
        try:
            run(PASSES[REDO_FROM:], attempt)
        except LoweringError as exc:
            # a node that cannot be mapped (or does not fit) runs on the host; partition again
            op = c.graph.nodes[exc.node].op if exc.node in c.graph.nodes else exc.op
            if not host_fallback:
                raise CompileError(f"cannot run on the NPU: {exc.args[0].split(': ', 1)[-1] if exc.args else exc}",
                                   node=exc.node, op=op, hint="drop --no-host-fallback to run it on the host") from None
            if exc.node is None or exc.node in c.force_host or exc.node not in base.nodes:
                raise
            why = (exc.args[0] if exc.args else str(exc)).split("\n")[0].split("): ", 1)[-1]
            c.force_host[exc.node] = why
            c.force_host.update({n: why for n in getattr(exc, "nodes", ()) if n in base.nodes})
            continue
        break
    else:
        raise CompileError("partitioning did not converge")
    c.timings["total_s"] = time.perf_counter() - t0
    return c


# ---------------------------------------------------------------------- packaging
def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def package(c: Compilation, preprocessing: dict | None = None) -> tuple[dict, dict[str, bytes]]:
    """The manifest and members of the .npu file."""
    from compiler.ops import node_macs
    from compiler.report import build_report
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
