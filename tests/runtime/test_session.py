"""runtime.load / Session / SessionPool."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import runtime
from npu.modelfile import RunStats, read_model
from runtime.errors import InvalidRequest, ModelNotFound
from runtime.registry import Registry

from conftest import reference_scores


def test_load_and_run(tiny_model):
    session = runtime.load(str(tiny_model))
    assert [s.name for s in session.inputs] == ["images"]
    assert [s.name for s in session.outputs] == ["scores", "probs"]
    assert session.last_stats is None
    x = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)
    out = session.run({"images": x})
    np.testing.assert_allclose(out["scores"], reference_scores(x), atol=1e-4)
    assert isinstance(session.last_stats, RunStats) and session.last_stats.npu_cycles > 0
    assert session.last_stats.wall_time_s > 0


def test_load_model_file_and_registry_ref(tiny_model):
    assert runtime.load(read_model(tiny_model)).inputs[0].shape == (1, 3, 16, 16)
    Registry().register(tiny_model, "tiny")
    Registry().register(tiny_model, "tiny")
    session = runtime.load("tiny:1")
    assert (session.name, session.version) == ("tiny", 1)
    assert runtime.load("tiny").version == 2
    with pytest.raises(ModelNotFound):
        runtime.load("nope")


def test_aliases_casts_and_batches(tiny_model):
    session = runtime.load(tiny_model)
    x = np.random.default_rng(1).random((4, 3, 16, 16))  # float64, batch of 4
    out = session.run({"images:0": x})
    assert out["scores"].shape == (4, 1000)
    np.testing.assert_allclose(out["scores"], reference_scores(x.astype(np.float32)), atol=1e-4)
    assert session.last_stats.extra == {"batch": 4}


@pytest.mark.parametrize("feeds, message", [
    ({"images": np.zeros((1, 3, 8, 8), np.float32)}, r"must have shape \[1, 3, 16, 16\].*got \[1, 3, 8, 8\]"),
    ({"images": np.zeros((1, 3, 16, 16), np.int32)}, r"must be float32 \[1, 3, 16, 16\], got int32"),
    ({"pixels": np.zeros((1, 3, 16, 16), np.float32)}, r"no input 'pixels'; its inputs are images \(float32"),
    ({}, r"needs input images"),
])
def test_bad_feeds_say_what_was_expected(tiny_model, feeds, message):
    with pytest.raises(InvalidRequest, match=message):
        runtime.load(tiny_model).run(feeds)


def test_backend_checked(tiny_model):
    with pytest.raises(ValueError, match="backend must be one of sim, rtl"):
        runtime.load(tiny_model, backend="gpu")


def test_session_runs_one_request_at_a_time(tiny_model):
    session = runtime.load(tiny_model)
    active, peak = [0], [0]
    real_run = session._executor.run

    def run(feeds):
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        try:
            return real_run(feeds)
        finally:
            active[0] -= 1

    session._executor.run = run
    x = np.zeros((1, 3, 16, 16), np.float32)
    threads = [threading.Thread(target=lambda: [session.run({"images": x}) for _ in range(20)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 1


def test_pool_lends_distinct_sessions(tiny_model):
    pool = runtime.SessionPool(read_model(tiny_model), size=2)
    with pool.session() as a, pool.session() as b:
        assert a is not b
        with pytest.raises(TimeoutError, match="no free NPU session"):
            with pool.session(timeout=0.05):
                pass
    assert pool.run({"images": np.zeros((1, 3, 16, 16), np.float32)})["probs"].shape == (1, 1000)
    with pytest.raises(ValueError, match="pool size must be a positive integer"):
        runtime.SessionPool(read_model(tiny_model), size=0)


def test_npu_scores_match_the_float_model_within_the_format(tiny_model):
    from conftest import float_reference_scores

    x = np.random.default_rng(5).random((1, 3, 16, 16), dtype=np.float32)
    got = runtime.load(tiny_model).run({"images": x})["scores"].ravel().astype(np.float64)
    want = float_reference_scores(x).ravel().astype(np.float64)
    cosine = got @ want / np.linalg.norm(got) / np.linalg.norm(want)
    assert cosine > 0.999 and np.abs(got - want).max() < 0.05 * np.abs(want).max()


def test_image_models_answer_to_the_images_alias(tmp_path):
    """The seed's client sends images as `images`; a zoo model calls its input `input`."""
    import onnx
    from onnx import TensorProto, helper

    from compiler import compile_to_file
    from conftest import PREPROCESSING

    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["output"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 16, 16])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "relu.npu"
    compile_to_file(model, path, config="tiny", preprocessing=PREPROCESSING)
    session = runtime.load(path)
    assert session.input_spec("images").name == "input"
    with pytest.raises(InvalidRequest, match="no input 'pixels'"):
        session.input_spec("pixels")


@pytest.mark.slow
def test_a_10000_node_chain_loads_in_seconds(tmp_path):
    """A chain alternating NPU Add and host Sin: 5,000 host segments, a ~21 MB model file (compiling it takes
    minutes while the compiler is quadratic); reading and loading it take seconds."""
    import time

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from compiler import compile_to_file
    from runtime.executor import Executor

    nodes, inits, prev = [], [], "x"
    for i in range(10_000):
        out = f"t{i}" if i < 9_999 else "y"
        if i % 2:
            nodes.append(helper.make_node("Sin", [prev], [out]))
        else:
            inits.append(numpy_helper.from_array(np.full((1, 64), 0.001, np.float32), f"c{i}"))
            nodes.append(helper.make_node("Add", [prev, f"c{i}"], [out]))
        prev = out
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "chain.npu"
    compile_to_file(model.SerializeToString(), path, config="brainslice-128")
    start = time.perf_counter()
    executor = Executor(read_model(path))
    seconds = time.perf_counter() - start
    print(f"{path.stat().st_size / 1e6:.1f} MB model file loaded in {seconds:.1f} s")
    assert seconds < 30
    outputs, _ = executor.run({"x": np.ones((1, 64), np.float32)})
    assert outputs["y"].shape == (1, 64)
