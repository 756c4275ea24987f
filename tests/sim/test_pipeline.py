"""The pipelined machine of docs/pipeline.md in the cycle model (scoreboard_entries > 1, mvm_row_slots > 1).

The RTL implements scoreboard_entries > 1 with mvm_row_slots = 1 (tests/rtl/test_pipelined.py); these tests
pin the model's rules by hand-computed schedules on tiny (decode 2, vrf_read 1, mvm 4 + mvm_reduce 1, mfu_stage 2,
vrf_write 1, chain_setup 2, drain 2).
"""
import pytest

from npu.asm import assemble
from npu.config import get_config
from npu.errors import ConfigError, ProgramError
from npu.program import Program
from sim.machine import Machine
from sim.timing import _spread_rounds


def timed(config, text):
    return Machine(config).run(Program(config, assemble(text)), functional=False)


def steps(result):
    return [(s.start, s.end) for s in result.steps]


PIPELINED = get_config("tiny").replace(scoreboard_entries=8)
TWO = "s_wr rows 4\nv_rd ivrf 0\nv_wr asvrf 0\nend_chain\n{second}\nend_chain\n"


def test_independent_chains_overlap():
    # chain 0: queued in cycle 4 (pc 3 decoded), issues at 4 + decode = 6, reads 4 vectors one slot apart
    # (issues 7..10), its last beat enters the write stage in 10 + 1 = 11 and is written in 11: complete at 12.
    # chain 1 issues when the read sequencer is free (10 + chain_setup = 12), not after chain 0 completed.
    r = timed(PIPELINED, TWO.format(second="v_rd ivrf 16\nv_wr asvrf 16"))
    assert steps(r) == [(6, 12), (12, 18)]
    assert r.cycles == 18 + 2
    legacy = timed(get_config("tiny"), TWO.format(second="v_rd ivrf 16\nv_wr asvrf 16"))
    assert steps(legacy) == [(6, 12), (14, 20)]  # one step at a time: 12 + chain_setup


@pytest.mark.parametrize("second, kind", [("v_rd asvrf 2\nv_wr ivrf 32", "RAW"),      # reads what chain 0 wrote
                                          ("v_rd ivrf 40\nv_wr ivrf 3", "WAR"),        # writes what chain 0 reads
                                          ("v_rd ivrf 40\nv_wr asvrf 3", "WAW")])      # writes what it wrote
def test_dependent_chains_wait_for_completion(second, kind):
    assert steps(timed(PIPELINED, TWO.format(second=second)))[1][0] == 12, kind


def test_bounding_intervals_that_just_miss_do_not_conflict():
    assert steps(timed(PIPELINED, TWO.format(second="v_rd asvrf 4\nv_wr ivrf 32")))[1][0] == 12


def test_scoreboard_entries_bound_the_steps_in_flight():
    # a long transfer and a chain in flight fill two entries: the next chain waits for the chain's completion
    text = "m_rd 0 32 8\ns_wr rows 4\n" + "".join(f"v_rd ivrf {16 * k}\nv_wr asvrf {16 * k}\nend_chain\n"
                                                    for k in range(2))
    free = steps(timed(PIPELINED, text))
    two = steps(timed(get_config("tiny").replace(scoreboard_entries=2), text))
    assert free[2][0] == free[1][0] + 4 + 2, "read sequencer free: last read issue + chain_setup"
    assert two[:2] == free[:2] and two[2][0] == two[1][1] < two[0][1]


def test_dma_runs_beside_compute_and_a_reader_of_its_tiles_waits():
    text = ("m_rd 0 32 8\n"                                                  # DRAM tiles 0.. -> MRF 32..39
            "s_wr rows 4\nv_rd ivrf 0\nv_wr asvrf 0\nend_chain\n"              # independent: overlaps the DMA
            "s_wr rows 1\ns_wr cols 1\nv_rd ivrf 8\nmv_mul 32\nv_wr ivrf 64\nend_chain\n")  # reads MRF 32: waits
    r = timed(PIPELINED, text)
    (d0, d1), (c0, c1), (m0, m1) = steps(r)
    assert c0 < d1, "the chain runs while the transfer does"
    assert m0 == d1, "the mv_mul reading the loaded tiles issues when the transfer completes"
    legacy = steps(timed(get_config("tiny"), text))
    assert legacy[1][0] >= legacy[0][1]


