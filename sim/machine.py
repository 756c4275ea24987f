"""The simulator's public face: a :class:`Machine` runs programs on its state.

    m = Machine(get_config("tiny"))
    m.state.load_mrf(image)            # pinned weights
    m.push_input(x_vectors)            # network input queue
    result = m.run(program)            # functional + timing
    y = m.pop_output()
    print(result.cycles, result.latency_us, result.tile_utilization)

The same machine may run several programs in a row; its memories persist, as
on hardware.  :class:`RunResult` carries the timing report; ``regions`` (a
list of ``(first_pc, last_pc, name)``, e.g. layers from the compiler) group
the per-step figures into a per-layer breakdown.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from npu.backend import CycleFigures
from npu.config import NpuConfig, get_config
from npu.errors import NpuError, SimulationError
from npu.isa import Space
from npu.program import Chain, Dma, Program, analyze
from sim.functional import Executor
from sim.state import MachineState
from sim.timing import Timeline, TimingModel


@dataclass
class StepRecord:
    pc: int
    end_pc: int
    kind: str           # "chain" | "m_rd" | "m_wr"
    start: int
    end: int
    tile_macs: int      # MACs of its mv_mul on whole native tiles
    iterations: int
    units: list[str]
    region: str = ""


@dataclass
class RunResult(CycleFigures):
    """Timing and counts of one program run."""

    config: NpuConfig
    cycles: int
    instructions: int
    chains: int
    tile_macs: int
    unit_busy: dict[str, int]
    steps: list[StepRecord] = field(default_factory=list)
    wall_time_s: float = 0.0

    @property
    def achieved_tops(self) -> float:
        return 2 * self.tile_macs / (self.latency_us * 1e-6) / 1e12 if self.cycles else 0.0

    def unit_utilization(self) -> dict[str, float]:
        return {u: (b / self.cycles if self.cycles else 0.0) for u, b in self.unit_busy.items() if b}

    def regions(self) -> list[dict]:
        """Per-region (layer) breakdown: cycles spanned, tile MACs, steps, tile utilization."""
        out: dict[str, dict] = {}
        for s in self.steps:
            r = out.setdefault(s.region or "(unlabelled)", {"name": s.region or "(unlabelled)", "start": s.start,
                                                            "end": s.end, "tile_macs": 0, "steps": 0})
            r["start"] = min(r["start"], s.start)
            r["end"] = max(r["end"], s.end)
            r["tile_macs"] += s.tile_macs
            r["steps"] += 1
        for r in out.values():
            r["cycles"] = r["end"] - r["start"]
            r["tile_utilization"] = self.config.utilization(r["tile_macs"], r["cycles"])
        return list(out.values())

    def summary(self) -> dict:
        return {
            "config": self.config.name,
            "cycles": int(self.cycles),
            "latency_us": round(self.latency_us, 3),
            "tile_utilization": round(self.tile_utilization, 6),
            "achieved_tops": round(self.achieved_tops, 6),
            "peak_tops": round(self.config.peak_tops, 6),
            "instructions": self.instructions,
            "chains": self.chains,
            "tile_macs": int(self.tile_macs),
            "units": {u: round(v, 6) for u, v in self.unit_utilization().items()},
            "wall_time_s": round(self.wall_time_s, 6),
        }


class Machine:
    """One simulated NPU instance."""

    def __init__(self, config: NpuConfig | str):
        self.config = get_config(config)
        self.state = MachineState(self.config)
        self.executor = Executor(self.state)
        self.timing = TimingModel(self.config)
        self._analysis: dict[int, tuple[Program, list, list]] = {}  # id -> (program, steps, texts), a few recent

    # ------------------------------------------------------------ loading (npu.backend.MachineLike)
    def load_mrf(self, image, at: int = 0) -> None:
        self.state.load_mrf(image, at)

    def load_weight_dram(self, image, at: int = 0) -> None:
        self.state.load_weight_dram(image, at)

    def load_vectors(self, space: Space, addr: int, vectors: np.ndarray, mfu: int = 0) -> None:
        self.state.load_vectors(space, addr, vectors, mfu)

    # ------------------------------------------------------------ queues
    def push_input(self, vectors: np.ndarray) -> None:
        """Append native vectors (any float dtype, rounded to fp16) to the input queue."""
        v = np.asarray(vectors)
        if v.size % self.config.native_dim:
            raise NpuError(f"input of {v.size} elements is not a whole number of {self.config.native_dim}-element "
                           f"native vectors")
        with np.errstate(over="ignore"):
            self.state.inq.push(v.astype(np.float16, copy=False).reshape(-1, self.config.native_dim))

    def pop_output(self) -> np.ndarray:
        return self.state.outq.pop_all()

    # ------------------------------------------------------------ running
    def steps_of(self, program: Program) -> list[Chain | Dma]:
        return self._analyzed(program)[1]

    def _analyzed(self, program: Program) -> tuple[Program, list, list]:
        """(program, its steps, each step's first instruction as text for error messages), cached."""
        if program.config != self.config:
            raise NpuError(f"program was built for configuration {program.config.name!r} "
                           f"({program.config.fingerprint()}), this machine is {self.config.name!r} "
                           f"({self.config.fingerprint()})")
        hit = self._analysis.get(id(program))
        if hit is None or hit[0] is not program:
            if len(self._analysis) >= 16:
                self._analysis.pop(next(iter(self._analysis)))
            steps = analyze(program)
            hit = self._analysis[id(program)] = (program, steps, [str(program.instructions[s.pc]) for s in steps])
        return hit

    def run(self, program: Program, *, functional: bool = True, timing: bool = True,
            regions: list[tuple[int, int, str]] | None = None) -> RunResult:
        """Execute a program; raises SimulationError naming the pc and rule on an illegal program."""
        t0 = time.perf_counter()
        _, steps, texts = self._analyzed(program)
        if functional:
            for step, text in zip(steps, texts):
                if isinstance(step, Chain):
                    self.executor.chain(step, text)
                else:
                    self.executor.dma(step, text)
        timeline = self.timing.schedule(steps, len(program)) if timing else None
        result = self._result(program, steps, timeline, regions)
        result.wall_time_s = time.perf_counter() - t0
        return result

    def _result(self, program: Program, steps, timeline: Timeline | None, regions) -> RunResult:
        n = self.config.native_dim
        records = []
        region_starts = sorted(regions or [])
        ri = 0
        for s, step in enumerate(steps):
            is_chain = isinstance(step, Chain)
            pc = step.pc
            while ri + 1 < len(region_starts) and region_starts[ri + 1][0] <= pc:
                ri += 1
            label = ""
            if region_starts and region_starts[ri][0] <= pc <= region_starts[ri][1]:
                label = region_starts[ri][2]
            records.append(StepRecord(
                pc=pc, end_pc=step.end_pc if is_chain else pc,
                kind="chain" if is_chain else ("m_rd" if step.to_mrf else "m_wr"),
                start=int(timeline.starts[s]) if timeline else 0, end=int(timeline.ends[s]) if timeline else 0,
                tile_macs=step.mvm_macs(n) if is_chain else 0, iterations=step.iterations if is_chain else 1,
                units=timeline.step_units[s] if timeline else [], region=label))
        return RunResult(config=self.config, cycles=timeline.cycles if timeline else 0,
                         instructions=len(program), chains=sum(isinstance(s, Chain) for s in steps),
                         tile_macs=sum(r.tile_macs for r in records), unit_busy=timeline.busy if timeline else {},
                         steps=records)

    def reset(self) -> None:
        """Clear every memory and queue (as a power-on reset)."""
        self.state = MachineState(self.config)
        self.executor = Executor(self.state)


__all__ = ["Machine", "RunResult", "StepRecord", "SimulationError", "Space"]
