"""Scheduling: the order of steps and, when weights stream from DRAM, the m_rd double buffering.

Chains keep their lowering order (a topological order of the graph, which
also fixes the order of the network-queue reads and writes).  In streaming
mode each mv_mul chunk is loaded into one of two MRF halves; the load of
chunk k+2 is issued right after the chain that used chunk k, so it overlaps
chain k+1 (the timing model delays it until chain k has released that half).
"""
from __future__ import annotations

from compiler.chain_ir import ChainSpec, DmaSpec
from npu.config import NpuConfig


def schedule_dma(steps: list, config: NpuConfig, streaming: bool) -> list:
    if not streaming:
        return list(steps)
    half = config.mrf_tiles // 2
    users = [i for i, s in enumerate(steps) if isinstance(s, ChainSpec) and s.weights is not None]
    next_user = dict(zip(users, users[1:] + [None]))
    # consecutive uses of one chunk (an RNN's timesteps) share one load
    loads: list[int] = []  # step index of the first chain of each load
    resident = []
    for i in users:
        if resident and resident[-1] is steps[i].weights:
            continue
        resident.append(steps[i].weights)
        loads.append(i)
    out: list = []
    slot_of: dict[int, int] = {}
    for k, i in enumerate(loads):
        slot_of[i] = k % 2
    pending = list(range(len(loads)))

    def issue(k):
        i = loads[k]
        chunk = steps[i].weights
        # labelled apart from the layer: a prefetch is issued long before its layer runs
        out.append(DmaSpec(chunk, (k % 2) * half, f"m_rd {steps[i].region}"))

    for k in pending[:2]:
        issue(k)
    next_load = 2
    current_slot = None
    for i, s in enumerate(steps):
        if i in slot_of:
            current_slot = slot_of[i]
        if isinstance(s, ChainSpec) and s.weights is not None:
            s.mrf_override = current_slot * half
        out.append(s)
        # after the last chain using load k, prefetch load k + 2 into the same half
        if i in next_user:
            nxt = next_user[i]
            if next_load < len(loads) and (nxt is None or steps[nxt].weights is not s.weights):
                issue(next_load)
                next_load += 1
    return out
