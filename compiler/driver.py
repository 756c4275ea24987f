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
from compiler.passes.batch import split_batch
from compiler.passes.canonicalize import canonicalize_elementwise, canonicalize_linear
from compiler.passes import devices as devs
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
MAX_REBALANCES = 4      # compilations of a multi-NPU model: a first cut by MACs, then by measured cycles
VERIFY_ENV = "NPU_VERIFY_IR"


class _Rebalance(Exception):
    """Raised by a multi-NPU pass: cut the stages again (a device overflowed, or measured cycles are in)."""


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
    # several NPUs (compiler/passes/devices.py); devices 1 is the one-NPU compilation, untouched
    devices: int | str = 1                                     # a count, or "auto"
    fabric: object = None                                      # npu.fabric.Fabric (links), set by assign_devices
    budget: int = 0                                            # weight tiles a stage may pin (the MRF)
    capacity: int = 0                                          # MRF share lowering cuts chunks for
    splits: dict = field(default_factory=dict)                 # node -> its row parts and their Concat
    assignment: object = None                                  # devs.Assignment
    node_cycles: dict = field(default_factory=dict)            # measured per node (second cut on)
    node_tiles: dict = field(default_factory=dict)             # weight tiles per node as lowered (second cut on)
    wide_parts: int = 1                                        # row parts of a layer no MRF holds (spare NPUs)
    images: list = field(default_factory=list)                 # devs.DeviceImage per device
    batch: int = 1                                             # samples run one by one through the plan
    seg_device: dict = field(default_factory=dict)             # NPU segment index -> device

    @property
    def multi(self) -> bool:
        return self.devices != 1

    @property
    def npu_segments(self) -> list[NpuSegment]:
        return [s for s in self.segments if isinstance(s, NpuSegment)]

    def dump(self) -> str:
        """The IR as text, and once lowered a line per segment."""
        lines = [self.graph.dump()]
        if self.assignment is not None:
            a = self.assignment
            for d in range(a.devices):
                names = [n for n, k in a.device_of.items() if k == d]
                lines.append(f"npu {d}: {len(names)} nodes, ~{a.tiles[d]} weight tiles"
                             f"{' (streaming)' if a.streaming[d] else ''}: {', '.join(names[:3])}"
                             f"{' ...' if len(names) > 3 else ''}")
        for seg in self.segments:
            if isinstance(seg, NpuSegment):
                size = f", {len(seg.program)} instructions" if seg.program is not None else ""
                on = f" {self.seg_device[seg.index]}" if seg.index in self.seg_device else ""
                lines.append(f"segment {seg.index} (npu{on}): {len(seg.nodes)} nodes, {len(seg.steps)} steps{size}")
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
    # a batch of independent samples: compiled at batch 1, run sample by sample (compiler/passes/batch.py)
    c.onnx_model, c.batch = split_batch(c.onnx_model)
    c.graph = to_graph(c.onnx_model)


def _estimate_tiles(c: Compilation) -> None:
    c.streaming = estimate_tiles(c.graph, c.config) > c.config.mrf_tiles


def _plan_padding(c: Compilation) -> None:
    c.pads = plan_padding(c.graph)


def _plan_concat_groups(c: Compilation) -> None:
    c.concat_groups = plan_concat_groups(c.graph, c.config.native_dim)


def _plan_pixel_groups(c: Compilation) -> None:
    c.pixel_groups = plan_pixel_groups(c.graph, c.config.native_dim, c.concat_groups, c.config.block)


def _split_rows(c: Compilation) -> None:
    if c.multi:
        c.splits = devs.split_rows(c.graph, c.config, c.budget, c.wide_parts)


def _assign_devices(c: Compilation) -> None:
    if not c.multi:
        return
    from npu.fabric import default_fabric

    a = devs.assign_devices(c.graph, devs.npu_order(c.graph), c.config, c.devices, c.node_cycles, c.budget, c.fabric,
                            c.node_tiles)
    c.assignment = a
    c.images = [devs.DeviceImage(d, streaming=a.streaming[d]) for d in range(a.devices)]
    base = c.fabric if c.fabric is not None else default_fabric(c.config, a.devices)
    c.fabric = base.replace(devices=a.devices, name=f"{c.config.name}x{a.devices}")


def _lower(c: Compilation) -> None:
    """Lower every segment, with chunks cut for the whole MRF (pinned) or half of it (streaming); pinned
    chunks that overflow the MRF after all are cut again for streaming."""
    cfg = c.config
    if c.multi:
        return _lower_devices(c)
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


