"""Cycle model of the NPU: the RTL's (rtl/npu.py) step-at-a-time machine, cycle for cycle.

Every step (chain or DMA) is reduced to a duration computed from its
registers, and sim._dispatch.schedule places the steps in time:

* **Front end.**  Instructions are decoded one per cycle (instruction ``k``
  in cycle ``k + 1``; cycle 0 is the start).  A step's descriptor enters the
  step queue in the cycle its last instruction
  is decoded; when the queue (``config.step_queue`` entries) is full,
  decoding stalls until the step that many places earlier has started
  (plus one cycle).
* **One step at a time.**  A step starts ``latencies.decode`` cycles after
  its descriptor was queued and ``latencies.chain_setup`` cycles after the
  previous step completed, whichever is later; steps never overlap, so no
  memory conflict (RAW, WAR, WAW) can reorder anything: a dependent chain
  always waits for its producer.  DMA (``m_rd``/``m_wr``) is a step like a
  chain and does not overlap compute either.
* **Chain without MVM.**  The read sequencer issues one vector every ``p``
  cycles, ``p`` the slowest per-vector cost of the read and write ports (a VRF
  or ZERO 1 cycle, DRAM and the queues ``vector bytes / bandwidth``); the last
  result is written ``read latency + mfu_stage * ops + vrf_write`` cycles
  after the last issue::

      duration = iterations * rows * p + read_latency + ops * mfu_stage + vrf_write

* **Chain with MVM.**  Reads issue every ``p_read`` cycles (``X = cols *
  p_read`` per iteration) into the MVM's input buffer; an iteration's MACs
  start once its whole input has arrived and take ``R = rows * max(p_write,
  ceil(cols / tile_engines) * N / dpe_lanes)`` cycles (a row of output per
  round of tiles, paced by the write port).  Reading overlaps the MACs of
  earlier iterations, so the slower of the two sets the pace::

      duration = read_latency + max(X + (it - 1) * R, it * X) + R - 1
                 + mvm + mvm_reduce + ops * mfu_stage + vrf_write

* **DMA** copies ``count`` tiles at ``N / dpe_lanes`` words per tile and is
  limited by the DRAM bandwidth: ``max(ceil(count * tile_bytes / bandwidth),
  count * N / dpe_lanes) + dram_latency``.
* The program ends ``latencies.drain`` cycles after its last step completed.

What it abstracts: the network input queue is assumed to hold the vectors a
chain pops (the bench loads them before the start), the output queue never
fills, and the per-unit ``busy`` counts are the cycles each unit does work
(for utilisation), not a constraint.  tests/rtl checks the model against the
RTL's per-step completion cycles; tests/sim/test_timing.py against hand
computation.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from npu.config import MFU_STAGES, NpuConfig
from npu.isa import Space
from npu.program import Chain, Dma, Operand

def _ceil(a: int, b: int) -> int:
    return -(-a // b)


@dataclass
class Timeline:
    """Scheduled steps: start/end cycle per step and busy cycles per unit."""

    starts: np.ndarray
    ends: np.ndarray
    busy: dict[str, int]
    units: list[str]
    step_units: list[list[str]] = field(default_factory=list)
    total: int = 0

    @property
    def cycles(self) -> int:
        return self.total


class TimingModel:
    """Step durations and the schedule for one configuration."""

    def __init__(self, config: NpuConfig):
        self.config = config
        c = config
        n = c.n_mfus
        self.units = ["mvm", "dram", "netq_in", "netq_out"]
        self.units += [f"mfu{k}.{stage}" for k in range(n) for stage in MFU_STAGES]
        self.units += ["ivrf.r", "ivrf.w"]
        self.units += [f"asvrf{k}.{p}" for k in range(n) for p in "rw"]
        self.units += [f"mulvrf{k}.{p}" for k in range(n) for p in "rw"]
        self.unit_index = {u: i for i, u in enumerate(self.units)}

    def _unit(self, op: Operand, write: bool) -> str | None:
        p = "w" if write else "r"
        if op.space == Space.IVRF:
            return f"ivrf.{p}"
        if op.space == Space.ASVRF:
            return f"asvrf{op.mfu}.{p}"
        if op.space == Space.MULVRF:
            return f"mulvrf{op.mfu}.{p}"
        if op.space == Space.DRAM:
            return "dram"
        if op.space == Space.NETQ:
            return "netq_out" if write else "netq_in"
        return None

    # -------------------------------------------------------------- per step
    def chain_duration(self, ch: Chain) -> tuple[int, dict[str, int]]:
        """Cycles from the chain's start to its completion, and busy cycles per unit."""
        c, lat = self.config, self.config.latencies
        it = ch.iterations
        width = len(ch.read_offsets())
        p_read = c.port_cost(ch.read.space)
        p_write = max([c.port_cost(w.space) for w in ch.writes], default=1)
        tail = c.read_latency(ch.read.space) + len(ch.ops) * lat.mfu_stage + lat.vrf_write
        busy: dict[str, int] = {}

        def add(unit, cycles):
            if unit is not None:
                busy[unit] = busy.get(unit, 0) + cycles

        add(self._unit(ch.read, False), it * width * c.port_cost(ch.read.space))
        for op in ch.ops:
            add(f"mfu{op.mfu}.{op.stage}", it * ch.rows)
            if op.operand is not None:
                add(self._unit(op.operand, False), it * ch.rows)
        for w in ch.writes:
            add(self._unit(w, True), it * ch.rows * c.port_cost(w.space))
        if ch.mrf is None:
            return it * ch.rows * max(p_read, p_write) + tail, busy
        x = ch.cols * p_read
        mac = _ceil(ch.cols, c.tile_engines) * c.cycles_per_tile
        r = ch.rows * max(p_write, mac)
        add("mvm", it * ch.rows * mac)
        return max(x + (it - 1) * r, it * x) + r - 1 + lat.mvm + lat.mvm_reduce + tail, busy

    def dma_duration(self, d: Dma) -> tuple[int, dict[str, int]]:
        c = self.config
        transfer = _ceil(d.count * c.tile_bytes, c.dram_bytes_per_cycle)
        return max(transfer, d.count * c.cycles_per_tile) + c.dram_latency, {"dram": transfer}

    # -------------------------------------------------------------- whole program
    def schedule(self, steps: list[Chain | Dma], program_length: int) -> Timeline:
        from sim._dispatch import schedule

        S = len(steps)
        table = np.zeros((S, 2), np.int64)  # end pc, duration
        busy = np.zeros(len(self.units), np.int64)
        step_units = []
        for s, step in enumerate(steps):
            if isinstance(step, Chain):
                dur, occ = self.chain_duration(step)
                table[s] = (step.end_pc, dur)
            else:
                dur, occ = self.dma_duration(step)
                table[s] = (step.pc, dur)
            for unit, cycles in occ.items():
                busy[self.unit_index[unit]] += cycles
            step_units.append(list(occ))
        lat = self.config.latencies
        starts, ends, shift = schedule(table, self.config.step_queue, lat.decode, lat.chain_setup)
        # instructions after the last step still have to be decoded (one per cycle)
        last = int(ends[-1]) if S else 0
        total = max(last, program_length + int(shift)) + lat.drain if program_length else 0
        return Timeline(starts, ends, {u: int(b) for u, b in zip(self.units, busy)}, self.units, step_units, total)
