# amaranth: UnusedElaboratable=no
"""The pipelined NPU (docs/pipeline.md: scoreboard, chains in flight, DMA beside compute) against the cycle
model: the same bits, every step completing in the same cycle, the same total.

The random programs are rtl.randprog.random_pipelined_program's (dependent chains at every distance on
intervals that touch or just miss, independent overlapping chains, transfers racing chains, MVM chains back
to back, full scoreboards and step queues); NPU_RTL_RANDOM sets how many the slow tests run.
"""
import numpy as np
import pytest

from npu.config import PRESETS
from rtl.randprog import random_case
from tests.rtl.conftest import assert_exact, check_compiled_model, pipelined, random_count
from tests.rtl.test_rtl import DIRECTED, directed

pytestmark = pytest.mark.rtl
TINY, SMALL = pipelined(PRESETS["tiny"]), pipelined(PRESETS["small"])

#: programs for the pipelined machine's rules, beside the one-step machine's DIRECTED ones
PIPELINE = {
    # independent chains overlap; the third reads what the first wrote (RAW), the fourth writes what the
    # third reads (WAR), the fifth what the fourth writes (WAW)
    "hazards": "s_wr rows 4\nv_rd ivrf 0\nv_wr asvrf 0\nend_chain\nv_rd ivrf 16\nvv_add 8\nv_wr asvrf 16\nend_chain\n"
               "v_rd asvrf 2\nv_wr ivrf 32\nend_chain\nv_rd ivrf 40\nv_wr ivrf 34\nend_chain\n"
               "v_rd dram 0\nv_relu\nv_wr ivrf 37\nend_chain",
    # intervals that just miss do not wait; a later chain with more MFU stages must not overtake
    "overtake": "s_wr rows 3\nv_rd ivrf 0\nv_wr asvrf 0\nend_chain\nv_rd asvrf 3\nvv_add 20\nv_sigm\nvv_mul 2 mfu=1\n"
                "v_wr ivrf 40\nend_chain\nv_rd ivrf 8\nv_wr netq 0\nend_chain",
    # a transfer beside chains; a multiply with the tiles it loads waits for it; a second transfer waits for
    # the DMA engine
    "dma_beside": "m_rd 0 32 4\ns_wr rows 2\nv_rd ivrf 0\nv_tanh\nv_wr asvrf 0\nend_chain\ns_wr cols 2\n"
                  "v_rd ivrf 4\nmv_mul 32\nv_wr ivrf 20\nend_chain\nm_wr 4 32 2\nm_rd 2 40 1\nv_rd ivrf 6\nmv_mul 0\n"
                  "v_wr netq 0\nend_chain",
    # MVM chains back to back with different cols (buffer credit), a short chain after a long one with MFU
    # stages, a DRAM read (long latency) before a VRF read (returns stay in order)
    "mvm_back_to_back": "s_wr rows 3\ns_wr cols 2\ns_wr iter_inner 3\nv_rd ivrf 0 si=2\nmv_mul 0\nvv_add 4 si=3\n"
                        "v_wr ivrf 100 si=3\nend_chain\ns_wr rows 1\ns_wr cols 3\ns_wr iter_inner 2\n"
                        "v_rd dram 0 si=3\nmv_mul 8\nv_wr ivrf 200 si=1\nend_chain\ns_wr iter_inner 1\n"
                        "v_rd ivrf 30\nv_wr netq 0\nend_chain",
    # MAC-bound chains pile up until all 8 entries are in flight; the 10th issues in the cycle the 2nd
    # completes, into the entry it frees (the ring's head and tail meet); the last chain reads what the 10th
    # writes, so it must find that entry in flight (else it reads the zeros there before the 10th's results)
    "full_ring": "s_wr rows 8\n" + "".join(f"v_rd ivrf {k}\nmv_mul 0\nv_wr asvrf {8 * k}\nend_chain\n"
                                           for k in range(12)) + "s_wr rows 1\nv_rd asvrf 72\nmv_mul 0\nv_wr netq 0\nend_chain",
}


