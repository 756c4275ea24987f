# amaranth: UnusedElaboratable=no
"""The FPGA shell (rtl/shell.py) driven as a host would: cocotbext-axi's AxiLiteMaster loads random programs and
their data through the AXI4-Lite staging window, starts them, waits for the interrupt and reads status, counters
and results back over the bus; the results must equal the simulator's bit for bit, every step's completion
cycle and the cycle counter too, and no AXI4-Lite handshake rule may be broken (rtl/axi_check.py).  Error
programs must raise the error bit and the interrupt.  The protocol rules and the register table are tested
without a simulator."""
from pathlib import Path

import pytest

from npu.config import PRESETS
from npu.hostregs import (BY_NAME, ID_VALUE, REGISTERS, STAGE_OFFSET, bus_beats, check_map, host_regs_markdown,
                          stage_words, word_stride)
from rtl.axi_check import AxiLiteChecker, BurstRule, HandshakeRule

TINY = PRESETS["tiny"]
ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- without a simulator
def test_register_map_is_consistent_and_documented():
    offsets = [r.offset for r in REGISTERS]
    assert len(set(offsets)) == len(offsets) and all(o % 4 == 0 and o < STAGE_OFFSET for o in offsets)
    for r in REGISTERS:
        for f, g in zip(r.fields, r.fields[1:]):
            assert f.lsb + f.width <= g.lsb, (r.name, f.name, g.name)
    check_map(1 << 16)  # the widest memory word Amaranth allows still fits the window
    assert stage_words(320) == 10 and BY_NAME["CTRL"].bits(START=1, IRQ_EN=1) == 3
    # external memory: a word's beats rounded up to a power of two, so an aligned burst never crosses 4 KiB
    assert [(bus_beats(b), word_stride(b)) for b in (16, 64, 128, 320, 1 << 16)] == \
        [(1, 8), (1, 8), (2, 16), (5, 64), (1024, 8192)]
    with pytest.raises(ValueError):
        BY_NAME["CTRL"].bits(START=2)
    assert host_regs_markdown() in (ROOT / "docs" / "rtl.md").read_text(), \
        "docs/rtl.md's register table is stale: paste npu.hostregs.host_regs_markdown()"


def _idle(**over):
    values = {name: 0 for name in ("awvalid", "awready", "awaddr", "awprot", "wvalid", "wready", "wdata", "wstrb",
                                   "bvalid", "bready", "bresp", "arvalid", "arready", "araddr", "arprot", "rvalid",
                                   "rready", "rdata", "rresp")}
    values.update(over)
    return values


def test_handshake_rules_catch_what_they_claim():
    rule = HandshakeRule("aw")
    rule.sample(0, True, False, (4,))
    rule.sample(1, True, False, (4,))  # still waiting: fine
    rule.sample(2, True, True, (4,))   # taken
    rule.sample(3, False, False, (0,))
    assert rule.violations == [] and rule.transfers == 1
    rule.sample(4, True, False, (8,))
    rule.sample(5, False, False, (8,))  # VALID dropped before READY
    rule.sample(6, True, False, (8,))
    rule.sample(7, True, False, (12,))  # payload changed while waiting
    assert len(rule.violations) == 2
    assert "VALID fell in cycle 5" in rule.violations[0] and "payload changed in cycle 7" in rule.violations[1]

    ck = AxiLiteChecker()
    ck.sample(_idle(awvalid=1, awready=1, wvalid=1, wready=1))
    ck.sample(_idle(bvalid=1, bready=1))
    assert ck.take() == []
    ck.sample(_idle(bvalid=1, bready=1))  # a second response to one write
    ck.sample(_idle(rvalid=1, rready=1))  # read data nobody asked for
    bad = ck.take()
    assert len(bad) == 2 and bad[0].startswith("b: write response 2") and bad[1].startswith("r: read data 1")
    assert ck.take() == []


