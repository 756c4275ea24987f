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
values (ResNet-50: 0.155 s per inference against 0.47 s, docs/simulator.md), and bit-identical to it: :func:`available` runs a worst-case probe once and the simulator
falls back to float64 where the probe fails or ``NPU_SIM_MVM=float64`` is set.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np

from sim._kernels import ACT_DIGIT_BITS, ACT_DIGIT_ZERO, balanced_digits

#: Weight digits are balanced base 2**WEIGHT_DIGIT_BITS, stored as int8.
WEIGHT_DIGIT_BITS = 8

_lock = threading.Lock()
_ok: bool | None = None


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


def _probe() -> bool:
    """The extreme digits on a long dot product, and random ones, against int64 numpy."""
    rng = np.random.default_rng(0)
    k = 1 << 13
    a = np.concatenate([np.zeros((1, k)), np.full((1, k), 127), rng.integers(0, 128, (30, k))]).astype(np.uint8)
    b = np.concatenate([np.full((k, 1), -128), np.full((k, 1), 127), rng.integers(-128, 128, (k, 30))],
                       axis=1).astype(np.int8)
    want = (a.astype(np.int64) - ACT_DIGIT_ZERO) @ b.astype(np.int64)
    got = _session(b).run(None, {"a": a})[0]
    return bool(np.array_equal(got, want))


def available() -> bool:
    """Whether exact digit GEMMs can be used here (checked once per process)."""
    global _ok
    if _ok is None:
        with _lock:
            if _ok is None:
                if os.environ.get("NPU_SIM_MVM", "").lower() == "float64":
                    _ok = False
                else:
                    try:
                        _ok = _probe()
                    except Exception:  # no usable onnxruntime kernel: the float64 path is always there
                        _ok = False
    return _ok


@dataclass
class WeightDigits:
    """A weight matrix [R, K] prepared for :func:`mvm_fp16`: digits int8 [K, E * R] (output r's weights are
    ``sum_e digits[:, e * R + r] * 256**e * 2**col_k[r]``) and the session that multiplies by them.

    Each session keeps its own (idle, non-spinning) onnxruntime worker thread: a simulator holding
    ResNet-50's weights has about 65 of them.
    """

    digits: np.ndarray
    col_k: np.ndarray
    session: object

    @property
    def nbytes(self) -> int:
        return 2 * self.digits.nbytes  # ours and onnxruntime's packed copy


def weight_digits(mant: np.ndarray, exp: np.ndarray, block: int, mant_bits: int) -> WeightDigits:
    """Weights [R, K] (mantissas, block exponents along K) as the fewest digits E that hold them all."""
    R, K = mant.shape
    mb = mant.reshape(R, K // block, block).astype(np.int64)
    nonzero = (mb != 0).any(axis=-1)
    lo = np.where(nonzero, exp, np.iinfo(np.int16).max).min(axis=1)
    lo = np.where(nonzero.any(axis=1), lo, 0).astype(np.int64)
    shift = np.where(nonzero, exp - lo[:, None], 0)
    v = (mb << shift[..., None]).reshape(R, K)
    e_count = balanced_digits(int(np.abs(v).max()) if v.size else 0, WEIGHT_DIGIT_BITS)
    base, half = 1 << WEIGHT_DIGIT_BITS, 1 << (WEIGHT_DIGIT_BITS - 1)
    digits = np.empty((K, e_count * R), np.int8)
    for e in range(e_count):
        r = ((v + half) & (base - 1)) - half
        digits[:, e * R:(e + 1) * R] = r.T
        v = (v - r) >> WEIGHT_DIGIT_BITS
    col_k = (lo - (mant_bits - 1)).astype(np.int32)
    return WeightDigits(digits, col_k, _session(digits))


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
    from sim._kernels import digit_products_to_fp16, gather_digits

    M, W = idx.shape
    K = W * mant.shape[1]
    R = len(weights.col_k)
    E = weights.digits.shape[1] // R
    out = np.empty((M, R), np.float16)
    bound = K << (ACT_DIGIT_BITS - 1 + WEIGHT_DIGIT_BITS)  # |digit product| <= 64 * 128 per term
    step = max(8, STEP_BYTES // (2 * (K + 4 * E * R)))      # rows, for two activation digits
    for lo in range(0, M, step):
        hi = min(M, lo + step)
        digits, row_exp = gather_digits(mant, exps, bmax, idx[lo:hi], block, window)
        D = digits.shape[1]
        prods = weights.session.run(None, {"a": digits.reshape((hi - lo) * D, K)})[0]
        ops = [(code, None if b is None else (b if len(b) == 1 else b[lo:hi])) for code, b in epilogue]
        digit_products_to_fp16(prods.reshape(hi - lo, D, E, R), row_exp - np.int32(mant_bits - 1), weights.col_k,
                               ACT_DIGIT_BITS, WEIGHT_DIGIT_BITS, ops, bound, out[lo:hi])
    return out
