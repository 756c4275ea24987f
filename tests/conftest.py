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
