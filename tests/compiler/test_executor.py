"""runtime/executor.py: interface, repeatability, host fallback in the same file, statistics."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from compiler import compile_model
from compiler import zoo
from helpers import assert_matches, make_model, reference
from npu.errors import CompileError, NpuError
from npu.modelfile import RunStats, read_model
from runtime.executor import Executor


def softmax_model():
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["x", "W"], ["h"], transB=1), helper.make_node("Softmax", ["h"], ["p"]),
             helper.make_node("Gemm", ["p", "W2"], ["y"], transB=1)]
    return make_model(nodes, {"x": [1, 16]}, {"y": None}, {"W": rng.standard_normal((10, 16)).astype(np.float32),
                                                            "W2": rng.standard_normal((4, 10)).astype(np.float32)})


def test_interface_and_repeatability():
    model = zoo.build("tiny_cnn", seed=0)
    ex = Executor(read_model(compile_model(model, config="tiny")))
    assert [s.name for s in ex.inputs] == ["input"] and ex.outputs[0].shape == (1, 10)
    assert ex.manifest["plan"]
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    a, stats = ex.run({"input": x})
    b, stats2 = ex.run({"input": x})
    assert np.array_equal(a["output"], b["output"])
    assert isinstance(stats, RunStats) and stats.npu_cycles == stats2.npu_cycles > 0
    assert 0 < stats.utilization <= 1 and stats.macs > 0 and stats.latency_us > 0


def test_host_fallback_in_the_same_file():
    out = assert_matches(softmax_model(), "tiny", npu_only=False)
    assert [s["kind"] for s in out["executor"].manifest["plan"]] == ["npu", "host", "npu"]
    report = out["executor"].manifest["compiler"]["report"]
    assert {L["op"]: L["target"] for L in report["layers"]}["Softmax"] == "host"


def test_no_host_fallback_is_an_error():
    with pytest.raises(CompileError, match=r"node 'Softmax_1' \(Softmax\): cannot run on the NPU.*\n  hint: drop"):
        compile_model(softmax_model(), config="tiny", host_fallback=False)


def test_bad_feeds():
    ex = Executor(read_model(compile_model(softmax_model(), config="tiny")))
    with pytest.raises(NpuError, match="missing input 'x'"):
        ex.run({})
    with pytest.raises(NpuError, match=r"shape \[2, 16\]"):
        ex.run({"x": np.zeros((2, 16), np.float32)})


def test_constant_output():
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Add", ["a", "a"], ["k"])]
    model = make_model(nodes, {"x": [1, 4]}, {"y": None, "k": None}, {"a": np.ones(3, np.float32)})
    ex = Executor(read_model(compile_model(model, config="tiny")))
    out, _ = ex.run({"x": np.ones((1, 4), np.float32)})
    assert np.array_equal(out["k"], np.full(3, 2.0)) and np.array_equal(out["y"], reference(model, {"x": np.ones((1, 4), np.float32)})["y"])


def test_model_file_contents_are_deterministic():
    model = zoo.build("tiny_cnn", seed=0)
    a, b = read_model(compile_model(model, config="tiny")), read_model(compile_model(model, config="tiny"))
    assert a.manifest == b.manifest and a.members == b.members


def test_one_utilization_for_compile_run_and_layers():
    """compile, run and run --layers report the same figure: graph MACs / (cycles x MACs per cycle)."""
    from compiler.report import CompileReport

    model = zoo.build("tiny_cnn", seed=0)
    ex = Executor(read_model(compile_model(model, config="tiny")))
    report = CompileReport.from_dict(ex.manifest["compiler"]["report"])
    trace = []
    _, stats = ex.run({"input": np.zeros((1, 3, 8, 8), np.float32)}, trace=trace)
    assert stats.macs == report.macs_npu == zoo.count_macs(model)
    assert stats.npu_cycles == report.total_cycles
    assert stats.utilization == pytest.approx(report.utilization, rel=1e-12)
    assert stats.utilization == pytest.approx(stats.macs / (stats.npu_cycles * ex.config.macs_per_cycle))
    # padding makes the MVM do more than the graph asks for, and that figure has its own name
    assert stats.tile_macs > stats.macs and stats.tile_utilization > stats.utilization
    layers = {L["layer"]: L for L in ex.layers(trace)}
    for L in report.layers:
        if L.target == "npu" and L.macs:
            assert layers[L.name]["macs"] == L.macs
            assert layers[L.name]["utilization"] == pytest.approx(L.utilization, abs=1e-4)


def test_nonfinite_inputs_are_reported():
    ex = Executor(read_model(compile_model(softmax_model(), config="tiny")))
    x = np.zeros((1, 16), np.float32)
    _, stats = ex.run({"x": x})
    assert "nonfinite_inputs" not in stats.extra
    x[0, :3] = [np.nan, np.inf, -np.inf]
    _, stats = ex.run({"x": x})
    assert stats.extra["nonfinite_inputs"] == {"x": 3}
