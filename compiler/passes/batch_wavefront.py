"""Batch wavefront: consecutive batched Gemm layers (an MLP at batch B) run sequence by sequence, in a wavefront,
instead of layer by layer over the whole batch.

Lowering gives each batched Gemm one ``mv_mul`` chain with B iterations (one per sequence of the batch), so layer
j + 1 waits for all of layer j: the network link delivers the batch's input (and takes its output) while the MVM
idles, and the output link starts only once the last layer runs, after every sequence has passed the others.
On the pipelined machine (docs/pipeline.md) chains overlap, so splitting each layer's chain into one chain per
sequence and emitting them in wavefront order -- (layer j, sequence b) in wave ``b + SKEW * j``, the deeper layer
first within a wave -- lets sequence 0 pass every layer while the link still delivers sequence 1, and the output link
start after sequence 0's last layer.  Each sequence's chain computes exactly what its iteration did (same
operands, same weights, same order of operations), so outputs are bit-identical.

Applied only where it is exact and pays (each condition checked here):
- the pipelined machine (``config.pipelined``): one step at a time, more chains only add their setup;
- a run of consecutive chains that all multiply (``mv_mul``) with iterations ``(1, B)``, the same B > 1, each
  of a Gemm node (its region), at least two of them (one layer gains nothing: the link bounds it);
- at most one chain of the run reads the input queue and at most one writes the output queue (their vectors
  keep the queue's order: one chain's iterations stay in order);
- no pair of (chain, sequence) steps whose order the wavefront swaps touches one address where either writes
  (read-after-write, write-after-read, write-after-write), by the exact vector addresses of each iteration.
"""
from __future__ import annotations

import numpy as np

from compiler.chain_ir import ChainSpec, Ref
from npu.program import iteration_bases, window_offsets

#: the largest batch x chains a run is checked for (the conflict check is quadratic in it)
MAX_STEPS = 512
#: waves between a sequence's layers: (layer j, sequence b) runs in wave b + SKEW * j, so a chain's input was made
#: SKEW waves (about SKEW * layers chains) earlier and has left the MFUs (measured, benchmarks/bench_rnn.py: MLP
#: 512 and 1024 at batch 6 take 408 and 510 cycles with 1, 321 and 499 with 2, 365 and 537 with 3)
SKEW = 2


def _addresses(spec: ChainSpec, ref: Ref, width: int, window: bool, b: int) -> np.ndarray:
    base = iteration_bases(ref.offset, *spec.iters, ref.so, ref.si)[b]
    return base + (window_offsets(width, *spec.win) if window else np.arange(width, dtype=np.int64))


def _touches(spec: ChainSpec, b: int) -> tuple[dict, dict]:
    """Iteration b's reads and writes: buffer -> set of vector offsets (queues and ZERO left out)."""
    reads: dict = {}
    writes: dict = {}
    if spec.read.buf is not None:
        width = spec.cols if spec.weights is not None else spec.rows
        reads.setdefault(spec.read.buf, set()).update(_addresses(spec, spec.read, width, True, b).tolist())
    for op in spec.ops:
        if op.ref is not None and op.ref.buf is not None:
            reads.setdefault(op.ref.buf, set()).update(_addresses(spec, op.ref, spec.rows, False, b).tolist())
    for w in spec.writes:
        if w.buf is not None:
            writes.setdefault(w.buf, set()).update(_addresses(spec, w, spec.rows, False, b).tolist())
    return reads, writes


def _conflict(a: tuple[dict, dict], b: tuple[dict, dict]) -> bool:
    (ra, wa), (rb, wb) = a, b
    for buf, addrs in wa.items():
        if addrs & rb.get(buf, set()) or addrs & wb.get(buf, set()):
            return True
    return any(addrs & ra.get(buf, set()) for buf, addrs in wb.items())


def _one_sequence(spec: ChainSpec, b: int) -> ChainSpec:
    def at(ref: Ref | None) -> Ref | None:
        if ref is None or ref.buf is None:
            return ref
        return Ref(ref.buf, ref.offset + b * ref.si, 0, 0, ref.space)
    return ChainSpec(at(spec.read), spec.rows, (1, 1), spec.cols, spec.win, spec.weights,
                     [type(op)(op.mnemonic, op.mfu, at(op.ref)) for op in spec.ops], [at(w) for w in spec.writes],
                     spec.alpha, spec.region)


def _is_queue(ref: Ref) -> bool:
    from npu.isa import Space
    return ref.buf is None and ref.space == Space.NETQ


def _wavefront(run: list[ChainSpec]) -> list[ChainSpec] | None:
    """The run as one chain per (layer, sequence) in wavefront order, or None where that is not exact."""
    L, B = len(run), run[0].iters[1]
    if L * B > MAX_STEPS:
        return None
    if sum(_is_queue(s.read) for s in run) > 1 or sum(any(_is_queue(w) for w in s.writes) for s in run) > 1:
        return None
    order = sorted(((b + SKEW * j, -j, j, b) for j in range(L) for b in range(B)))
    pos = {(j, b): i for i, (_, _, j, b) in enumerate(order)}
    touch = {(j, b): _touches(s, b) for j, s in enumerate(run) for b in range(B)}
    # (j, b) before (j2, b2) in program order (j < j2) and after it in the new one: they must not conflict
    for j in range(L):
        for j2 in range(j + 1, L):
            for b in range(B):
                for b2 in range(B):
                    if pos[(j2, b2)] < pos[(j, b)] and _conflict(touch[(j, b)], touch[(j2, b2)]):
                        return None
    out = [_one_sequence(run[j], b) for _, _, j, b in order]
    return out


def wavefront_batches(steps: list, gemms: set[str], pipelined: bool) -> list:
    """The steps with each run of batched Gemm chains (module doc) in wavefront order, where that is exact."""
    if not pipelined:
        return steps

    def member(s) -> bool:
        return isinstance(s, ChainSpec) and s.weights is not None and s.region in gemms \
            and s.iters[0] == 1 and s.iters[1] > 1

    out: list = []
    k = 0
    while k < len(steps):
        if not member(steps[k]):
            out.append(steps[k])
            k += 1
            continue
        e = k + 1
        while e < len(steps) and member(steps[e]) and steps[e].iters == steps[k].iters:
            e += 1
        run = steps[k:e]
        split = _wavefront(run) if len(run) > 1 else None
        out.extend(split if split is not None else run)
        k = e
    return out
