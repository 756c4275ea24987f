# amaranth: UnusedElaboratable=no
"""Random programs on one simulator process (rtl.check.Checker): random lengths up to hundreds of steps, memories
carried over from program to program, every memory word and every step's completion cycle compared, error
programs against the simulator's error; and the checker itself against planted differences.  The C++ bench
(rtl/harness.py) runs the many programs; the cocotb bench (rtl.cosim.Session), the reference, runs a few
(tests/rtl/test_harness.py holds the two benches to the same results).

NPU_RTL_RANDOM sets how many programs the slow tests run; benchmarks/bench_rtl_random.py runs thousands.
"""
import pytest

from npu.config import PRESETS
from npu.isa import Space
from npu.program import analyze
from rtl.check import Checker, Mismatch, commit_mismatches, last_writers
from rtl.coverage import Coverage
from rtl.randprog import ERROR_KINDS, random_case, random_error_case
from tests.rtl.conftest import random_count

pytestmark = pytest.mark.rtl
TINY = PRESETS["tiny"]


def _fast(config):
    from rtl.backend import RtlMachine

    m = RtlMachine(config, bench="harness")
    yield m
    m.close()


@pytest.fixture(scope="module")
def tiny_fast():
    yield from _fast(TINY)


@pytest.fixture(scope="module")
def small_fast():
    yield from _fast(PRESETS["small"])


@pytest.fixture(scope="module")
def tiny_pipelined_fast():
    from tests.rtl.conftest import pipelined

    yield from _fast(pipelined(TINY))


def run_many(machine, seeds, *, pipelined_programs=False, errors=True):
    cov = Coverage(machine.config, machine.params.queue_depth)
    ck = Checker(machine, coverage=cov)
    bad = []
    for k, seed in enumerate(seeds):
        case = random_case(machine.config, seed, None, pipelined_programs,
                           data="full" if ck.sim is None else "partial")
        c = ck.check(case)
        if not c.exact:
            bad.append((seed, c.first_mismatch))
    if errors:
        for kind in sorted(ERROR_KINDS):
            c = ck.check_error(random_error_case(machine.config, 7, kind, machine.params.queue_depth))
            if not c.exact:
                bad.append((kind, c.first_mismatch))
    return ck, cov, bad


def test_random_programs_on_one_process(tiny_rtl):
    """Random-length programs and one error program of each kind, back to back on one simulator process."""
    before = tiny_rtl.session
    ck, cov, bad = run_many(tiny_rtl, range(1000, 1000 + random_count(6)))
    assert not bad, bad
    assert tiny_rtl.session is not None and (before is None or tiny_rtl.session is before)
    assert ck.cycles > 0
    assert cov.report()["groups"]["error"] == {k: 1 for k in sorted(ERROR_KINDS)}


def test_random_programs_on_the_cpp_bench(tiny_fast):
    """Forty random programs and the error programs on the C++ bench, in seconds."""
    ck, cov, bad = run_many(tiny_fast, range(1100, 1100 + random_count(6) * 7))
    assert not bad, bad
    assert ck.cases >= 40 and ck.skipped == 0 and cov.report()["percent"] >= 80.0


def test_random_pipelined_programs_on_one_process(tiny_pipelined_rtl):
    _, _, bad = run_many(tiny_pipelined_rtl, range(2000, 2003), pipelined_programs=True, errors=False)
    assert not bad, bad


def test_the_checker_sees_a_word_no_step_writes(tiny_rtl):
    """A word changed in the RTL's memory outside every range the program may write (a stray write, as far as
    the checker can tell) is reported with its memory and address."""
    ck = Checker(tiny_rtl)
    case = random_case(TINY, 5, 2)
    assert ck.check(case).exact
    ivrf = tiny_rtl.memmap.by_name["ivrf"]
    spans = last_writers(analyze(case.program), TINY).get((Space.IVRF, 0), [])
    written = {a for lo, hi, _ in spans for a in range(lo, hi + 1)}
    addr = next(a for a in range(ivrf.depth - 1, 0, -1) if a not in written)
    word = tiny_rtl.image["ivrf"].get(addr, 0) ^ 0x3C00  # flip bits of element 0
    tiny_rtl._job({"loads": [(ivrf.id, addr, [word])], "reads": []})  # behind the machine's back
    c = ck.check(random_case(TINY, 6, 1, data="partial"))
    hits = [m for m in c.mismatches if m.where == "ivrf" and m.address == addr]
    assert not c.bit_exact and hits, c.mismatches


def test_commit_trace_mismatches_name_the_step():
    sim = [(7, 20), (12, 31), (15, 40)]
    rtl = [(7, 20), (12, 32), (15, 40)]
    bad = commit_mismatches(sim, rtl, 42, 43)
    assert [(m.kind, m.step, m.address) for m in bad] == [("commit", 12, 1), ("cycles", None, None)]
    assert "pc 12 completes in cycle 31" in bad[0].sim and "cycle 32" in bad[0].rtl
    assert isinstance(bad[0], Mismatch) and "step at pc 12" in bad[0].text()


