"""Functional execution of chains and DMA transfers, one whole-array step each.

A chain's iterations are computed together: its reads become one gather
``[iterations, width, N]``, the MVM a few 8-bit digit GEMMs (sim/intgemm.py)
with the leading MFU operations fused into its output pass, each other MFU
op one fp16 array operation, each write one slice or scatter.  This equals
running the iterations one after another because the program checker
(npu.program.analyze, which every program passes before it runs) rejects
chains in which an iteration reads what an earlier iteration of the same
chain wrote.

MVM exactness: mantissa products are small integers times powers of two, and
the flush windows of npu.numerics bound every partial sum of a dot product to
fewer than 53 significant bits over a common quantum, so both engines, the
digit GEMMs with int32 accumulation and the float64 reference GEMM, are exact
in any summation order; the single rounding to fp16 then matches the RTL's
exact accumulator bit for bit (tests/sim/test_intgemm.py, and
tests/npu/test_numerics.py against integer arithmetic).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from npu.errors import SimulationError
from npu.isa import ACT_TABLE_OPS, OPCODES, REDUCTION_OPS, Space
from npu.numerics import (bfp_values, flush_windows, fp16_activation, fp16_lrelu, fp16_reduce,
                          fp16_relu, to_fp16, weight_span_ok)
from npu.program import Chain, Dma, Operand
from npu.weights import untile
from sim import intgemm
from sim._kernels import MFU_CODES, fp16_binary, quantize_fp16
from sim.state import MachineState

#: Budget of the cache of prepared weight matrices (ResNet-50's take about 50 MB as digits, 200 MB as float64).
WEIGHT_CACHE_BYTES = 1 << 30

#: Gathered inputs smaller than this are copied (im2col) instead of multiplied as strided views.
STRIDED_GEMM_MIN_BYTES = 8 << 20

# The C kernels switch on the instructions' opcodes, compiled in from sim/_isa.h (generated from npu/isa.py):
# an extension built from an older table would run the wrong operation.
if any(OPCODES[m] != code for m, code in MFU_CODES.items()):
    raise ImportError("sim/_kernels was built from another instruction table than npu/isa.py's; rebuild it with "
                      "`pip install -e .` (and regenerate sim/_isa.h with `npu isa --c-header` if it is stale)")

#: What each MFU instruction computes: binary ops take (chain value, VRF operand), unary ones
#: (chain value, chain) for the registers they read.  Keys must equal npu.isa.MFU_OPS (tested).
MFU_OPS = {
    "vv_add": lambda x, b: fp16_binary(x, b, MFU_CODES["vv_add"]),  # = npu.numerics.fp16_add, in C
    "vv_a_sub_b": lambda x, b: fp16_binary(x, b, MFU_CODES["vv_a_sub_b"]),  # = fp16_sub(x, b)
    "vv_b_sub_a": lambda x, b: fp16_binary(x, b, MFU_CODES["vv_b_sub_a"]),  # = fp16_sub(b, x)
    "vv_max": lambda x, b: fp16_binary(x, b, MFU_CODES["vv_max"]),  # = fp16_max
    "vv_min": lambda x, b: fp16_binary(x, b, MFU_CODES["vv_min"]),  # = fp16_min
    "vv_mul": lambda x, b: fp16_binary(x, b, MFU_CODES["vv_mul"]),  # = fp16_mul
    "v_relu": lambda x, c: fp16_relu(x),
    "v_lrelu": lambda x, c: fp16_lrelu(x, np.array(c.alpha, np.uint16).view(np.float16)),
    **{mn: (lambda fn: lambda x, c: fp16_activation(fn, x))(fn) for mn, fn in ACT_TABLE_OPS.items()},
    **{mn: (lambda kind: lambda x, c: fp16_reduce(kind, x))(kind) for mn, kind in REDUCTION_OPS.items()},
}


def _contiguous(chain: Chain, op: Operand) -> slice | None:
    """The addresses of ``rows`` vectors per iteration as one slice, when they are consecutive."""
    rows = chain.rows
    if (chain.iter_inner == 1 or op.si == rows) and (chain.iter_outer == 1 or op.so == chain.iter_inner * rows):
        return slice(op.addr, op.addr + chain.iterations * rows)
    return None


#: The most vectors one chain may move (iterations x vectors read per iteration): the executor computes a chain
#: as whole arrays, so a larger one (a legal program, two loop counts of 65,535) is refused, not run out of memory.
MAX_CHAIN_VECTORS = 1 << 26

#: Chains whose static plans the executor keeps (ResNet-152 has about 700).
PLAN_CACHE_CHAINS = 20000


@dataclass
class _ChainPlan:
    offsets: np.ndarray                 # read offsets of one iteration
    read_index: np.ndarray | None       # [iterations, width] vector addresses read (None: queue or ZERO)
    rows: np.ndarray                    # arange(rows)
    writes: list                        # per write: None (queue), one slice, or [iterations, rows] addresses
    read_lo: int = 0                    # read_index - read_lo: the MVM's rows into the vectors [read_lo, read_hi)
    read_hi: int = 0
    read_rel: np.ndarray | None = None


class Executor:
    """Executes steps on a :class:`MachineState`; keeps a cache of MVM weight matrices and of chain plans."""

    def __init__(self, state: MachineState):
        self.state = state
        self.config = state.config
        self._wcache: OrderedDict[tuple, tuple[object, int]] = OrderedDict()  # LRU: prepared weights, bytes
        self._wcache_bytes = 0
        self._plans: dict[int, tuple[Chain, _ChainPlan]] = {}
        wwin, awin = flush_windows(self.config.weight_fmt, self.config.act_fmt)
        self.weight_window, self.act_window = wwin, awin

    # ------------------------------------------------------------------ DMA
    def dma(self, step: Dma, text: str) -> None:
        if step.to_mrf:
            self.state.copy_dram_to_mrf(step.tile, step.mrf, step.count)
        else:
            self.state.copy_mrf_to_dram(step.mrf, step.tile, step.count)

    # ------------------------------------------------------------------ chains
    def _plan(self, c: Chain, text: str) -> _ChainPlan:
        """What a chain's registers alone decide (programs are static): checked once, then cached."""
        hit = self._plans.get(id(c))
        if hit is not None and hit[0] is c:
            return hit[1]
        offsets = c.read_offsets()
        if c.iterations * max(len(offsets), c.rows) > MAX_CHAIN_VECTORS:
            raise SimulationError(c.pc, text, f"the chain moves {c.iterations * max(len(offsets), c.rows):,} vectors "
                                              f"({c.iterations:,} iterations); the simulator runs at most "
                                              f"{MAX_CHAIN_VECTORS:,} per chain")
        read_index = None
        if c.read.space not in (Space.NETQ, Space.ZERO):
            read_index = c.bases(c.read)[:, None] + offsets[None, :]
        rows = np.arange(c.rows, dtype=np.int64)
        writes = [None if w.space == Space.NETQ else _contiguous(c, w) or c.bases(w)[:, None] + rows
                  for w in c.writes]
        plan = _ChainPlan(offsets, read_index, rows, writes)
        if read_index is not None and read_index.size:
            plan.read_lo, plan.read_hi = int(read_index.min()), int(read_index.max()) + 1
            plan.read_rel = np.ascontiguousarray(read_index - plan.read_lo, dtype=np.int64)
        if len(self._plans) >= PLAN_CACHE_CHAINS:
            self._plans.clear()
        self._plans[id(c)] = (c, plan)  # holding the chain keeps its id from being reused
        return plan

    def chain(self, c: Chain, text: str) -> None:
        n = self.config.native_dim
        it = c.iterations
        plan = self._plan(c, text)
        width = len(plan.offsets)
        rows = plan.rows
        # read
        if c.read.space == Space.NETQ:
            need = it * width
            if len(self.state.inq) < need:
                raise SimulationError(c.pc, text, f"reading an empty queue: the chain pops {need} vectors but the "
                                                  f"input queue holds {len(self.state.inq)}")
            x = self.state.inq.pop(need).reshape(it, width, n)
            read_index = None
        elif c.read.space == Space.ZERO:
            x = np.zeros((it, width, n), np.float16)
            read_index = None
        else:
            read_index = plan.read_index
            x = None
        # MVM, with the leading MFU operations the C kernels implement fused into its output pass
        fused = 0
        if c.mrf is not None and intgemm.available():
            while fused < len(c.ops) and c.ops[fused].mnemonic in MFU_CODES:
                fused += 1
        if c.mrf is not None:
            epilogue = [(MFU_CODES[op.mnemonic], None if op.operand is None else
                         self._operand(c, op.operand, rows).reshape(-1, c.rows * n)) for op in c.ops[:fused]]
            y = self._mvm(c, text, x, plan if read_index is not None else None, epilogue)
        else:
            y = x if x is not None else self.state.memory(c.read.space, c.read.mfu)[read_index]
        # the other MFU operations
        for op in c.ops[fused:]:
            if op.operand is not None:
                y = MFU_OPS[op.mnemonic](y, self._operand(c, op.operand, rows))
            else:
                y = MFU_OPS[op.mnemonic](y, c)
        # writes
        for w, where in zip(c.writes, plan.writes):
            if where is None:
                self.state.outq.push(y.reshape(-1, n))
            elif isinstance(where, slice):
                self.state.memory(w.space, w.mfu)[where] = y.reshape(-1, n)
            else:
                self.state.memory(w.space, w.mfu)[where] = y

    def _operand(self, c: Chain, op: Operand, rows: np.ndarray) -> np.ndarray:
        """An MFU operand's vectors: [1, rows, N] when every iteration reads the same ones (a bias),
        else [iterations, rows, N]."""
        mem = self.state.memory(op.space, op.mfu)
        if op.so == 0 and op.si == 0:
            return mem[op.addr:op.addr + c.rows][None]
        span = _contiguous(c, op)
        if span is not None:
            return mem[span].reshape(c.iterations, c.rows, -1)
        return mem[c.bases(op)[:, None] + rows]

    def _weights(self, c: Chain, text: str):
        """The chain's MRF tiles [rows*N, cols*N], prepared for the MVM engine in use and cached: digit
        planes and column exponents (sim.intgemm) or the exact float64 matrix [cols*N, rows*N]."""
        s = self.state
        key = (c.rows, c.cols, s.mrf_tokens[c.mrf:c.mrf + c.rows * c.cols].tobytes())
        hit = self._wcache.get(key)
        if hit is not None:
            self._wcache.move_to_end(key)
            return hit[0]
        mant, exp = untile(s.mrf, c.rows, c.cols, self.config, start=c.mrf)
        ok = weight_span_ok(mant, exp, self.config.block, self.weight_window)
        if not ok.all():
            r = int(np.argmin(ok))
            raise SimulationError(c.pc, text, f"weight row {r} of MRF tiles {c.mrf}.. spans more than the "
                                              f"{self.weight_window}-step weight exponent window; quantize "
                                              f"weights with npu.weights.tile_matrix")
        fmt = self.config.weight_fmt
        if intgemm.available():
            w = intgemm.weight_digits(mant, exp, self.config.block, fmt.mant_bits)
            nbytes = w.nbytes
        else:
            w = bfp_values(mant, exp, fmt, self.config.block).T.copy()
            nbytes = w.nbytes
        self._wcache[key] = (w, nbytes)
        self._wcache_bytes += nbytes
        while self._wcache_bytes > WEIGHT_CACHE_BYTES and len(self._wcache) > 1:
            self._wcache_bytes -= self._wcache.popitem(last=False)[1][1]
        return w

    def _mvm(self, c: Chain, text: str, x: np.ndarray | None, plan: _ChainPlan | None,
             epilogue=()) -> np.ndarray:
        """The chain's MVM results [iterations, rows, N], with ``epilogue`` (MFU operations as
        ``(code, operand)``, digit engine only) applied."""
        cfg = self.config
        n, block, afmt = cfg.native_dim, cfg.block, cfg.act_fmt
        w = self._weights(c, text)
        # Quantize each source vector once (blocks never straddle vectors), then gather per iteration.
        if plan is None:  # queue or ZERO: the vectors are already in hand
            src = x.reshape(-1, n)
            idx = np.arange(len(src), dtype=np.int64).reshape(x.shape[0], -1)
        else:
            src = self.state.memory(c.read.space, c.read.mfu)[plan.read_lo:plan.read_hi]
            idx = plan.read_rel
        mant, exp, bmax = quantize_fp16(src, block, afmt.mant_bits, afmt.emin, afmt.emax, intgemm.THREADS)
        it = idx.shape[0]
        if intgemm.available():
            y = intgemm.mvm_fp16(mant, exp, bmax, idx, block, self.act_window, afmt.mant_bits, w, epilogue)
            return y.reshape(it, c.rows, n)
        assert not epilogue, "the float64 engine fuses no MFU operations"
        return self._mvm_float64(c, w, mant, exp, bmax, idx, plan is None)

    def _mvm_float64(self, c: Chain, w: np.ndarray, mant: np.ndarray, exp: np.ndarray, bmax: np.ndarray,
                     idx: np.ndarray, in_hand: bool) -> np.ndarray:
        """The reference engine: exact float64 GEMMs (any summation order is exact, npu.numerics)."""
        cfg = self.config
        n, block, afmt = cfg.native_dim, cfg.block, cfg.act_fmt
        vals = bfp_values(mant, exp, afmt, block)
        nb = n // block
        it = idx.shape[0]
        e = np.where(bmax > 0, exp, np.iinfo(np.int16).min)[idx]        # [it, width, nb]
        eref = e.reshape(it, -1).max(axis=1)
        flushed = e < (eref - self.act_window)[:, None, None]
        flushed &= e != np.iinfo(np.int16).min
        if flushed.any() or in_hand:
            xv = vals[idx].reshape(it, -1, nb, block)
            xv[flushed] = 0.0
            y = xv.reshape(it, -1) @ w
        else:
            y = _strided_gemm(c, vals, int(idx[0, 0]) - int(c.read_offsets()[0]), w, n)
            if y is None:
                y = vals[idx].reshape(it, -1) @ w
        return _round(y).reshape(it, c.rows, n)