@pytest.mark.parametrize("name", sorted(PIPELINE))
def test_pipeline_directed(tiny_pipelined_rtl, name):
    assert_exact(directed(PIPELINE[name], config=TINY), tiny_pipelined_rtl)


@pytest.mark.parametrize("seed", range(3))
def test_pipeline_random(tiny_pipelined_rtl, seed):
    assert_exact(random_case(TINY, seed, pipelined=True), tiny_pipelined_rtl)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(DIRECTED))
def test_one_step_programs_on_the_pipelined_machine(tiny_pipelined_rtl, name):
    assert_exact(directed(DIRECTED[name], config=TINY), tiny_pipelined_rtl)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3, 3 + random_count(30)))
def test_pipeline_random_many(tiny_pipelined_rtl, seed):
    assert_exact(random_case(TINY, seed, pipelined=True), tiny_pipelined_rtl)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(random_count(20)))
def test_pipeline_random_small(small_pipelined_rtl, seed):
    assert_exact(random_case(SMALL, seed, pipelined=True), small_pipelined_rtl)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PIPELINE) + sorted(DIRECTED))
def test_pipeline_directed_small(small_pipelined_rtl, name):
    assert_exact(directed({**DIRECTED, **PIPELINE}[name], config=SMALL), small_pipelined_rtl)


@pytest.mark.slow
def test_two_entries(tmp_path):
    from rtl.backend import RtlMachine

    two = TINY.with_scoreboard(2)
    rtl = RtlMachine(two)
    for seed in range(random_count(10)):
        assert_exact(random_case(two, seed, pipelined=True), rtl)


@pytest.mark.parametrize("name", ["tiny_cnn", pytest.param("tiny_rnn", marks=pytest.mark.slow)])
def test_compiled_model_on_the_pipelined_machine(name, tiny_pipelined_rtl, tmp_path, capsys):
    """A zoo model compiled for the pipelined tiny: `npu rtl check` runs it on the simulator and twice on the
    RTL (the build of the fixture: the model file carries the configuration)."""
    check_compiled_model(name, TINY, tmp_path, capsys)