def _lower_devices(c: Compilation) -> None:
    """Each device's segments with its own weight chunks and constants; a device whose chunks overflow its MRF
    streams them (with --devices auto the stages are cut again, with less room each)."""
    cfg = c.config
    for img in c.images:
        img.shared = Shared()
    c.segments, c.seg_device = devs.lower_on_devices(c.graph, cfg, c.images, c.assignment.device_of, c.pads,
                                                     c.capacity, c.progress, c.concat_groups, c.pixel_groups)
    over = 0
    for img in c.images:
        tiles = sum(chunk.tiles for chunk in img.shared.chunks)
        if tiles > cfg.mrf_tiles:
            over = max(over, tiles - cfg.mrf_tiles)
            img.streaming = True
        elif img.streaming and tiles <= cfg.mrf_tiles:
            img.streaming = False  # the estimate was high
    if over and c.devices == devs.AUTO:
        if c.budget - over < 1:
            raise CompileError("--devices auto: the stages' weights do not fit the MRF after lowering")
        c.budget -= over
        raise _Rebalance()
    c.streaming = any(img.streaming for img in c.images)
    c.shared = c.images[0].shared


def _images_of(c: Compilation):
    """(image, its segments) per device; a one-NPU compilation is one image: the Compilation's own state
    (``streaming``, ``shared``, ``constants``, ``vrf_base``, as a DeviceImage has them)."""
    if not c.multi:
        return [(c, list(c.npu_segments))]
    return [(img, [s for s in c.npu_segments if c.seg_device[s.index] == img.index]) for img in c.images]


def _allocate_weights(c: Compilation) -> None:
    for img, _ in _images_of(c):
        allocate_weights(img.shared.chunks, c.config, img.streaming)


def _allocate_constants(c: Compilation) -> None:
    for img, _ in _images_of(c):
        img.constants = list(img.shared.consts.values())
        img.vrf_base = allocate_constants(img.constants, c.config)
    if c.multi:
        c.constants, c.vrf_base = c.images[0].constants, c.images[0].vrf_base


def _schedule_dma(c: Compilation) -> None:
    for img, segs in _images_of(c):
        for seg in segs:
            seg.steps = schedule_dma(seg.steps, c.config, img.streaming)


def _allocate_buffers(c: Compilation) -> None:
    for img, segs in _images_of(c):
        for seg in segs:
            seg.memory = allocate_buffers(seg.steps, c.config, img.vrf_base)


def _emit(c: Compilation) -> None:
    for seg in c.npu_segments:
        instructions, seg.regions = emit(seg.steps, c.config)
        seg.program = Program(c.config, instructions)
        analyze(seg.program)  # every static rule, now rather than at run time


def _quantize_weights(c: Compilation) -> None:
    def image(chunks):
        tiles = [tile_matrix(chunk.matrix, c.config)[0] for chunk in chunks]
        return WeightImage.concat(tiles) if tiles else WeightImage.empty(c.config, 0)

    if c.multi:
        for img in c.images:
            img.weights = image(img.shared.chunks)
        c.weights = c.images[0].weights
        return
    c.weights = image(c.shared.chunks)


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
    # several NPUs only: a layer larger than one MRF becomes row parts and a Concat; before partition, which
    # places the parts; in the redo loop, as the budget of tiles per stage may shrink
    Pass("split_rows", _split_rows),
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
    # several NPUs only: after fusion (stages hold fused nodes) and partition (the plan's order is known)
    Pass("assign_devices", _assign_devices),
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
REDO_FROM = PASS_NAMES.index("split_rows")


