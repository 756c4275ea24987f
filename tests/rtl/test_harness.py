# amaranth: UnusedElaboratable=no
"""The C++ bench (rtl/harness.py) against the cocotb bench (rtl/bench.py, the reference): the same cases on two
fresh processes of the same build must give the same result in every field (cycles, error bits, hung, the
commit trace, the output queue, every word read back); and a Checker on the C++ bench must see planted
differences (a shifted commit cycle, a word changed behind its back)."""
import numpy as np
import pytest

from npu.config import PRESETS
from npu.isa import Space
from npu.program import analyze
from rtl.check import Checker
from rtl.randprog import ERROR_KINDS, random_case, random_error_case
from tests.rtl.conftest import pipelined, random_count

pytestmark = pytest.mark.rtl
TINY = PRESETS["tiny"]
FIELDS = ("cycles", "error", "hung", "commits", "outputs", "reads")


@pytest.fixture(scope="module")
def tiny_fast():
    from rtl.backend import RtlMachine

    m = RtlMachine(TINY, bench="harness")
    yield m
    m.close()


def cases_for(machine, seeds, *, pipelined_programs=False, errors=True):
    """Bench cases (rtl/bench.py's dicts) of random programs, every other one streamed (the bench feeds and
    drains the queues every cycle), then one error program of each kind, as RtlMachine builds them."""
    out = []
    for k, seed in enumerate(seeds):
        case = random_case(machine.config, seed, None, pipelined_programs, data="full" if k == 0 else "partial")
        machine.reset()
        case.load(machine)
        c, _ = machine.case_for(case.program, analyze(case.program), None)
        c["stream"] = c["stream"] or k % 2 == 1
        c["max_cycles"] = 100_000
        out.append(c)
    if errors:
        mm = machine.memmap
        for kind in sorted(ERROR_KINDS):
            e = random_error_case(machine.config, 11, kind, machine.params.queue_depth)
            words = machine._program_words(e.program)
            out.append({"loads": [(mm.by_name["prog"].id, 0, words)], "program": words,
                        "inputs": mm.vector_words(np.asarray(e.inputs, np.float16)), "stream": False,
                        "reads": [(m.id, 0, m.depth) for m in mm.memories if m.name != "prog"], "reset": True,
                        "max_cycles": e.max_cycles})
    machine.reset()
    return out


def both_benches(build, cases):
    from rtl.cosim import Session
    from rtl.harness import Harness

    with Session(build) as s:
        ref = s.run(cases)
    with Harness(build) as h:
        fast = h.run(cases)
    return ref, fast


def assert_same(ref, fast):
    assert len(ref) == len(fast)
    for k, (r, f) in enumerate(zip(ref, fast)):
        for field in FIELDS:
            assert r[field] == f[field], f"case {k}: {field} differs (cocotb {str(r[field])[:200]}, " \
                                         f"C++ {str(f[field])[:200]})"


def test_the_cpp_bench_gives_the_cocotb_results(tiny_fast):
    """Random programs (half of them streamed) and every kind of error program (hung, overflow, unsupported),
    back to back on one process each, memories carrying over: every result field equal."""
    cases = cases_for(tiny_fast, range(7000, 7000 + random_count(8)))
    ref, fast = both_benches(tiny_fast.build, cases)
    assert_same(ref, fast)
    assert any(r["commits"] for r in ref) and any(r["outputs"] for r in ref)
    assert {r["hung"] for r in ref} == {False, True} and any(r["error"] for r in ref)


def test_the_cpp_bench_gives_the_cocotb_results_pipelined(tiny_pipelined_rtl):
    """The pipelined machine: transfers complete on their own commit port (dma_commit), beside chains."""
    cases = cases_for(tiny_pipelined_rtl, range(7100, 7100 + random_count(6)), pipelined_programs=True,
                      errors=False)
    ref, fast = both_benches(tiny_pipelined_rtl.build, cases)
    assert_same(ref, fast)
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
