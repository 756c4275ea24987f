"""Every zoo model compiles and runs on the simulator, matching onnxruntime; a real exporter's model too."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from compiler import compile_model, zoo
from helpers import cosine, random_inputs, reference
from npu.modelfile import read_model
from runtime.executor import Executor

# (model, build kwargs, config, cosine bound); msfp16 keeps CNN logits within ~1e-3 of float
FAST = [
    ("tiny_cnn", {}, "tiny", 0.999),
    ("tiny_rnn", {}, "tiny", 0.999),
    ("tiny_rnn", {"cell": "gru"}, "small", 0.999),
    ("digits", {}, "tiny", 0.999),
    ("mlp", {"input_size": 64, "hidden": [64, 64]}, "small", 0.999),
    ("resnet50", {"input_size": 32}, "brainslice-128", 0.998),
    ("lstm", {"input_size": 64, "hidden_size": 64, "timesteps": 4}, "small", 0.999),
    ("gru", {"input_size": 64, "hidden_size": 64, "timesteps": 4}, "small", 0.999),
]
SLOW = [
    ("resnet152", {"input_size": 32}, "brainslice-128", 0.998),
    ("densenet121", {"input_size": 32}, "brainslice-128", 0.998),
    ("vgg16", {"input_size": 32}, "brainslice-128", 0.998),
    ("ssd_vgg16", {"input_size": 64}, "brainslice-128", 0.998),
    ("lstm", {}, "brainslice-128", 0.999),
    ("gru", {}, "brainwave-s10", 0.98),  # ms-fp9: 3 mantissa bits, one exponent per 400 elements
]


def _check(name, kwargs, config, bound):
    model = zoo.build(name, seed=0, **kwargs)
    ex = Executor(read_model(compile_model(model, config=config)))
    feeds = random_inputs(model, seed=1)
    got, stats = ex.run(feeds)
    ref = reference(model, feeds)
    for k, r in ref.items():
        assert cosine(got[k], r) >= bound, (k, cosine(got[k], r))
        if r.ndim == 2 and r.shape[0] == 1 and r.shape[1] > 1:
            assert got[k].argmax() == r.argmax()
    assert stats.npu_cycles > 0
    report = ex.manifest["compiler"]["report"]
    assert report["npu_mac_share"] == 1.0, [L["name"] for L in report["layers"] if L["target"] != "npu"]
    return ex


@pytest.mark.parametrize("name,kwargs,config,bound", FAST, ids=[f"{m[0]}-{m[2]}" for m in FAST])
def test_zoo_model(name, kwargs, config, bound):
    _check(name, kwargs, config, bound)


@pytest.mark.slow
@pytest.mark.parametrize("name,kwargs,config,bound", SLOW, ids=[f"{m[0]}-{m[2]}" for m in SLOW])
def test_zoo_model_large(name, kwargs, config, bound):
    _check(name, kwargs, config, bound)


def test_resnet50_streams_weights_on_brainslice():
    ex = _check("resnet50", {"input_size": 32}, "brainslice-128", 0.998)
    assert ex.manifest["weights"]["mode"] == "streaming"
    assert ex.manifest["weights"]["tiles"] > ex.config.mrf_tiles


@pytest.mark.parametrize("name", ["digits", "digits_cnn", "digits_rnn"])
def test_digits_accuracy_on_real_data(name):
    """Float vs NPU accuracy on the held-out digits (the float model's accuracy comes with the dataset), for the
    MLP, the CNN and the RNN trained here."""
    import importlib

    data = zoo.digits_dataset(seed=0) if name == "digits" else \
        importlib.import_module(f"compiler.zoo.{name}").dataset(seed=0)
    model = zoo.build(name, seed=0)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    ex = Executor(read_model(compile_model(model, config="small")))
    if name != "digits":  # (the MLP's Flatten of the 8x8 image runs on the host)
        assert {s["kind"] for s in ex.manifest["plan"]} == {"npu"}
    pred = np.array([ex.run({"input": x.reshape(shape)})[0]["output"].argmax() for x in data.x_test])
    npu_acc = float((pred == data.y_test).mean())
    assert data.float_accuracy > 0.9
    assert npu_acc >= data.float_accuracy - 0.01, (npu_acc, data.float_accuracy)


@pytest.mark.parametrize("classifier", ["mlp", "logreg"])
def test_sklearn_pipeline_with_host_fallback(classifier):
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from skl2onnx import to_onnx
    import onnxruntime as ort

    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    clf = MLPClassifier((16,), max_iter=2000, random_state=0) if classifier == "mlp" else LogisticRegression(max_iter=500)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = make_pipeline(StandardScaler(), clf).fit(x, y)
    onx = to_onnx(pipe, x[:1], target_opset={"": 17, "ai.onnx.ml": 3})  # ZipMap, ArgMax, ml ops on the host
    ex = Executor(read_model(compile_model(onx, config="small", input_shapes=["X=1,4"])))
    kinds = [s["kind"] for s in ex.manifest["plan"]]
    if classifier == "mlp":
        assert "npu" in kinds and "host" in kinds
    sess = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    agree = 0
    for i in range(0, len(x), 3):
        got, _ = ex.run({"X": x[i:i + 1]})
        ref = sess.run(None, {"X": x[i:i + 1]})
        agree += int(got["output_label"][0] == ref[0][0])
        p = np.array([list(d.values()) for d in got["output_probability"]])
        r = np.array([list(d.values()) for d in ref[1]])
        assert np.abs(p - r).max() < 0.02
    assert agree == len(range(0, len(x), 3))


@pytest.mark.parametrize("fmt,bound", [("msfp16", 0.999), ("msfp12", 0.98), ("ms-fp9", 0.98), ("ms-fp8", 0.93)])
def test_format_override(fmt, bound):
    """--format sets both weight and activation formats; fidelity degrades with the mantissa as expected."""
    from compiler.check import check_model

    res = check_model(zoo.build("tiny_cnn", seed=0, input_size=16), config="small", fmt=fmt, inputs=4)
    assert res.format == fmt
    assert res.cosine_min >= bound, res.cosine_min


@pytest.mark.parametrize("config,bound", [("brainslice-128", 0.999), ("brainwave-s10", 0.95)])  # s10: ms-fp9
def test_tiny_models_stay_on_the_npu_on_big_configs(config, bound):
    for name in ("tiny_cnn", "tiny_rnn", "digits"):
        _check(name, {}, config, bound)
