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


# ---------------------------------------------------------------- the pipelined machine (docs/pipeline.md)
# Columns of the step table schedule_pipelined() reads; sim/timing.py fills it (one row per step).
COL_KIND, COL_END_PC, COL_DURATION, COL_MVM, COL_ITERS, COL_WIDTH, COL_P, COL_LAT, COL_COLS, COL_ROWS, \
    COL_MAC, COL_SPREAD, COL_ROWP, COL_ROW0, COL_TAIL, COL_MVM_LAT, COL_IV0, COL_IVN, COL_STAGES, \
    COL_NETQ_RD, COL_NETQ_WR, COL_BYPASS = range(22)
STEP_COLUMNS = 22
KIND_CHAIN, KIND_DMA = 0, 1


cdef inline bint _conflict(long long[:, ::1] iv, long long a0, long long an, long long b0, long long bn) nogil:
    """Whether two steps' interval sets touch the same memory words with at least one write among the pair."""
    cdef long long i, j
    for i in range(a0, a0 + an):
        for j in range(b0, b0 + bn):
            if iv[i, 0] == iv[j, 0] and (iv[i, 3] or iv[j, 3]) and iv[i, 1] <= iv[j, 2] and iv[j, 1] <= iv[i, 2]:
                return True
    return False


cdef inline long long _overtake(long long mask_c, long long mask_p, int stages, long long stage_cycles) nogil:
    """How many cycles later than right behind the previous chain's last beat a chain's first beat must be
    written so that it meets none of the previous chain's beats at any MFU stage: its beats bypass the stages
    it does not use, so after a point where it has more stages still ahead than the previous chain, it moves
    slower and must start further behind (suffix counts of the two stage masks)."""
    cdef long long worst = 0, nc = 0, np_ = 0
    cdef int i
    for i in range(stages - 1, -1, -1):
        nc += (mask_c >> i) & 1
        np_ += (mask_p >> i) & 1
        if nc - np_ > worst:
            worst = nc - np_
    return worst * stage_cycles