def test_burst_rules_catch_what_they_claim():
    from rtl.axi_host import external_image, external_words

    rule = BurstRule()
    rule.address(0, "w", 0x1000, 4, 3)  # 5 beats of 8 bytes
    for k in range(5):
        rule.beat(1 + k, "w", k == 4)
    rule.address(6, "r", 0x0FF8, 1, 3)  # 16 bytes from 8 below a 4 KiB boundary
    rule.beat(7, "r", True)             # RLAST on the first of 2 beats
    rule.address(8, "w", 0x2000, 1, 3)
    rule.beat(9, "w", False)
    rule.beat(10, "w", False)           # no WLAST on the last beat
    bad = rule.violations
    assert len(bad) == 3, bad
    assert "crosses a 4 KiB boundary" in bad[0] and "RLAST set on beat 1 of a 2-beat" in bad[1]
    assert "WLAST clear on beat 2 of a 2-beat" in bad[2]
    words = [3, (1 << 320) - 1, 1 << 200]
    img = external_image(words, 320)
    assert len(img) == 3 * 64 and external_words(img, 3, 320) == words


# ---------------------------------------------------------------- on the Verilated shell
@pytest.fixture(scope="module")
def shell():
    from rtl.axi_machine import ShellMachine

    m = ShellMachine(TINY)
    yield m
    m.close()


def _streams(case, machine) -> bool:
    from npu.program import analyze
    from rtl.backend import input_count, output_count

    steps = analyze(case.program)
    limit = machine.params.queue_depth - 2
    return input_count(steps) > limit or output_count(steps) > limit


@pytest.mark.rtl
def test_random_programs_through_the_host_interface(shell):
    """Random programs (seeds that fit the queue FIFOs) on one simulator process, memories carried over: the
    bits, every step's completion cycle and CYCLES equal the simulator's; one interrupt per run, cause DONE,
    cleared by IRQ_STATUS; COMMITS counts the steps; no AXI4-Lite rule broken."""
    from rtl.check import Checker
    from rtl.randprog import random_case

    ck = Checker(shell)
    done = BY_NAME["IRQ_STATUS"].bits(DONE=1)
    checked = 0
    for seed in range(300, 340):
        case = random_case(TINY, seed, None, data="partial")
        if _streams(case, shell):
            continue
        c = ck.check(case)
        assert c.exact, f"seed {seed}: {c.first_mismatch}"
        res = shell.last_result
        assert res["protocol"] == [], res["protocol"]
        assert res["irq_causes"] == [done] and res["irq_cleared"], res
        assert res["status"]["done"] == 1 and res["status"]["busy"] == 0 and res["status"]["error"] == 0
        assert res["commit_count"] == len(c.commits_sim) and res["cycles"] == c.sim_cycles
        checked += 1
        if checked == 5:
            break
    assert checked == 5


@pytest.mark.rtl
def test_identification_registers(shell):
    from rtl.shell import config_id

    res = shell._job({"loads": [], "program": None, "reads": [], "ident": True})
    assert res["ident"] == {"id": ID_VALUE, "config": config_id(TINY), "stage_words": stage_words(320),
                            "memories": len(shell.memmap.memories), "addr_bits": shell.memmap.addr_bits}
    assert res["protocol"] == []


@pytest.mark.rtl
def test_a_word_changed_over_the_bus_is_seen(shell):
    """A word written through the staging window behind the machine's back (so the expected values are wrong)
    is reported by the comparison: the window reaches the memory and the check can fail."""
    from rtl.check import Checker
    from rtl.randprog import random_case

    ck = Checker(shell)
    case = random_case(TINY, 5, 2, data="partial")
    assert ck.check(case).exact
    ivrf = shell.memmap.by_name["ivrf"]
    addr = ivrf.depth - 1
    word = shell.image["ivrf"].get(addr, 0) ^ 0x3C00
    shell._job({"loads": [(ivrf.id, addr, [word])], "reads": []})
    shell.read_all = True  # read every word back this time (the program need not write this one)
    try:
        c = ck.check(random_case(TINY, 6, 1, data="partial"))
    finally:
        shell.read_all = False
    assert not c.exact and any(m.where == "ivrf" and m.address == addr for m in c.mismatches), c.mismatches


