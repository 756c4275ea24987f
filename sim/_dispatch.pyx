# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Timing accumulation: the hot loop of the cycle model, in C.

The timing of a program does not depend on its data, so sim/timing.py turns
the analysed steps into (end pc, duration) rows once and this loop places
them in time, as the RTL's front end and executor do (sim/timing.py's
docstring has the whole model):

* instructions are decoded one per cycle, instruction ``k`` in cycle
  ``k + 1`` plus the stalls so far; a step is queued when its last
  instruction is decoded, but no earlier than one cycle after the step
  ``queue`` places before it started (the step queue is full until then,
  and decoding stalls);
* a step starts ``decode`` cycles after it was queued and ``setup`` cycles
  after the previous step completed, whichever is later, and completes
  ``duration`` cycles after its start.
"""
import numpy as np


def schedule(long long[:, ::1] steps, int queue, long long decode, long long setup):
    """Schedule steps; returns (starts, ends, decode stall cycles in total).

    steps[s] = (end_pc, duration)
    """
    cdef Py_ssize_t S = steps.shape[0], s
    cdef long long shift = 0, queued, start, end = -(1 << 40)
    starts_np = np.zeros(S, dtype=np.int64)
    ends_np = np.zeros(S, dtype=np.int64)
    cdef long long[::1] starts = starts_np
    cdef long long[::1] ends = ends_np
    for s in range(S):
        queued = steps[s, 0] + 1 + shift
        if s >= queue and starts[s - queue] + 1 > queued:
            queued = starts[s - queue] + 1
            shift = queued - steps[s, 0] - 1
        start = queued + decode
        if end + setup > start:
            start = end + setup
        end = start + steps[s, 1]
        starts[s] = start
        ends[s] = end
    return starts_np, ends_np, shift
