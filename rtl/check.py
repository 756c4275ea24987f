"""Differential checking: the same program and data on the simulator and on the RTL.

:func:`compare` loads a :class:`rtl.randprog.Case` (or anything with a ``load(machine)`` method and a
``program``) into a fresh sim.Machine and an RtlMachine, runs both, and compares:

* bit for bit, the output queue and EVERY word of every memory (each vector memory whole, every tile of the
  MRF and of the weight DRAM; an all-zero block's exponent carries no value and is not compared);
* the per-step commit trace: each step's completion (end pc, cycle), in completion order;
* the total cycle count.

Each difference is a :class:`Mismatch` naming the memory (or "output queue", "commit", "cycles", "error")
and the step (the pc of the step that wrote the address last, or of the step that completed at another
cycle).  A :class:`Checker` runs many cases on one simulator process and one sim.Machine whose memories
carry over from case to case (cases then load only part of the memories: ``random_case(data="partial")``),
and checks error programs (:class:`rtl.randprog.ErrorCase`) against the simulator's error.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from npu.isa import Space
from npu.numerics import fp16_bits
from npu.program import Chain, Dma, analyze

#: Mismatches kept per comparison (the count is exact).
MAX_REPORTED = 20


@dataclass
class Mismatch:
    kind: str                    # "output queue" | "memory" | "tiles" | "commit" | "cycles" | "error"
    where: str                   # a memory name, "output queue", "commit trace", ...
    step: int | None = None      # pc of the step concerned (the last writer of an address), or None
    address: int | None = None   # word/vector/tile address, or the index in the output queue/commit trace
    sim: str = ""
    rtl: str = ""

    def text(self) -> str:
        at = "" if self.address is None else f"[{self.address}]"
        st = "" if self.step is None else f" (step at pc {self.step})"
        return f"{self.where}{at}: sim {self.sim}, RTL {self.rtl}{st}"


@dataclass
class Comparison:
    bit_exact: bool
    rtl_cycles: int
    sim_cycles: int
    first_mismatch: str | None = None
    commits_rtl: list = field(default_factory=list)
    commits_sim: list = field(default_factory=list)
    mismatches: list[Mismatch] = field(default_factory=list)
    mismatch_count: int = 0
    error: str | None = None     # the error both sides raised (error programs), else None

    @property
    def cycle_error(self) -> float:
        return (self.rtl_cycles - self.sim_cycles) / self.rtl_cycles if self.rtl_cycles else 0.0

    @property
    def exact(self) -> bool:
        """Bits, every step's completion cycle and the total all equal."""
        return self.mismatch_count == 0

    def summary(self) -> dict:
        return {"bit_exact": self.bit_exact, "exact": self.exact, "first_mismatch": self.first_mismatch,
                "rtl_cycles": self.rtl_cycles, "sim_cycles": self.sim_cycles,
                "cycle_error": round(self.cycle_error, 6), "mismatch_count": self.mismatch_count,
                "mismatches": [asdict(m) for m in self.mismatches], "error": self.error}


def _hex(a: np.ndarray, b: np.ndarray, idx) -> tuple[str, str]:
    ab, bb = fp16_bits(a), fp16_bits(b)
    return (f"{int(ab[idx]):#06x} ({a[idx]})", f"{int(bb[idx]):#06x} ({b[idx]})")


def last_writers(steps, config) -> dict[tuple[Space, int], list[tuple[int, int, int]]]:
    """Per vector memory (space, mfu): (lo, hi, pc) of every chain's write span, in program order."""
    out: dict[tuple[Space, int], list] = {}
    for s in steps:
        if isinstance(s, Chain):
            for w in s.writes:
                if w.space in (Space.NETQ, Space.ZERO):
                    continue
                key = (w.space, w.mfu if w.space in (Space.ASVRF, Space.MULVRF) else 0)
                lo, hi = s.span(w, s.rows)
                out.setdefault(key, []).append((lo, hi, s.pc))
    return out


def _writer(spans, addr) -> int | None:
    for lo, hi, pc in reversed(spans or []):
        if lo <= addr <= hi:
            return pc
    return None