def test_spread_rounds():
    # 20 row tiles x 5 column tiles on 6 engines: 17 rounds of up to 6 tiles touching at most 2 rows (was 20)
    assert _spread_rounds(20, 5, 6, 2, 10)[0] == 17
    assert _spread_rounds(20, 5, 6, 1, 10)[0] == 20
    # 1x1 convolution of one input tile on 4 engines: 2 rows per round; rows complete at round ends
    assert _spread_rounds(4, 1, 4, 2, 8) == (2, (7, 7, 15, 15))
    # rows spanning rounds: 3 x 3 tiles on 4 engines, at most 2 rows a round
    assert _spread_rounds(3, 3, 4, 2, 8) == (3, (7, 15, 23))


def test_row_slots_shorten_a_narrow_mvm():
    small = get_config("small")  # 2 tile engines
    text = "s_wr rows 4\ns_wr cols 1\nv_rd ivrf 0\nmv_mul 0\nv_wr ivrf 64\nend_chain\n"
    one, two = (timed(small.replace(scoreboard_entries=8, mvm_row_slots=k), text) for k in (1, 2))
    # 4 row tiles of one column tile: 4 rounds of one tile, or 2 rounds of two (cycles_per_tile = 4 each); the
    # second row a round completes leaves the MVM a cycle after the first
    assert one.cycles - two.cycles == 2 * small.cycles_per_tile - 1
    assert two.unit_busy["mvm"] == 2 * small.cycles_per_tile


def test_row_slots_are_bounded_by_cycles_per_tile():
    with pytest.raises(ConfigError, match="mvm_row_slots: must be at most cycles_per_tile"):
        get_config("tiny").replace(mvm_row_slots=3)


def test_pipelining_changes_no_result(tiny, rng):
    """Timing is data-independent and the functional model runs the same steps in the same order."""
    import numpy as np

    from npu.weights import tile_matrix

    text = ("s_wr rows 2\ns_wr cols 2\nv_rd ivrf 0\nmv_mul 0\nvv_add 0\nv_relu mfu=1\nv_wr ivrf 16\nend_chain\n"
            "s_wr cols 1\nv_rd ivrf 16\nv_tanh\nv_wr netq 0\nend_chain\n")
    outs = []
    for config in (tiny, PIPELINED.replace(mvm_row_slots=2)):
        m = Machine(config)
        m.load_mrf(tile_matrix(rng.normal(size=(16, 16)), config)[0] if not outs else image)
        image = m.state.mrf if not outs else image
        m.load_vectors(__import__("npu.isa", fromlist=["Space"]).Space.IVRF, 0, np.ones((2, 8)))
        m.run(Program(config, assemble(text)))
        outs.append(m.pop_output())
    np.testing.assert_array_equal(outs[0], outs[1])


def test_steps_issue_in_order_one_per_cycle():
    # the chain multiplies the tiles the m_rd loads and the m_wr needs the DMA engine: both wait for the m_rd's
    # completion; the issue unit takes one step from the queue per cycle, so the m_wr issues a cycle later
    text = ("m_rd 0 10 3\ns_wr rows 1\ns_wr cols 3\nv_rd zero 0\nmv_mul 10\nv_wr netq 0\nend_chain\n"
            "m_wr 0 20 2")
    (d0, d1), (c0, _), (w0, _) = steps(timed(PIPELINED, text))
    assert c0 == d1 and w0 == c0 + 1


def test_the_rtl_refuses_what_it_does_not_implement_yet():
    from rtl.generate import make_top

    with pytest.raises(ConfigError, match="latencies.chain_setup: the pipelined RTL needs chain_setup >= 2"):
        make_top(PIPELINED.replace(latencies=PIPELINED.latencies.__class__(chain_setup=1)))


# ---- the network queues: FIFOs beside compute, the link fills and drains them at port_cost(NETQ) a vector
LINK = PIPELINED.replace(netq_bytes_per_cycle=2)  # 16-byte vectors at 2 bytes a cycle: P = 8; netq_latency 2


