"""The activation unit's table functions over every fp16 value, against float64 numpy, with the error
bounds docs/numerics.md states (npu.numerics.ACT_ERROR_BOUNDS), and their special values."""
import math

import numpy as np
import pytest

from npu import numerics as nm

ALL = np.arange(0x10000, dtype=np.uint16).view(np.float16)

# float64 references written out here, independently of npu.numerics.ACT_EXACT
REFERENCE = {
    "sigm": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
    "exp": np.exp,
    "gelu": lambda x: x * 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0))),
    "gelut": lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3))),
    "hswish": lambda x: x * np.minimum(np.maximum(x + 3.0, 0.0), 6.0) / 6.0,
    "hsigm": lambda x: np.minimum(np.maximum(x / 6.0 + 0.5, 0.0), 1.0),
    "swish": lambda x: x / (1.0 + np.exp(-x)),
    "recip": lambda x: 1.0 / x,
    "rsqrt": lambda x: 1.0 / np.sqrt(x),
}


@pytest.mark.parametrize("fn", nm.ALL_ACTIVATIONS)
def test_every_fp16_input_is_within_the_stated_bound(fn):
    with np.errstate(all="ignore"):  # the references overflow and divide by zero where fp16 does
        y = nm.fp16_activation(fn, ALL)
        f = REFERENCE[fn](ALL.astype(np.float64))
        f16 = f.astype(np.float16)
    x = ALL.astype(np.float64)
    judged = np.isfinite(x) & np.isfinite(f16.astype(np.float64)) & ~np.isnan(f)
    if fn == "exp":
        judged &= x < nm.EXP_ACCURATE_BELOW
    kind, rel, absolute = nm.ACT_ERROR_BOUNDS[fn]
    with np.errstate(invalid="ignore"):
        err = np.abs(y.astype(np.float64) - f)[judged]
    ref = np.abs(f[judged])
    bound = rel * np.maximum(1.0, ref) if kind == "unit" else rel * ref + absolute
    worst = int(np.argmax(err - bound))
    assert (err <= bound).all(), f"{fn}({ALL[judged][worst]}) = {y[judged][worst]}, exact {f[judged][worst]}"
    # where the exact result overflows fp16, so does the table's (exp excepted above its accurate range)
    over = np.isfinite(x) & (x != 0) & np.isinf(f16) & ~np.isnan(f)  # zeros: test_special_values
    if fn == "exp":
        over &= x >= nm.EXP_ACCURATE_BELOW + 1  # the segment [11, 12) may round either way near 65504
    assert np.array_equal(y[over], f16[over]), fn
    assert not np.isnan(y[np.isfinite(x) & ~np.isnan(f)]).any(), fn


def test_special_values():
    inf, nan = np.inf, np.nan
    x = np.array([inf, -inf, 0.0, -0.0, nan], np.float16)

    def act(fn):
        return nm.fp16_activation(fn, x)

    assert act("exp")[:4].tolist() == [inf, 0.0, 1.0, 1.0]
    assert act("recip")[:4].view(np.uint16).tolist() == [0x0000, 0x8000, 0x7C00, 0xFC00]
    assert act("rsqrt")[:4].view(np.uint16)[[0, 2, 3]].tolist() == [0x0000, 0x7C00, 0x7C00]
    assert act("rsqrt").view(np.uint16)[1] == 0x7E00                       # rsqrt(-inf)
    assert nm.fp16_activation("rsqrt", np.array([-1.0], np.float16)).view(np.uint16)[0] == 0x7E00
    for fn in ("gelu", "gelut", "hswish", "swish"):
        assert act(fn)[:2].tolist() == [inf, 0.0], fn                       # x for large x, 0 for very negative
        big = np.array([20.0, 300.0, -20.0], np.float16)
        assert nm.fp16_activation(fn, big).tolist() == [20.0, 300.0, 0.0], fn
    assert act("hsigm")[:2].tolist() == [1.0, 0.0]
    for fn in nm.ALL_ACTIVATIONS:
        assert act(fn).view(np.uint16)[4] == nm.CANONICAL_NAN, fn


def test_recip_and_rsqrt_normalize_subnormals():
    x = np.array([2.0 ** -15, 2.0 ** -16 * 1.5, 2.0 ** -24], np.float16)
    r = nm.fp16_activation("recip", x).astype(np.float64)
    np.testing.assert_allclose(r[:2], 1.0 / x[:2].astype(np.float64), rtol=1e-3)
    assert np.isinf(r[2])
    s = nm.fp16_activation("rsqrt", x).astype(np.float64)
    np.testing.assert_allclose(s, 1.0 / np.sqrt(x.astype(np.float64)), rtol=1e-3)


def test_hardsigmoid_is_exact_on_its_lines():
    """hsigm's lines are exact in float64: away from its kinks only fp16 rounding remains (<= 1 ulp + the
    rounding of 1/6)."""
    x = ALL[np.isfinite(ALL)]
    x = x[(np.abs(x.astype(np.float64)) < 2.9)]
    y = nm.fp16_activation("hsigm", x).astype(np.float64)
    assert np.abs(y - (x.astype(np.float64) / 6 + 0.5)).max() < 2.0 ** -10


@pytest.mark.parametrize("fn", nm.ALL_ACTIVATIONS)
def test_tables_are_finite_fp16(fn):
    a, b = nm.activation_table(fn) if fn in nm.ACT_FUNCTIONS else nm.scaled_table(fn)
    assert a.dtype == np.float16 and not np.isnan(a).any() and not np.isnan(b).any()
    segments = a[:nm.ACT_SEGMENTS] if fn in nm.ACT_FUNCTIONS else a
    assert np.isfinite(segments).all()
