"""The compile report: per layer, where it runs, its MACs, tiles, instructions and modeled cycles."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from compiler.ops import node_macs


@dataclass
class LayerReport:
    name: str
    op: str
    shape: list
    target: str
    macs: int = 0
    tiles: int = 0
    instructions: int = 0
    cycles: int = 0
    utilization: float = 0.0
    fused: list = field(default_factory=list)
    reason: str = ""
    device: int | None = None        # the NPU that runs it, on several NPUs


@dataclass
class CompileReport:
    config: str
    layers: list[LayerReport]
    total_cycles: int = 0
    latency_us: float = 0.0
    utilization: float = 0.0
    macs_npu: int = 0
    macs_host: int = 0
    instructions: int = 0
    weight_tiles: int = 0
    weight_mode: str = "pinned"
    compile_time_s: float = 0.0
    # several NPUs (compiler/passes/devices.py): per device its weight tiles, mode and cycles of one request;
    # latency_us is then one request through the stages with the link hops, throughput_per_s the pipelined stream
    devices: int = 1
    device_tiles: list = field(default_factory=list)
    device_modes: list = field(default_factory=list)
    device_cycles: list = field(default_factory=list)
    throughput_per_s: float = 0.0
    batch: int = 1                   # samples the model takes; the figures above are one sample's (run one by one)

    @property
    def npu_mac_share(self) -> float:
        """NPU MACs / all MACs; in a model without MACs, 1 when every layer runs on the NPU, else 0."""
        total = self.macs_npu + self.macs_host
        if total:
            return self.macs_npu / total
        return 0.0 if any(L.target == "host" for L in self.layers) else 1.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["npu_mac_share"] = self.npu_mac_share
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CompileReport":
        d = dict(d)
        d.pop("npu_mac_share", None)
        d["layers"] = [LayerReport(**x) for x in d["layers"]]
        return cls(**d)

    def table(self) -> str:
        multi = self.devices > 1 or any(L.device is not None for L in self.layers)
        npu = f"{'npu':>4} " if multi else ""
        head = f"{'layer':<34} {'op':<18} {'shape':<18} {'where':<5} {npu}{'MACs':>12} {'tiles':>6} {'instr':>6} " \
               f"{'cycles':>10} {'util':>6}"
        lines = [head, "-" * len(head)]
        for L in self.layers:
            shape = "x".join(str(s) for s in L.shape)
            why = f"  ({L.reason})" if L.target == "host" and L.reason else ""
            dev = (f"{L.device:>4} " if L.device is not None else f"{'-':>4} ") if multi else ""
            lines.append(f"{L.name[:34]:<34} {L.op[:18]:<18} {shape[:18]:<18} {L.target:<5} {dev}{L.macs:>12,} "
                         f"{L.tiles:>6} {L.instructions:>6} {L.cycles:>10,} {L.utilization:>6.1%}{why}")
        lines.append("-" * len(head))
        pad = " " * len(npu)
        lines.append(f"{'total':<34} {'':<18} {'':<18} {'':<5} {pad}{self.macs_npu + self.macs_host:>12,} "
                     f"{self.weight_tiles:>6} {self.instructions:>6} {self.total_cycles:>10,} {self.utilization:>6.1%}")
        lines.append(f"config {self.config}: {self.latency_us:,.1f} us modeled NPU latency, "
                     f"NPU share of MACs {self.npu_mac_share:.1%}, weights {self.weight_mode} "
                     f"({self.weight_tiles} tiles), compiled in {self.compile_time_s:.2f} s")
        if self.batch > 1:
            lines.append(f"batch of {self.batch}: the figures above are one sample's; the NPU runs the samples one by "
                         f"one, {self.batch * self.latency_us:,.1f} us for the batch")
        if multi:
            lines.append(f"{self.devices} NPUs: one request {self.latency_us:,.1f} us (stages in sequence, link hops "
                         f"included); pipelined stream {self.throughput_per_s:,.0f} requests/s; utilization is of "
                         f"all {self.devices} NPUs over one request")
            for d in range(self.devices):
                lines.append(f"  npu {d}: {self.device_tiles[d]:>5} weight tiles {self.device_modes[d]:<9} "
                             f"{self.device_cycles[d]:>10,} cycles a request")
        return "\n".join(lines)


def build_report(c) -> CompileReport:
    from compiler.chain_ir import ChainSpec
    from compiler.passes.lower import NpuSegment
    from sim.machine import Machine

    g = c.graph
    cfg = c.config
    layers: dict[str, LayerReport] = {}
    for seg in c.segments:
        for node in seg.nodes:
            shape = list(g.shape(node.outputs[0]) or []) if node.outputs else []
            macs = node_macs(g, node)
            layers[node.name] = LayerReport(node.name, node.op if node.op != "Eltwise" else
                                            "+".join(e.kind for e in node.epilogue), shape, node.target, macs,
                                            fused=list(node.fused), reason=node.reason)
    rep = CompileReport(cfg.name, [], weight_tiles=c.weights.tiles, batch=getattr(c, "batch", 1),
                        weight_mode="streaming" if c.streaming else "pinned",
                        compile_time_s=round(c.timings.get("total_s", 0.0), 3))
    machine = Machine(cfg)
    multi = bool(getattr(c, "multi", False))
    seg_cycles: dict[int, int] = {}
    for seg in c.segments:
        if not isinstance(seg, NpuSegment):
            continue
        device = c.seg_device[seg.index] if multi else None
        if multi:
            for node in seg.nodes:
                if node.name in layers:
                    layers[node.name].device = device
        for s in seg.steps:
            if isinstance(s, ChainSpec) and s.weights is not None and s.region in layers:
                layers[s.region].tiles += s.weights.tiles
        for first, last, name in seg.regions:
            if name in layers:
                layers[name].instructions += last - first + 1
        result = machine.run(seg.program, functional=False, regions=seg.regions)
        seg_cycles[seg.index] = result.cycles
        rep.total_cycles += result.cycles
        rep.instructions += result.instructions
        for r in result.regions():
            if r["name"] in layers:
                layers[r["name"]].cycles += r["cycles"]
    for L in layers.values():
        if L.target == "npu":
            rep.macs_npu += L.macs
            L.utilization = L.macs / (L.cycles * cfg.macs_per_cycle) if L.cycles else 0.0
        else:
            rep.macs_host += L.macs
    rep.layers = list(layers.values())
    if multi:
        _fabric_figures(c, rep, seg_cycles, layers)
        return rep
    rep.latency_us = rep.total_cycles / cfg.clock_mhz
    rep.utilization = rep.macs_npu / (rep.total_cycles * cfg.macs_per_cycle) if rep.total_cycles else 0.0
    return rep


def fabric_steps(c, seg_cycles: dict[int, int] | None = None) -> list:
    """The compiled plan as sim.fabric FabricSteps (NPU segments with their modeled cycles, host segments free)."""
    from compiler.ops import node_macs
    from compiler.passes.lower import NpuSegment
    from sim.fabric import FabricStep
    from sim.machine import Machine

    if seg_cycles is None:
        machine = Machine(c.config)
        seg_cycles = {s.index: machine.run(s.program, functional=False).cycles for s in c.npu_segments}
    steps = []
    for seg in c.segments:
        if isinstance(seg, NpuSegment):
            steps.append(FabricStep(f"segment {seg.index}", c.seg_device.get(seg.index, 0), seg_cycles[seg.index],
                                    sum(node_macs(c.graph, n) for n in seg.nodes),
                                    [s.tensor for s in seg.inputs], [(o.tensor, o.vectors) for o in seg.outputs]))
        else:
            steps.append(FabricStep(f"host {seg.index}", None, reads=list(seg.inputs),
                                    writes=[(t, 0) for t in seg.outputs]))
    return steps


def fabric_schedule(c, requests: int = 1, seg_cycles: dict[int, int] | None = None):
    """sim.fabric.schedule of ``requests`` requests through a compilation's NPUs (one NPU: a fabric of one)."""
    from npu.fabric import default_fabric
    from sim.fabric import schedule

    fabric = c.fabric if getattr(c, "multi", False) else default_fabric(c.config, 1)
    return schedule(fabric_steps(c, seg_cycles), fabric, c.config, requests)


def _fabric_figures(c, rep: CompileReport, seg_cycles: dict[int, int], layers: dict[str, LayerReport]) -> None:
    """Latency of one request and throughput of a stream through the NPUs (sim/fabric.py), per-device figures."""
    cfg = c.config
    one = fabric_schedule(c, 1, seg_cycles)
    stream = fabric_schedule(c, 16, seg_cycles)
    rep.devices = c.fabric.devices
    rep.device_tiles = [img.weights.tiles for img in c.images]
    rep.device_modes = ["streaming" if img.streaming else "pinned" for img in c.images]
    rep.device_cycles = [int(b) for b in one.device_busy]
    rep.weight_tiles = sum(rep.device_tiles)
    rep.weight_mode = "streaming" if any(img.streaming for img in c.images) else "pinned"
    rep.total_cycles = one.latency_cycles
    rep.latency_us = one.latency_us
    rep.throughput_per_s = round(stream.steady_per_s, 3)
    peak = rep.total_cycles * cfg.macs_per_cycle * rep.devices
    rep.utilization = rep.macs_npu / peak if peak else 0.0