def test_a_queue_read_waits_for_its_vector_to_arrive():
    # input vector k arrives in cycle (k + 1) * 8; the chain issues at 6 and its reads, one cycle slots, wait:
    # 8, 16, 24, 32; the last one's data leaves the queue at 32 + 2 - 1 = 33 and is written in 34: complete at 35
    r = timed(LINK, "s_wr rows 4\nv_rd netq 0\nv_wr asvrf 0\nend_chain\n")
    assert steps(r) == [(6, 35)]
    assert r.cycles == 35 + 2
    # the one-step machine keeps the link-paced port: a read every 8 cycles from the chain's start, 14 .. 38
    assert steps(timed(get_config("tiny").replace(netq_bytes_per_cycle=2),
                       "s_wr rows 4\nv_rd netq 0\nv_wr asvrf 0\nend_chain\n")) == [(6, 41)]


def test_a_queue_read_of_arrived_vectors_takes_one_cycle():
    # chain 0 reads 40 VRF vectors (issues 7..46, written 47, complete at 48); chain 1 issues when the read
    # sequencer is free (46 + chain_setup = 48); vectors 0..3 arrived by cycle 32: reads at 49, 50, 51, 52,
    # the last written at 52 + 2 - 1 + 1 = 54: complete at 55
    r = timed(LINK, "s_wr rows 40\nv_rd ivrf 0\nv_wr asvrf 0\nend_chain\n"
                    "s_wr rows 4\nv_rd netq 0\nv_wr ivrf 100\nend_chain\n")
    assert steps(r) == [(6, 48), (48, 55)]
    assert r.cycles == 55 + 2


def test_a_queue_write_waits_for_room_in_the_output_fifo():
    # a 2-vector output FIFO; the link takes vector o at S_o = max(written + 1, S_(o-1) + 8) and frees its room
    # then; a read reserves room for its vector when it issues (room freed in S counts from S + 1).
    # reads 7, 8 (written 8, 9; taken 9, 17); read 2 waits for room until 9 + 1 = 10 (written 11, taken 25);
    # read 3 until 17 + 1 = 18 (written 19, taken 33): the chain completes at 20
    r = timed(LINK.replace(netq_fifo=2), "s_wr rows 4\nv_rd ivrf 0\nv_wr netq 0\nend_chain\n")
    assert steps(r) == [(6, 20)]
    # the run ends when the link has sent the last vector: 33 + 8 = 41, then drain
    assert r.cycles == 41 + 2


def test_the_run_ends_when_the_output_fifo_has_drained():
    # two vectors written at 8 and 9, taken at 9 and 17, the last sent at 25: long after the chain (10)
    r = timed(LINK, "s_wr rows 2\nv_rd ivrf 0\nv_wr netq 0\nend_chain\n")
    assert steps(r) == [(6, 10)]
    assert r.cycles == 25 + 2


def test_an_mv_mul_iteration_reserves_its_rows_in_the_output_fifo():
    # rows 2, cols 1, two iterations, a 2-vector FIFO; the chain is queued at 7 (pc 6) and issues at 9.
    # Iteration 0 reserves 2 vectors at 9, reads at 10 (data at 11); its MACs take 2 cycles a row from 11, rows
    # leave the MVM at 11 + 2 - 2 + 5 = 16 and 18 (mvm + mvm_reduce = 5), are written at 17 and 19 (tail:
    # vrf_write 1) and taken by the link at 18 and max(20, 18 + 8) = 26.  Iteration 1 needs vector 1's room:
    # it reserves at 27, reads at 28 (data 29), rows leave at 34 and 36, written 35 and 37 (taken 36 and 44):
    # complete at 38; the link has sent the last vector at 44 + 8 = 52
    r = timed(LINK.replace(netq_fifo=2), "s_wr rows 2\ns_wr cols 1\ns_wr iter_inner 2\nv_rd ivrf 0 si=1\nmv_mul 0\n"
                                          "v_wr netq 0\nend_chain\n")
    assert steps(r) == [(9, 38)]
    assert r.cycles == 52 + 2


def test_an_mv_mul_writing_more_rows_than_the_output_fifo_holds_is_refused():
    with pytest.raises(ProgramError, match="netq_fifo"):
        timed(LINK.replace(netq_fifo=2), "s_wr rows 3\ns_wr cols 1\nv_rd ivrf 0\nmv_mul 0\nv_wr netq 0\nend_chain\n")


