"""Queue streaming: a segment's input feeds its consumers straight from the network input queue, and its
output leaves straight from the chains that produce it, instead of through a copy chain each.

Lowering moves every segment input into a buffer with a copy chain (``v_rd NETQ -> buffer``) and every output
out with another (``buffer -> v_wr NETQ``). The queues are slow ports (``NpuConfig.port_cost(NETQ)`` cycles a
vector), so on small layers the copies take longer than the work, and each copy is a step the work must wait
for. When the chains that read the copied buffer read it exactly once between them, in the order the queue
delivers it (one chain, or a recurrent layer's per-timestep copies), reading the queue itself gives the same
values and overlaps the transfer with the work; likewise for the chains that write an output buffer in the
order the queue takes it (a recurrent layer's h_t, timestep by timestep). Values are unchanged (a queue read or write moves the
same fp16 vectors), so outputs stay bit-identical.

Conditions, each checked here (anything else keeps its copy):
- the buffer is touched by the copy and those chains only, each reading it (input) or writing it once (output)
  (not a graph output read elsewhere, no MFU operand, no DMA);
- their accesses to it, iteration by iteration and chain after chain in program order, are exactly the copy's
  accesses in the same order;
- no other chain uses the same queue in between (the queue's order is the program's order);
- an output's producer keeps one queue write at most (``a chain writes the output queue at most once``); the
  queue write replaces its buffer write, so its write slots stay as they were.
"""
from __future__ import annotations

import numpy as np

from compiler.chain_ir import ChainSpec, Ref
from npu.isa import Space
from npu.program import iteration_bases, window_offsets


def _sequence(spec: ChainSpec, ref: Ref, width: int, window: bool) -> np.ndarray:
    """Buffer offsets `ref` touches over the chain, in order: per iteration (outer, inner), `width` vectors
    (through the read window when `window`), by the ISA's addressing rules (npu.program)."""
    bases = iteration_bases(ref.offset, *spec.iters, ref.so, ref.si)
    offsets = window_offsets(width, *spec.win) if window else np.arange(width)
    return (bases[:, None] + offsets[None, :]).ravel()


def _read_width(spec: ChainSpec) -> int:
    return spec.cols if spec.weights is not None else spec.rows


def _is_queue(ref: Ref) -> bool:
    return ref.buf is None and ref.space == Space.NETQ


def _users(steps: list, buf) -> list[int]:
    """Indices of the steps that touch `buf` (read, MFU operand or write)."""
    out = []
    for i, s in enumerate(steps):
        if not isinstance(s, ChainSpec):
            continue
        refs = [s.read, *(o.ref for o in s.ops if o.ref is not None), *s.writes]
        if any(r.buf is buf for r in refs):
            out.append(i)
    return out


def _queue_between(steps: list, lo: int, hi: int, side: str) -> bool:
    """Does a chain strictly between lo and hi read (side 'in') or write (side 'out') the queue?"""
    for s in steps[lo + 1:hi]:
        if not isinstance(s, ChainSpec):
            continue
        if side == "in" and _is_queue(s.read):
            return True
        if side == "out" and any(_is_queue(w) for w in s.writes):
            return True
    return False


def _fuse_input(steps: list, k: int) -> bool:
    """Step k copies the input queue into a buffer: let its consumers read the queue instead."""
    copy = steps[k]
    if len(copy.writes) != 1 or copy.ops or copy.weights is not None or copy.win[0]:
        return False
    dst = copy.writes[0]
    users = [i for i in _users(steps, dst.buf) if i != k]
    if not users or users[0] < k or _queue_between(steps, k, users[-1], "in"):
        return False
    uses = [steps[i] for i in users]
    for use in uses:
        if use.read.buf is not dst.buf or any(o.ref is not None and o.ref.buf is dst.buf for o in use.ops) \
                or any(w.buf is dst.buf for w in use.writes):
            return False
    written = _sequence(copy, dst, copy.rows, window=False)
    read = np.concatenate([_sequence(use, use.read, _read_width(use), window=True) for use in uses])
    if not np.array_equal(written, read):
        return False
    for use in uses:
        use.read = Ref(None, space=Space.NETQ)
    return True


def _fuse_output(steps: list, k: int) -> bool:
    """Step k copies a buffer to the output queue: let the buffer's producers write the queue instead."""
    copy = steps[k]
    if len(copy.writes) != 1 or copy.ops or copy.weights is not None or copy.win[0] or copy.read.buf is None:
        return False
    src = copy.read
    users = [i for i in _users(steps, src.buf) if i != k]
    if not users or users[-1] > k or _queue_between(steps, users[0], k, "out"):
        return False
    makes, slots = [steps[i] for i in users], []
    for make in makes:
        mine = [j for j, w in enumerate(make.writes) if w.buf is src.buf]
        if len(mine) != 1 or make.read.buf is src.buf or any(o.ref is not None and o.ref.buf is src.buf
                                                              for o in make.ops):
            return False
        if any(_is_queue(w) for w in make.writes):
            return False
        slots.append(mine[0])
    read = _sequence(copy, src, copy.rows, window=False)
    written = np.concatenate([_sequence(make, make.writes[j], make.rows, window=False)
                              for make, j in zip(makes, slots)])
    if not np.array_equal(read, written):
        return False
    for make, j in zip(makes, slots):
        make.writes[j] = Ref(None, space=Space.NETQ)
    return True


def stream_queues(steps: list) -> list:
    """The steps with queue copies folded into their consumer or producer where that is exact (module doc)."""
    drop = set()
    for k, s in enumerate(steps):
        if not isinstance(s, ChainSpec) or len(s.writes) != 1:
            continue
        if _is_queue(s.read) and s.writes[0].buf is not None:
            if _fuse_input(steps, k):
                drop.add(k)
        elif _is_queue(s.writes[0]) and s.read.buf is not None:
            if _fuse_output(steps, k):
                drop.add(k)
    return [s for k, s in enumerate(steps) if k not in drop]
