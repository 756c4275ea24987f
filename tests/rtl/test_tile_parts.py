"""Weight tile words stored by rows in several memories (rtl/layout.py's parts), as brainwave-s10 needs:
the packing round-trips, no memory is wider than the limit, and (slow) tiny built with 3 parts (3 + 3 + 2
rows) is bit- and cycle-exact with the simulator on the MVM and DMA programs and on random ones."""
import numpy as np
import pytest

from npu.config import PRESETS
from rtl.layout import MAX_WORD_BITS, MemoryMap
from rtl.randprog import random_case
from tests.rtl.conftest import assert_exact, random_count
from tests.rtl.test_rtl import DIRECTED, TINY, directed

PARTS_WORD_BITS = 120  # tiny's tile word is 8 rows x 40 bits: parts of 3, 3 and 2 rows


@pytest.mark.parametrize("name, max_word_bits, parts", [("tiny", MAX_WORD_BITS, 1), ("tiny", PARTS_WORD_BITS, 3),
                                                        ("brainwave-s10", MAX_WORD_BITS, 2)])
def test_tile_words_round_trip(name, max_word_bits, parts):
    config = PRESETS[name]
    mm = MemoryMap(config, 64, max_word_bits)
    assert mm.tile_parts == parts
    assert all(m.width <= max_word_bits for m in mm.memories if m.name in mm.tile_memories)
    rng = np.random.default_rng(0)
    wf, n = config.weight_fmt, config.native_dim
    mant = rng.integers(-(1 << wf.mant_bits) + 1, 1 << wf.mant_bits, (n, n))
    exp = rng.integers(wf.emin, wf.emin + (1 << wf.exp_bits), (n, n // config.block))
    got_mant, got_exp = mm.words_tile(mm.tile_words(mant, exp))
    assert np.array_equal(got_mant, mant) and np.array_equal(got_exp, exp)


def test_max_word_bits_checked():
    with pytest.raises(ValueError, match=r"max_word_bits must hold one row of a tile word \(40 bits\), not 39"):
        MemoryMap(TINY, 64, 39)


@pytest.fixture(scope="module")
def tiny_parts_rtl():
    from rtl.backend import RtlMachine
    from rtl.generate import RtlParams

    return RtlMachine(TINY, RtlParams(max_word_bits=PARTS_WORD_BITS))


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("name", ["mv_mul", "mv_mul_loops", "m_rd_m_wr"])
def test_directed_with_parts(tiny_parts_rtl, name):
    assert tiny_parts_rtl.memmap.tile_parts == 3
    assert_exact(directed(DIRECTED[name]), tiny_parts_rtl)


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("seed", range(random_count()))
def test_random_with_parts(tiny_parts_rtl, seed):
    assert_exact(random_case(TINY, seed), tiny_parts_rtl)
