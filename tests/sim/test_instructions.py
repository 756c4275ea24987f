"""Every instruction's semantics on the simulator against an independent numpy reference."""
import numpy as np
import pytest

from npu import numerics as nm
from npu.asm import assemble
from npu.config import get_config
from npu.errors import ProgramError, SimulationError
from npu.isa import Space
from npu.program import Program
from npu.weights import tile_matrix, untile
from sim.machine import Machine

N = 8


@pytest.fixture(autouse=True, params=["digits", "onnxruntime", "float64"])
def mvm_engine(request, monkeypatch):
    """Every test on each MVM engine (sim/intgemm.py): 8-bit digit GEMMs as the simulator picks them (fused
    AMX kernel where it can), the same with onnxruntime's GEMMs only, and the float64 reference."""
    from sim import intgemm

    if request.param == "float64":
        monkeypatch.setattr(intgemm, "_ok", False)
    elif not intgemm.available():
        pytest.skip("no exact 8-bit GEMM on this machine")
    elif request.param == "onnxruntime":
        monkeypatch.setattr(intgemm, "_amx", False)
    return request.param


def run(machine, text):
    return machine.run(Program(machine.config, assemble(text)))


def f16(rng, *shape, scale=1.0):
    return (rng.normal(size=shape) * scale).astype(np.float16)


def test_loops_strides_and_queues(tiny, rng):
    m = Machine(tiny)
    x = f16(rng, 12, N)
    m.push_input(x)
    # 3 x 2 iterations of 2 vectors: DRAM address = 100 + 10 i + 3 j (write), netq in order
    run(m, "s_wr rows 2\ns_wr iter_outer 3\ns_wr iter_inner 2\nv_rd netq 0\nv_wr dram 100 so=10 si=3\nend_chain")
    for k in range(6):
        i, j = divmod(k, 2)
        np.testing.assert_array_equal(m.state.dram[100 + 10 * i + 3 * j:102 + 10 * i + 3 * j], x[2 * k:2 * k + 2])
    run(m, "s_wr rows 2\ns_wr iter_outer 3\ns_wr iter_inner 2\nv_rd dram 100 so=10 si=3\nv_wr netq 0\nend_chain")
    np.testing.assert_array_equal(m.pop_output(), x)


def test_windowed_read_gathers_runs(tiny, rng):
    m = Machine(tiny)
    mem = f16(rng, 64, N)
    m.load_vectors(Space.IVRF, 0, mem)
    w = rng.normal(size=(N, 6 * N))
    image, rows, cols = tile_matrix(w, tiny)
    m.load_mrf(image)
    run(m, "s_wr cols 6\ns_wr win_run 2\ns_wr win_pitch 10\ns_wr iter_inner 3\n"
           "v_rd ivrf 5 si=4\nmv_mul 0\nv_wr netq 0\nend_chain")
    y = m.pop_output()
    wm, we = untile(image, rows, cols, tiny)
    for j in range(3):
        gathered = mem[[5 + 4 * j + o for o in (0, 1, 10, 11, 20, 21)]].reshape(1, -1)
        np.testing.assert_array_equal(y[j], nm.mvm_reference(gathered, wm, we, tiny.weight_fmt, tiny.act_fmt, N)[0])


def test_mv_mul_matches_integer_reference(tiny, rng):
    """mv_mul over R x C tiles, with iterations, against npu.numerics' reference (checked against Fractions)."""
    m = Machine(tiny)
    R, C, it = 3, 4, 5
    w = rng.normal(size=(R * N, C * N)) * 2.0 ** rng.integers(-3, 3, size=(R * N, 1))
    image, rows, cols = tile_matrix(w, tiny)
    m.load_mrf(image, at=7)
    x = f16(rng, it * C, N, scale=3)
    m.push_input(x)
    run(m, f"s_wr rows {R}\ns_wr cols {C}\ns_wr iter_inner {it}\nv_rd netq 0\nmv_mul 7\nv_wr netq 0\nend_chain")
    y = m.pop_output().reshape(it, R * N)
    wm, we = untile(image, rows, cols, tiny)
    ref = nm.mvm_reference(x.reshape(it, C * N), wm, we, tiny.weight_fmt, tiny.act_fmt, N)
    np.testing.assert_array_equal(y.view(np.uint16), ref.view(np.uint16))
    # and close to the float product: 7-bit mantissas on both sides
    exact = x.reshape(it, -1).astype(np.float64) @ w.T
    bound = 2 ** -5 * (np.abs(x.reshape(it, -1)).astype(np.float64) @ np.abs(w).T) + 1e-3
    assert (np.abs(y - exact) <= bound).all()


BINARY = {
    "vv_add": lambda x, b: x.astype(np.float32) + b,
    "vv_a_sub_b": lambda x, b: x.astype(np.float32) - b,
    "vv_b_sub_a": lambda x, b: b.astype(np.float32) - x,
    "vv_max": lambda x, b: np.where(b > x, b, x),
    "vv_min": lambda x, b: np.where(b < x, b, x),
    "vv_mul": lambda x, b: x.astype(np.float32) * b,
}


