"""The exact digit-GEMM MVM engine (sim/intgemm.py and its C kernels) against numpy references."""
import numpy as np
import pytest

from npu import numerics as nm
from sim import intgemm
from sim._kernels import ACT_DIGIT_BITS, ACT_DIGIT_ZERO, digit_products_to_fp16, gather_digits, quantize_fp16

pytestmark = pytest.mark.skipif(not intgemm.available(), reason="no exact u8 x s8 GEMM on this machine")


@pytest.fixture(params=["amx", "onnxruntime"])
def gemm(request, monkeypatch):
    """Run a test with the fused AMX kernel and again with onnxruntime's GEMMs and the C output pass."""
    if request.param == "amx" and not amx_hardware():
        pytest.skip("no AMX-INT8 here")
    # the kernel itself, even where the start-up probe would have turned it off
    monkeypatch.setattr(intgemm, "_amx", request.param == "amx")
    return request.param


def amx_hardware() -> bool:
    from sim._kernels import amx_available
    return amx_available()


@pytest.mark.skipif(not amx_hardware(), reason="no AMX-INT8 here")
def test_amx_probe_passes_where_the_cpu_has_amx():
    assert intgemm._amx_probe()


def _scaled_ints(rng, shape):
    """Integers below 2**45 (ties and near-ties of the 11-bit significand among them) and scales 2**k,
    with the rounding numpy gives them."""
    n = int(np.prod(shape))
    bits = rng.integers(0, 46, n)
    acc = (rng.integers(1, 1 << 45, n, dtype=np.int64) >> (45 - bits)) * rng.choice([-1, 1], n)
    ties = (rng.integers(1 << 10, 1 << 11, n // 4, dtype=np.int64) * 2 + 1) << 20
    acc[: n // 4] = (ties + rng.integers(-1, 2, n // 4)) * rng.choice([-1, 1], n // 4)
    acc[-1] = 0
    acc = rng.permutation(acc).reshape(shape)
    row_k = rng.integers(-60, -10, shape[0]).astype(np.int32)
    col_k = rng.integers(-30, 10, shape[1]).astype(np.int32)
    with np.errstate(over="ignore"):
        want = nm.to_fp16(acc.astype(np.float64) * np.ldexp(1.0, row_k[:, None] + col_k[None, :]))
    return acc, row_k, col_k, want


def test_rounding_of_scaled_integers_equals_numpy(rng, kernels):
    """digit_products_to_fp16 rounds acc * 2**k once to fp16, as numpy's float64 -> float16 does:
    normals, subnormals, overflow, ties and near-ties, and an exact zero as +0."""
    acc, row_k, col_k, want = _scaled_ints(rng, (512, 67))   # 67: the vector kernels' tail too
    # as digit products [M, D=2, E=2, N] with shifts 0, 8, 7, 15: acc = p00 + p11 * 2**15
    prods = np.zeros((512, 2, 2, 67), np.int32)
    prods[:, 0, 0] = acc & 0x7FFF
    prods[:, 1, 1] = acc >> 15
    got = digit_products_to_fp16(prods, row_k, col_k, 7, 8)
    np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))
    assert got.view(np.uint16).ravel()[np.flatnonzero(acc.ravel() == 0)].max() == 0


def test_rounding_of_sums_past_float64_precision(rng, kernels):
    """Digit shifts whose worst-case sum passes 2**53 take the int64 path: the same rounding."""
    acc, row_k, col_k, want = _scaled_ints(rng, (64, 40))
    prods = np.stack([acc & ((1 << 31) - 1), acc >> 31], axis=1).astype(np.int32).reshape(64, 2, 1, 40)
    got = digit_products_to_fp16(prods, row_k, col_k, 31, 8)
    np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("name", ["msfp16", "ms-fp8", "bfp-e6m4b4"])
def test_gathered_digits_are_the_flushed_values(name, threads, rng, kernels):
    fmt = nm.get_bfp_format(name)
    n = 32
    block = fmt.block_size(n)
    _, awin = nm.flush_windows(fmt, fmt)
    scale = 2.0 ** rng.integers(-20, 10, size=(64, n // block)).repeat(block, axis=1)
    x = (rng.normal(size=(64, n)) * scale).astype(np.float16)
    x[rng.random(x.shape) < 0.3] = 0
    x[5] = 0  # an all-zero source vector
    mant, exp, bmax = quantize_fp16(x, block, fmt.mant_bits, fmt.emin, fmt.emax)
    idx = rng.integers(0, 64, size=(40, 3)).astype(np.int64)
    idx[0] = 5  # an all-zero row
    digits, row_exp = gather_digits(mant, exp, bmax, idx, block, awin, threads=threads, min_rows=1)
    weights = (np.int64(1) << (ACT_DIGIT_BITS * np.arange(digits.shape[1])))[None, :, None]
    ints = ((digits.astype(np.int64) - ACT_DIGIT_ZERO) * weights).sum(axis=1)
    got = ints * np.ldexp(1.0, row_exp - (fmt.mant_bits - 1))[:, None]
    m, e = nm.bfp_quantize(x[idx].reshape(40, -1), fmt, block)
    want = nm.bfp_values(nm.flush_blocks(m, e, block, awin), e, fmt, block)
    np.testing.assert_array_equal(got, want)
    assert row_exp[0] == 0 and (digits[0] == ACT_DIGIT_ZERO).all()
    padded, padded_exp = gather_digits(mant, exp, bmax, idx, block, awin, threads=threads, min_rows=1,
                                       k_pad=digits.shape[2] + 13)
    np.testing.assert_array_equal(padded[:, :, :-13], digits)
    assert (padded[:, :, -13:] == ACT_DIGIT_ZERO).all() and np.array_equal(padded_exp, row_exp)


def test_weight_digits_are_the_weights(rng):
    fmt = nm.get_bfp_format("msfp16")
    w = rng.normal(size=(48, 64)) * 2.0 ** rng.integers(-6, 3, size=(48, 4)).repeat(16, axis=1)
    w[3] = 0
    mant, exp = nm.quantize_weights(w, fmt, 16, nm.flush_windows(fmt, fmt)[0])
    prepared = intgemm.weight_digits(mant, exp, 16, fmt.mant_bits)
    digits, col_k = prepared.digits, prepared.col_k
    E = digits.shape[1] // 48
    ints = sum(digits[:, e * 48:(e + 1) * 48].astype(np.int64) << (8 * e) for e in range(E))
    np.testing.assert_array_equal(ints * np.ldexp(1.0, col_k)[None, :], nm.bfp_values(mant, exp, fmt, 16).T)


@pytest.mark.parametrize("name, width", [("msfp16", 36), ("msfp12", 36), ("ms-fp8", 36), ("msfp16", 35)])
def test_digit_mvm_equals_reference(name, width, rng, kernels, gemm, monkeypatch):
    """Whole MVMs, with activations spread over the full flush window, against npu.numerics' float64
    (35 vectors of 32: K = 1120, which the AMX kernel pads to 1152)."""
    fmt = nm.get_bfp_format(name)
    n, k = 32, 32 * width
    block = fmt.block_size(n)
    wwin, awin = nm.flush_windows(fmt, fmt)
    x = rng.normal(size=(50, k)) * 2.0 ** rng.integers(-awin - 3, 3, size=(50, k // block)).repeat(block, axis=1)
    x = x.astype(np.float16)
    w = rng.normal(size=(96, k)) * 2.0 ** rng.integers(-wwin, 1, size=(96, k // block)).repeat(block, axis=1)
    wm, we = nm.quantize_weights(w, fmt, block, wwin)
    mant, exp, bmax = quantize_fp16(x.reshape(-1, n), block, fmt.mant_bits, fmt.emin, fmt.emax)
    idx = np.arange(50 * k // n, dtype=np.int64).reshape(50, -1)
    prepared = intgemm.weight_digits(wm, we, block, fmt.mant_bits)
    assert (prepared.packed is not None) == (gemm == "amx")
    monkeypatch.setattr(intgemm, "STEP_BYTES", 1)  # steps of 16 rows: several steps, each with its own digits
    got = intgemm.mvm_fp16(mant, exp, bmax, idx, block, awin, fmt.mant_bits, prepared)
    np.testing.assert_array_equal(got.view(np.uint16), nm.mvm_reference(x, wm, we, fmt, fmt, block).view(np.uint16))


@pytest.mark.parametrize("threads", [1, 3])
def test_fused_mfu_epilogue_equals_separate_operations(threads, rng, kernels):
    """The MVM output kernel's fused MFU operations give what the operations give one after another."""
    from sim._kernels import MFU_CODES, fp16_binary

    M, N = 40, 64
    prods = rng.integers(-(1 << 20), 1 << 20, size=(M, 2, 2, N)).astype(np.int32)
    row_k = rng.integers(-40, -20, M).astype(np.int32)
    col_k = rng.integers(-8, 0, N).astype(np.int32)
    bias = rng.normal(size=(1, N)).astype(np.float16)
    resid = (rng.normal(size=(M, N)) * 4).astype(np.float16)
    resid[0, :4] = [np.nan, np.inf, -np.inf, -0.0]
    plain = digit_products_to_fp16(prods, row_k, col_k, 7, 8)
    want = nm.fp16_relu(nm.fp16_max(nm.fp16_sub(resid, nm.fp16_add(plain, bias)), bias))
    got = digit_products_to_fp16(prods, row_k, col_k, 7, 8, [(MFU_CODES["vv_add"], bias),
                                                            (MFU_CODES["vv_b_sub_a"], resid),
                                                            (MFU_CODES["vv_max"], bias),
                                                            (MFU_CODES["v_relu"], None)], threads=threads, min_rows=7)
    np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))
    np.testing.assert_array_equal(fp16_binary(plain, bias, MFU_CODES["vv_add"]), nm.fp16_add(plain, bias))


@pytest.mark.skipif(not amx_hardware(), reason="no AMX-INT8 here")
@pytest.mark.parametrize("D, E, threads", [(2, 2, 2), (3, 1, 1), (1, 3, 3), (4, 3, 2)])
def test_amx_kernel_equals_integer_products(D, E, threads, rng, kernels):
    """The fused AMX kernel against numpy's int64 digit products through digit_products_to_fp16: odd digit
    counts, a partial last block of rows, the threads' split, fused MFU operations with NaN and inf operands,
    and (D, E) = (4, 3), whose float64 sum is not always exact, through the int64 output path."""
    from sim._kernels import MFU_CODES, amx_mvm, amx_pack

    M, K, R = 53, 192, 48
    a = rng.integers(0, 128, size=(M, D, K)).astype(np.uint8)
    a[7] = 127  # extreme digits
    w = rng.integers(-128, 128, size=(K, E * R)).astype(np.int8)
    w[:, 20] = -128
    w[64:128] = 0                          # zero weight tiles (padding channels): skipped
    for e in range(E):
        w[:, e * R:e * R + 16] = 0         # outputs 0..15 have no nonzero tile at all
    prods = np.einsum("mdk,ker->mder", a.astype(np.int64) - ACT_DIGIT_ZERO,
                      w.astype(np.int64).reshape(K, E, R)).astype(np.int32)
    row_k = rng.integers(-50, -30, M).astype(np.int32)
    col_k = rng.integers(-4, 4, R).astype(np.int32)
    bias = rng.normal(size=(1, R)).astype(np.float16)
    resid = (rng.normal(size=(M, R)) * 8).astype(np.float16)
    resid[0, :4] = [np.nan, np.inf, -np.inf, -0.0]
    ops = [(MFU_CODES["vv_add"], bias), (MFU_CODES["vv_a_sub_b"], resid), (MFU_CODES["vv_min"], bias),
           (MFU_CODES["vv_mul"], resid), (MFU_CODES["v_relu"], None)]
    bound = K << 13
    for epilogue in ((), ops):
        want = digit_products_to_fp16(prods, row_k, col_k, ACT_DIGIT_BITS, 8, epilogue, bound)
        got = np.full((M, R), np.nan, np.float16)
        assert amx_mvm(a, row_k, *amx_pack(np.ascontiguousarray(w.T.reshape(E, R, K))), col_k, ACT_DIGIT_BITS, 8, epilogue, bound, got, threads)
        np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))


@pytest.mark.parametrize("name", ["tiny_cnn", "resnet50"])
def test_engines_agree_bit_for_bit_on_a_compiled_network(name, monkeypatch):
    """A zoo network compiled for brainslice-128 (every MVM shape fits the AMX kernel) gives the same bits on
    each MVM engine: AMX where present, onnxruntime's GEMMs, and the float64 reference."""
    from compiler import compile_model, zoo
    from npu.modelfile import read_model
    from runtime.executor import Executor

    model = zoo.build(name, seed=3, input_size=32)
    blob = read_model(compile_model(model, config="brainslice-128"))
    x = np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)
    feeds = {model.graph.input[0].name: x}
    results = {}
    for engine, amx, ok in [("amx", True, True), ("onnxruntime", False, True), ("float64", False, False)]:
        if engine == "amx" and not amx_hardware():
            continue
        monkeypatch.setattr(intgemm, "_amx", amx)
        monkeypatch.setattr(intgemm, "_ok", ok)
        outputs, _ = Executor(blob).run(feeds)
        results[engine] = outputs
    first = next(iter(results.values()))
    assert len(results) >= 2 and first
    for engine, outputs in results.items():
        assert outputs.keys() == first.keys()
        for key in first:
            np.testing.assert_array_equal(outputs[key], first[key], err_msg=f"{engine}: {key}")


def test_kernels_refuse_inconsistent_arguments():
    """Wrong lengths or a binary MFU operation without its operand are errors, not out-of-bounds reads."""
    from sim._kernels import MFU_CODES, amx_mvm, amx_pack

    prods = np.zeros((4, 1, 1, 16), np.int32)
    with pytest.raises(ValueError, match="exponents"):
        digit_products_to_fp16(prods, np.zeros(3, np.int32), np.zeros(16, np.int32), 7, 8)
    with pytest.raises(ValueError, match="operand"):
        digit_products_to_fp16(prods, np.zeros(4, np.int32), np.zeros(16, np.int32), 7, 8,
                               [(MFU_CODES["vv_add"], None)])
    if not amx_hardware():
        return
    packed = amx_pack(np.zeros((1, 16, 64), np.int8))
    out = np.empty((4, 16), np.float16)
    with pytest.raises(ValueError, match="out of range"):
        amx_mvm(np.zeros((4, 1, 0), np.uint8), np.zeros(4, np.int32), np.zeros((1, 1, 0, 16, 64), np.int8),
                np.zeros((1, 16), np.int32), np.zeros((1, 0), np.uint8), np.zeros(16, np.int32), 7, 8, (), 0, out, 1)
    with pytest.raises(ValueError, match="exponents"):
        amx_mvm(np.zeros((4, 1, 64), np.uint8), np.zeros(4, np.int32), *packed, np.zeros(8, np.int32), 7, 8, (), 0,
                out, 1)
