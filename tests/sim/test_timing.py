"""The timing model on hand-computed cases (formulas from sim/timing.py's docstring)."""
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


def test_one_mv_mul_over_r_by_c_tiles():
    c = get_config("tiny")
    lat = c.latencies
    for R, C, it in ((2, 3, 1), (4, 5, 7)):
        r = timed(c, f"s_wr rows {R}\ns_wr cols {C}\ns_wr iter_inner {it}\n"
                     "v_rd ivrf 0 si=8\nmv_mul 0\nv_wr ivrf 200 si=8\nend_chain")
        issue = 7  # instructions up to and including end_chain, one per cycle
        ii = max(C, math.ceil(R * C / c.tile_engines) * c.native_dim // c.dpe_lanes, R)
        fill = lat.vrf_read + lat.mvm + lat.mvm_reduce + lat.vrf_write
        assert r.cycles == issue + lat.decode + it * ii + fill
        assert r.macs == it * R * C * c.native_dim ** 2
        assert r.unit_busy["mvm"] == it * math.ceil(R * C / c.tile_engines) * c.cycles_per_tile
        assert abs(r.utilization - r.macs / (r.cycles * c.macs_per_cycle)) < 1e-12


def test_chain_with_mfu_operations():
    c = get_config("tiny")
    lat = c.latencies
    r = timed(c, "s_wr rows 4\ns_wr iter_outer 3\nv_rd ivrf 0 so=4\nvv_add 0\nvv_mul 0 mfu=1\nv_sigm mfu=1\n"
                 "v_wr asvrf 100 so=4 mfu=1\nend_chain")
    issue, ii = 8, 4  # every stage moves 4 vectors per iteration through one port
    fill = lat.vrf_read + 3 * lat.mfu_stage + lat.vrf_write
    assert r.cycles == issue + lat.decode + 3 * ii + fill
    assert r.unit_busy["mfu0.addsub"] == 12 and r.unit_busy["mfu1.act"] == 12


def test_dram_bound_transfer():
    c = get_config("small")  # 64-byte vectors over a 32-byte/cycle DRAM: 2 cycles per vector
    lat = c.latencies
    r = timed(c, "s_wr rows 4\ns_wr iter_inner 10\nv_rd dram 0 si=4\nv_wr ivrf 0 si=4\nend_chain")
    ii = 4 * c.native_dim * 2 // c.dram_bytes_per_cycle
    assert ii == 8
    assert r.cycles == 5 + lat.decode + 10 * ii + c.dram_latency + lat.vrf_write
    assert r.unit_busy["dram"] == 80


def test_weight_dma_cost():
    c = get_config("brainslice-128")
    r = timed(c, "m_rd 0 0 16")
    tile_bytes = math.ceil(128 * 128 * (1 + c.weight_fmt.mant_bits) + 128 * 8 * c.weight_fmt.exp_bits) // 8
    assert r.cycles == 1 + c.latencies.decode + math.ceil(16 * tile_bytes / c.dram_bytes_per_cycle) + c.dram_latency


def test_independent_chains_overlap_dependent_ones_wait():
    c = get_config("tiny")
    base = "s_wr rows 4\ns_wr iter_inner 20\nv_rd ivrf 0 si=4\nv_relu\nv_wr asvrf 0 si=4\nend_chain\n"
    indep = timed(c, base + "v_rd asvrf 0 mfu=1 si=4\nv_sigm mfu=1\nv_wr dram 400 si=4\nend_chain")
    dep = timed(c, base + "v_rd asvrf 0 si=4\nv_sigm mfu=1\nv_wr dram 400 si=4\nend_chain")
    first_end = indep.steps[0].end
    assert indep.steps[1].start < first_end           # overlapped
    assert dep.steps[1].start >= dep.steps[0].end     # RAW on ASVRF0 waits
    assert dep.cycles > indep.cycles


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
