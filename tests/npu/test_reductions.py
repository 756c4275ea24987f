"""vr_sum / vr_max (npu.numerics.fp16_reduce) against independent references: a recursive pairwise sum with
one fp16 rounding per add (Python floats), and numpy's max."""
import numpy as np
import pytest

from npu import numerics as nm


def pairwise(values: list[float]) -> float:
    """Adjacent pairs level by level, an odd last value carried up; each add rounded once to fp16."""
    while len(values) > 1:
        nxt = [float(np.float16(values[i] + values[i + 1])) for i in range(0, len(values) - 1, 2)]
        values = nxt + values[-1:] if len(values) % 2 else nxt
    return values[0]


@pytest.mark.parametrize("n", [1, 5, 8, 32, 128, 400])
def test_sum_is_the_documented_pairwise_tree(rng, n):
    x = (rng.standard_normal((20, n)) * rng.choice([1e-3, 1.0, 100.0], (20, 1))).astype(np.float16)
    y = nm.fp16_reduce("sum", x)
    assert y.shape == x.shape and (y == y[:, :1]).all()
    expect = np.array([pairwise([float(v) for v in row]) for row in x], np.float16)
    np.testing.assert_array_equal(y[:, 0].view(np.uint16), expect.view(np.uint16))
    # and close to the exact sum: each of the log2(n) levels rounds once
    exact = x.astype(np.float64).sum(axis=1)
    scale = np.abs(x.astype(np.float64)).sum(axis=1)
    assert (np.abs(y[:, 0].astype(np.float64) - exact) <= scale * np.ceil(np.log2(max(n, 2))) * 2.0 ** -11 + 1e-7).all()


@pytest.mark.parametrize("n", [1, 7, 8, 128])
def test_max_is_numpys(rng, n):
    x = rng.standard_normal((20, n)).astype(np.float16)
    y = nm.fp16_reduce("max", x)
    np.testing.assert_array_equal(y, np.broadcast_to(x.max(axis=1, keepdims=True), x.shape))


def test_specials():
    inf, nan = np.inf, np.nan
    v = np.array([[1, 2, inf, -inf], [1, nan, 3, 4], [65504, 65504, 0, 0], [-0.0, 0.0, -1, -2]], np.float16)
    s = nm.fp16_reduce("sum", v)[:, 0]
    assert s.view(np.uint16)[0] == nm.CANONICAL_NAN and s.view(np.uint16)[1] == nm.CANONICAL_NAN
    assert s[2] == inf and s[3] == -3
    mx = nm.fp16_reduce("max", v)[:, 0]
    assert mx[0] == inf and mx.view(np.uint16)[1] == nm.CANONICAL_NAN and mx[2] == 65504
    assert mx.view(np.uint16)[3] == 0x8000  # -0 against +0 keeps the left one (vv_max's rule)


def test_tree_shape():
    assert nm.reduction_tree(8) == [[(0, 1), (2, 3), (4, 5), (6, 7)], [(0, 1), (2, 3)], [(0, 1)]]
    assert [len(level) for level in nm.reduction_tree(400)] == [200, 100, 50, 25, 12, 6, 3, 2, 1]
