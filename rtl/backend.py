"""RtlMachine: the Verilated NPU behind npu.backend.MachineLike.

The machine keeps one simulator process of the cached build (rtl/cosim.py's
:class:`~rtl.cosim.Session`, started at the first run) and runs every program
on it: reset the registers, load what changed, run, read back.  It keeps a
shadow copy of every memory word it knows to be nonzero (what the machine
holds for its user) and the image of what the simulated instance holds; a run
loads through the load port only the words where the two differ, runs the
program, and reads back every word of every data memory (``read_all``, the
default when they total at most :data:`READ_ALL_WORDS` words) or else the
ranges the program may write, so memories persist from run to run as on the
simulator (and on hardware).  The network queues are Python lists between
runs.  ``persistent=False`` starts a simulator process per run instead (the
old way, 1-3 s each).

``bench`` chooses who drives the Verilated model: ``"cocotb"`` (rtl/bench.py,
the reference, the default) or ``"harness"`` (rtl/harness.py: the same cases,
edges and values from a C++ driver linked against the same build, about 8x
faster in the RTL; what rtl.check.Checker and ``npu rtl check --random`` use).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from npu.backend import CycleFigures
from npu.config import NpuConfig, get_config
from npu.errors import NpuError, SimulationError
from npu.isa import Space, encoding_for
from npu.program import Chain, Dma, Program, analyze
from npu.weights import WeightImage
from rtl.cosim import build, run_job
from rtl.generate import TOPLEVEL, RtlParams
from rtl.executor import ERR_OVERFLOW, ERR_UNSUPPORTED
from rtl.layout import MemoryMap, vector_memory


@dataclass
class RtlRunResult(CycleFigures):
    """What one RTL run measured (the fields sim.machine.RunResult also has)."""

    config: NpuConfig
    cycles: int
    instructions: int
    chains: int
    tile_macs: int
    commits: list[tuple[int, int]] = field(default_factory=list)  # (end pc, cycle) per completed step
    wall_time_s: float = 0.0
    sim_time_s: float = 0.0  # simulation of the program alone (no loading)

    def summary(self) -> dict:
        return {"config": self.config.name, "backend": "rtl", "cycles": self.cycles,
                "latency_us": round(self.latency_us, 3), "tile_utilization": round(self.tile_utilization, 6),
                "instructions": self.instructions, "chains": self.chains, "tile_macs": self.tile_macs,
                "wall_time_s": round(self.wall_time_s, 6), "sim_time_s": round(self.sim_time_s, 6)}


def written_ranges(steps, config: NpuConfig, memmap: MemoryMap) -> dict[str, tuple[int, int]]:
    """Per memory name, the word range [lo, hi] a program's steps may write."""
    out: dict[str, tuple[int, int]] = {}

    def add(name, lo, hi):
        a, b = out.get(name, (lo, hi))
        out[name] = (min(a, lo), max(b, hi))

    for s in steps:
        if isinstance(s, Chain):
            for w in s.writes:
                if w.space in (Space.NETQ, Space.ZERO):
                    continue
                name = vector_memory(w.space, w.mfu)
                add(name, *s.span(w, s.rows))
        elif isinstance(s, Dma):
            cpt = memmap.cpt
            if s.to_mrf:
                for t in range(s.mrf, s.mrf + s.count):
                    name, word = memmap.mrf_location(t)
                    for p in range(memmap.tile_parts):
                        add(memmap.tile_memory(name, p), word, word + cpt - 1)
            else:
                for p in range(memmap.tile_parts):
                    add(memmap.tile_memory("wdram", p), s.tile * cpt, (s.tile + s.count) * cpt - 1)
    return out


def output_count(steps) -> int:
    return sum(s.iterations * s.rows for s in steps if isinstance(s, Chain) for w in s.writes if w.space == Space.NETQ)


def input_count(steps) -> int:
    return sum(s.iterations * len(s.read_offsets()) for s in steps if isinstance(s, Chain) and s.read.space == Space.NETQ)


#: Who drives the Verilated model: the cocotb bench (rtl/bench.py, the reference) or the C++ one (rtl/harness.py).
BENCHES = ("cocotb", "harness")

#: Read back every data memory after each run when they hold at most this many words in all (tiny about
#: 3,000, small 9,000; the large presets' DRAMs are far beyond it).
READ_ALL_WORDS = 1 << 15