def test_npu_rtl_check_random_with_entries(tiny_pipelined_rtl, capsys):
    """`npu rtl check --random N --entries 8` draws pipelined programs for tiny with 8 entries (the build the
    fixture made: one naming, NpuConfig.with_scoreboard) and checks them bit and cycle exact."""
    import json

    from cli.main import main

    assert main(["rtl", "check", "--random", "2", "--config", "tiny", "--entries", "8", "--seed", "40",
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["bit_exact"] and res["max_abs_cycle_error"] == 0.0 and len(res["cases"]) == 2
    assert all(c["rtl_cycles"] == c["sim_cycles"] > 0 for c in res["cases"])


def test_npu_rtl_check_pipelined_flag_needs_random(tmp_path):
    """`--pipelined` (like `--entries`) reshapes the machine random programs run on; a program or model runs on
    the configuration it was compiled for, so the flag without --random is refused by name."""
    from cli.main import main

    prog = tmp_path / "p.bin"
    prog.write_bytes(b"")
    with pytest.raises(SystemExit, match="--pipelined goes with --random"):
        main(["rtl", "check", str(prog), "--pipelined"])


@pytest.mark.slow
def test_npu_rtl_check_random_pipelined(capsys):
    """`npu rtl check --random N --pipelined` builds tiny as the whole pipelined machine (scoreboard, row slots,
    the MVM bypass) and checks programs drawn for it (bypass chains among them) bit and cycle exact."""
    import json

    from cli.main import main

    assert main(["rtl", "check", "--random", "3", "--config", "tiny", "--pipelined", "--seed", "7",
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["bit_exact"] and res["max_abs_cycle_error"] == 0.0 and len(res["cases"]) == 3


#: the network queues as FIFOs beside compute (docs/pipeline.md, "The network queues"): a link of 8 cycles a
#: vector (tiny's is 1 cycle, so nothing would wait) and a 3-vector output FIFO (random programs write up to 3 rows
#: an iteration)
LINK = TINY.replace(name="tiny-sb8-link8", netq_bytes_per_cycle=2, netq_fifo=3)
QUEUES = {
    # reads wait for each vector's arrival at (k + 1) * 8
    "read_waits_for_arrival": "s_wr rows 4\nv_rd netq 0\nv_wr asvrf 0\nend_chain",
    # a long chain first: the queue's vectors have arrived when the second chain reads them, one a cycle
    "read_arrived_at_one_cycle": "s_wr rows 40\nv_rd ivrf 0\nv_wr asvrf 0\nend_chain\n"
                                 "s_wr rows 4\nv_rd netq 0\nv_wr ivrf 100\nend_chain",
    # the output FIFO fills: reads wait for the room of their vectors; the run ends when the link has sent all
    "write_stalls_on_full_fifo": "s_wr rows 5\nv_rd ivrf 0\nv_wr netq 0\nend_chain",
    "end_waits_for_drain": "s_wr rows 2\nv_rd ivrf 0\nv_wr netq 0\nend_chain",
    # an mv_mul iteration reserves its rows; a queue-to-queue copy; queue reads into an MVM with a window
    "mvm_reserves_rows": "s_wr rows 2\ns_wr cols 1\ns_wr iter_inner 2\nv_rd ivrf 0 si=1\nmv_mul 0\nv_wr netq 0\nend_chain",
    "copy_and_mvm": "s_wr rows 3\nv_rd netq 0\nv_tanh\nv_wr netq 0\nend_chain\ns_wr rows 2\ns_wr cols 3\n"
                    "s_wr iter_inner 3\nv_rd netq 0\nmv_mul 0\nvv_add 0 si=2\nv_wr netq 0\nv_wr ivrf 60 si=2\nend_chain",
}


@pytest.fixture(scope="module")
def link_rtl():
    from rtl.backend import RtlMachine

    return RtlMachine(LINK)


@pytest.mark.parametrize("name", sorted(QUEUES))
def test_network_queues(link_rtl, name):
    assert_exact(directed(QUEUES[name], config=LINK), link_rtl)


def test_network_queue_cycles_are_the_hand_computed_ones(link_rtl):
    # tests/sim/test_pipeline.py computes the first and the last by hand.  The stall, on a 3-vector FIFO: reads
    # 7, 8, 9, 10 are written 8, 9, 10, 11 and taken by the link at 9, 17, 25, 33; read 4 waits for vector 1's
    # room (taken at 17) until 18, is written 19 (the chain completes at 20) and taken at 41: sent at 49, + drain 2
    from rtl.check import compare

    for name, commits, total in (("read_waits_for_arrival", [35], 37), ("write_stalls_on_full_fifo", [20], 51),
                                 ("end_waits_for_drain", [10], 27)):
        cmp = compare(directed(QUEUES[name], config=LINK), link_rtl)
        assert [cycle for _, cycle in cmp.commits_rtl] == commits and cmp.rtl_cycles == total, name


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(random_count(10)))
def test_network_queues_random(link_rtl, seed):
    assert_exact(random_case(LINK, seed, pipelined=True), link_rtl)


@pytest.mark.parametrize("name", ["tiny_cnn", pytest.param("tiny_rnn", marks=pytest.mark.slow)])
def test_compiled_model_with_a_slow_link(name, link_rtl, tmp_path, capsys):
    """A zoo model compiled for the tiny with an 8-cycle link: its queue reads wait for arrivals and its output
    drains after the last chain; `npu rtl check` (simulator, RTL twice) on the fixture's build."""
    check_compiled_model(name, LINK, tmp_path, capsys)


#: the MVM bypass (docs/pipeline.md unit 11): MVM-only chains write through the bypass write port, beside the
#: MFUs' write stage, and chains complete out of program order
BYPASS = TINY.replace(name="tiny-sb8-byp", mvm_bypass=True)
BYPASS_PROGRAMS = {
    # an MVM-only chain (2 iterations, two destinations) and a tanh chain behind it that completes first; then a
    # RAW on its ASVRF rows, a WAR on what it reads and a WAW on its MULVRF rows, each waiting for its completion
    "bypass_race": "s_wr rows 4\ns_wr cols 2\ns_wr iter_inner 2\nv_rd ivrf 0 si=2\nmv_mul 0\nv_wr asvrf 0 si=4\n"
                   "v_wr mulvrf 8 si=4\nend_chain\ns_wr rows 2\ns_wr cols 1\ns_wr iter_inner 1\nv_rd ivrf 16\nv_tanh\n"
                   "v_wr ivrf 40\nend_chain\nv_rd asvrf 6\nvv_add 20\nv_wr ivrf 50\nend_chain\nv_rd ivrf 60\n"
                   "v_wr ivrf 3\nend_chain\nv_rd ivrf 70\nv_sigm\nv_wr mulvrf 15\nend_chain",
    # the bypass chain and a tanh chain complete in the same cycle (23): two commits at once
    "bypass_same_cycle": "s_wr rows 4\ns_wr cols 1\nv_rd ivrf 0\nmv_mul 0\nv_wr asvrf 0\nend_chain\ns_wr rows 6\n"
                         "v_rd ivrf 16\nv_tanh\nv_wr ivrf 40\nend_chain",
    # nine one-row chains complete behind a long bypass chain; the ninth needs the entry the bypass chain holds
    "bypass_ring": "s_wr rows 8\ns_wr cols 1\ns_wr iter_inner 3\nv_rd ivrf 0 si=1\nmv_mul 0\nv_wr asvrf 0 si=8\n"
                   "end_chain\ns_wr rows 1\ns_wr iter_inner 1\n" + "".join(f"v_rd ivrf {16 + k}\nv_wr ivrf {40 + k}\n"
                                                                           "end_chain\n" for k in range(9)),
    # a bypass chain, an MVM chain with MFU work behind it (held for the last MFU-path beat, not the bypass's),
    # an MFU chain, a paced MVM chain to the queue and a DRAM-fed MVM-only chain
    "bypass_then_mfu_mvm": "s_wr rows 3\ns_wr cols 2\nv_rd ivrf 0\nmv_mul 0\nv_wr ivrf 100\nend_chain\nv_rd ivrf 4\n"
                           "mv_mul 8\nvv_add 0\nv_tanh\nv_wr asvrf 30\nend_chain\ns_wr rows 2\nv_rd ivrf 10\nv_relu\n"
                           "v_wr mulvrf 0\nend_chain\nv_rd ivrf 20\nmv_mul 16\nv_wr netq 0\nend_chain\nv_rd dram 0\n"
                           "mv_mul 4\nv_wr ivrf 120\nend_chain",
}


@pytest.fixture(scope="module")
def bypass_rtl():
    from rtl.backend import RtlMachine

    return RtlMachine(BYPASS)


@pytest.mark.parametrize("name", sorted(BYPASS_PROGRAMS))
def test_bypass_directed(bypass_rtl, name):
    assert_exact(directed(BYPASS_PROGRAMS[name], config=BYPASS), bypass_rtl)


def test_bypass_cycles_are_the_hand_computed_ones(bypass_rtl):
    # tests/sim/test_pipeline.py computes them by hand: out of program order, and two commits in one cycle
    from rtl.check import compare

    for name, commits in (("bypass_same_cycle", [23, 23]), ("bypass_race", [23, 50, 56, 58, 64])):
        cmp = compare(directed(BYPASS_PROGRAMS[name], config=BYPASS), bypass_rtl)
        assert sorted(cycle for _, cycle in cmp.commits_rtl) == commits, name


@pytest.mark.parametrize("seed", range(3))
def test_bypass_random(bypass_rtl, seed):
    assert_exact(random_case(BYPASS, seed, pipelined=True), bypass_rtl)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3, 3 + random_count(30)))
def test_bypass_random_many(bypass_rtl, seed):
    assert_exact(random_case(BYPASS, seed, pipelined=True), bypass_rtl)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PIPELINE) + sorted(DIRECTED))
