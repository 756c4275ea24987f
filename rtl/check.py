"""Differential checking: the same program and data on the simulator and on the RTL.

:func:`compare` loads a :class:`rtl.randprog.Case` (or anything with a
``load(machine)`` method and a ``program``) into a fresh sim.Machine and an
RtlMachine, runs both, and compares bit for bit the output queue and every
memory word the program may write, plus the per-step commit trace (order and
completion cycle) and the total cycle count.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from npu.isa import Space
from npu.numerics import fp16_bits
from npu.program import analyze


@dataclass
class Comparison:
    bit_exact: bool
    rtl_cycles: int
    sim_cycles: int
    first_mismatch: str | None = None
    commits_rtl: list = field(default_factory=list)
    commits_sim: list = field(default_factory=list)

    @property
    def cycle_error(self) -> float:
        return (self.rtl_cycles - self.sim_cycles) / self.rtl_cycles if self.rtl_cycles else 0.0

    def summary(self) -> dict:
        return {"bit_exact": self.bit_exact, "first_mismatch": self.first_mismatch, "rtl_cycles": self.rtl_cycles,
                "sim_cycles": self.sim_cycles, "cycle_error": round(self.cycle_error, 6)}


def _first_diff(name: str, a: np.ndarray, b: np.ndarray) -> str | None:
    if a.shape != b.shape:
        return f"{name}: sim has shape {a.shape}, RTL {b.shape}"
    ab, bb = fp16_bits(a), fp16_bits(b)
    bad = np.argwhere(ab != bb)
    if len(bad):
        idx = tuple(int(i) for i in bad[0])
        return f"{name}[{idx}]: sim {int(ab[idx]):#06x} ({a[idx]}), RTL {int(bb[idx]):#06x} ({b[idx]})"
    return None


def compare_machines(sim, rtl, program, steps) -> str | None:
    """First difference between a simulator and an RTL machine after the same run, or None."""
    from rtl.backend import written_ranges

    diff = _first_diff("output queue", sim.pop_output(), rtl.pop_output())
    if diff:
        return diff
    for name, (lo, hi) in written_ranges(steps, sim.config, rtl.memmap).items():
        if name in rtl.memmap.tile_memories:  # compared tile by tile below
            continue
        space = {"ivrf": Space.IVRF, "dram": Space.DRAM}.get(name)
        mfu = 0
        if space is None:
            space = Space.ASVRF if name.startswith("asvrf") else Space.MULVRF
            mfu = int(name[-1])
        diff = _first_diff(name, sim.state.memory(space, mfu)[lo:hi + 1], rtl.read_vectors(space, lo, hi - lo + 1, mfu))
        if diff:
            return f"{diff} (address {lo} + index)"
    from npu.program import Dma

    for d in (s for s in steps if isinstance(s, Dma)):
        # compare the tiles each transfer wrote (unwritten tiles have no defined exponent encoding)
        what, at = ("mrf", d.mrf) if d.to_mrf else ("wdram", d.tile)
        ref = sim.state.mrf if d.to_mrf else sim.state.wdram
        got = rtl.read_tiles(what, at, d.count)
        rm, re = ref.mant[at:at + d.count], ref.exp[at:at + d.count]
        block = sim.config.block
        live = (rm.reshape(*re.shape, block) != 0).any(axis=-1)  # an all-zero block's exponent carries no value
        if not (np.array_equal(got.mant, rm) and np.array_equal(np.where(live, got.exp, 0), np.where(live, re, 0))):
            return f"{what} tiles {at}..{at + d.count - 1} differ after the transfer at pc {d.pc}"
    return None


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
    steps = analyze(program)
    mismatch = compare_machines(sim, rtl, program, steps)
    # in completion order (on the pipelined machine a transfer may complete after later chains)
    sim_commits = sorted(((s.end_pc, s.end) for s in sres.steps), key=lambda pc_cycle: (pc_cycle[1], pc_cycle[0]))
    rtl_commits = sorted(rres.commits, key=lambda pc_cycle: (pc_cycle[1], pc_cycle[0]))
    return Comparison(mismatch is None, rres.cycles, sres.cycles, mismatch, rtl_commits, sim_commits)
