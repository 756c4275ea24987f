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
        head = f"{'layer':<34} {'op':<18} {'shape':<18} {'where':<5} {'MACs':>12} {'tiles':>6} {'instr':>6} " \
               f"{'cycles':>10} {'util':>6}"
        lines = [head, "-" * len(head)]
        for L in self.layers:
            shape = "x".join(str(s) for s in L.shape)
            why = f"  ({L.reason})" if L.target == "host" and L.reason else ""
            lines.append(f"{L.name[:34]:<34} {L.op[:18]:<18} {shape[:18]:<18} {L.target:<5} {L.macs:>12,} "
                         f"{L.tiles:>6} {L.instructions:>6} {L.cycles:>10,} {L.utilization:>6.1%}{why}")
        lines.append("-" * len(head))
        lines.append(f"{'total':<34} {'':<18} {'':<18} {'':<5} {self.macs_npu + self.macs_host:>12,} "
                     f"{self.weight_tiles:>6} {self.instructions:>6} {self.total_cycles:>10,} {self.utilization:>6.1%}")
        lines.append(f"config {self.config}: {self.latency_us:,.1f} us modeled NPU latency, "
                     f"NPU share of MACs {self.npu_mac_share:.1%}, weights {self.weight_mode} "
                     f"({self.weight_tiles} tiles), compiled in {self.compile_time_s:.2f} s")
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
    rep = CompileReport(cfg.name, [], weight_tiles=c.weights.tiles,
                        weight_mode="streaming" if c.streaming else "pinned",
                        compile_time_s=round(c.timings.get("total_s", 0.0), 3))
    machine = Machine(cfg)
    for seg in c.segments:
        if not isinstance(seg, NpuSegment):
            continue
        for s in seg.steps:
            if isinstance(s, ChainSpec) and s.weights is not None and s.region in layers:
                layers[s.region].tiles += s.weights.tiles
        for first, last, name in seg.regions:
            if name in layers:
                layers[name].instructions += last - first + 1
        result = machine.run(seg.program, functional=False, regions=seg.regions)
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
    rep.latency_us = rep.total_cycles / cfg.clock_mhz
    rep.utilization = rep.macs_npu / (rep.total_cycles * cfg.macs_per_cycle) if rep.total_cycles else 0.0
    return rep