@pytest.mark.rtl
@pytest.mark.parametrize("kind", ["too_many_writes", "output_overflow", "empty_input"])
def test_error_programs_raise_the_error_bit_and_interrupt(shell, kind):
    """The simulator refuses the program and the shell flags the same kind: an error bit in STATUS with an
    ERROR interrupt (then DONE), or, for a chain reading an empty input queue, no interrupt at all."""
    from rtl.check import Checker
    from rtl.randprog import random_error_case

    c = Checker(shell).check_error(random_error_case(TINY, 11, kind, shell.params.queue_depth))
    assert c.exact, c.first_mismatch
    res = shell.last_result
    irq = BY_NAME["IRQ_STATUS"]
    if kind == "empty_input":
        assert res["hung"] and res["irq_causes"] == []
    else:
        assert res["error"] != 0 and res["status"]["error"] == res["error"]
        assert any(irq.get(v, "ERROR") for v in res["irq_causes"]) and irq.get(res["irq_causes"][-1], "DONE")
        assert res["irq_cleared"]
    assert res["protocol"] == []


@pytest.mark.rtl
def test_the_bulk_loader_through_external_dram(shell):
    """Every load and read-back through the bulk loader instead: the host writes each block into external
    memory (cocotbext-axi's AxiRam behind a DRAM timing model: 20 cycles per burst, one read beat in 2), DMA_CTRL
    moves it in bursts over the shell's AXI4 master; read-back goes the other way into memory filled with junk
    first.  The run itself does not touch the bus, so bits, commit trace and cycles still equal the simulator's;
    no AXI4 rule (handshakes, WLAST/RLAST, 4 KiB) or AXI4-Lite rule is broken and no transfer saw an error."""
    from rtl.check import Checker
    from rtl.randprog import random_case

    shell.dma = {"latency": 20, "beat_cycles": 2}
    try:
        ck = Checker(shell)
        checked = 0
        for seed in range(400, 430):
            case = random_case(TINY, seed, None, data="partial")
            if _streams(case, shell):
                continue
            c = ck.check(case)
            assert c.exact, f"seed {seed}: {c.first_mismatch}"
            res = shell.last_result
            assert res["protocol"] == [], res["protocol"]
            assert res["dma_errors"] and not any(res["dma_errors"]), res["dma_errors"]
            checked += 1
            if checked == 3:
                break
        assert checked == 3
    finally:
        shell.dma = None


@pytest.mark.rtl
def test_the_bulk_loader_reports_error_responses(shell):
    """External memory answering SLVERR (the DRAM model's faulty range) sets STATUS.DMA_ERROR for that transfer
    only: a load from a faulty slot, then read-backs into a good one and (next case) into a faulty one."""
    from rtl.axi_bench import DRAM_SLOT

    ivrf = shell.memmap.by_name["ivrf"]
    words = [0x3C00 * (k + 1) for k in range(4)]
    case = {"loads": [(ivrf.id, 8, words)], "reads": [(ivrf.id, 8, 4), (ivrf.id, 8, 4)]}
    shell.dma = {"latency": 3, "faulty": (0, DRAM_SLOT)}  # slot 0: the load
    try:
        res = shell._job(case)
        assert res["dma_errors"] == [1, 0, 0] and res["protocol"] == [], res
        shell.dma = {"latency": 3, "faulty": (DRAM_SLOT, 2 * DRAM_SLOT)}  # without the load: the second read-back
        res = shell._job({**case, "loads": []})
        assert res["dma_errors"] == [0, 1] and res["protocol"] == [], res
    finally:
        shell.dma = None
        shell.close()  # what the instance holds is no longer what the machine's image says