def test_npu_rtl_check_lists_mismatches_and_coverage(tiny_rtl, capsys):
    import json

    from cli.main import main

    assert main(["rtl", "check", "--random", "3", "--config", "tiny", "--seed", "3000", "--errors", "3",
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["exact"] and len(res["cases"]) == 3 and res["mismatched_seeds"] == []
    assert res["cases"][2]["error"] in ERROR_KINDS
    assert res["coverage"]["bins"] > 90 and 0 < res["coverage"]["hit"] <= res["coverage"]["bins"]


@pytest.mark.parametrize("seed,kind", [(101499, "two_output_writes"), (102774, "too_many_writes")])
def test_an_error_program_after_more_outputs_than_the_fifo_holds(tiny_fast, seed, kind):
    """The legal steps before the fault write more vectors than the output FIFO holds (found by
    bench_rtl_random.py): the bench drains them as a host would, so the RTL flags the fault alone."""
    c = Checker(tiny_fast).check_error(random_error_case(TINY, seed, kind, tiny_fast.params.queue_depth))
    assert c.exact, c.first_mismatch
    assert len(tiny_fast.last_result["outputs"]) > tiny_fast.params.queue_depth


def test_npu_rtl_check_on_the_cocotb_bench(tiny_rtl, capsys):
    import json

    from cli.main import main

    assert main(["rtl", "check", "--random", "2", "--config", "tiny", "--seed", "3000", "--cocotb", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["exact"]


@pytest.mark.slow
def test_many_random_programs(tiny_fast):
    _, cov, bad = run_many(tiny_fast, range(4000, 4000 + random_count(150) * 4))
    assert not bad, bad
    assert cov.report()["percent"] >= 95.0, cov.report()["holes"]


@pytest.mark.slow
def test_many_random_programs_small(small_fast):
    _, _, bad = run_many(small_fast, range(5000, 5000 + random_count(30) * 4))
    assert not bad, bad


@pytest.mark.slow
def test_many_random_pipelined_programs(tiny_pipelined_fast):
    _, _, bad = run_many(tiny_pipelined_fast, range(6000, 6000 + random_count(60) * 4), pipelined_programs=True)
    assert not bad, bad


# Two rule gaps the random programs found, now refused by npu.program.analyze (tests/npu/test_program.py
# checks the messages): a chain reading, in a later row of the same iteration, what an earlier row wrote (the
# simulator reads every row before writing any, the RTL writes row r a few cycles after reading it; seeds
# 100063, 100151, 100257, 100277 of bench_rtl_random.py), and two v_wr of one chain reaching one address (the
# simulator applies the writes destination by destination, the RTL in the order rows come out; seeds 100091,
# 100136, 100163, 100451 on tiny-sb8).  What stays legal next to them runs bit- and cycle-exact.
@pytest.mark.parametrize("source", ["s_wr rows 16\nv_rd ivrf 0\nv_wr ivrf 8\nend_chain",
                                    "s_wr rows 16\nv_rd ivrf 0\nvv_add 0\nv_wr asvrf 8\nend_chain",
                                    "s_wr rows 2\ns_wr cols 4\ns_wr iter_outer 2\ns_wr iter_inner 2\n"
                                    "v_rd asvrf 32 si=4\nv_wr ivrf 41 mfu=1 si=2\nv_wr ivrf 44 so=2 si=4\nend_chain"])
def test_the_found_rule_gaps_are_refused(source):
    from npu.errors import ProgramError
    from tests.rtl.test_rtl import directed

    with pytest.raises(ProgramError, match="row hazard|write overlap"):
        analyze(directed(source).program)


@pytest.mark.parametrize("source", ["s_wr rows 16\nv_rd ivrf 0\nv_wr ivrf 0\nend_chain",
                                    "s_wr rows 16\nv_rd ivrf 1\nvv_add 0\nv_wr ivrf 0\nend_chain",
                                    "s_wr rows 16\nv_rd ivrf 20\nvv_add 0\nv_wr asvrf 0\nend_chain",
                                    "s_wr rows 2\ns_wr cols 4\ns_wr iter_outer 2\ns_wr iter_inner 2\n"
                                    "v_rd asvrf 32 si=4\nv_wr ivrf 41 mfu=1 si=2\nv_wr asvrf 44 so=2 si=4\nend_chain"])
def test_what_stays_legal_beside_them_is_exact(tiny_rtl, source):
    """In place, reading ahead of the writes, and two destinations in different memories."""
    from tests.rtl.test_rtl import directed

    case = directed(source)
    analyze(case.program)
    assert Checker(tiny_rtl, chained=False).check(case).exact