class RtlMachine:
    """One RTL NPU instance (npu.backend.MachineLike).

    ``max_cycles``: a run that has not finished after that many cycles stops with a SimulationError (a
    program waiting forever, e.g. on an empty input queue); None waits without bound."""

    #: whether the bench can feed and drain the network queues while a program runs (``run_raw(stream=True)``)
    streams = True

    def __init__(self, config: NpuConfig | str, params: RtlParams = RtlParams(), *, trace: bool = False,
                 progress=None, persistent: bool = True, read_all: bool | None = None,
                 max_cycles: int | None = None, bench: str = "cocotb", toplevel: str = TOPLEVEL):
        if bench not in BENCHES:
            raise NpuError(f"unknown RTL bench {bench!r}: one of {', '.join(BENCHES)}")
        if bench == "harness" and toplevel != TOPLEVEL:
            raise NpuError(f"the C++ bench (bench='harness') drives the bare core, not {toplevel}")
        if bench == "harness" and trace:
            raise NpuError("the C++ bench (bench='harness') does not trace; use bench='cocotb' for waveforms")
        self.bench = bench
        self.config = get_config(config)
        self.params = params
        self.memmap = MemoryMap(self.config, params.program_depth, params.max_word_bits)
        self.build = build(self.config, params, trace=trace, progress=progress, toplevel=toplevel)
        self.shadow: dict[str, dict[int, int]] = {m.name: {} for m in self.memmap.memories}
        #: what the simulated instance holds (nonzero words), as far as loads and reads tell
        self.image: dict[str, dict[int, int]] = {m.name: {} for m in self.memmap.memories}
        self.inq: list[np.ndarray] = []
        self.outq: list[np.ndarray] = []
        self.persistent = persistent
        data_words = sum(m.depth for m in self.memmap.memories if m.name != "prog")
        self.read_all = data_words <= READ_ALL_WORDS if read_all is None else read_all
        self.max_cycles = max_cycles
        self.session = None
        self.last_result: dict | None = None  # the bench's raw result of the last run (error bits, hung)

    def close(self) -> None:
        """Stop the simulator process (a later run starts another)."""
        if self.session is not None:
            self.session.close()
            self.session = None
        self.image = {m.name: {} for m in self.memmap.memories}

    def _job(self, case: dict) -> dict:
        from rtl.cosim import Session

        if self.bench == "harness":
            from rtl.harness import Harness

            if not self.persistent:
                with Harness(self.build) as h:
                    (res,) = h.run([case])
                return res
        elif not self.persistent:
            (res,) = run_job(self.build, [case])
            return res
        if self.session is None:
            self.session = Harness(self.build) if self.bench == "harness" else Session(self.build)
            self.image = {m.name: {} for m in self.memmap.memories}  # a new process: every word zero
        (res,) = self.session.run([case])
        return res

    # ------------------------------------------------------------------ loading
    def _put(self, name: str, addr: int, words: list[int]) -> None:
        info = self.memmap.by_name[name]
        if addr < 0 or addr + len(words) > info.depth:
            raise SimulationError(-1, "load", f"{len(words)} words at {addr} do not fit {name} (depth {info.depth})")
        mem = self.shadow[name]
        for k, w in enumerate(words):
            if w:
                mem[addr + k] = w
            else:
                mem.pop(addr + k, None)

    def load_mrf(self, image: WeightImage, at: int = 0) -> None:
        if at < 0 or at + image.tiles > self.config.mrf_tiles:
            raise SimulationError(-1, "load", f"{image.tiles} tiles at {at} do not fit the "
                                              f"{self.config.mrf_tiles}-tile MRF")
        for t in range(image.tiles):
            self._put_tile(*self.memmap.mrf_location(at + t), image.mant[t], image.exp[t])

    def load_weight_dram(self, image: WeightImage, at: int = 0) -> None:
        if at < 0 or at + image.tiles > self.config.dram_tiles:
            raise SimulationError(-1, "load", f"{image.tiles} tiles at {at} do not fit the "
                                              f"{self.config.dram_tiles}-tile weight DRAM")
        cpt = self.memmap.cpt
        for t in range(image.tiles):
            self._put_tile("wdram", (at + t) * cpt, image.mant[t], image.exp[t])

    def _put_tile(self, name: str, word: int, mant: np.ndarray, exp: np.ndarray) -> None:
        for p, words in enumerate(self.memmap.tile_words(mant, exp)):
            self._put(self.memmap.tile_memory(name, p), word, words)

    def load_vectors(self, space: Space, addr: int, vectors: np.ndarray, mfu: int = 0) -> None:
        self._put(vector_memory(space, mfu), addr, self.memmap.vector_words(vectors))

    def read_vectors(self, space: Space, addr: int, count: int, mfu: int = 0) -> np.ndarray:
        mem = self.shadow[vector_memory(space, mfu)]
        return self.memmap.words_vectors([mem.get(a, 0) for a in range(addr, addr + count)])

    def read_tiles(self, name: str, at: int, count: int) -> WeightImage:
        """Tiles of the MRF (name "mrf") or the weight DRAM ("wdram") from the shadow copy (a tile whose words
        have not changed since it was last decoded comes from a cache: most tiles stay as they are from run to
        run, and decoding one costs a Python loop over its fields)."""
        cpt = self.memmap.cpt
        mants, exps = [], []
        cache = self.__dict__.setdefault("_tiles", {})
        for t in range(at, at + count):
            mem, word = self.memmap.mrf_location(t) if name == "mrf" else ("wdram", t * cpt)
            parts = [self.shadow[self.memmap.tile_memory(mem, p)] for p in range(self.memmap.tile_parts)]
            words = tuple(tuple(part.get(word + g, 0) for g in range(cpt)) for part in parts)
            hit = cache.get((mem, word))
            if hit is None or hit[0] != words:
                hit = (words, *self.memmap.words_tile([list(w) for w in words]))
                cache[(mem, word)] = hit
            mants.append(hit[1])
            exps.append(hit[2])
        return WeightImage(np.array(mants, np.int16), np.array(exps, np.int16))

    # ------------------------------------------------------------------ queues
    def push_input(self, vectors: np.ndarray) -> None:
        v = np.asarray(vectors)
        n = self.config.native_dim
        if v.size % n:
            raise NpuError(f"input of {v.size} elements is not a whole number of {n}-element native vectors")
        with np.errstate(over="ignore"):
            self.inq.append(v.astype(np.float16).reshape(-1, n))

    def pop_output(self) -> np.ndarray:
        out = np.concatenate(self.outq) if self.outq else np.zeros((0, self.config.native_dim), np.float16)
        self.outq = []
        return out

    # ------------------------------------------------------------------ running
    def _program_words(self, program: Program) -> list[int]:
        """The program's instruction words for the RTL's program memory (refused when they do not fit it)."""
        if len(program) > self.params.program_depth:
            raise NpuError(f"program of {len(program)} instructions exceeds the RTL's "
                           f"{self.params.program_depth}-word program memory")
        enc = encoding_for(self.config)
        return [enc.encode(i) for i in program.instructions]

    def case_for(self, program: Program, steps, image: dict[str, dict[int, int]] | None = None
                 ) -> tuple[dict, dict]:
        """The bench case of one run, and what to read back.  It loads every nonzero word of the shadow (an
        instance fresh from power-on), or, given the ``image`` an instance holds, the words that differ."""
        mm = self.memmap
        words = self._program_words(program)
        loads = [(mm.by_name["prog"].id, 0, words)]
        for name, mem in self.shadow.items():
            if image is None:
                for addr in sorted(mem):
                    loads.append((mm.by_name[name].id, addr, [mem[addr]]))
                continue
            held = image[name]
            for addr in sorted(set(mem) | set(held)):
                if mem.get(addr, 0) != held.get(addr, 0):
                    loads.append((mm.by_name[name].id, addr, [mem.get(addr, 0)]))
        inputs = np.concatenate(self.inq) if self.inq else np.zeros((0, self.config.native_dim), np.float16)
        need = input_count(steps)
        if len(inputs) < need:
            chain = next(s for s in steps if isinstance(s, Chain) and s.read.space == Space.NETQ)
            raise SimulationError(chain.pc, str(program.instructions[chain.pc]),
                                  f"reading an empty queue: the program pops {need} vectors but the input queue "
                                  f"holds {len(inputs)}")
        if self.read_all:
            ranges = {m.name: (0, m.depth - 1) for m in mm.memories if m.name != "prog"}
        else:
            ranges = written_ranges(steps, self.config, mm)
        reads = [(mm.by_name[name].id, lo, hi - lo + 1) for name, (lo, hi) in ranges.items()]
        limit = self.params.queue_depth - 2
        case = {"loads": _merge_loads(loads), "program": words, "inputs": mm.vector_words(inputs[:need]),
                "stream": need > limit or output_count(steps) > limit, "reads": reads, "reset": True,
                "max_cycles": self.max_cycles}
        return case, {"ranges": ranges, "consumed": need}

    def run(self, program: Program, *, regions=None) -> RtlRunResult:
        if program.config != self.config:
            raise NpuError(f"program was built for configuration {program.config.name!r}, this machine is "
                           f"{self.config.name!r}")
        steps = analyze(program)
        fresh = not self.persistent
        case, info = self.case_for(program, steps, None if fresh else self.image)
        res = self._job(case)
        self.last_result = res
        if fresh:
            self.image = {m.name: {} for m in self.memmap.memories}
        for mem, addr, words in case["loads"][1:]:  # the program memory is not tracked
            self._note(self.image[mm_name(self.memmap, mem)], addr, words)
        self._absorb(res, info)
        if res.get("hung"):
            raise SimulationError(0, "run", f"the RTL did not finish within {self.max_cycles} cycles")
        if res["error"] & ERR_UNSUPPORTED:
            raise SimulationError(0, "run", "the RTL flagged a chain it does not implement")
        if res["error"] & ERR_OVERFLOW:
            raise SimulationError(0, "run", "the RTL output queue overflowed")
        macs = sum(s.mvm_macs(self.config.native_dim) for s in steps if isinstance(s, Chain))
        return RtlRunResult(self.config, res["cycles"], len(program), sum(isinstance(s, Chain) for s in steps),
                            macs, res["commits"], res["wall_s"], res["sim_s"])

    def run_raw(self, program: Program, inputs: np.ndarray | None = None, *, max_cycles: int | None = None,
                stream: bool = False) -> dict:
        """Run a program the static rules may refuse (an error program) as it is, on whatever the memories
        hold, and return the bench's raw result (``error`` bits, ``hung``, ``cycles``, ``commits``, ``outputs``).
        ``stream``: the bench drains the output queue (and feeds the input queue) while the program runs;
        otherwise nobody drains it until the program stops.  Afterwards the machine holds its reset state
        (empty shadow and queues)."""
        mm = self.memmap
        words = self._program_words(program)
        reads = ([(m.id, 0, m.depth) for m in mm.memories if m.name != "prog"] if self.read_all and self.persistent
                 else [])
        x = np.zeros((0, self.config.native_dim), np.float16) if inputs is None else np.asarray(inputs, np.float16)
        case = {"loads": [(mm.by_name["prog"].id, 0, words)], "program": words, "inputs": mm.vector_words(x),
                "stream": stream, "reads": reads, "reset": True, "max_cycles": max_cycles}
        res = self._job(case)
        self.last_result = res
        if reads:
            self.image = {m.name: {} for m in mm.memories}
            for (mem, addr, _), got in zip(reads, res["reads"]):
                self._note(self.image[mm_name(mm, mem)], addr, got)
        elif self.persistent:
            self.close()  # what the program wrote is unknown: the next run starts a new process
        self.reset()
        return res

    @staticmethod
    def _note(mem: dict[int, int], addr: int, words: list[int]) -> None:
        for k, w in enumerate(words):
            if w:
                mem[addr + k] = w
            else:
                mem.pop(addr + k, None)

    def _absorb(self, res: dict, info: dict) -> None:
        mm = self.memmap
        for (name, (lo, hi)), words in zip(info["ranges"].items(), res["reads"]):
            self._put(name, lo, words)
            self._note(self.image[name], lo, words)
        inputs = np.concatenate(self.inq) if self.inq else np.zeros((0, self.config.native_dim), np.float16)
        rest = inputs[info["consumed"]:]
        self.inq = [rest] if len(rest) else []
        if res["outputs"]:
            self.outq.append(mm.words_vectors(res["outputs"]))

    def reset(self) -> None:
        self.shadow = {m.name: {} for m in self.memmap.memories}
        self.inq, self.outq = [], []


def mm_name(memmap: MemoryMap, mem_id: int) -> str:
    return next(m.name for m in memmap.memories if m.id == mem_id)


def _merge_loads(loads):
    """Merge single-word loads into runs of consecutive words (fewer bench calls)."""
    out = []
    for mem, addr, words in loads:
        if out and out[-1][0] == mem and out[-1][1] + len(out[-1][2]) == addr:
            out[-1][2].extend(words)
        else:
            out.append((mem, addr, list(words)))
    return out
