# amaranth: UnusedElaboratable=no
"""RTL vs simulator: directed programs per instruction, random programs, back-to-back runs.

Every comparison is bit for bit (output queue and every written memory word);
the random-program count comes from NPU_RTL_RANDOM (small in CI, large in
benchmarks) and each case logs its seed.
"""
import numpy as np
import pytest

from npu.asm import assemble
from npu.config import PRESETS
from npu.isa import Space
from npu.program import Program
from rtl.check import compare
from rtl.randprog import Case, random_case, random_fp16
from tests.rtl.conftest import assert_exact, random_count

pytestmark = pytest.mark.rtl
TINY = PRESETS["tiny"]


def directed(source: str, seed: int = 0, config=TINY) -> Case:
    rng = np.random.default_rng(seed)
    from npu.weights import tile_matrix

    case = Case(Program(config, assemble(source)), seed=seed)
    n = config.native_dim
    for space, depth in ((Space.IVRF, 64), (Space.DRAM, 64)):
        case.vectors.append((space, 0, 0, random_fp16(rng, (depth, n))))
    for k in range(config.n_mfus):
        case.vectors.append((Space.ASVRF, k, 0, random_fp16(rng, (64, n))))
        case.vectors.append((Space.MULVRF, k, 0, random_fp16(rng, (64, n))))
    w, _, _ = tile_matrix(rng.standard_normal((2 * n, 3 * n)), config)
    case.mrf = w
    case.wdram = w
    case.inputs = random_fp16(rng, (24, n))
    return case


DIRECTED = {
    "copy_netq": "s_wr rows 3\nv_rd netq 0\nv_wr netq 0\nend_chain",
    "loops_windowed": "s_wr rows 2\ns_wr iter_outer 2\ns_wr iter_inner 3\ns_wr win_run 1\ns_wr win_pitch 3\n"
                      "v_rd ivrf 0 so=7 si=1\nv_wr ivrf 40 so=6 si=2\nv_wr netq 0\nend_chain",
    "vv_add": "s_wr rows 2\nv_rd ivrf 0\nvv_add 4\nv_wr netq 0\nend_chain",
    "vv_a_sub_b": "s_wr rows 2\nv_rd ivrf 0\nvv_a_sub_b 4 mfu=1\nv_wr netq 0\nend_chain",
    "vv_b_sub_a": "s_wr rows 2\nv_rd dram 0\nvv_b_sub_a 4\nv_wr dram 50\nend_chain",
    "vv_max_min": "s_wr rows 2\nv_rd ivrf 0\nvv_max 4\nvv_min 8 mfu=1\nv_wr netq 0\nend_chain",
    "vv_mul": "s_wr rows 2\nv_rd asvrf 0\nvv_mul 4\nv_wr netq 0\nend_chain",
    "relu_lrelu": "s_wr rows 4\ns_wr alpha 0x3400\nv_rd ivrf 0\nv_relu\nv_lrelu mfu=1\nv_wr netq 0\nend_chain\n"
                  "v_rd ivrf 8\nv_lrelu\nv_wr netq 0\nend_chain",
    "sigm_tanh": "s_wr rows 4\nv_rd ivrf 0\nv_sigm\nv_wr netq 0\nend_chain\nv_rd ivrf 4\nv_tanh mfu=1\nv_wr netq 0\nend_chain",
    "mv_mul": "s_wr rows 2\ns_wr cols 3\nv_rd ivrf 0\nmv_mul 0\nv_wr netq 0\nend_chain",
    "mv_mul_loops": "s_wr rows 2\ns_wr cols 3\ns_wr iter_inner 3\nv_rd netq 0\nmv_mul 0\nvv_add 0 si=2\nv_wr netq 0\n"
                    "end_chain",
    "m_rd_m_wr": "m_rd 0 10 3\ns_wr rows 1\ns_wr cols 3\nv_rd zero 0\nmv_mul 10\nv_wr netq 0\nend_chain\nm_wr 0 20 2",
    "zero": "s_wr rows 2\nv_rd zero 0\nvv_add 0\nv_wr mulvrf 30 mfu=1\nend_chain",
    # regression (small, random seeds 2, 4, 10, ...): the first chain's last beats lingered in the bypassed
    # multiply stage and were written again by the second chain, which uses it (mfu_stage 3 > chain_setup + 1)
    "bypassed_stage": "s_wr rows 2\nv_rd ivrf 0\nv_wr ivrf 40\nend_chain\nv_rd ivrf 8\nvv_mul 4\nv_wr netq 0\n"
                      "end_chain",
}


@pytest.mark.parametrize("name", sorted(DIRECTED))
def test_directed(tiny_rtl, name):
    assert_exact(directed(DIRECTED[name]), tiny_rtl)


@pytest.mark.parametrize("seed", range(random_count()))
def test_random(tiny_rtl, seed):
    assert_exact(random_case(TINY, seed), tiny_rtl)


