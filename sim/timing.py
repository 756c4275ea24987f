"""Cycle-approximate timing model.

Every step (chain or DMA) is reduced to integers -- which units it occupies
and for how many cycles per iteration, its pipeline fill, the address ranges
it touches -- and sim._dispatch.schedule places the steps in time.  What the
model abstracts:

* a chain is a pipeline whose initiation interval per iteration is its
  slowest stage: the read port (``width / vrf_ports`` vectors, or bytes over
  DRAM/queue bandwidth), the MVM (``ceil(rows*cols / tile_engines)`` tiles of
  ``N / dpe_lanes`` cycles each), each MFU stage and each write port (``rows``
  vectors);
* its fill and drain is the sum of the stage latencies of npu.config.Latencies
  (DRAM and queue latency replace the VRF read latency for those sources);
* consecutive chains overlap when their units and memory ranges allow it; a
  RAW/WAR/WAW conflict on overlapping addresses waits for the earlier step.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from npu.config import NpuConfig
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

    @property
    def cycles(self) -> int:
        return int(self.ends.max()) if len(self.ends) else 0


class TimingModel:
    """Builds the schedule tables for one configuration."""

    def __init__(self, config: NpuConfig):
        self.config = config
        c = config
        n = c.n_mfus
        self.units = ["mvm", "dram", "netq_in", "netq_out"]
        self.units += [f"mfu{k}.{stage}" for k in range(n) for stage in ("addsub", "mul", "act")]
        self.units += ["ivrf.r", "ivrf.w"]
        self.units += [f"asvrf{k}.{p}" for k in range(n) for p in "rw"]
        self.units += [f"mulvrf{k}.{p}" for k in range(n) for p in "rw"]
        self.unit_index = {u: i for i, u in enumerate(self.units)}
        self.n_keys = 3 + 2 * n  # ivrf, dram, asvrf*, mulvrf*, mrf
        self.mrf_key = 2 + 2 * n
        self.vector_bytes = c.native_dim * 2
        wf = c.weight_fmt
        n_el = c.native_dim * c.native_dim
        self.tile_bytes = _ceil(n_el * (1 + wf.mant_bits) + (n_el // c.block) * wf.exp_bits, 8)

    # -------------------------------------------------------------- helpers
    def _key(self, op: Operand) -> int | None:
        if op.space == Space.IVRF:
            return 0
        if op.space == Space.DRAM:
            return 1
        if op.space == Space.ASVRF:
            return 2 + op.mfu
        if op.space == Space.MULVRF:
            return 2 + self.config.n_mfus + op.mfu
        return None

    def _port(self, op: Operand, write: bool) -> str | None:
        p = "w" if write else "r"
        if op.space == Space.IVRF:
            return f"ivrf.{p}"
        if op.space == Space.ASVRF:
            return f"asvrf{op.mfu}.{p}"
        if op.space == Space.MULVRF:
            return f"mulvrf{op.mfu}.{p}"
        return None

    def _transfer(self, op: Operand, vectors: int, write: bool, occ: dict[str, int]) -> int:
        """Cycles per iteration to move `vectors` through op's port; records unit occupancy."""
        c = self.config
        if op.space == Space.DRAM:
            unit, cycles = "dram", _ceil(vectors * self.vector_bytes, c.dram_bytes_per_cycle)
        elif op.space == Space.NETQ:
            unit = "netq_out" if write else "netq_in"
            cycles = _ceil(vectors * self.vector_bytes, c.netq_bytes_per_cycle)
        elif op.space == Space.ZERO:
            return _ceil(vectors, c.vrf_ports)
        else:
            unit, cycles = self._port(op, write), _ceil(vectors, c.vrf_ports)
        occ[unit] = occ.get(unit, 0) + cycles
        return occ[unit]

    @staticmethod
    def _range(op: Operand, chain: Chain, width_max: int) -> tuple[int, int]:
        last = op.addr + (chain.iter_outer - 1) * op.so + (chain.iter_inner - 1) * op.si + width_max
        return op.addr, last

    # -------------------------------------------------------------- per step
    def chain_row(self, ch: Chain):
        c, lat = self.config, self.config.latencies
        occ: dict[str, int] = {}
        hz: list[tuple[int, int, int, int]] = []
        offs = ch.read_offsets()
        stage = [self._transfer(ch.read, len(offs), False, occ)]
        key = self._key(ch.read)
        if key is not None:
            lo, hi = self._range(ch.read, ch, int(offs.max()))
            hz.append((key, lo, hi, 0))
        if ch.read.space == Space.DRAM:
            fill = c.dram_latency
        elif ch.read.space == Space.NETQ:
            fill = c.netq_latency
        else:
            fill = lat.vrf_read
        if ch.mrf is not None:
            mvm = _ceil(ch.rows * ch.cols, c.tile_engines) * c.cycles_per_tile
            occ["mvm"] = mvm
            stage.append(mvm)
            fill += lat.mvm + lat.mvm_reduce
            hz.append((self.mrf_key, ch.mrf, ch.mrf + ch.rows * ch.cols - 1, 0))
        for op in ch.ops:
            unit = f"mfu{op.mfu}.{op.stage}"
            occ[unit] = _ceil(ch.rows, c.vrf_ports)
            stage.append(occ[unit])
            fill += lat.mfu_stage
            if op.operand is not None:
                stage.append(self._transfer(op.operand, ch.rows, False, occ))
                lo, hi = self._range(op.operand, ch, ch.rows - 1)
                hz.append((self._key(op.operand), lo, hi, 0))
        for w in ch.writes:
            stage.append(self._transfer(w, ch.rows, True, occ))
            key = self._key(w)
            if key is not None:
                lo, hi = self._range(w, ch, ch.rows - 1)
                hz.append((key, lo, hi, 1))
        fill += lat.vrf_write
        ii = max(max(stage), 1)
        return ch.iterations, ii, fill, occ, hz

    def dma_row(self, d: Dma):
        cycles = _ceil(d.count * self.tile_bytes, self.config.dram_bytes_per_cycle)
        hz = [(self.mrf_key, d.mrf, d.mrf + d.count - 1, 1 if d.to_mrf else 0)]
        return 1, max(cycles, 1), self.config.dram_latency, {"dram": cycles}, hz

    # -------------------------------------------------------------- whole program
    def schedule(self, steps: list[Chain | Dma], program_length: int) -> Timeline:
        from sim._dispatch import schedule

        S, U = len(steps), len(self.units)
        table = np.zeros((S, 7), np.int64)
        occupancy = np.zeros((S, U), np.int64)
        hazards: list[tuple[int, int, int, int]] = []
        step_units = []
        prev_end_pc = -1
        for s, step in enumerate(steps):
            end_pc = step.end_pc if isinstance(step, Chain) else step.pc
            it, ii, fill, occ, hz = self.chain_row(step) if isinstance(step, Chain) else self.dma_row(step)
            table[s] = (end_pc - prev_end_pc, it, ii, fill, len(hazards), len(hz), 0)
            prev_end_pc = end_pc
            for unit, cycles in occ.items():
                occupancy[s, self.unit_index[unit]] = cycles
            step_units.append(list(occ))
            hazards.extend(hz)
        hz_arr = np.array(hazards, np.int64).reshape(-1, 4)
        lat = self.config.latencies
        starts, ends, busy = schedule(table, occupancy, hz_arr, self.n_keys, lat.decode, lat.chain_setup)
        # Instructions after the last step still have to issue.
        tail = program_length - 1 - prev_end_pc
        if S and tail > 0:
            ends = ends.copy()
            ends[-1] = max(ends[-1], int(starts[-1]) + tail)
        return Timeline(starts, ends, {u: int(b) for u, b in zip(self.units, busy)}, self.units, step_units)
