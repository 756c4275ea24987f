"""Cycle model of the NPU: the RTL's (rtl/npu.py and its components) machines, cycle for cycle.

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

The pipelined machine (``config.pipelined``, docs/pipeline.md) is scheduled by
:meth:`TimingModel.schedule_pipelined` (sim/_dispatch.pyx ``schedule_pipelined``).
There the network queues are FIFOs beside compute; the link between them and the
network moves one native vector every ``P = port_cost(NETQ)`` cycles each way:

* **Input.**  The link fills the input FIFO from cycle 0: input vector ``k`` of the
  run (in the order chains pop them) has arrived from cycle ``(k + 1) * P`` on.  A
  queue read takes a read slot of one cycle (:meth:`npu.config.NpuConfig.slot_cost`)
  and issues no earlier than its vector's arrival (it waits in its slot); its data
  is the chain's ``netq_latency`` cycles after issue, as before.  The FIFO holds the
  whole input (the RTL's input queue, filled by the bench).
* **Output.**  A queue write takes one cycle (``slot_cost``) and never finds the
  ``netq_fifo``-deep output FIFO full: a chain that writes the queue reserves room
  when it reads, one vector per read issued (an ``mv_mul`` iteration reserves its
  ``rows`` when its first read's slot starts, with its MVM buffer slots; ``rows <=
  netq_fifo`` or the model refuses the program), and a read waits until the room is
  there.  The link takes output vector ``o`` at ``S_o = max(W_o + 1, S_(o-1) + P)``
  (``W_o`` the cycle it is written), which frees its room from ``S_o + 1`` on, and
  has sent it at ``S_o + P``.
* **End.**  The run ends ``drain`` cycles after the last step completed and the
  link has sent the last output vector.
* **MVM bypass** (``config.mvm_bypass``, docs/pipeline.md unit 11).  A chain that
  multiplies, applies no MFU operation and writes vector memories only
  (:meth:`TimingModel.bypasses`) writes its rows through the bypass write port at the
  same cycles as without it, but takes no part in the MFU order: its first iteration
  is not held for the previous chain's beats and the next chain's overtaking rule
  compares against the last chain that used the MFUs.  Chains may then complete out
  of program order, so a chain also waits until the chain ``scoreboard_entries``
  chains earlier has completed (its chain table entry is free).

The one-step machine keeps the link-paced queue ports described above (a queue read
or write takes ``port_cost(NETQ)`` cycles, the input is in the queue before the
start, the output queue never fills): it is today's RTL and the benchmarks' "before".

What it abstracts: on the one-step machine the network input queue is assumed to
hold the vectors a chain pops (the bench loads them before the start) and the
output queue never fills; the per-unit ``busy`` counts are the cycles each unit does work
(for utilisation), not a constraint.  tests/rtl checks the model against the
RTL's per-step completion cycles; tests/sim/test_timing.py against hand
computation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from npu.config import MFU_STAGES, NpuConfig
from npu.errors import ProgramError
from npu.isa import Space
from npu.program import Chain, Dma, Operand

#: the memories the bypass write port writes (docs/pipeline.md unit 11)
_BYPASS_SPACES = (Space.IVRF, Space.ASVRF, Space.MULVRF)


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
        if self.config.pipelined:
            return self.schedule_pipelined(steps, program_length)
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

    # -------------------------------------------------------------- the pipelined machine (docs/pipeline.md)
    def memory_ids(self) -> dict:
        """A number per memory the scoreboard tracks: vector memories, the MRF and the weight DRAM."""
        n = self.config.n_mfus
        ids = {(Space.IVRF, 0): 0, (Space.DRAM, 0): 1}
        ids.update({(Space.ASVRF, k): 2 + k for k in range(n)})
        ids.update({(Space.MULVRF, k): 2 + n + k for k in range(n)})
        ids.update({"mrf": 2 + 2 * n, "wdram": 3 + 2 * n})
        return ids

    def intervals(self, step: Chain | Dma) -> list[tuple[int, int, int, int]]:
        """(memory id, lo, hi, is_write) for everything a step reads and writes: bounding intervals over its
        iterations, as the scoreboard compares them."""
        ids = self.memory_ids()
        if isinstance(step, Dma):
            mrf = (ids["mrf"], step.mrf, step.mrf + step.count - 1)
            wdram = (ids["wdram"], step.tile, step.tile + step.count - 1)
            return [(*wdram, 0), (*mrf, 1)] if step.to_mrf else [(*mrf, 0), (*wdram, 1)]
        out = []

        def add(op: Operand, width: int, write: bool):
            if op.space in (Space.NETQ, Space.ZERO):
                return
            key = (op.space, op.mfu if op.space in (Space.ASVRF, Space.MULVRF) else 0)
            out.append((ids[key], *step.span(op, width), int(write)))

        add(step.read, int(step.read_offsets().max()) + 1, False)
        for op in step.ops:
            if op.operand is not None:
                add(op.operand, step.rows, False)
        if step.mrf is not None:
            out.append((ids["mrf"], step.mrf, step.mrf + step.rows * step.cols - 1, 0))
        for w in step.writes:
            add(w, step.rows, True)
        return out

    def bypasses(self, step: Chain | Dma) -> bool:
        """Whether a chain writes through the MVM's bypass write port (docs/pipeline.md unit 11): the design has
        it, and the chain multiplies, applies no MFU operation and writes vector memories only (IVRF, ASVRF,
        MULVRF: one cycle a vector)."""
        return (self.config.mvm_bypass and isinstance(step, Chain) and step.mrf is not None and not step.ops
                and all(w.space in _BYPASS_SPACES for w in step.writes))

    def spread_rounds(self, rows: int, cols: int) -> tuple[int, tuple[int, ...]]:
        """MAC rounds of one iteration in spread mode, and the cycle (from the iteration's MAC start) in which each
        row tile's last round ends: rounds take up to tile_engines consecutive tiles, touching at most
        mvm_row_slots row tiles."""
        return _spread_rounds(rows, cols, self.config.tile_engines, self.config.mvm_row_slots,
                              self.config.cycles_per_tile)

    def schedule_pipelined(self, steps: list[Chain | Dma], program_length: int) -> Timeline:
        from sim import _dispatch as D

        c, lat = self.config, self.config.latencies
        S = len(steps)
        table = np.zeros((S, D.STEP_COLUMNS), np.int64)
        # the MFU stages in pipeline order: MFU by MFU, stages in MFU_STAGES order
        stage_index = {(k, st): i for i, (k, st) in
                       enumerate((k, st) for k, units in enumerate(c.mfus) for st in MFU_STAGES if st in units)}
        intervals: list[tuple[int, int, int, int]] = []
        row_done: list[int] = []
        busy = np.zeros(len(self.units), np.int64)
        step_units = []
        for s, step in enumerate(steps):
            row = table[s]
            iv = self.intervals(step)
            row[D.COL_IV0], row[D.COL_IVN] = len(intervals), len(iv)
            intervals += iv
            if isinstance(step, Dma):
                dur, occ = self.dma_duration(step)
                row[D.COL_KIND], row[D.COL_END_PC], row[D.COL_DURATION] = D.KIND_DMA, step.pc, dur
            else:
                _, occ = self.chain_duration(step)
                p_read = c.slot_cost(step.read.space)
                p_write = max([c.slot_cost(w.space) for w in step.writes], default=1)
                row[D.COL_KIND], row[D.COL_END_PC] = D.KIND_CHAIN, step.end_pc
                row[D.COL_NETQ_RD] = step.read.space == Space.NETQ
                row[D.COL_NETQ_WR] = any(w.space == Space.NETQ for w in step.writes)
                if row[D.COL_NETQ_WR] and step.mrf is not None and step.rows > c.netq_fifo:
                    raise ProgramError(step.end_pc, "end_chain",
                                       f"an mv_mul chain writing the network queue writes {step.rows} rows an "
                                       f"iteration; the output FIFO holds netq_fifo = {c.netq_fifo}")
                row[D.COL_ITERS], row[D.COL_LAT] = step.iterations, c.read_latency(step.read.space)
                row[D.COL_WIDTH], row[D.COL_ROWS], row[D.COL_COLS] = len(step.read_offsets()), step.rows, step.cols
                row[D.COL_TAIL], row[D.COL_MVM_LAT] = len(step.ops) * lat.mfu_stage + lat.vrf_write, lat.mvm + lat.mvm_reduce
                row[D.COL_STAGES] = sum(1 << stage_index[(op.mfu, op.stage)] for op in step.ops)
                row[D.COL_BYPASS] = self.bypasses(step)
                if step.mrf is None:
                    row[D.COL_P] = max(p_read, p_write)
                else:
                    row[D.COL_MVM], row[D.COL_P] = 1, p_read
                    if p_write == 1:  # every destination a VRF: rounds spread over row tiles
                        rounds, done = self.spread_rounds(step.rows, step.cols)
                        row[D.COL_SPREAD], row[D.COL_ROW0], row[D.COL_MAC] = 1, len(row_done), rounds * c.cycles_per_tile
                        row_done += done
                        occ["mvm"] = step.iterations * rounds * c.cycles_per_tile
                    else:  # paced by the write port, one row tile at a time
                        rowp = max(p_write, _ceil(step.cols, c.tile_engines) * c.cycles_per_tile)
                        row[D.COL_ROWP], row[D.COL_MAC] = rowp, step.rows * rowp
            for unit, cycles in occ.items():
                busy[self.unit_index[unit]] += cycles
            step_units.append(list(occ))
        ivs = np.array(intervals, np.int64).reshape(-1, 4)
        done = np.array(row_done or [0], np.int64)
        starts, ends, shift, sent = D.schedule_pipelined(table, ivs, done, c.step_queue, lat.decode,
                                                         lat.chain_setup, c.scoreboard_entries, c.mvm_buffer,
                                                         len(stage_index), lat.mfu_stage, c.port_cost(Space.NETQ),
                                                         c.netq_fifo)
        last = int(ends.max()) if S else 0
        # the run ends once the link has sent the output FIFO's last vector
        total = max(last, program_length + int(shift), int(sent)) + lat.drain if program_length else 0
        return Timeline(starts, ends, {u: int(b) for u, b in zip(self.units, busy)}, self.units, step_units, total)


@lru_cache(maxsize=4096)
def _spread_rounds(rows: int, cols: int, engines: int, slots: int, cpt: int) -> tuple[int, tuple[int, ...]]:
    done = [0] * rows
    rounds, pair, total = 0, 0, rows * cols
    while pair < total:
        first_row, take = pair // cols, 0
        while pair + take < total and take < engines and (pair + take) // cols - first_row < slots:
            take += 1
        rounds += 1
        for r in range(first_row, (pair + take) // cols):  # the round holding a row's last tile completes it
            done[r] = rounds * cpt - 1
        pair += take
    return rounds, tuple(done)