def schedule_pipelined(long long[:, ::1] steps, long long[:, ::1] intervals, long long[::1] row_done,
                       int queue, long long decode, long long setup, int entries, long long buffer,
                       int stages, long long stage_cycles, long long link, long long fifo):
    """Schedule steps on the pipelined machine; returns (starts, ends, decode stall cycles in total, the cycle
    the network link has sent the last output vector (0 without outputs)).

    steps[s] holds the COL_* columns; intervals[k] = (memory id, lo, hi, is_write) rows, a step's at
    [COL_IV0, COL_IV0 + COL_IVN); row_done[COL_ROW0 + j] is the cycle, counted from an iteration's MAC start,
    in which row tile j of a spread-mode chain completes (the end of the round holding its last tile);
    COL_STAGES is the bitmask of the MFU stages a chain uses (bit i = stage i of ``stages`` in pipeline order,
    ``stage_cycles`` each) and COL_TAIL the cycles from the MFU entrance to its write.
    starts[s] is the cycle the step issues (its first cycle: a chain's first read issues p cycles later, one
    read slot), ends[s] the cycle after its last write (a chain) or transfer (DMA): when steps waiting on it
    may issue.

    The network queues are FIFOs beside compute (sim/timing.py's docstring): COL_NETQ_RD marks a chain whose
    ``v_rd`` reads the input queue, COL_NETQ_WR one that writes the output queue.  Input vector k (over the
    run) may be read from cycle ``(k + 1) * link``; a read waits in its slot until then.  A write reserves its
    room in the ``fifo``-deep output FIFO when its read issues (an ``mv_mul`` iteration its ``rows`` when its
    reads start): output vector o needs output vector ``o - fifo`` taken by the link before (``S + 1``).  The
    link takes vector o at ``S_o = max(W_o + 1, S_(o-1) + link)`` (``W_o`` its write cycle) and has sent it at
    ``S_o + link``.

    COL_BYPASS marks an MVM-only chain that writes through the MVM's bypass write port (docs/pipeline.md unit
    11): its rows never enter the MFUs, so its first iteration is not held for the previous chain's beats and
    it is nobody's previous chain for the overtaking rule.  Chains may then complete out of program order, so a
    chain also needs the chain table entry it takes free: the chain ``entries`` chains earlier has completed.
    """
    cdef Py_ssize_t S = steps.shape[0], s, a, k
    cdef long long shift = 0, queued, t, i, j, rs, arrival, mac_start, x0, x0_prev, last_x0
    starts_np = np.zeros(S, dtype=np.int64)
    ends_np = np.zeros(S, dtype=np.int64)
    cdef long long[::1] starts = starts_np
    cdef long long[::1] ends = ends_np
    # steps that may still be in flight (issue is in order, so a step complete at one issue is for all later)
    active_np = np.zeros(max(1, entries) + S if S < 64 else max(1, entries) + 64, dtype=np.int64)
    cdef long long[::1] active = active_np
    cdef Py_ssize_t n_active = 0, cap = active_np.shape[0]
    # the K largest completion cycles so far (a min-heap would do; K is small, so a sorted scan is enough)
    kth_np = np.full(max(1, entries), -(1 << 40), dtype=np.int64)
    cdef long long[::1] kth = kth_np
    # MVM buffer: iterations holding slots, as (cycle their slots free, cols), in a ring
    ring_np = np.zeros((int(buffer) + 1, 2), dtype=np.int64)
    cdef long long[:, ::1] ring = ring_np
    cdef Py_ssize_t ring_head = 0, ring_len = 0, ring_cap = ring_np.shape[0]
    cdef long long occupied = 0
    cdef long long read_free = -(1 << 40), last_issue = -(1 << 40), last_return = -(1 << 40)
    cdef long long mac_free = -(1 << 40), dma_free = -(1 << 40)
    cdef long long prev_write = -(1 << 40), prev_mask = 0, behind, first_x0
    cdef long long iters, width, p, lat, cols, rows, mac, rowp, tail, mvm_lat, minkth
    cdef Py_ssize_t kmin
    # the network link: input reads so far, output vectors so far and the cycle the link took each of the last
    # `fifo` ones (a ring), the cycle the link may take the next one
    cdef long long q_in = 0, n_out = 0, link_free = 0, r, w, got
    cdef bint rd_q, wr_q
    outs_np = np.zeros(max(1, fifo), dtype=np.int64)
    cdef long long[::1] outs = outs_np
    # the chain table is a ring of `entries` chains: the completion cycle of the chain that last held each entry
    table_np = np.full(max(1, entries), -(1 << 40), dtype=np.int64)
    cdef long long[::1] table = table_np
    cdef Py_ssize_t n_chains = 0
    cdef bint byp
    for s in range(S):
        queued = steps[s, COL_END_PC] + 1 + shift
        if s >= queue and starts[s - queue] + 1 > queued:
            queued = starts[s - queue] + 1
            shift = queued - steps[s, COL_END_PC] - 1
        t = queued + decode
        # in order, one step a cycle: the issue unit takes one step from the queue per cycle
        if s > 0 and starts[s - 1] + 1 > t:
            t = starts[s - 1] + 1
        # a free scoreboard entry: fewer than `entries` earlier steps complete after t
        kmin = 0
        for k in range(entries):
            if kth[k] < kth[kmin]:
                kmin = k
        if kth[kmin] > t:
            t = kth[kmin]
        # data hazards: wait for the completion of every step in flight whose intervals conflict
        a = 0
        while a < n_active:
            if ends[active[a]] <= t:  # complete: drop it for good
                active[a] = active[n_active - 1]
                n_active -= 1
                continue
            a += 1
        for a in range(n_active):
            if ends[active[a]] > t and _conflict(intervals, steps[active[a], COL_IV0], steps[active[a], COL_IVN],
                                                 steps[s, COL_IV0], steps[s, COL_IVN]):
                t = ends[active[a]]
        if steps[s, COL_KIND] == KIND_DMA:
            if dma_free > t:
                t = dma_free
            ends[s] = t + steps[s, COL_DURATION]
            dma_free = ends[s]
        else:
            iters, width, p, lat = steps[s, COL_ITERS], steps[s, COL_WIDTH], steps[s, COL_P], steps[s, COL_LAT]
            cols, rows, mac, rowp = steps[s, COL_COLS], steps[s, COL_ROWS], steps[s, COL_MAC], steps[s, COL_ROWP]
            tail, mvm_lat = steps[s, COL_TAIL], steps[s, COL_MVM_LAT]
            rd_q, wr_q = steps[s, COL_NETQ_RD] != 0, steps[s, COL_NETQ_WR] != 0
            byp = steps[s, COL_BYPASS] != 0
            # its chain table entry is free (implied by the entry count unless bypass chains completed early)
            if table[n_chains % entries] > t:
                t = table[n_chains % entries]
            # the read sequencer is free, and read data returns in order
            if read_free > t:
                t = read_free
            if last_return + 1 - (p + lat - 1) > t:  # the first read's data leaves p + lat - 1 cycles after t
                t = last_return + 1 - (p + lat - 1)
            # its first beat enters the MFUs no earlier than this, to meet none of the previous chain's beats
            first_x0 = prev_write + 1 + _overtake(steps[s, COL_STAGES], prev_mask, stages, stage_cycles) - tail
            if not steps[s, COL_MVM]:
                if first_x0 - (p + lat - 1) > t:
                    t = first_x0 - (p + lat - 1)
                last_issue = t + iters * width * p  # read k issues p cycles after read k - 1, the first p after t
                if rd_q or wr_q:  # reads wait for their input vector and for room for their output vector
                    r = t
                    for j in range(iters * width):
                        r += p
                        if rd_q:
                            if (q_in + 1) * link > r:
                                r = (q_in + 1) * link
                            q_in += 1
                        if wr_q:
                            if n_out >= fifo and outs[n_out % fifo] + 1 > r:
                                r = outs[n_out % fifo] + 1
                            w = r + lat - 1 + tail
                            outs[n_out % fifo] = w + 1 if w + 1 > link_free else link_free
                            link_free = outs[n_out % fifo] + link
                            n_out += 1
                    last_issue = r
                last_x0 = last_issue + lat - 1
            else:
                rs = t
                last_x0 = -(1 << 40)
                for i in range(iters):
                    # iteration-level credit: the iteration's reads start when `cols` slots of the buffer are free
                    while ring_len and ring[ring_head, 0] <= rs:
                        occupied -= ring[ring_head, 1]
                        ring_head = (ring_head + 1) % ring_cap
                        ring_len -= 1
                    while buffer - occupied < cols:
                        rs = ring[ring_head, 0]
                        occupied -= ring[ring_head, 1]
                        ring_head = (ring_head + 1) % ring_cap
                        ring_len -= 1
                    if wr_q and n_out + rows - 1 - fifo >= 0:  # room for the iteration's rows in the output FIFO
                        got = outs[(n_out + rows - 1 - fifo) % fifo] + 1
                        if got > rs:
                            rs = got
                    r = rs + cols * p
                    if rd_q:  # each input vector read no earlier than it has arrived
                        r = rs
                        for j in range(cols):
                            r += p
                            if (q_in + 1) * link > r:
                                r = (q_in + 1) * link
                            q_in += 1
                    arrival = r + lat
                    mac_start = arrival if arrival > mac_free else mac_free
                    if i == 0 and not byp:  # the first row must not enter the MFUs before first_x0: the MACs wait
                        behind = first_x0 - mvm_lat + 1 - (row_done[steps[s, COL_ROW0]] if steps[s, COL_SPREAD]
                                                             else rowp - 1)
                        if behind > mac_start:
                            mac_start = behind
                    mac_free = mac_start + mac
                    ring[(ring_head + ring_len) % ring_cap, 0] = mac_free
                    ring[(ring_head + ring_len) % ring_cap, 1] = cols
                    ring_len += 1
                    occupied += cols
                    # a row enters the MFUs the cycle after its last MAC cycle, plus the MVM's pipeline
                    for j in range(rows):
                        if not steps[s, COL_SPREAD]:  # paced: row j leaves after its rowp MAC cycles
                            last_x0 = mac_start + (j + 1) * rowp - 2 + mvm_lat
                        else:  # rows complete at round ends and leave one per cycle, in order
                            x0 = mac_start + row_done[steps[s, COL_ROW0] + j] - 1 + mvm_lat
                            last_x0 = x0 if x0 > last_x0 + 1 else last_x0 + 1
                        if wr_q:  # the row's vector into the output FIFO, then onto the link
                            w = last_x0 + tail
                            r = w + 1 if w + 1 > link_free else link_free
                            outs[n_out % fifo] = r
                            link_free = r + link
                            n_out += 1
                    last_issue = arrival - lat
                    rs = last_issue
            read_free = last_issue + setup
            last_return = last_issue + lat - 1  # the cycle its data leaves the memory
            ends[s] = last_x0 + tail + 1
            if not byp:  # the bypass takes no part in the MFU order
                prev_write, prev_mask = last_x0 + tail, steps[s, COL_STAGES]
            table[n_chains % entries] = ends[s]
            n_chains += 1
        starts[s] = t
        # bookkeeping: the K largest ends, and the steps in flight
        if ends[s] > kth[kmin]:
            kth[kmin] = ends[s]
        if n_active == cap:  # keep only those still in flight at this issue
            a = 0
            while a < n_active:
                if ends[active[a]] <= t:
                    active[a] = active[n_active - 1]
                    n_active -= 1
                else:
                    a += 1
        if n_active < cap:
            active[n_active] = s
            n_active += 1
    return starts_np, ends_np, shift, (link_free if n_out else 0)