def vector_memories(config) -> list[tuple[Space, int, str]]:
    out = [(Space.IVRF, 0, "ivrf"), (Space.DRAM, 0, "dram")]
    for k in range(config.n_mfus):
        out += [(Space.ASVRF, k, f"asvrf{k}"), (Space.MULVRF, k, f"mulvrf{k}")]
    return out


def memory_mismatches(sim, rtl, steps, outputs: tuple[np.ndarray, np.ndarray] | None = None) -> list[Mismatch]:
    """Every difference between a simulator and an RTL machine after the same run: the output queue (popped
    from both unless ``outputs`` gives them), every vector memory word, every MRF and weight-DRAM tile."""
    config = sim.config
    out: list[Mismatch] = []
    so, ro = outputs if outputs is not None else (sim.pop_output(), rtl.pop_output())
    if so.shape != ro.shape:
        out.append(Mismatch("output queue", "output queue", sim=f"{len(so)} vectors", rtl=f"{len(ro)} vectors"))
    else:
        bad = np.argwhere(fp16_bits(so) != fp16_bits(ro))
        for r, e in bad[:MAX_REPORTED]:
            s_, r_ = _hex(so, ro, (r, e))
            out.append(Mismatch("output queue", "output queue", address=int(r), sim=f"element {e} {s_}", rtl=r_))
    writers = last_writers(steps, config)
    for space, mfu, name in vector_memories(config):
        ref = sim.state.memory(space, mfu)
        got = rtl.read_vectors(space, 0, len(ref), mfu)
        bad = np.argwhere(fp16_bits(ref) != fp16_bits(got))
        for a, e in bad[:MAX_REPORTED]:
            s_, r_ = _hex(ref, got, (a, e))
            out.append(Mismatch("memory", name, _writer(writers.get((space, mfu)), int(a)), int(a),
                                f"element {e} {s_}", r_))
    block = config.block
    dmas = [s for s in steps if isinstance(s, Dma)]
    for what, ref, count in (("mrf", sim.state.mrf, config.mrf_tiles), ("wdram", sim.state.wdram, config.dram_tiles)):
        got = rtl.read_tiles(what, 0, count)
        rm, re = ref.mant[:count], ref.exp[:count]
        live = (rm.reshape(*re.shape, block) != 0).any(axis=-1)  # an all-zero block's exponent carries no value
        bad_m = (got.mant != rm).reshape(count, -1).any(axis=1)
        bad_e = (np.where(live, got.exp, 0) != np.where(live, re, 0)).reshape(count, -1).any(axis=1)
        for t in np.flatnonzero(bad_m | bad_e)[:MAX_REPORTED]:
            t = int(t)
            pc = None
            for d in dmas:
                lo = d.mrf if (what == "mrf") == d.to_mrf else d.tile
                if (d.to_mrf == (what == "mrf")) and lo <= t < lo + d.count:
                    pc = d.pc
            out.append(Mismatch("tiles", what, pc, t, sim="mantissas/exponents as loaded or transferred",
                                rtl="differ" + (" (mantissas)" if bad_m[t] else " (exponents)")))
    return out


def commit_mismatches(sim_commits, rtl_commits, sim_cycles, rtl_cycles) -> list[Mismatch]:
    out = []
    for k in range(max(len(sim_commits), len(rtl_commits))):
        s = sim_commits[k] if k < len(sim_commits) else None
        r = rtl_commits[k] if k < len(rtl_commits) else None
        if s != r:
            out.append(Mismatch("commit", "commit trace", (s or r)[0], k,
                                "none" if s is None else f"pc {s[0]} completes in cycle {s[1]}",
                                "none" if r is None else f"pc {r[0]} completes in cycle {r[1]}"))
    if sim_cycles != rtl_cycles:
        out.append(Mismatch("cycles", "total cycles", sim=str(sim_cycles), rtl=str(rtl_cycles)))
    return out


def compare_machines(sim, rtl, program, steps) -> str | None:
    """First difference between a simulator and an RTL machine after the same run, or None."""
    bad = memory_mismatches(sim, rtl, steps)
    return bad[0].text() if bad else None


