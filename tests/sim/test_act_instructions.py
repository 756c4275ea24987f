"""The activation unit's table instructions on the simulator: every fp16 value through each one, bit for bit
against npu.numerics and within the stated bound of numpy's float64 function (tests/npu/test_activations.py
holds the bound checks of the contract itself)."""
import numpy as np
import pytest

from npu import numerics as nm
from npu.asm import assemble
from npu.config import get_config
from npu.isa import ACT_TABLE_OPS
from npu.program import Program
from sim.machine import Machine

ALL = np.arange(0x10000, dtype=np.uint16).view(np.float16)


@pytest.mark.parametrize("mnemonic", sorted(ACT_TABLE_OPS))
def test_every_fp16_value_through_the_instruction(mnemonic):
    cfg = get_config("tiny")
    n = cfg.native_dim
    m = Machine(cfg)
    m.push_input(ALL.reshape(-1, n))
    mfu = 1 if mnemonic in ("v_exp", "v_rsqrt", "v_hsigm") else 0
    m.run(Program(cfg, assemble(f"s_wr rows 8\ns_wr iter_inner {len(ALL) // n // 8}\nv_rd netq 0\n"
                                f"{mnemonic} mfu={mfu}\nv_wr netq 0\nend_chain")))
    y = m.pop_output().reshape(-1)
    fn = ACT_TABLE_OPS[mnemonic]
    np.testing.assert_array_equal(y.view(np.uint16), nm.fp16_activation(fn, ALL).view(np.uint16))
    # and the independent reference: numpy float64, within the stated bound where fp16 holds the result
    x = ALL.astype(np.float64)
    with np.errstate(all="ignore"):
        f = nm.activation_exact(fn, x)
        ok = np.isfinite(x) & np.isfinite(f.astype(np.float16)) & (x < nm.EXP_ACCURATE_BELOW if fn == "exp" else True)
        err = np.abs(y.astype(np.float64) - f)[ok]
    kind, rel, absolute = nm.ACT_ERROR_BOUNDS[fn]
    bound = rel * np.maximum(1.0, np.abs(f[ok])) if kind == "unit" else rel * np.abs(f[ok]) + absolute
    assert (err <= bound).all()


def test_after_an_mvm_and_an_add(rng):
    """A table activation behind the MVM and a bias add (the fused C epilogue stops before it)."""
    from npu.weights import tile_matrix, untile

    cfg = get_config("tiny")
    n = cfg.native_dim
    m = Machine(cfg)
    w = rng.normal(size=(n, n)) / 4
    image, _, _ = tile_matrix(w, cfg)
    m.load_mrf(image)
    bias = rng.normal(size=(1, n)).astype(np.float16)
    from npu.isa import Space
    m.load_vectors(Space.ASVRF, 0, bias)
    x = rng.normal(size=(4, n)).astype(np.float16)
    m.push_input(x)
    m.run(Program(cfg, assemble("s_wr iter_inner 4\nv_rd netq 0 \nmv_mul 0\nvv_add 0\nv_gelu\nv_wr netq 0\n"
                                "end_chain")))
    y = m.pop_output()
    mant, exp = untile(image, 1, 1, cfg)
    z = nm.fp16_add(nm.mvm_reference(x, mant, exp, cfg.weight_fmt, cfg.act_fmt, cfg.block), bias)
    np.testing.assert_array_equal(y.view(np.uint16), nm.fp16_activation("gelu", z).view(np.uint16))


@pytest.mark.parametrize("mnemonic", ["vr_sum", "vr_max"])
def test_reductions_over_random_vectors(rng, mnemonic):
    """Each native vector reduced on its own, broadcast to its lanes; an op before it in the chain."""
    from npu.isa import Space
    from tests.npu.test_reductions import pairwise

    cfg = get_config("small")
    n = cfg.native_dim
    m = Machine(cfg)
    x = (rng.standard_normal((24, n)) * 3).astype(np.float16)
    b = rng.standard_normal((3, n)).astype(np.float16)
    m.load_vectors(Space.IVRF, 0, x)
    m.load_vectors(Space.ASVRF, 0, b)
    m.run(Program(cfg, assemble(f"s_wr rows 3\ns_wr iter_outer 8\nv_rd ivrf 0 so=3\nvv_add 0\n{mnemonic}\n"
                                "v_wr netq 0\nend_chain")))
    y = m.pop_output().reshape(8, 3, n)
    z = nm.fp16_add(x.reshape(8, 3, n), b[None])
    if mnemonic == "vr_sum":
        want = np.array([[pairwise([float(v) for v in row]) for row in it] for it in z], np.float16)
    else:
        want = z.max(axis=-1)
    np.testing.assert_array_equal(y.view(np.uint16), np.broadcast_to(want[..., None], y.shape).view(np.uint16))
