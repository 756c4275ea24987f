"""rtl/coverage.py's bins against programs whose behaviour is known, and rtl/randprog.py's reach (no RTL)."""
import numpy as np
import pytest

from npu.asm import assemble
from npu.config import PRESETS
from npu.isa import STAGE_OPS, Space
from npu.program import Program, analyze
from rtl.coverage import Coverage, defined_bins
from rtl.randprog import Case, random_case, random_error_case

TINY = PRESETS["tiny"]


def sample(source: str, config=TINY) -> Coverage:
    from sim.machine import Machine

    case = Case(Program(config, assemble(source)))
    m = Machine(config)
    res = m.run(case.program)
    cov = Coverage(config)
    cov.sample(case, analyze(case.program), res, m, m.pop_output())
    return cov


def hits(cov: Coverage, group: str) -> set[str]:
    return {b for (g, b), n in cov.hits.items() if g == group and n}


def test_bins_come_from_the_isa_table():
    bins = defined_bins(TINY)
    for stage, ops in STAGE_OPS.items():
        for op in ops:
            assert f"{op} mfu0" in bins["instruction"]
    assert "v_rd zero" in bins["instruction"] and "v_wr zero" not in bins["instruction"]
    assert len(bins["hazard"]) == 3 * 6 + 1


def test_hazards_by_kind_and_distance():
    # chain 0 writes ivrf 40..41; chain 1 is independent; chain 2 reads 41 (RAW at distance 2); chain 3
    # writes 40..41 (WAW with chain 0 at 3, WAR with chain 2 at 1)
    cov = sample("s_wr rows 2\nv_rd ivrf 0\nv_wr ivrf 40\nend_chain\nv_rd ivrf 8\nv_wr asvrf 0\nend_chain\n"
                 "v_rd ivrf 41\nv_wr netq 0\nend_chain\nv_rd ivrf 16\nv_wr ivrf 40\nend_chain")
    assert hits(cov, "hazard") == {"RAW @2", "WAW @3", "WAR @1"}


def test_strides_limits_and_stalls():
    long = "s_wr rows 3\ns_wr cols 3\ns_wr iter_inner 6\nv_rd ivrf 0 si=3\nmv_mul 0\nv_wr ivrf 100 si=3\nend_chain\n"
    short = "s_wr rows 1\ns_wr cols 1\ns_wr iter_inner 1\n" + "v_rd ivrf 0\nv_wr asvrf 0\nend_chain\n" * 6
    cov = sample(long + short)
    assert {"si contiguous"} == hits(cov, "stride")
    assert "step queue full" in hits(cov, "stall") and "waits for the previous step" in hits(cov, "stall")
    assert {"rows 2-7", "cols 2-4", "iter_inner 4+", "rows 1", "iter_outer 1", "iter_inner 1"} <= hits(cov, "limits")
    cov = sample("s_wr rows 2\nv_rd ivrf 0\nv_wr ivrf 40\nend_chain\n" + "s_wr alpha 1\n" * 20 +
                 "v_rd ivrf 0\nv_wr ivrf 510\nend_chain")
    assert "waits for decoding" in hits(cov, "stall") and "ends on the last word" in hits(cov, "stride")


def test_special_values_written():
    cov = sample("s_wr rows 1\nv_rd zero 0\nv_sigm\nv_wr netq 0\nend_chain")
    assert hits(cov, "value") == set()  # sigmoid(0) = 0.5 everywhere: nothing special
    from sim.machine import Machine

    case = Case(Program(TINY, assemble("s_wr rows 1\nv_rd ivrf 0\nvv_add 0\nv_wr netq 0\nend_chain")))
    case.vectors.append((Space.IVRF, 0, 0, np.array([[np.inf, -np.inf, np.nan, 6e-8, -0.0, 65504.0, 1, 1]],
                                                    np.float16)))
    case.vectors.append((Space.ASVRF, 0, 0, np.array([[1, 1, 0, 0, -0.0, -0.0, 0, 0]], np.float16)))
    m = Machine(TINY)
    case.load(m)
    res = m.run(case.program)
    cov = Coverage(TINY)
    cov.sample(case, analyze(case.program), res, m, m.pop_output())
    assert hits(cov, "value") == {"wrote inf", "wrote -inf", "wrote nan", "wrote subnormal", "wrote -0",
                                  "wrote max finite"}


def test_random_programs_are_legal_and_reach_the_limits():
    """Random lengths reach hundreds of steps; a long program passes the static rules and has its length."""
    from rtl.randprog import _length

    rng = np.random.default_rng(0)
    lengths = [_length(rng) for _ in range(500)]
    assert max(lengths) >= 100 and min(lengths) == 1
    case = random_case(TINY, 0, 120, verify=False)
    assert len(analyze(case.program)) >= 120


@pytest.mark.parametrize("kind", ["too_many_writes", "two_output_writes", "empty_input", "output_overflow"])
def test_error_programs_fail_on_the_simulator_as_labelled(kind):
    from npu.errors import ProgramError
    from sim.machine import Machine

    case = random_error_case(TINY, 3, kind)
    m = Machine(TINY)
    case.load(m)
    message = None
    try:
        m.run(case.program)
    except ProgramError as exc:
        message = str(exc)
    assert case.sim_kind(message, 0 if message else len(m.pop_output())) == kind


@pytest.mark.slow
def test_random_programs_cover_the_bins():
    """150 random programs and one error program of each kind reach at least 95 % of the bins on tiny."""
    from sim.machine import Machine

    cov = Coverage(TINY)
    for seed in range(150):
        case = random_case(TINY, seed, None, verify=False)
        m = Machine(TINY)
        case.load(m)
        res = m.run(case.program)
        cov.sample(case, analyze(case.program), res, m, m.pop_output())
    for kind in sorted(defined_bins(TINY)["error"]):
        cov.sample_error(kind, True)
    rep = cov.report()
    assert rep["percent"] >= 95.0, rep["holes"]


def test_bypass_bins():
    """The MVM bypass's bins (docs/pipeline.md unit 11): defined only with mvm_bypass; the directed programs of
    tests/rtl/test_pipelined.py hit the ones they were written for, random programs all but the held entry."""
    from sim.machine import Machine
    from tests.rtl.test_pipelined import BYPASS, BYPASS_PROGRAMS

    assert "bypass" not in defined_bins(TINY.with_scoreboard(8))
    assert hits(sample(BYPASS_PROGRAMS["bypass_ring"], BYPASS), "bypass") >= {
        "bypass chain", "completes after a later chain", "entry held by a bypass chain"}
    assert "completes with another chain" in hits(sample(BYPASS_PROGRAMS["bypass_same_cycle"], BYPASS), "bypass")
    race = hits(sample(BYPASS_PROGRAMS["bypass_race"], BYPASS), "bypass")
    assert {"bypass chain, two destinations", "RAW on a bypass chain"} <= race
    cov = Coverage(BYPASS)
    for seed in range(12):
        case = random_case(BYPASS, seed, pipelined=True)
        m = Machine(BYPASS)
        case.load(m)
        cov.sample(case, analyze(case.program), m.run(case.program), m)
    assert hits(cov, "bypass") >= set(cov.groups["bypass"]) - {"entry held by a bypass chain"}