def test_other_programs_on_the_bypass_machine(bypass_rtl, name):
    assert_exact(directed({**DIRECTED, **PIPELINE}[name], config=BYPASS), bypass_rtl)


def _batch_model(op: str, T: int = 4, B: int = 3, I: int = 12, H: int = 10):
    """A batch-B ONNX RNN/LSTM over T steps (zero initial state), or (op "Gemm") three batched Gemm layers of
    width H with Relu between, seeded random weights."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(11)

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32), name)

    vi = helper.make_tensor_value_info
    if op == "Gemm":
        nodes, inits, prev = [], [], "x"
        for k in range(3):
            inits += [w(f"w{k}", H, H), w(f"b{k}", H)]
            nodes.append(helper.make_node("Gemm", [prev, f"w{k}", f"b{k}"], [f"g{k}"], transB=1))
            prev = f"g{k}"
            if k < 2:
                nodes.append(helper.make_node("Relu", [prev], [f"r{k}"]))
                prev = f"r{k}"
        nodes[-1].output[0] = "y"
        graph = helper.make_graph(nodes, "mlp_batch", [vi("x", TensorProto.FLOAT, [B, H])],
                                  [vi("y", TensorProto.FLOAT, [B, H])], inits)
    else:
        gates = {"RNN": 1, "LSTM": 4}[op]
        inits = [w("W", 1, gates * H, I), w("R", 1, gates * H, H), w("Bias", 1, 2 * gates * H)]
        graph = helper.make_graph([helper.make_node(op, ["x", "W", "R", "Bias"], ["Y"], hidden_size=H)],
                                  f"{op.lower()}_batch", [vi("x", TensorProto.FLOAT, [T, B, I])],
                                  [vi("Y", TensorProto.FLOAT, [T, 1, B, H])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("op", ["RNN", "LSTM", "Gemm"])
def test_compiled_batch_on_the_bypass_machine(op, bypass_rtl, tmp_path, capsys):
    """Batches on the bypass design (compiler/ops/rnn.py: an RNN batch sequence by sequence, its W x chains
    reading the input queue through the bypass; an LSTM batch's products all through the bypass; batched Gemm
    layers in a wavefront, compiler/passes/batch_wavefront.py) on the RTL: the same bits and cycles."""
    from compiler import driver
    from compiler.passes.lower import NpuSegment
    from npu.program import analyze
    from sim.timing import TimingModel

    model = _batch_model(op)
    if op != "Gemm":  # the recurrences take the bypass: not a test of the one-step paths
        (seg,) = [s for s in driver.compile_graph(model, BYPASS).segments if isinstance(s, NpuSegment)]
        assert sum(TimingModel(BYPASS).bypasses(s) for s in analyze(seg.program)) >= 4
    check_compiled_model(model, BYPASS, tmp_path, capsys)


@pytest.mark.parametrize("name", ["tiny_rnn", pytest.param("tiny_cnn", marks=pytest.mark.slow)])
def test_compiled_model_on_the_bypass_machine(name, bypass_rtl, tmp_path, capsys):
    """A zoo model compiled for the tiny with the bypass (a recurrent layer's input projections are MVM-only
    chains one step ahead, compiler/ops/rnn.py): `npu rtl check` on the fixture's build."""
    check_compiled_model(name, BYPASS, tmp_path, capsys)
