"""Exact integer GEMMs for the MVM: BFP operands as small-integer digit planes, multiplied as u8 x s8.

The MVM's exact sum (npu.numerics) is an integer times a power of two per output.  Per input row the
activations are integers over that row's smallest kept block exponent, and per output column the weights
are integers over that column's smallest nonzero block exponent.  Both are split into digits that fit
8-bit operands: activations in balanced base 128 (``sim._kernels.gather_digits``, stored as u8 with a
zero point of 64), weights in balanced base 256 (:func:`weight_digits`, s8).  onnxruntime's
``MatMulInteger`` multiplies every digit pair with int32 accumulation, which is exact: a digit product is
at most 64 * 128 = 2**13 and a dot product at most ``MAX_DOT_LENGTH = 2**17`` terms, so every partial sum
stays below 2**30 in any order, and no 16-bit intermediate saturates (a pair of products is at most
2 * 127 * 128 < 2**15).  ``sim._kernels.digit_products_to_fp16`` then adds the shifted digit products in
int64 (the flush windows bound the total below 2**53) and rounds once to fp16.

On CPUs with 8-bit dot-product instructions this is several times faster than a float64 GEMM of the same
values, and bit-identical to it: :func:`available` runs a worst-case probe once and the simulator falls back
to float64 where the probe fails or ``NPU_SIM_MVM=float64`` is set.  Where the CPU has AMX-INT8 (and R is a
multiple of 16; K is padded to a multiple of 64), the GEMMs and the output pass run fused in one C kernel on
AMX tiles instead (sim/_amx.h, :func:`amx_available`; ``NPU_SIM_MVM=onnxruntime`` keeps onnxruntime), on
``NPU_SIM_THREADS`` threads (default: the CPUs this process may use).
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np

from sim import _kernels
from sim._kernels import ACT_DIGIT_BITS, ACT_DIGIT_ZERO, balanced_digits

#: Weight digits are balanced base 2**WEIGHT_DIGIT_BITS, stored as int8.
WEIGHT_DIGIT_BITS = 8

_lock = threading.Lock()
_ok: bool | None = None
_amx: bool | None = None


def _threads() -> int:
    value = os.environ.get("NPU_SIM_THREADS", "").strip()
    if not value:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"NPU_SIM_THREADS={value!r}: give a number of threads (1 or more), or leave it unset")
    return int(value)


#: Threads of the MVM's C passes (quantize, gather, AMX GEMMs, output pass): NPU_SIM_THREADS, else every CPU
#: this process may use.
THREADS = _threads()


def _session(weights: np.ndarray):
    """An onnxruntime session computing ``(a - 64) @ weights`` for u8 ``a`` [M, K]: the weights are a
    constant, so onnxruntime packs them once for its kernels."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    a = helper.make_tensor_value_info("a", TensorProto.UINT8, ["M", weights.shape[0]])
    y = helper.make_tensor_value_info("y", TensorProto.INT32, ["M", weights.shape[1]])
    inits = [numpy_helper.from_array(np.array(ACT_DIGIT_ZERO, np.uint8), "a_zero"),
             numpy_helper.from_array(np.ascontiguousarray(weights, dtype=np.int8), "b")]
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b", "a_zero"], ["y"])], "digit_gemm",
                              [a], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    # the simulator's own work runs between GEMMs on the same cores: no spinning workers in the way
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _probe_digits(seed: int, rows: int, k: int, cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stored activation digits u8 [rows, k] and weight digits s8 [cols, k], random but for the extremes (rows
    0 and 1 all 0 and all 127, columns 0 and 1 all -128 and all 127), and their products int64 [rows, cols]:
    in float64, which is exact while k * 64 * 128 < 2**53."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 128, (rows, k)).astype(np.uint8)
    b = rng.integers(-128, 128, (cols, k)).astype(np.int8)
    a[0], a[1], b[0], b[1] = 0, 127, -128, 127
    prods = (a.astype(np.float64) - ACT_DIGIT_ZERO) @ b.T.astype(np.float64)
    return a, b, prods.astype(np.int64)


def _probe() -> bool:
    """The extreme digits on a long dot product, and random ones, against numpy."""
    a, b, want = _probe_digits(0, 32, 1 << 13, 32)
    got = _session(np.ascontiguousarray(b.T)).run(None, {"a": a})[0]
    return bool(np.array_equal(got, want))


def _engine_choice() -> str:
    choice = os.environ.get("NPU_SIM_MVM", "").lower() or "auto"
    if choice not in ("auto", "float64", "onnxruntime"):
        raise ValueError(f"NPU_SIM_MVM={choice!r}: use float64, onnxruntime, or leave it unset")
    return choice


def _amx_probe() -> bool:
    """The AMX kernel against the same sums in float64 (exact at these sizes), through the same output pass:
    two digits each side, extreme and random digits, a partial block of rows, rows on two threads."""
    m, k, r = 250, 1 << 11, 32
    # row i's activation digit d is a[2i + d]; output j's weight digit e is b[e * r + j]
    a, b, prods = _probe_digits(1, 2 * m, k, 2 * r)
    a, b, prods = a.reshape(m, 2, k), b.reshape(2, r, k), prods.reshape(m, 2, 2, r)
    row_k = np.full(m, -30, np.int32)
    col_k = np.zeros(r, np.int32)
    want = _kernels.digit_products_to_fp16(prods.astype(np.int32), row_k, col_k, ACT_DIGIT_BITS, WEIGHT_DIGIT_BITS)
    got = np.empty_like(want)
    ok = _kernels.amx_mvm(a, row_k, *_kernels.amx_pack(b), col_k, ACT_DIGIT_BITS, WEIGHT_DIGIT_BITS, (),
                          1 << 30, got, 2)
    return bool(ok) and np.array_equal(got.view(np.uint16), want.view(np.uint16))


def amx_available() -> bool:
    """Whether the fused AMX kernel multiplies digits here (checked once per process, after :func:`available`)."""
    global _amx
    if _amx is None:
        with _lock:
            if _amx is None:
                try:
                    _amx = _engine_choice() == "auto" and _kernels.amx_available() and _amx_probe()
                except Exception:  # no AMX kernel after all: onnxruntime's GEMMs are always there
                    _amx = False
    return _amx and available()


def available() -> bool:
    """Whether exact digit GEMMs can be used here (checked once per process)."""
    global _ok
    if _ok is None:
        with _lock:
            if _ok is None:
                if _engine_choice() == "float64":
                    _ok = False
                else:
                    try:
                        _ok = _probe()
                    except Exception:  # no usable onnxruntime kernel: the float64 path is always there
                        _ok = False
    return _ok


@dataclass
class WeightDigits:
    """A weight matrix [R, K] prepared for :func:`mvm_fp16`: digit rows int8 [E, R, K] (output r's weights are
    ``sum_e rows[e, r] * 256**e * 2**col_k[r]``), their AMX layout where the AMX kernel takes them (``packed``,
    ``zero``, ``nonzero``: sim._kernels.amx_pack), and, made on first use, the digits as onnxruntime takes
    them (:attr:`digits`) and the session that multiplies by them.

    Each session keeps its own (idle, non-spinning) onnxruntime worker thread: a simulator holding
    ResNet-50's weights without AMX has about 65 of them.
    """

    rows: np.ndarray
    col_k: np.ndarray
    packed: np.ndarray | None = None
    zero: np.ndarray | None = None
    nonzero: np.ndarray | None = None
    _digits: np.ndarray | None = None
    _session: object = None

    @property
    def digits(self) -> np.ndarray:
        """int8 [K, E * R]: digit e of output r in column e * R + r."""
        if self._digits is None:
            self._digits = np.ascontiguousarray(self.rows.reshape(-1, self.rows.shape[2]).T)
        return self._digits

    @property
    def session(self):
        if self._session is None:
            self._session = _session(self.digits)
        return self._session

    @property
    def nbytes(self) -> int:
        """Ours and the AMX layout, or onnxruntime's two copies."""
        return self.rows.nbytes + (self.packed.nbytes if self.packed is not None else 2 * self.rows.nbytes)


def weight_digits(mant: np.ndarray, exp: np.ndarray, block: int, mant_bits: int) -> WeightDigits:
    """Weights [R, K] (mantissas, block exponents along K) as the fewest digits E that hold them all."""
    R, K = mant.shape
    mb = mant.reshape(R, K // block, block)
    nonzero = mb.any(axis=-1)
    lo = np.where(nonzero, exp, np.iinfo(np.int16).max).min(axis=1)
    lo = np.where(nonzero.any(axis=1), lo, 0).astype(np.int32)
    shift = np.where(nonzero, exp.astype(np.int32) - lo[:, None], 0)
    # |mantissa| << weight window stays far below 2**31 (npu.numerics.flush_windows)
    v = (mb.astype(np.int32) << shift[..., None]).reshape(R, K)
    e_count = balanced_digits(int(np.abs(v).max()) if v.size else 0, WEIGHT_DIGIT_BITS)
    half, mask = 1 << (WEIGHT_DIGIT_BITS - 1), (1 << WEIGHT_DIGIT_BITS) - 1
    rows = np.empty((e_count, R, K), np.int8)
    for e in range(e_count - 1):
        v += half
        np.subtract(v & mask, half, out=rows[e], casting="unsafe")  # the balanced digit, in -128..127
        v >>= WEIGHT_DIGIT_BITS                                     # (v - digit) / 256
    rows[e_count - 1] = v  # the fewest digits: the last one is in range
    col_k = (lo - (mant_bits - 1)).astype(np.int32)
    if amx_available() and R % _kernels.AMX_R_MULTIPLE == 0:
        return WeightDigits(rows, col_k, *_kernels.amx_pack(rows))
    return WeightDigits(rows, col_k)


#: Rows of the MVM go in steps of about this many bytes of digits and digit products: memory stays bounded
#: on large layers (ResNet-50 is as fast as in one step; 1 MB steps were ~10 % slower).
STEP_BYTES = 4 << 20


def mvm_fp16(mant: np.ndarray, exps: np.ndarray, bmax: np.ndarray, idx: np.ndarray, block: int, window: int,
             mant_bits: int, weights: WeightDigits, epilogue=()) -> np.ndarray:
    """Exact MVM rounded to fp16 [M, R], then the MFU operations of ``epilogue``.

    Row i's input is the source vectors ``idx[i]`` of the quantized ``mant``/``exps``/``bmax``
    (sim._kernels.quantize_fp16) with blocks more than ``window`` below the row's largest flushed;
    ``epilogue`` is as for sim._kernels.digit_products_to_fp16 (operands [1 or M, R]).  Rows go in steps of
    about :data:`STEP_BYTES`; each step has as many activation digits as its own rows need.
    """
    M, W = idx.shape
    K = W * mant.shape[1]
    R = len(weights.col_k)
    E = weights.rows.shape[0]
    out = np.empty((M, R), np.float16)
    bound = K << (ACT_DIGIT_BITS - 1 + WEIGHT_DIGIT_BITS)  # |digit product| <= 64 * 128 per term
    amx = weights.packed is not None
    # rows, for two activation digits (and with onnxruntime, the int32 digit products)
    step = max(16, STEP_BYTES // (2 * (K + (0 if amx else 4 * E * R))) // 16 * 16)  # whole AMX row blocks
    for lo in range(0, M, step):
        hi = min(M, lo + step)
        digits, row_exp = _kernels.gather_digits(mant, exps, bmax, idx[lo:hi], block, window, THREADS,
                                        k_pad=weights.packed.shape[2] * _kernels.AMX_K_MULTIPLE if amx else 0)
        D = digits.shape[1]
        ops = [(code, None if b is None else (b if len(b) == 1 else b[lo:hi])) for code, b in epilogue]
        row_k = row_exp - np.int32(mant_bits - 1)
        if amx and D * E <= _kernels.AMX_MAX_PRODUCTS and _kernels.amx_mvm(
                digits, row_k, weights.packed, weights.zero, weights.nonzero, weights.col_k, ACT_DIGIT_BITS,
                WEIGHT_DIGIT_BITS, ops, bound, out[lo:hi], THREADS):
            continue
        if digits.shape[2] != K:  # padded for AMX, which cannot take this many digits
            digits = np.ascontiguousarray(digits[:, :, :K])
        prods = weights.session.run(None, {"a": digits.reshape((hi - lo) * D, K)})[0]
        _kernels.digit_products_to_fp16(prods.reshape(hi - lo, D, E, R), row_k, weights.col_k, ACT_DIGIT_BITS,
                                        WEIGHT_DIGIT_BITS, ops, bound, out[lo:hi], THREADS)
    return out