@pytest.mark.parametrize("op", list(BINARY))
def test_binary_mfu_ops(op, tiny, rng):
    m = Machine(tiny)
    x, b = f16(rng, 6, N, scale=100), f16(rng, 8, N, scale=100)
    space = Space.MULVRF if op == "vv_mul" else Space.ASVRF
    m.load_vectors(space, 10, b, mfu=1)
    m.push_input(x)
    # 3 iterations of 2 vectors, operand stride 3: reads b[0:2], b[3:5], b[6:8]
    run(m, f"s_wr rows 2\ns_wr iter_inner 3\nv_rd netq 0\n{op} 10 mfu=1 si=3\nv_wr netq 0\nend_chain")
    bb = np.concatenate([b[0:2], b[3:5], b[6:8]])
    expect = BINARY[op](x, bb).astype(np.float16)  # float32 then one rounding = correctly rounded fp16
    np.testing.assert_array_equal(m.pop_output().view(np.uint16), expect.view(np.uint16))


@pytest.mark.parametrize("op, ref", [
    ("v_relu", lambda x: np.maximum(x, 0)),
    ("v_sigm", lambda x: 0.5 * (1 + np.tanh(x / 2))),
    ("v_tanh", np.tanh),
])
def test_activations(op, ref, tiny, rng):
    m = Machine(tiny)
    x = f16(rng, 4, N, scale=3)
    m.push_input(x)
    run(m, f"s_wr rows 4\nv_rd netq 0\n{op} mfu=1\nv_wr netq 0\nend_chain")
    y = m.pop_output().astype(np.float64)
    assert np.abs(y - ref(x.astype(np.float64))).max() < 1.5e-3


def test_lrelu_uses_alpha_register(tiny, rng):
    m = Machine(tiny)
    x = f16(rng, 2, N)
    m.push_input(x)
    alpha = int(np.array(0.125, np.float16).view(np.uint16))
    run(m, f"s_wr rows 2\ns_wr alpha {alpha}\nv_rd netq 0\nv_lrelu\nv_wr netq 0\nend_chain")
    np.testing.assert_array_equal(m.pop_output(), np.where(x > 0, x, x * np.float16(0.125)))


def test_zero_space_and_multiple_writes(tiny, rng):
    m = Machine(tiny)
    m.load_vectors(Space.IVRF, 0, f16(rng, 4, N))
    run(m, "s_wr rows 4\nv_rd zero 0\nv_wr ivrf 0\nv_wr asvrf 20 mfu=1\nend_chain")
    assert not m.state.ivrf[:4].any() and not m.state.asvrf[1][20:24].any()


def test_dma_moves_tiles(tiny, rng):
    m = Machine(tiny)
    image, _, _ = tile_matrix(rng.normal(size=(2 * N, 2 * N)), tiny)
    m.load_weight_dram(image, at=10)
    run(m, "m_rd 10 3 4\nm_wr 3 50 4")
    np.testing.assert_array_equal(m.state.mrf.mant[3:7], image.mant)
    np.testing.assert_array_equal(m.state.wdram.exp[50:54], image.exp)


def test_runtime_errors_name_pc_and_rule(tiny, rng):
    m = Machine(tiny)
    with pytest.raises(SimulationError, match=r"pc 1: `v_rd netq 0`: reading an empty queue"):
        run(m, "s_wr rows 2\nv_rd netq 0\nv_wr netq 0\nend_chain")
    # iteration 1 reads address 1, which iteration 0 wrote: a static rule of npu.program.analyze
    with pytest.raises(ProgramError, match="iteration hazard"):
        run(m, "s_wr iter_inner 4\nv_rd ivrf 0 si=1\nv_wr ivrf 1 si=1\nend_chain")
    # in-place update of the same addresses in each iteration is fine
    run(m, "s_wr iter_inner 4\nv_rd ivrf 0 si=1\nv_relu\nv_wr ivrf 0 si=1\nend_chain")
    # weights outside the exponent window cannot come from tile_matrix
    m.state.mrf.mant[0:2] = 1
    m.state.mrf.exp[0, :, 0] = 40
    m.state.mrf.exp[1, :, 0] = 0
    m.state.mrf_tokens[0:2] = m.state.fresh_tokens(2)
    with pytest.raises(SimulationError, match="weight exponent window"):
        run(m, "s_wr cols 2\nv_rd zero 0\nmv_mul 0\nv_wr netq 0\nend_chain")


def test_program_for_another_config_is_refused(rng):
    from npu.errors import NpuError

    with pytest.raises(NpuError, match="built for configuration 'small'"):
        Machine(get_config("tiny")).run(Program(get_config("small"), assemble("nop")))