def _round(y: np.ndarray) -> np.ndarray:
    """The exact sums to fp16.  An exact zero is +0 (the RTL's integer accumulator has no -0); adding +0
    turns a -0 that a BLAS might produce from signed zero products into +0 without touching anything else."""
    np.add(y, 0.0, out=y)
    return to_fp16(y)


def _strided_gemm(c: Chain, vals: np.ndarray, base: int, w: np.ndarray, n: int) -> np.ndarray | None:
    """The chain's GEMM without materialising its gathered input, or None when it does not pay.

    The read window is cut into chunks of L contiguous vectors; for each chunk the iterations' inputs are
    rows of a strided view of ``vals`` (row stride = the inner address stride), so the product is a sum of
    plain BLAS GEMMs.  Where the outer stride is not a whole number of inner strides apart from the inner
    loop's extent (a padded feature map), the extra rows are computed and dropped.  Exact because every
    partial sum of an MVM dot product is exact in float64 (npu.numerics.flush_windows).
    """
    io, ii = c.iter_outer, c.iter_inner
    # Below a few MB the gathered copy is cheap and one large GEMM beats several small ones.
    if io * ii * len(c.read_offsets()) * n * vals.itemsize < STRIDED_GEMM_MIN_BYTES:
        return None
    offsets = c.read_offsets()
    width = len(offsets)
    if ii > 1:
        stride = c.read.si
        if io > 1 and (stride <= 0 or c.read.so % stride):
            return None
        ext = c.read.so // stride if io > 1 else ii
    else:
        stride, ext = c.read.so, 1
    if stride <= 0 or ext < ii:
        return None
    rows_ext = (io - 1) * ext + ii
    if rows_ext > 1.3 * io * ii:
        return None
    run = c.win_run if c.win_run > 0 else width
    chunk = int(np.gcd(stride, run))
    if width % chunk:
        return None
    flat = vals.reshape(-1)
    item = flat.itemsize
    y = None
    for k in range(width // chunk):
        start = (base + int(offsets[k * chunk])) * n
        if start < 0 or start + ((rows_ext - 1) * stride + chunk) * n > flat.size:
            return None
        view = np.lib.stride_tricks.as_strided(flat[start:], shape=(rows_ext, chunk * n),
                                               strides=(stride * n * item, item), writeable=False)
        part = view @ w[k * chunk * n:(k + 1) * chunk * n]
        y = part if y is None else y.__iadd__(part)
    if ext != ii:
        keep = (np.arange(io)[:, None] * ext + np.arange(ii)[None, :]).ravel()
        y = y[keep]
    return y