def _trace(sres, rres):
    # in completion order (on the pipelined machine a transfer may complete after later chains)
    sim_commits = sorted(((s.end_pc, s.end) for s in sres.steps), key=lambda pc_cycle: (pc_cycle[1], pc_cycle[0]))
    rtl_commits = sorted(rres.commits, key=lambda pc_cycle: (pc_cycle[1], pc_cycle[0]))
    return sim_commits, rtl_commits


def _comparison(sim, rtl, sres, rres, steps, outputs=None) -> Comparison:
    bits = memory_mismatches(sim, rtl, steps, outputs)
    sim_commits, rtl_commits = _trace(sres, rres)
    timing = commit_mismatches(sim_commits, rtl_commits, sres.cycles, rres.cycles)
    every = bits + timing
    return Comparison(not bits, rres.cycles, sres.cycles, every[0].text() if every else None, rtl_commits,
                      sim_commits, every[:MAX_REPORTED], len(every))


def compare(case, rtl_machine=None) -> Comparison:
    """Run a case on both backends (a fresh RTL instance unless one is given) and compare."""
    from rtl.backend import RtlMachine
    from sim.machine import Machine

    program = case.program
    config = program.config
    sim = Machine(config)
    case.load(sim)
    sres = sim.run(program)
    rtl = rtl_machine or RtlMachine(config)
    rtl.reset()  # both machines start from power-on state
    case.load(rtl)
    rres = rtl.run(program)
    return _comparison(sim, rtl, sres, rres, analyze(program))


class Checker:
    """Many cases on one RTL simulator process and one sim.Machine.

    ``rtl`` is an :class:`rtl.backend.RtlMachine`, or a configuration (an NpuConfig or a preset name) for which
    the checker makes one on ``bench``: the C++ bench of rtl/harness.py by default (the same results as the
    cocotb bench; a random program checks 4-5x faster, the RTL alone runs about 8x faster; ``bench="cocotb"``
    for the reference).

    With ``chained`` (the default) both machines keep their memories from case to case, as hardware does, so a
    case loads only what it brings (``random_case(data="partial")``) and the RTL's load port carries only the
    words that changed; after a mismatch or an error program both restart from zeros.  ``check_error`` runs an
    :class:`rtl.randprog.ErrorCase`."""

    def __init__(self, rtl, chained: bool = True, coverage=None, *, bench: str = "harness"):
        if not hasattr(rtl, "run_raw"):  # a configuration: a machine of its own, on the fast bench by default
            from rtl.backend import RtlMachine

            rtl = RtlMachine(rtl, bench=bench)
        self.rtl, self.chained, self.coverage = rtl, chained, coverage
        self.sim = None
        self.cases = self.cycles = self.skipped = 0

    def _fresh(self):
        from sim.machine import Machine

        self.sim = Machine(self.rtl.config)
        self.rtl.reset()

    def check(self, case) -> Comparison | None:
        """Compare one case; None when the simulator refuses it (a case drawn with ``verify=False``)."""
        from npu.errors import ProgramError

        if self.sim is None or not self.chained:
            self._fresh()
        sim, rtl = self.sim, self.rtl
        program = case.program
        case.load(sim)
        try:
            sres = sim.run(program)
        except ProgramError:
            self.sim = None
            self.skipped += 1
            return None
        case.load(rtl)
        steps = analyze(program)
        limit, rtl.max_cycles = rtl.max_cycles, 4 * sres.cycles + 2000  # an RTL that hangs is a mismatch too
        try:
            rres = rtl.run(program)
        except ProgramError as exc:  # the RTL raised an error flag or did not finish
            rtl.pop_output()
            sim.pop_output()
            self.sim = None
            self.cases += 1
            bad = [Mismatch("error", "run", None, None, "completes without error", str(exc))]
            return Comparison(False, 0, sres.cycles, bad[0].text(), [], [], bad, 1)
        finally:
            rtl.max_cycles = limit
        outputs = sim.pop_output(), rtl.pop_output()
        cmp = _comparison(sim, rtl, sres, rres, steps, outputs)
        if self.coverage is not None:
            self.coverage.sample(case, steps, sres, sim, outputs[0])
        if not cmp.exact:
            self.sim = None  # start the next case from a known state
        self.cases += 1
        self.cycles += rres.cycles
        return cmp

    def check_error(self, case) -> Comparison:
        """An error program: the simulator must refuse it (its error kind) and the RTL must flag the same kind
        (an error bit, or never finishing where the simulator says it would wait forever)."""
        from npu.errors import ProgramError
        from sim.machine import Machine

        config = self.rtl.config
        sim = Machine(config)
        case.load(sim)
        sim_error = None
        try:
            sim.run(case.program)
        except ProgramError as exc:
            sim_error = str(exc)
        # The legal steps before the fault may write more vectors than the output FIFO holds; the bench drains
        # them as they come (a host would), except for the output-overflow fault, which is nobody draining; a
        # bench that cannot stream (the FPGA shell's, rtl.axi_machine) runs them as loaded.
        res = self.rtl.run_raw(case.program, case.inputs, max_cycles=case.max_cycles,
                               stream=case.kind != "output_overflow" and self.rtl.streams)
        rtl_kind = case.rtl_kind(res)
        self.sim = None  # the error program left the memories in a state the checker does not follow
        self.cases += 1
        self.cycles += res["cycles"]
        from rtl.randprog import ERROR_KINDS

        bad = []
        sim_kind = case.sim_kind(sim_error, len(sim.pop_output()) if sim_error is None else 0)
        if sim_kind != case.kind or rtl_kind != ERROR_KINDS[case.kind][1]:
            bad.append(Mismatch("error", f"error program ({case.kind})", case.pc, None,
                                f"{sim_kind}: {sim_error}", f"{rtl_kind} (error bits {res['error']}, "
                                f"hung {res['hung']}, {res['cycles']} cycles)"))
        if self.coverage is not None:
            self.coverage.sample_error(case.kind, not bad)
        return Comparison(not bad, res["cycles"], 0, bad[0].text() if bad else None, res["commits"], [], bad,
                          len(bad), case.kind)


