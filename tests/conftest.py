"""Shared fixtures. Test-data seeds are logged so a failure can be replayed."""
import os

import numpy as np
import pytest

from npu.config import get_config


@pytest.fixture
def tiny():
    return get_config("tiny")


@pytest.fixture
def rng(request):
    seed = int(os.environ.get("NPU_TEST_SEED", "0")) + (hash(request.node.name) & 0xFFFF)
    print(f"rng seed {seed}")
    return np.random.default_rng(seed)


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
