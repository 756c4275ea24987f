"""The `small` preset (N=32, 2 tile engines, ports slower than a vector per cycle): it generates, and (slow)
its Verilator build is bit- and cycle-exact with the simulator on the directed and random programs."""
import pytest

from npu.config import PRESETS
from rtl.randprog import random_case
from tests.rtl.conftest import assert_exact, random_count
from tests.rtl.test_rtl import DIRECTED, directed

SMALL = PRESETS["small"]


def test_small_generates(tmp_path):
    """Every unit is defined once, and only the activation ROMs carry initial contents (no RAM does)."""
    from rtl.generate import write_verilog
    from rtl.units import UNIT_NAMES

    lines = write_verilog(SMALL, tmp_path).read_text().splitlines()
    for name in UNIT_NAMES.values():
        assert sum(line.startswith(f"module {name}(") for line in lines) == 1, name
    inits = [k for k, line in enumerate(lines) if line.strip() == "initial begin"]
    assert inits and all(" rom_" in lines[k - 1] for k in inits), [lines[k - 1] for k in inits]


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(DIRECTED))
def test_directed_small(small_rtl, name):
    assert_exact(directed(DIRECTED[name], config=SMALL), small_rtl)


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("seed", range(random_count(20)))
def test_random_small(small_rtl, seed):
    assert_exact(random_case(SMALL, seed), small_rtl)
