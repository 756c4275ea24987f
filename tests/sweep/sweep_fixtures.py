"""Small sweeps for the tests: the tiny preset and the zoo's tiny models compile in milliseconds.

Test modules import these fixtures by name.  (Not a conftest.py: tests/runtime imports its own conftest
by that module name, and a second one on sys.path would answer in its place.)"""
import copy

import pytest

TINY_SPEC = {
    "sweep": {"name": "t", "base": "tiny"},
    "models": [{"zoo": "tiny_cnn"}, {"zoo": "tiny_rnn"}],
    "space": {"tile_engines": [1, 2], "dpe_lanes": [2, 4, 3]},  # lanes 3 does not divide native_dim 8
}


@pytest.fixture
def tiny_spec():
    return copy.deepcopy(TINY_SPEC)


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory):
    """The tiny sweep, run once per module, serially, and saved."""
    from sweep.runner import execute

    cache = tmp_path_factory.mktemp("cache")
    result = execute(copy.deepcopy(TINY_SPEC), cache_dir=cache, local=True)
    out = tmp_path_factory.mktemp("results")
    result.save(out)
    return result, out
