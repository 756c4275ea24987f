"""compiler/passes/devices.py: stages across several NPUs, row splits, and outputs bit-identical to one NPU."""
import itertools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from compiler import compile_model, driver, zoo
from compiler.check import random_feeds
from compiler.passes.devices import _balance, _Cuts
from compiler.report import build_report
from npu.errors import CompileError
from npu.modelfile import model_bytes, read_model
from runtime.executor import Executor


def conv_model(cin=16, cout=32, size=6, seed=0) -> onnx.ModelProto:
    """Conv 3x3 cin->cout, Relu, Conv 3x3 cout->8: on `tiny` (N = 8, 64-tile MRF) the first conv needs
    4 x 9 x 2 = 72 tiles, more than one MRF."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.2, (cout, cin, 3, 3)).astype(np.float32)
    b1 = rng.normal(0, 0.1, cout).astype(np.float32)
    w2 = rng.normal(0, 0.2, (8, cout, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["y"], pads=[1, 1, 1, 1])]
    g = helper.make_graph(nodes, "convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, size, size])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, size, size])],
                          [helper.make_tensor(n, TensorProto.FLOAT, a.shape, a.ravel()) for n, a in
                           (("w1", w1), ("b1", b1), ("w2", w2))])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def run_both(model, config, devices, seeds=(1, 2)):
    """(outputs on the fabric, outputs on one NPU) per input seed, and the fabric executor."""
    c = driver.compile_graph(model, config, devices=devices)
    fabric = Executor(read_model(model_bytes(*driver.package(c))))
    one = Executor(read_model(compile_model(model, config)))
    pairs = []
    for seed in seeds:
        feed = random_feeds(model, 1, seed=seed)[0]
        pairs.append((fabric.run(feed)[0], one.run(feed)[0]))
    return c, fabric, pairs


def assert_bit_identical(pairs):
    for many, one in pairs:
        for name in one:
            assert np.array_equal(many[name], one[name]), name
    # the outputs depend on the input (else equality would prove little)
    first = pairs[0][0]
    assert any(not np.array_equal(first[n], pairs[1][0][n]) for n in first)


def test_layer_larger_than_one_mrf_is_split_by_rows_and_matches_one_npu():
    model = conv_model()
    c, ex, pairs = run_both(model, "tiny", "auto")
    assert_bit_identical(pairs)
    assert len(c.splits) == 1                                   # the first conv, and only it
    parts = next(iter(c.splits.values()))
    assert len(parts) == 3 and c.graph.nodes[parts[-1]].op == "Concat"
    modes = [d["weights"]["mode"] for d in ex.manifest["devices"]]
    assert modes and set(modes) == {"pinned"}
    assert all(d["weights"]["tiles"] <= c.config.mrf_tiles for d in ex.manifest["devices"])
    # the one-NPU compilation of the same model streams its weights
    assert read_model(compile_model(model, "tiny")).manifest["weights"]["mode"] == "streaming"


def test_auto_never_streams_and_matches_one_npu_on_an_mlp():
    model = zoo.build("mlp", seed=0, input_size=320, hidden=[256, 128])   # on small: 80 + 32 + 4 tiles
    c, ex, pairs = run_both(model, "small", "auto")
    assert_bit_identical(pairs)
    rep = build_report(c)
    assert rep.devices >= 2 and set(rep.device_modes) == {"pinned"}
    assert all(t <= c.config.mrf_tiles for t in rep.device_tiles)
    npu_layers = [L for L in rep.layers if L.target == "npu"]
    assert all(L.device is not None and 0 <= L.device < rep.devices for L in npu_layers)
    assert "npu" in rep.table().splitlines()[0]


def test_two_layer_lstm_on_two_npus_pins_both_layers():
    model = zoo.build("lstm2", seed=0, input_size=8, hidden_size=8, timesteps=3)
    c, ex, pairs = run_both(model, "tiny", 2)
    assert_bit_identical(pairs)
    assert [d["weights"]["mode"] for d in ex.manifest["devices"]] == ["pinned", "pinned"]
    assert ex.manifest["routes"] and ex.manifest["routes"][0]["from"] == 0 and ex.manifest["routes"][0]["to"] == 1


def test_too_few_devices_stream_the_stages_that_do_not_fit():
    model = zoo.build("mlp", seed=0, input_size=320, hidden=[256, 128])
    c = driver.compile_graph(model, "small", devices=1 + 0 * 1)       # devices 1: the one-NPU path, untouched
    assert not c.multi and c.streaming
    c2 = driver.compile_graph(model, "small", devices=2)
    rep = build_report(c2)
    assert rep.devices == 2 and "streaming" in rep.device_modes


def test_auto_refuses_a_layer_it_cannot_pin():
    # one row of tiles wider than the MRF: 8 x 600 on tiny is 1 row of 75 tiles
    model = zoo.build("mlp", seed=0, input_size=600, hidden=[8])
    with pytest.raises(CompileError, match="auto"):
        driver.compile_graph(model, "tiny", devices="auto", host_fallback=False)
    with pytest.raises(CompileError, match="devices"):
        driver.compile_graph(model, "tiny", devices=0)


def brute_force(costs, devices):
    n = len(costs)
    best = float("inf")
    for k in range(1, min(devices, n) + 1):
        for cuts in itertools.combinations(range(1, n), k - 1):
            bounds = (0,) + cuts + (n,)
            best = min(best, max(sum(costs[a:b]) for a, b in zip(bounds, bounds[1:])))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_balance_finds_the_best_contiguous_cut(seed):
    rng = np.random.default_rng(seed)
    costs = [float(c) for c in rng.integers(1, 100, 9)]
    devices = int(rng.integers(2, 5))
    cuts = _Cuts(costs, [0] * len(costs), [0] * (len(costs) + 1), 0.0, 0.0)
    cut = _balance(cuts, devices, None)
    assert max(cut) + 1 <= devices and cut == sorted(cut)
    got = max(sum(c for c, s in zip(costs, cut) if s == k) for k in set(cut))
    assert got <= brute_force(costs, devices) + 1.0          # the search stops within one cycle


def test_bench_multinpu_runs_on_tiny_settings(capsys):
    from test_benchmarks import load

    # lstm2 with input 32, hidden 16 on tiny: 48 + 32 tiles, more than one 64-tile MRF
    code = load("bench_multinpu").main(["--config", "tiny", "--models", "lstm2", "--stream", "4", "--check",
                                        "--param", "lstm2.input_size=32", "lstm2.hidden_size=16",
                                        "lstm2.timesteps=3"])
    out = capsys.readouterr().out
    assert "bit-identical" in out and "target >= 20x" in out
    lines = [line.split() for line in out.splitlines() if line.split()[:1] in (["lstm2"], ["2"])]
    assert lines[0][1] == "1" and lines[1][0] == "2" and lines[1][1] == "0"     # 1 NPU streams, 2 pin
    assert code in (0, 1)


def flatten_gemm_model(seed=0) -> onnx.ModelProto:
    """Conv 4->16 on 5x5, Relu, Flatten, Gemm 400->16: on `tiny` the Gemm's rows are 50 tiles wide, more than the
    32-tile MRF half one NPU streams through, so it sums two column groups in fp16 -- in the order of its input's
    layout (pixel-major on the NPU)."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.3, (16, 4, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.1, (400, 16)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Flatten", ["r1"], ["f"], axis=1),
             helper.make_node("MatMul", ["f", "w2"], ["y"])]
    g = helper.make_graph(nodes, "flat", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
                          [helper.make_tensor(n, TensorProto.FLOAT, a.shape, a.ravel()) for n, a in
                           (("w1", w1), ("w2", w2))])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_a_flattened_tensor_crosses_in_its_own_layout():
    model = flatten_gemm_model()
    c, ex, pairs = run_both(model, "tiny", "auto")
    assert_bit_identical(pairs)
    # the Flatten runs beside the Gemm that reads it: the 4-D activation crosses the link, not the flat vector
    crossing = {r["tensor"] for r in ex.manifest["routes"]}
    assert "r1" in crossing and "f" not in crossing


def test_spare_npus_share_a_layer_no_mrf_holds():
    # on small (N = 32, 64-tile MRF) a 2240 -> 96 layer has rows of 70 tiles: no split pins it
    model = zoo.build("mlp", seed=0, input_size=2240, hidden=[96])
    with pytest.raises(CompileError, match="auto") as info:
        driver.compile_graph(model, "small", devices="auto")
    assert info.value.devices == 2                      # it alone, streaming, and the rest pinned
    c, ex, pairs = run_both(model, "small", 4)
    assert_bit_identical(pairs)
    rep = build_report(c)
    # the spare NPUs take row parts of the wide layer, each streaming its share, side by side
    assert c.wide_parts == 3 and rep.device_modes == ["streaming"] * 3 + ["pinned"]
    assert rep.device_tiles[:3] == [70, 70, 70]
    two = build_report(driver.compile_graph(model, "small", devices=2))
    assert rep.throughput_per_s > 2 * two.throughput_per_s