def compile_graph(source, config="brainslice-128", fmt=None, input_shapes=None, host_fallback=True,
                  progress=None, dump_after=(), verify: bool | None = None, dump=print, devices=1,
                  fabric=None) -> Compilation:
    """Run :data:`PASSES` on an ONNX model (path, bytes or ModelProto).

    ``dump_after`` names passes (or "all") after which ``dump`` gets the IR as text; ``verify`` checks
    the IR after every pass (default: the NPU_VERIFY_IR environment variable).  ``devices`` (a count or
    "auto") spreads the model over several NPUs of the configuration (compiler/passes/devices.py), linked as
    ``fabric`` (an npu.fabric.Fabric; default: npu.fabric.default_fabric)."""
    t0 = time.perf_counter()
    dump_after = set(PASS_NAMES if "all" in dump_after else dump_after)
    unknown = dump_after - set(PASS_NAMES)
    if unknown:
        raise CompileError(f"no pass named {', '.join(sorted(unknown))}", hint=f"passes: {', '.join(PASS_NAMES)}")
    if verify is None:
        verify = os.environ.get(VERIFY_ENV, "") not in ("", "0")
    if devices != devs.AUTO and (not isinstance(devices, int) or isinstance(devices, bool) or devices < 1):
        raise CompileError(f"devices must be a positive integer or 'auto', not {devices!r}")
    c = Compilation(resolve_config(config, fmt), host_fallback, progress, devices=devices, fabric=fabric)
    c.onnx_model = load_model(source, input_shapes)
    partitioned_from = PASS_NAMES.index("partition")

    def run(passes: tuple[Pass, ...], attempt: int) -> None:
        for p in passes:
            t = time.perf_counter()
            p.run(c)
            c.timings[p.name] = c.timings.get(p.name, 0.0) + time.perf_counter() - t
            if verify:
                verify_ir(c.graph, p.name, partitioned=PASS_NAMES.index(p.name) >= partitioned_from)
            if p.name in dump_after:
                dump(f"# IR after {p.name}" + (f" (partitioning attempt {attempt})" if attempt > 1 else ""))
                dump(c.dump())

    run(PASSES[:REDO_FROM], 1)
    if c.multi:
        # chunks cut as the one-NPU compilation cuts them (half the MRF when its weights would stream), so
        # every layer sums the same column groups and the outputs are the same bits
        c.budget = c.config.mrf_tiles
        c.capacity = c.config.mrf_tiles // 2 if c.streaming else c.config.mrf_tiles
    base = c.graph
    repartitions = rebalances = attempt = 0
    while True:
        attempt += 1
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
            repartitions += 1
            if repartitions >= MAX_REPARTITIONS:
                raise CompileError("partitioning did not converge") from None
            continue
        except _Rebalance:
            rebalances += 1
            if rebalances > MAX_REBALANCES:
                raise CompileError("--devices auto: the stages could not be cut to fit the MRF") from None
            continue
        if c.multi and not c.node_cycles:
            # the first cut balanced MACs and estimated tiles; cut again by the cycles the timing model gives each
            # layer and the tiles lowering gave it
            c.node_cycles = _measure_cycles(c) or {"": 0.0}
            for img in c.images:
                for chunk in img.shared.chunks:
                    c.node_tiles[chunk.owner] = c.node_tiles.get(chunk.owner, 0) + chunk.tiles
            c.node_tiles = c.node_tiles or {"": 0}
            a = c.assignment
            spare = c.devices - a.pinned_count if isinstance(c.devices, int) else 0
            if a.too_big and spare > 0:
                # NPUs beyond those that pin every other layer may share the weights of the layers no MRF holds
                c.wide_parts = devs.wide_parts(c.graph, devs.npu_order(c.graph), c.config, c.devices, c.node_cycles,
                                               c.budget, c.fabric, c.node_tiles, a.too_big)
            continue
        break
    c.timings["total_s"] = time.perf_counter() - t0
    return c


def _measure_cycles(c: Compilation) -> dict[str, float]:
    """Modeled cycles per region (layer) over every NPU segment."""
    from sim.machine import Machine

    machine = Machine(c.config)
    out: dict[str, float] = {}
    for seg in c.npu_segments:
        for r in machine.run(seg.program, functional=False, regions=seg.regions).regions():
            out[r["name"]] = out.get(r["name"], 0.0) + r["cycles"]
    return out


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

    def image(weights, constants, suffix: str) -> dict:
        members[f"weights{suffix}.bin"] = weights.to_bytes()
        consts, const_list = {}, []
        for k, b in enumerate(constants):
            key = f"c{k}"
            consts[key] = b.const
            const_list.append({"key": key, "space": int(b.space), "mfu": b.mfu, "addr": b.addr})
        buf = io.BytesIO()
        np.savez(buf, **consts)
        members[f"constants{suffix}.npz"] = buf.getvalue()
        return {"weights": {"member": f"weights{suffix}.bin", "tiles": weights.tiles},
                "constants": {"member": f"constants{suffix}.npz", "vectors": const_list}}

    if c.multi:
        for k, step in enumerate(plan):
            if step["kind"] == "npu":
                step["device"] = c.seg_device[c.segments[k].index]
        images = [image(img.weights, img.constants, f"/{img.index}") for img in c.images]
        for img, d in zip(c.images, images):
            d["weights"]["mode"] = "streaming" if img.streaming else "pinned"
    else:
        images = [image(c.weights, c.constants, "")]
        images[0]["weights"]["mode"] = "streaming" if c.streaming else "pinned"
    const_outputs = {}
    for o in g.outputs:
        if g.value(o) is not None:
            name = f"const/{len(const_outputs)}.npy"
            members[name] = _npy(np.asarray(g.value(o)))
            const_outputs[o] = name

    def spec(name):
        t = g.tensors[name]
        shape = tuple(t.shape or ())
        if c.batch > 1:  # the plan runs one sample; the model takes and gives the whole batch
            shape = (c.batch,) + shape[1:]
        return TensorSpec(name, shape, t.dtype).to_dict()

    report = build_report(c)
    manifest = {
        "config": c.config.to_dict(),
        "inputs": [spec(i) for i in g.inputs],
        "outputs": [spec(o) for o in g.outputs],
        "preprocessing": preprocessing or {"kind": "none"},
        "plan": plan,
        "weights": images[0]["weights"],
        "constants": images[0]["constants"],
        "const_outputs": const_outputs,
        # no wall-clock figures: the same model and options give the same file (content-addressed stores)
        "compiler": {"report": dict(report.to_dict(), compile_time_s=0.0)},
    }
    if c.batch > 1:
        manifest["batch"] = {"size": c.batch}
    if c.multi:
        # several NPUs (npu/modelfile.py, format version 2): what each device holds and what crosses the links
        manifest["fabric"] = c.fabric.to_dict()
        manifest["devices"] = images
        manifest["routes"] = devs.routes(plan)
    return manifest, members