BYPASS = PIPELINED.replace(mvm_bypass=True)
MVM_ONLY = "s_wr rows 4\ns_wr cols 1\nv_rd ivrf 0\nmv_mul 0\nv_wr asvrf 0\nend_chain\n"


def test_an_mvm_only_chain_takes_the_bypass_and_a_later_mfu_chain_completes_first():
    # chain 0 (MVM only) issues at 8, reads at 9, MACs 10..17 (4 rows x 2 cycles), its last row leaves the MVM at
    # 10 + 8 - 2 + 5 = 21 and is written at 22 (the bypass write port: the same vrf_write): complete at 23.
    # chain 1 (tanh) issues when the read sequencer is free (9 + 2) and its last instruction decoded (10 + 2):
    # reads 13..16, writes 16 + 2 + 1 = 19: complete at 20, before chain 0.
    text = MVM_ONLY + "v_rd ivrf 16\nv_tanh\nv_wr ivrf 40\nend_chain\n"
    assert steps(timed(BYPASS, text)) == [(8, 23), (12, 20)]
    # without the bypass chain 1's first beat follows chain 0's last (22) by 1 + one stage (2): written at 25,
    # so it issues at 25 - 4 = 21
    assert steps(timed(PIPELINED, text)) == [(8, 23), (21, 29)]


@pytest.mark.parametrize("second, kind", [("v_rd asvrf 3\nv_tanh\nv_wr ivrf 32", "RAW"),
                                          ("v_rd ivrf 40\nv_tanh\nv_wr ivrf 0", "WAR"),
                                          ("v_rd ivrf 40\nv_tanh\nv_wr asvrf 3", "WAW")])
def test_chains_depending_on_a_bypass_chain_wait_for_its_completion(second, kind):
    assert steps(timed(BYPASS, MVM_ONLY + second + "\nend_chain\n"))[1][0] == 23, kind


def test_a_chain_with_mfu_work_or_a_slow_destination_does_not_take_the_bypass():
    from npu.program import analyze
    from sim.timing import TimingModel

    tm = TimingModel(BYPASS)
    for text, takes in ((MVM_ONLY, True), (MVM_ONLY.replace("mv_mul 0", "mv_mul 0\nv_relu"), False),
                        (MVM_ONLY.replace("asvrf", "dram"), False), (MVM_ONLY.replace("asvrf 0", "netq 0"), False),
                        ("s_wr rows 4\nv_rd ivrf 0\nv_wr asvrf 0\nend_chain", False)):
        (chain,) = analyze(Program(BYPASS, assemble(text)))
        assert tm.bypasses(chain) is takes, text
    (chain,) = analyze(Program(PIPELINED, assemble(MVM_ONLY)))
    assert not TimingModel(PIPELINED).bypasses(chain)


def test_a_chain_takes_its_chain_table_entry_only_once_free():
    # a long MVM-only chain (3 iterations of 8 rows: complete at 64) and nine one-row chains behind it: they
    # complete first, one entry after the other, but the ninth needs entry 0, which the bypass chain holds
    # until 64, though only one chain is in flight
    text = ("s_wr rows 8\ns_wr cols 1\ns_wr iter_inner 3\nv_rd ivrf 0 si=1\nmv_mul 0\nv_wr asvrf 0 si=8\nend_chain\n"
            "s_wr rows 1\ns_wr iter_inner 1\n" + "".join(f"v_rd ivrf {16 + k}\nv_wr ivrf {40 + k}\nend_chain\n"
                                                        for k in range(9)))
    got = steps(timed(BYPASS, text))
    assert got[0] == (9, 64) and got[7] == (32, 35) and got[8] == (64, 67)


def test_the_bypass_needs_the_pipelined_machine():
    with pytest.raises(ConfigError, match="mvm_bypass"):
        get_config("tiny").replace(mvm_bypass=True)
    import hashlib
    import json

    d = get_config("tiny").to_dict()
    assert d.pop("mvm_bypass") is False  # earlier fingerprints hold: the field at its default is left out
    assert get_config("tiny").fingerprint() == hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
    assert BYPASS.fingerprint() != BYPASS.replace(mvm_bypass=False).fingerprint()