def step_programs(program) -> list[list]:
    """A program as self-contained steps: each chain preceded by s_wr of every register it uses (the values
    analyze() found), each transfer on its own; any subset, in order, is again a program."""
    from npu.isa import Instruction, Reg

    out = []
    for s in analyze(program):
        if isinstance(s, Dma):
            out.append([program.instructions[s.pc]])
            continue
        regs = [(Reg.ROWS, s.rows), (Reg.COLS, s.cols), (Reg.ITER_OUTER, s.iter_outer),
                (Reg.ITER_INNER, s.iter_inner), (Reg.WIN_RUN, s.win_run), (Reg.WIN_PITCH, s.win_pitch),
                (Reg.ALPHA, s.alpha)]
        out.append([Instruction.make("s_wr", reg=int(r), imm=int(v)) for r, v in regs]
                   + list(program.instructions[s.pc:s.end_pc + 1]))
    return out


def minimise(case, rtl, *, max_runs: int = 300, say=None):
    """The smallest program (by steps removed greedily, halves first) that still mismatches, with the case's
    data: returns a copy of ``case`` with that program.  Each attempt is one compare() on ``rtl``."""
    import copy

    from npu.program import Program

    config = case.program.config
    steps = step_programs(case.program)
    runs = 0

    def bad(subset) -> bool:
        nonlocal runs
        runs += 1
        trial = copy.copy(case)
        trial.program = Program(config, [i for s in subset for i in s])
        try:
            return not compare(trial, rtl).exact
        except Exception:
            return False

    if not bad(steps):
        return None
    chunk = max(1, len(steps) // 2)
    while chunk >= 1 and runs < max_runs:
        k = 0
        changed = False
        while k < len(steps) and runs < max_runs:
            trial = steps[:k] + steps[k + chunk:]
            if trial and bad(trial):
                steps = trial
                changed = True
                if say:
                    say(f"{len(steps)} steps")
            else:
                k += chunk
        if not changed:
            chunk //= 2
    out = copy.copy(case)
    out.program = Program(config, [i for s in steps for i in s])
    return out
