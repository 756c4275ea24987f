"""The simulator's C kernels against the numerics contract they implement."""
import numpy as np
import pytest

from npu import numerics as nm
from sim._kernels import quantize_fp16


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("name", ["msfp16", "msfp12", "ms-fp9", "ms-fp8", "bfp-e8m7b8", "bfp-e6m4b4"])
def test_quantize_kernel_equals_numerics(name, threads, rng, kernels):
    fmt = nm.get_bfp_format(name)
    block = fmt.block_size(32)
    # every fp16 bit pattern appears, including subnormals, infinities and NaNs, plus typical data
    allbits = rng.permutation(np.arange(1 << 16, dtype=np.uint32)).astype(np.uint16).view(np.float16)
    typical = (rng.normal(size=32 * 512) * 2.0 ** rng.integers(-26, 16, size=32 * 512 // block).repeat(block))
    with np.errstate(over="ignore"):  # values past fp16's range become inf: wanted here
        typical = typical.astype(np.float16)
    for x in (allbits.reshape(-1, 32), typical.reshape(-1, 32)):
        mant, exps, bmax = quantize_fp16(x, block, fmt.mant_bits, fmt.emin, fmt.emax, threads, min_rows=100)
        with np.errstate(all="ignore"):
            m, e = nm.bfp_quantize(x, fmt, block)
        np.testing.assert_array_equal(exps, e)
        np.testing.assert_array_equal(mant, m)
        np.testing.assert_array_equal(bmax, np.abs(m.reshape(len(x), -1, block)).max(-1))


@pytest.mark.parametrize("mnemonic, ref", [("vv_add", nm.fp16_add), ("vv_a_sub_b", nm.fp16_sub),
                                           ("vv_b_sub_a", lambda a, b: nm.fp16_sub(b, a)), ("vv_mul", nm.fp16_mul),
                                           ("vv_max", nm.fp16_max), ("vv_min", nm.fp16_min)])
def test_fp16_binary_kernel_equals_numerics(mnemonic, ref, rng, kernels):
    from sim._kernels import MFU_CODES, fp16_binary

    op = MFU_CODES[mnemonic]

    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    for a, b in ((every, rng.permutation(every)), (every, every[::-1].copy()),
                 (rng.normal(size=4096).astype(np.float16), (rng.normal(size=4096) * 1e3).astype(np.float16))):
        np.testing.assert_array_equal(fp16_binary(a, b, op).view(np.uint16), ref(a, b).view(np.uint16))


def test_fp16_binary_kernel_broadcasts_a_bias(rng, kernels):
    from sim._kernels import MFU_CODES, fp16_binary

    x = rng.normal(size=(5, 3, 8)).astype(np.float16)
    b = rng.normal(size=(1, 3, 8)).astype(np.float16)
    np.testing.assert_array_equal(fp16_binary(x, b, MFU_CODES["vv_add"]), nm.fp16_add(x, b))
    np.testing.assert_array_equal(fp16_binary(x, b[0, 1], MFU_CODES["vv_mul"]), nm.fp16_mul(x, b[0, 1]))
