"""The timing model on hand-computed cases (formulas from sim/timing.py's docstring; tests/rtl checks the same
model against the RTL cycle for cycle)."""
import json
import math

import numpy as np

from npu.asm import assemble
from npu.config import get_config
from npu.program import Program
from sim.machine import Machine
from sim.trace import write_trace


def timed(config, text):
    m = Machine(config)
    return m.run(Program(config, assemble(text)), functional=False)


def queued(end_pc):
    """Cycle a step is queued: its last instruction decoded, one instruction per cycle from cycle 1."""
    return end_pc + 1


def test_one_mv_mul_over_r_by_c_tiles():
    c = get_config("tiny")
    lat = c.latencies
    for R, C, it in ((2, 3, 1), (4, 5, 7), (1, 4, 9)):
        r = timed(c, f"s_wr rows {R}\ns_wr cols {C}\ns_wr iter_inner {it}\n"
                     "v_rd ivrf 0 si=8\nmv_mul 0\nv_wr ivrf 200 si=8\nend_chain")
        start = queued(6) + lat.decode
        x = C * 1                                                # one vector per cycle from the IVRF
        rmac = R * math.ceil(C / c.tile_engines) * c.native_dim // c.dpe_lanes  # MACs of one iteration
        body = max(x + (it - 1) * rmac, it * x) + rmac - 1       # reads overlap the MACs of earlier iterations
        fill = lat.vrf_read + lat.mvm + lat.mvm_reduce + lat.vrf_write
        assert r.steps[0].start == start
        assert r.cycles == start + body + fill + c.latencies.drain
        assert r.tile_macs == it * R * C * c.native_dim ** 2
        assert r.unit_busy["mvm"] == it * rmac
        assert abs(r.tile_utilization - r.tile_macs / (r.cycles * c.macs_per_cycle)) < 1e-12


def test_chain_with_mfu_operations():
    c = get_config("tiny")
    lat = c.latencies
    r = timed(c, "s_wr rows 4\ns_wr iter_outer 3\nv_rd ivrf 0 so=4\nvv_add 0\nvv_mul 0 mfu=1\nv_sigm mfu=1\n"
                 "v_wr asvrf 100 so=4 mfu=1\nend_chain")
    vectors = 3 * 4  # one per cycle through the IVRF read port
    fill = lat.vrf_read + 3 * lat.mfu_stage + lat.vrf_write
    assert r.cycles == queued(7) + lat.decode + vectors + fill + c.latencies.drain
    assert r.unit_busy["mfu0.addsub"] == 12 and r.unit_busy["mfu1.act"] == 12


def test_dram_bound_transfer():
    c = get_config("small")  # 64-byte vectors over a 32-byte/cycle DRAM: 2 cycles per vector
    lat = c.latencies
    r = timed(c, "s_wr rows 4\ns_wr iter_inner 10\nv_rd dram 0 si=4\nv_wr ivrf 0 si=4\nend_chain")
    per_vector = c.native_dim * 2 // c.dram_bytes_per_cycle
    assert per_vector == 2
    assert r.cycles == queued(4) + lat.decode + 40 * per_vector + c.dram_latency + lat.vrf_write + c.latencies.drain
    assert r.unit_busy["dram"] == 80


def test_weight_dma_cost():
    c = get_config("brainslice-128")
    r = timed(c, "m_rd 0 0 16")
    tile_bytes = math.ceil(128 * 128 * (1 + c.weight_fmt.mant_bits) + 128 * 8 * c.weight_fmt.exp_bits) // 8
    transfer = max(math.ceil(16 * tile_bytes / c.dram_bytes_per_cycle), 16 * c.native_dim // c.dpe_lanes)
    assert r.cycles == queued(0) + c.latencies.decode + transfer + c.dram_latency + c.latencies.drain


def test_steps_run_one_at_a_time_and_dependent_chains_wait():
    c = get_config("tiny")
    lat = c.latencies
    base = "s_wr rows 4\ns_wr iter_inner 20\nv_rd ivrf 0 si=4\nv_relu\nv_wr asvrf 0 si=4\nend_chain\n"
    indep = timed(c, base + "v_rd asvrf 0 mfu=1 si=4\nv_sigm mfu=1\nv_wr dram 400 si=4\nend_chain")
    dep = timed(c, base + "v_rd asvrf 0 si=4\nv_sigm mfu=1\nv_wr dram 400 si=4\nend_chain")
    assert dep.steps[1].start >= dep.steps[0].end     # RAW on ASVRF0 waits for the producer
    for r in (indep, dep):                            # the RTL runs every step after the previous one
        assert r.steps[1].start == r.steps[0].end + lat.chain_setup
    assert dep.cycles == indep.cycles


def test_full_step_queue_stalls_decoding():
    c = get_config("tiny")
    lat = c.latencies
    long = "s_wr rows 3\ns_wr cols 3\ns_wr iter_inner 6\nv_rd ivrf 0 si=3\nmv_mul 0\nv_wr ivrf 100 si=3\nend_chain\n"
    short = "v_rd ivrf 0\nv_wr asvrf 0\nend_chain\n"
    r = timed(c, long + "s_wr rows 1\ns_wr iter_inner 1\n" + short * (c.step_queue + 1) + "s_wr rows 1\n" * 30 + short)
    last = len(r.steps) - 1
    # the chain before the last finds the queue full and is queued one cycle after the step STEP_QUEUE
    # places before it starts; decoding resumes then, 30 + 3 instructions before the last chain is queued
    stalled = r.steps[last - 1 - c.step_queue].start + 1
    decode_bound = stalled + 33 + lat.decode
    assert decode_bound > r.steps[last - 1].end + lat.chain_setup
    assert r.steps[last].start == decode_bound


def test_trace_is_chrome_trace_json(tmp_path):
    c = get_config("tiny")
    m = Machine(c)
    m.push_input(np.ones(16))
    r = m.run(Program(c, assemble("s_wr rows 2\nv_rd netq 0\nv_relu\nv_wr netq 0\nend_chain")),
              regions=[(0, 4, "layer0")])
    path = tmp_path / "t.json"
    write_trace(r, path)
    events = json.loads(path.read_text())["traceEvents"]
    spans = [e for e in events if e["ph"] == "X"]
    assert spans and all(e["name"] == "layer0" and e["dur"] > 0 for e in spans)
    assert r.regions()[0]["name"] == "layer0"
