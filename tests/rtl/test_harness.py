# amaranth: UnusedElaboratable=no
"""The C++ bench (rtl/harness.py) against the cocotb bench (rtl/bench.py, the reference): the same cases on two
fresh processes of the same build must give the same result in every field (cycles, error bits, hung, the
commit trace, the output queue, every word read back); and a Checker on the C++ bench must see planted
differences (a shifted commit cycle, a word changed behind its back)."""
import pytest

from npu.config import PRESETS
from npu.isa import Space
from npu.program import analyze
from rtl.check import Checker
from rtl.harness import compare_benches, random_bench_cases
from rtl.randprog import random_case
from tests.rtl.conftest import random_count

pytestmark = pytest.mark.rtl
TINY = PRESETS["tiny"]


@pytest.fixture(scope="module")
def tiny_fast():
    from rtl.backend import RtlMachine

    m = RtlMachine(TINY, bench="harness")
    yield m
    m.close()


def assert_same(build, cases):
    ref, fast, diffs = compare_benches(build, cases, reads=("direct", "port"))
    assert not diffs, diffs[:5]
    return ref


def test_the_cpp_bench_gives_the_cocotb_results(tiny_fast):
    """Random programs (half of them streamed) and every kind of error program (hung, overflow, unsupported),
    back to back on one process each, memories carrying over: every result field equal, with the memories read
    back through the port (as the cocotb bench does) and by peeking at them."""
    cases = random_bench_cases(tiny_fast, range(7000, 7000 + random_count(8)))
    ref = assert_same(tiny_fast.build, cases)
    assert any(r["commits"] for r in ref) and any(r["outputs"] for r in ref)
    assert {r["hung"] for r in ref} == {False, True} and any(r["error"] for r in ref)


def test_the_cpp_bench_gives_the_cocotb_results_pipelined(tiny_pipelined_rtl):
    """The pipelined machine: transfers complete on their own commit port (dma_commit), beside chains."""
    cases = random_bench_cases(tiny_pipelined_rtl, range(7100, 7100 + random_count(6)), pipelined=True,
                               errors=False)
    ref = assert_same(tiny_pipelined_rtl.build, cases)
    assert sum(len(r["commits"]) for r in ref) > len(ref)


def test_a_checker_on_a_config_uses_the_cpp_bench():
    ck = Checker(TINY)
    assert ck.rtl.bench == "harness"
    c = ck.check(random_case(TINY, 7200, None))
    assert c.exact, c.first_mismatch
    assert type(ck.rtl.session).__name__ == "Harness"
    ck.rtl.close()


def test_the_cpp_bench_sees_a_shifted_commit_cycle(tiny_fast):
    """One step's completion reported a cycle late: the checker names the commit trace and the step."""
    ck = Checker(tiny_fast)
    case = random_case(TINY, 7300, 3)
    assert ck.check(case).exact
    session = tiny_fast.session
    real = session.run

    def late(cases):
        out = real(cases)
        pc, cycle = out[0]["commits"][1]
        out[0]["commits"][1] = (pc, cycle + 1)
        return out

    session.run = late
    try:
        c = ck.check(random_case(TINY, 7301, 3, data="partial"))
    finally:
        session.run = real
    assert not c.exact and c.bit_exact
    bad = [m for m in c.mismatches if m.kind == "commit"]
    assert bad and bad[0].address == 1 and "completes in cycle" in bad[0].rtl, c.mismatches


def test_the_cpp_bench_sees_a_word_changed_behind_its_back(tiny_fast):
    """A word of the RTL's memory changed outside what the program writes (a stray write, as far as the
    checker can tell): reported with its memory and address."""
    from rtl.check import last_writers

    ck = Checker(tiny_fast)
    case = random_case(TINY, 7400, 2)
    assert ck.check(case).exact
    dram = tiny_fast.memmap.by_name["dram"]
    nxt = random_case(TINY, 7401, 1, data="partial")
    spans = last_writers(analyze(nxt.program), TINY).get((Space.DRAM, 0), [])
    written = {a for lo, hi, _ in spans for a in range(lo, hi + 1)}
    loaded = {a for space, _, at, data in nxt.vectors if space == Space.DRAM for a in range(at, at + len(data))}
    addr = next(a for a in range(dram.depth - 1, 0, -1) if a not in written | loaded)
    word = tiny_fast.image["dram"].get(addr, 0) ^ 0x4000_0000_0000  # flip a bit of element 2
    tiny_fast._job({"loads": [(dram.id, addr, [word])], "reads": []})
    c = ck.check(nxt)
    hits = [m for m in c.mismatches if m.where == "dram" and m.address == addr]
    assert not c.bit_exact and hits, c.mismatches


def test_the_cpp_bench_refuses_tracing():
    from npu.errors import NpuError
    from rtl.backend import RtlMachine

    with pytest.raises(NpuError, match="does not trace"):
        RtlMachine(TINY, bench="harness", trace=True)


def test_compare_benches_reports_a_difference(tiny_fast, monkeypatch):
    """The comparison itself can fail: a C++ result with one read-back word changed is reported by field."""
    from rtl import harness

    cases = harness.random_bench_cases(tiny_fast, [7500], errors=False)
    real = harness.Harness.run

    def corrupt(self, cases):
        out = real(self, cases)
        out[0]["reads"][0][3] ^= 1
        return out

    monkeypatch.setattr(harness.Harness, "run", corrupt)
    _, _, diffs = compare_benches(tiny_fast.build, cases)
    assert len(diffs) == 1 and "case 0: reads differs" in diffs[0], diffs


def test_the_cpp_bench_gives_the_cocotb_results_with_the_mvm_bypass():
    """The MVM bypass (docs/pipeline.md unit 11): MVM-only chains complete on a third commit port (byp_commit),
    out of program order; the C++ bench logs it as the cocotb bench does."""
    from rtl.backend import RtlMachine
    from tests.rtl.test_pipelined import BYPASS

    m = RtlMachine(BYPASS)
    cases = random_bench_cases(m, range(7300, 7300 + random_count(6)), pipelined=True, errors=False)
    ref = assert_same(m.build, cases)
    # a bypass chain completing after a chain issued behind it: the trace is out of program order somewhere
    assert any(any(b[0] < a[0] for a, b in zip(r["commits"], r["commits"][1:])) for r in ref)
