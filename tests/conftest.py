"""Shared fixtures. Test-data seeds are derived from the test's id (the same in every process and under
xdist) plus ``$NPU_TEST_SEED``, and logged, so a failure can be replayed."""
import os
import zlib

import numpy as np
import pytest

from npu.config import get_config


@pytest.fixture
def tiny():
    return get_config("tiny")


def test_seed(request) -> int:
    """A seed that depends only on the test's id and $NPU_TEST_SEED (Python's hash() changes per process)."""
    return int(os.environ.get("NPU_TEST_SEED", "0")) + (zlib.crc32(request.node.nodeid.encode()) & 0xFFFF)


@pytest.fixture
def rng(request):
    seed = test_seed(request)
    print(f"rng seed {seed}")
    return np.random.default_rng(seed)


@pytest.fixture(autouse=True)
def _module_rng(request):
    """Modules that draw test weights from a module-level ``RNG`` get it re-seeded per test, so a test's data
    does not depend on which tests ran before it in the same worker."""
    module = request.module
    if isinstance(getattr(module, "RNG", None), np.random.Generator):
        module.RNG = np.random.default_rng(test_seed(request))


@pytest.fixture(params=["vector", "scalar"])
def kernels(request):
    """Run a test with the simulator's AVX2 + F16C kernels and again with the portable scalar ones."""
    from sim import _kernels

    want = request.param == "vector"
    if _kernels.use_simd(want) != want:
        _kernels.use_simd(True)
        pytest.skip("this CPU has no AVX2 + F16C")
    yield request.param
    _kernels.use_simd(True)
