import pytest

from sim import _kernels


@pytest.fixture(params=["vector", "scalar"])
def kernels(request):
    """Run a test with the AVX2 + F16C kernels and again with the portable scalar ones."""
    want = request.param == "vector"
    if _kernels.use_simd(want) != want:
        _kernels.use_simd(True)
        pytest.skip("this CPU has no AVX2 + F16C")
    yield request.param
    _kernels.use_simd(True)
