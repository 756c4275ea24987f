# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Timing accumulation: the hot loop of the cycle model, in C.

The timing of a program does not depend on its data, so sim/timing.py turns
the analysed steps into integer tables once and this loop schedules them:

* instructions issue in order, one per cycle; a step starts no earlier than
  its last instruction is decoded (``decode`` latency) and ``setup`` cycles
  after the previous step started (in-order, single-threaded);
* a step waits until every unit it occupies is free, and until every earlier
  in-flight access that conflicts with one of its memory accesses (RAW, WAR
  or WAW on overlapping addresses of the same memory) has completed;
* it then occupies its units for ``iterations * ii`` cycles and completes
  ``fill`` cycles after that (pipeline fill and drain).
"""
import numpy as np
cimport numpy as cnp

DEF RING = 32


def schedule(long long[:, ::1] steps, long long[:, ::1] occupancy, long long[:, ::1] hazards,
             int n_keys, long long decode, long long setup):
    """Schedule steps; returns (starts, ends, busy per unit).

    steps[s] = (n_issue, iterations, ii, fill, hz_start, hz_count, unit_mask)
    occupancy[s, u] = cycles per iteration unit u is busy (0: unused)
    hazards[h] = (key, lo, hi, is_write)
    """
    cdef Py_ssize_t S = steps.shape[0], U = occupancy.shape[1]
    cdef Py_ssize_t s, u, h, k, e, key
    cdef long long t_issue = 0, last_start = -(1 << 40), start, dur, end, it
    cdef long long lo, hi, w
    starts_np = np.zeros(S, dtype=np.int64)
    ends_np = np.zeros(S, dtype=np.int64)
    busy_np = np.zeros(U, dtype=np.int64)
    free_np = np.zeros(U, dtype=np.int64)
    cdef long long[::1] starts = starts_np
    cdef long long[::1] ends = ends_np
    cdef long long[::1] busy = busy_np
    cdef long long[::1] free = free_np
    ring_np = np.zeros((max(n_keys, 1), RING, 4), dtype=np.int64)  # lo, hi, end, is_write
    ring_np[:, :, 0] = 1
    ring_np[:, :, 1] = 0  # empty entries: lo > hi never overlap
    cdef long long[:, :, ::1] ring = ring_np
    head_np = np.zeros(max(n_keys, 1), dtype=np.int64)
    cdef long long[::1] head = head_np

    for s in range(S):
        t_issue += steps[s, 0]
        it = steps[s, 1]
        start = t_issue + decode
        if last_start + setup > start:
            start = last_start + setup
        for u in range(U):
            if occupancy[s, u] and free[u] > start:
                start = free[u]
        for h in range(steps[s, 4], steps[s, 4] + steps[s, 5]):
            key = hazards[h, 0]
            lo = hazards[h, 1]
            hi = hazards[h, 2]
            w = hazards[h, 3]
            for e in range(RING):
                if ring[key, e, 0] <= hi and lo <= ring[key, e, 1] and (w or ring[key, e, 3]):
                    if ring[key, e, 2] > start:
                        start = ring[key, e, 2]
        dur = it * steps[s, 2]
        end = start + dur + steps[s, 3]
        for u in range(U):
            if occupancy[s, u]:
                free[u] = start + dur
                busy[u] += it * occupancy[s, u]
        for h in range(steps[s, 4], steps[s, 4] + steps[s, 5]):
            key = hazards[h, 0]
            k = head[key]
            ring[key, k, 0] = hazards[h, 1]
            ring[key, k, 1] = hazards[h, 2]
            ring[key, k, 2] = end
            ring[key, k, 3] = hazards[h, 3]
            head[key] = (k + 1) % RING
        starts[s] = start
        ends[s] = end
        last_start = start
    return starts_np, ends_np, busy_np