def test_same_machine_runs_twice_identically(tiny, rng):
    m = Machine(tiny)
    image, _, _ = tile_matrix(rng.normal(size=(N, 2 * N)), tiny)
    m.load_mrf(image)
    p = Program(tiny, assemble("s_wr cols 2\nv_rd netq 0\nmv_mul 0\nv_sigm\nv_wr netq 0\nend_chain"))
    x = f16(rng, 2, N)
    outs = []
    for _ in range(2):
        m.push_input(x)
        r = m.run(p)
        outs.append((m.pop_output().tobytes(), r.cycles))
    assert outs[0] == outs[1]


@pytest.mark.parametrize("stride", [1, 2])
def test_convolution_chain_matches_per_pixel_reference(stride, tiny, rng):
    """A whole 3x3 convolution as one chain (windowed reads over a padded map, both loops) equals the
    per-output-pixel reference; exercises the simulator's strided-GEMM path and its gather fallback."""
    H = W = 6
    Ct, Rt = 2, 1
    Wp = W + 2
    Ho = Wo = (H - 1) // stride + 1
    m = Machine(tiny)
    fmap = np.zeros(((H + 2) * Wp * Ct, N), np.float16)
    fmap.reshape(H + 2, Wp, Ct, N)[1:-1, 1:-1] = np.maximum(f16(rng, H, W, Ct, N), 0)
    m.load_vectors(Space.IVRF, 0, fmap)
    w = rng.normal(size=(Rt * N, 9 * Ct * N)) * 0.2
    image, rows, cols = tile_matrix(w, tiny)
    m.load_mrf(image)
    run(m, f"s_wr rows {Rt}\ns_wr cols {9 * Ct}\ns_wr iter_outer {Ho}\ns_wr iter_inner {Wo}\n"
           f"s_wr win_run {3 * Ct}\ns_wr win_pitch {Wp * Ct}\n"
           f"v_rd ivrf 0 so={stride * Wp * Ct} si={stride * Ct}\nmv_mul 0\nv_wr netq 0\nend_chain")
    y = m.pop_output().reshape(Ho * Wo, Rt * N)
    wm, we = untile(image, rows, cols, tiny)
    windows = np.stack([
        np.concatenate([fmap[((oy * stride + ky) * Wp + ox * stride) * Ct:((oy * stride + ky) * Wp + ox * stride + 3) * Ct]
                        for ky in range(3)]).ravel()
        for oy in range(Ho) for ox in range(Wo)])
    ref = nm.mvm_reference(windows, wm, we, tiny.weight_fmt, tiny.act_fmt, N)
    np.testing.assert_array_equal(y.view(np.uint16), ref.view(np.uint16))


def test_every_mfu_instruction_has_an_implementation():
    from npu.isa import MFU_OPS as TABLE
    from sim.functional import MFU_OPS

    assert set(MFU_OPS) == set(TABLE)


def test_streamed_weights_are_cached_by_content_not_address(tiny, rng):
    """Weights reloaded into the same MRF tiles from new DRAM contents are not served from the cache."""
    m = Machine(tiny)
    x = f16(rng, 1, N)
    prog = Program(tiny, assemble("m_rd 0 0 1\nv_rd netq 0\nmv_mul 0\nv_wr netq 0\nend_chain"))
    results = []
    for w in (rng.normal(size=(N, N)), rng.normal(size=(N, N))):
        image, _, _ = tile_matrix(w, tiny)
        m.load_weight_dram(image, at=0)
        for _ in range(2):  # the second run hits the cache
            m.push_input(x)
            m.run(prog)
            results.append(m.pop_output())
        wm, we = untile(image, 1, 1, tiny)
        np.testing.assert_array_equal(results[-1], nm.mvm_reference(x, wm, we, tiny.weight_fmt, tiny.act_fmt, N))
        np.testing.assert_array_equal(results[-1], results[-2])
    assert not np.array_equal(results[0], results[2])


def test_an_exact_zero_product_is_positive_zero(tiny):
    """Negative inputs times all-zero weights: the exact sum is 0, which rounds to +0 as on the RTL."""
    m = Machine(tiny)
    m.load_mrf(tile_matrix(np.zeros((N, N)), tiny)[0])
    m.push_input(-np.ones(N))
    run(m, "v_rd netq 0\nmv_mul 0\nv_wr netq 0\nend_chain")
    assert (m.pop_output().view(np.uint16) == 0).all()


def test_a_huge_chain_is_a_named_error_not_out_of_memory(tiny):
    """Two loop counts of 65,535: a legal program, too large to check vector by vector or to simulate."""
    m = Machine(tiny)
    with pytest.raises(SimulationError, match="the chain moves 4,294,836,225 vectors"):
        run(m, "s_wr iter_outer 65535\ns_wr iter_inner 65535\nv_rd ivrf 0\nv_wr ivrf 8\nend_chain")
    with pytest.raises(ProgramError, match="too large to check for iteration hazards"):
        run(m, "s_wr iter_outer 65535\ns_wr iter_inner 65535\nv_rd ivrf 0\nv_wr ivrf 0\nend_chain")