def test_timing_with_a_full_step_queue(tiny_rtl):
    """A long MVM chain lets decoding fill the step queue; later chains with many register writes are then
    decode-bound, so the model must stall decoding as the RTL does."""
    long = "s_wr rows 3\ns_wr cols 3\ns_wr iter_inner 6\nv_rd ivrf 0 si=3\nmv_mul 0\nv_wr ivrf 100 si=3\nend_chain\n"
    short = "v_rd ivrf 0\nv_wr asvrf 0\nend_chain\n"
    for source in (long + "s_wr rows 1\n" + short * 5 + ("s_wr rows 1\n" * 30 + short) * 2,
                   long + "m_rd 0 10 1\n" * 5 + ("s_wr rows 1\n" * 60 + short) * 2):
        assert_exact(directed(source), tiny_rtl)


def test_mvm_reads_far_ahead_of_macs(tiny_rtl):
    """Regression (random seeds 12, 14, 16): with many rows the MACs of an iteration take longer than
    reading the next ones, so the read sequencer runs several iterations ahead.  Each iteration's largest
    block exponent (the reference of the activation flush window) must survive until its MACs run; a
    4-entry ring lost it.  Iterations 0-3 are tiny and 4-7 huge, so a stale exponent flushes everything."""
    n = TINY.native_dim
    case = directed("s_wr rows 3\ns_wr cols 1\ns_wr iter_inner 8\nv_rd ivrf 0 si=1\nmv_mul 0\nv_wr netq 0\n"
                    "end_chain")
    rng = np.random.default_rng(1)
    x = rng.uniform(0.5, 1.0, (8, n)) * np.where(np.arange(8) < 4, 2.0 ** -10, 2.0 ** 10)[:, None]
    case.vectors.append((Space.IVRF, 0, 0, x.astype(np.float16)))
    cmp = compare(case, tiny_rtl)
    assert cmp.bit_exact, cmp.first_mismatch


def test_twice_in_a_row(tiny_rtl):
    """Two runs on one instance without reset: leftover state must not change the second."""
    from rtl.cosim import run_job

    case = directed(DIRECTED["mv_mul_loops"])
    tiny_rtl.reset()
    case.load(tiny_rtl)
    from npu.program import analyze

    steps = analyze(case.program)
    job, _ = tiny_rtl.case_for(case.program, steps)
    second = dict(job, loads=[])
    first, again = run_job(tiny_rtl.build, [job, second])
    assert first["outputs"] == again["outputs"]
    assert first["cycles"] == again["cycles"]


def test_decoder_layout_matches_encoding():
    from npu.isa import INSTRUCTIONS, Instruction, encoding_for
    from rtl.layout import instruction_layout

    enc = encoding_for(TINY)
    layout = instruction_layout(TINY)
    rng = np.random.default_rng(0)
    for d in INSTRUCTIONS:
        values = {f.name: int(rng.integers(0, 1 << w)) for f, (_, _, w) in zip(d.fields, enc.layout[d.mnemonic])}
        word = enc.encode(Instruction.make(d.mnemonic, **values))
        view = layout[d.mnemonic].shape
        for name, value in values.items():
            off = view[name].offset
            width = view[name].width
            assert (word >> off) & ((1 << width) - 1) == value


def test_parameters_checked():
    from rtl.npu import Npu

    with pytest.raises(ValueError, match="queue_depth must be a positive integer, not 0"):
        Npu(TINY, queue_depth=0)
    with pytest.raises(ValueError, match="mvm_buffer: must be a power of two of at least 4, not 6"):
        Npu(TINY.replace(mvm_buffer=6))


def test_a_stale_request_does_not_pop_the_next_chains_input():
    """Regression: with a long queue latency (brainslice-128's and brainwave-s10's 20 cycles) a request of a
    30-row chain still sat at the queue tap in the next chain's first cycle and popped its input, which then
    waited forever for a vector."""
    from rtl.backend import RtlMachine

    config = TINY.replace(name="tiny-netq20", netq_latency=20)
    case = directed("s_wr rows 30\nv_rd ivrf 0\nv_wr ivrf 100\nend_chain\n"
                    "s_wr rows 3\nv_rd netq 0\nv_wr netq 0\nend_chain", config=config)
    case.inputs = random_fp16(np.random.default_rng(2), (3, config.native_dim))
    assert_exact(case, RtlMachine(config))


def test_no_build_from_modules_older_than_the_sources(monkeypatch):
    """A process that imported rtl/ before its sources changed would store the old design under the new
    sources' cache key: build refuses instead."""
    import rtl.cosim
    from rtl.cosim import CosimError, build

    monkeypatch.setattr(rtl.cosim, "IMPORTED_SOURCE_HASH", "0" * 12)
    with pytest.raises(CosimError, match="rtl/ or npu/ changed on disk since this process imported them"):
        build(TINY)
