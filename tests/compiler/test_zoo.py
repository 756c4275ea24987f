"""The model zoo: every model builds, checks and runs; full-size counts match torchvision."""
from __future__ import annotations

import argparse
import collections
import functools

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from compiler import zoo
from cli import zoo as zoo_cli
from npu.errors import NpuError

# Reduced sizes keep the whole file fast; every CNN must accept 32.
SMALL_INPUT = {"tiny_cnn": 8, "digits": 8, "digits_cnn": 8, "digits_rnn": 8, "mlp": 784, "lstm": 64, "gru": 64,
               "tiny_rnn": 8, "bert_base": 16, "gpt2": 16}
TINY_TRANSFORMER = {"layers": 2, "hidden": 128, "heads": 2, "intermediate": 512}
SMALL_PARAMS = {"lstm": {"hidden_size": 64, "timesteps": 5}, "gru": {"hidden_size": 64, "timesteps": 5},
                "bert_base": TINY_TRANSFORMER, "gpt2": TINY_TRANSFORMER, "vit_b16": TINY_TRANSFORMER}
CNN_SIZE = 32

# torchvision's sum(p.numel() for p in model.parameters()) at 1000 classes.
TORCHVISION_PARAMETERS = {
    "resnet50": 25_557_032,
    "resnet152": 60_192_808,
    "vgg16": 138_357_544,
    "densenet121": 7_978_856,
}


@functools.lru_cache(maxsize=None)
def small_build(name: str, seed: int = 0) -> onnx.ModelProto:
    """Shared between tests, which must not modify it."""
    return zoo.build(name, seed=seed, **small_kwargs(name))


def small_kwargs(name: str) -> dict:
    return {"input_size": SMALL_INPUT.get(name, CNN_SIZE), **SMALL_PARAMS.get(name, {})}


def run(model: onnx.ModelProto, seed: int = 1) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "input"
    x = np.random.default_rng(seed).standard_normal(inp.shape).astype(np.float32)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"input": x})))


def op_counts(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(n.op_type for n in model.graph.node)


@pytest.fixture(scope="module")
def full_size():
    """The torchvision-sized models, built once (VGG-16 is 550 MB of weights)."""
    return {name: zoo.build(name) for name in TORCHVISION_PARAMETERS}


# -- every model ------------------------------------------------------------------


@pytest.mark.parametrize("name", list(zoo.MODELS))
def test_builds_checks_and_runs(name):
    entry = zoo.MODELS[name]
    model = small_build(name)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    outputs = run(model)
    for value in outputs.values():
        assert np.isfinite(value).all()
        assert value.std() > 1e-3, "outputs all equal"
    if entry.kind == "classifier":
        classes = entry.params.get("num_classes", 10)
        assert list(outputs) == ["output"]
        assert outputs["output"].shape == (1, classes)
        assert 0.1 < outputs["output"].std() < 50
    elif entry.kind == "detector":
        assert list(outputs) == ["boxes", "scores"]
        priors = outputs["boxes"].shape[1]
        assert outputs["boxes"].shape == (1, priors, 4)
        assert outputs["scores"].shape == (1, priors, entry.params["num_classes"])
    else:
        (out,) = outputs.values()
        assert out.ndim in (2, 3)


# ResNet-152 differs from ResNet-50 only in depth; SSD at 64 keeps its unpadded extras.
@pytest.mark.parametrize("name", ["resnet50", "densenet121", "vgg16", "ssd_vgg16"])
def test_cnns_take_64(name):
    model = zoo.build(name, input_size=64)
    graph_input = model.graph.input[0].type.tensor_type.shape
    assert [d.dim_value for d in graph_input.dim] == [1, 3, 64, 64]
    assert all(np.isfinite(v).all() for v in run(model).values())


def float_weights(model: onnx.ModelProto) -> dict[str, bytes]:
    return {t.name: t.raw_data for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}


def test_same_seed_same_model_other_seed_other_weights():
    for name in ("tiny_cnn", "resnet50", "lstm", "digits"):
        a, b, c = small_build(name), zoo.build(name, **small_kwargs(name)), small_build(name, seed=1)
        assert a.SerializeToString() == b.SerializeToString(), name
        wa, wc = float_weights(a), float_weights(c)
        assert wa.keys() == wc.keys()
        assert all(wa[k] != wc[k] for k in wa), name


def test_batchnorm_statistics_are_not_trivial():
    model = small_build("resnet50")
    init = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    assert len(bns) == 53
    for bn in bns:
        gamma, beta, mean, var = (init[i] for i in bn.input[1:])
        assert (var > 0).all() and not np.allclose(var, 1) and not np.allclose(mean, 0)
        assert not np.allclose(gamma, 1) and not np.allclose(beta, 0)


def test_convs_before_batchnorm_have_no_bias():
    model = small_build("densenet121")
    produced_by = {n.output[0]: n for n in model.graph.node}
    for bn in (n for n in model.graph.node if n.op_type == "BatchNormalization"):
        source = produced_by.get(bn.input[0])
        if source is not None and source.op_type == "Conv":
            assert len(source.input) == 2, source.name


# -- full-size models ---------------------------------------------------------------


@pytest.mark.parametrize("name", list(TORCHVISION_PARAMETERS))
def test_parameter_count_equals_torchvision(full_size, name):
    assert zoo.count_parameters(full_size[name]) == TORCHVISION_PARAMETERS[name]


def test_resnet50_at_224(full_size):
    model = full_size["resnet50"]
    onnx.checker.check_model(model, full_check=True)
    assert op_counts(model) == {"Conv": 53, "BatchNormalization": 53, "Relu": 49, "Add": 16,
                                "MaxPool": 1, "GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1}
    # torchvision's 4.09 GFLOPs (multiply-accumulates, as usually quoted).
    assert zoo.count_macs(model) == pytest.approx(4.09e9, rel=0.01)


def test_resnet152_logits_stay_sane(full_size):
    logits = run(full_size["resnet152"])["output"]
    assert np.isfinite(logits).all()
    assert 0.5 < logits.std() < 20
    assert len(np.unique(logits)) > 900


def test_vgg16_classifier_follows_the_feature_map(full_size):
    def first_fc(model):
        return next(t for t in model.graph.initializer if t.name == "classifier.0.weight").dims

    assert list(first_fc(full_size["vgg16"])) == [4096, 512 * 7 * 7]
    assert "AveragePool" not in op_counts(full_size["vgg16"])  # 7x7 already: adaptive pooling is exact
    assert list(first_fc(zoo.build("vgg16", input_size=32))) == [4096, 512]
    assert list(first_fc(zoo.build("vgg16", input_size=64))) == [4096, 512 * 2 * 2]


def test_ssd300_has_8732_priors():
    model = zoo.build("ssd_vgg16")
    onnx.checker.check_model(model, full_check=True)
    outputs = run(model)
    assert outputs["boxes"].shape == (1, 8732, 4)
    assert outputs["scores"].shape == (1, 8732, 21)
    assert zoo.count_parameters(model) == 26_285_486  # ssd.pytorch's SSD300 with its L2Norm weight
    dilated = [n for n in model.graph.node if n.op_type == "Conv"
               and any(a.name == "dilations" and list(a.ints) == [6, 6] for a in n.attribute)]
    assert len(dilated) == 1


# -- recurrent and small models --------------------------------------------------------


def test_rnn_defaults_are_deepbench_like_and_gru_resets_like_pytorch():
    for name, op in (("lstm", "LSTM"), ("gru", "GRU")):
        model = zoo.build(name)
        (cell,) = [n for n in model.graph.node if n.op_type == op]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in cell.attribute}
        assert attrs["hidden_size"] == 512 and attrs["layout"] == 0
        assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [25, 1, 512]
        if op == "GRU":
            assert attrs["linear_before_reset"] == 1
    head = zoo.build("gru", hidden_size=16, input_size=8, timesteps=3, output_size=5)
    assert run(head)["output"].shape == (1, 5)


def test_tiny_models_fit_rtl_simulation():
    cnn = zoo.build("tiny_cnn")
    assert zoo.count_macs(cnn) < 100_000
    expected_ops = {"Conv", "BatchNormalization", "MaxPool", "Add", "GlobalAveragePool", "Gemm"}
    assert expected_ops <= op_counts(cnn).keys()
    rnn = zoo.build("tiny_rnn")
    assert {"LSTM", "Gemm"} <= op_counts(rnn).keys()
    assert run(rnn)["output"].shape == (1, 8)


def test_count_macs_infers_shapes_when_value_info_is_missing():
    model = onnx.ModelProto()
    model.CopyFrom(small_build("tiny_cnn"))
    expected = zoo.count_macs(model)
    del model.graph.value_info[:]
    assert zoo.count_macs(model) == expected == 69_280


# -- digits ------------------------------------------------------------------------


def test_digits_is_trained_and_its_accuracy_is_the_exported_models():
    data = zoo.digits_dataset()
    assert data.x_test.dtype == np.float32 and data.x_test.shape[1:] == (1, 8, 8)
    assert len(data.x_test) == len(data.y_test) > 400
    assert data.float_accuracy > 0.9
    model = zoo.build("digits")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    predicted = [session.run(None, {"input": x[None]})[0].argmax() for x in data.x_test]
    accuracy = np.mean(np.array(predicted) == data.y_test)
    # float32 in numpy and in onnxruntime may round one borderline digit differently.
    assert accuracy == pytest.approx(data.float_accuracy, abs=1 / len(data.y_test))


@pytest.mark.parametrize("name, ops", [("digits_cnn", ["Conv", "Relu", "MaxPool", "Conv", "Relu", "Flatten", "Gemm"]),
                                       ("digits_rnn", ["RNN", "Flatten", "Gemm"])])
def test_the_digits_cnn_and_rnn_are_trained_and_their_accuracy_is_the_exported_models(name, ops):
    """Trained here in numpy: each model's own forward pass and its exported ONNX classify the held-out digits
    alike, and well (an untrained network would score about 10 %)."""
    import importlib

    data = importlib.import_module(f"compiler.zoo.{name}").dataset()
    assert data.float_accuracy > 0.95
    model = zoo.build(name)
    assert [n.op_type for n in model.graph.node] == ops
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    predicted = [session.run(None, {"input": x.reshape(shape)})[0].argmax() for x in data.x_test]
    assert np.mean(np.array(predicted) == data.y_test) == pytest.approx(data.float_accuracy, abs=1 / len(data.y_test))


# -- errors --------------------------------------------------------------------------


def test_unknown_name_lists_valid_names():
    with pytest.raises(NpuError, match=r"unknown model 'resnet51'; valid names: .*resnet50.*digits"):
        zoo.build("resnet51")


@pytest.mark.parametrize("name, kwargs, message", [
    ("vgg16", {"input_size": 16}, r"input size 16 is too small; it needs at least 32"),
    ("digits", {"input_size": 28}, r"fixed at 8"),
    ("resnet50", {"depth": 18}, r"unknown parameter\(s\) depth; valid: num_classes"),
    ("tiny_rnn", {"cell": "rnn"}, r"cell must be 'lstm' or 'gru'"),
])
def test_bad_requests_raise_zoo_errors(name, kwargs, message):
    with pytest.raises(zoo.ZooError, match=message):
        zoo.build(name, **kwargs)


# -- command line --------------------------------------------------------------------


def npu_zoo(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="npu")
    zoo_cli.add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["zoo", *argv])
    return args.func(args)


def test_cli_list_and_build(tmp_path, capsys):
    assert npu_zoo("list") == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in zoo.MODELS)
    out = tmp_path / "mlp.onnx"
    assert npu_zoo("build", "mlp", "-o", str(out), "--seed", "2", "--param", "hidden=32,16") == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("mlp: 25,818 parameters") and str(out) in line
    model = onnx.load(out)
    assert model.graph.node[0].op_type == "Gemm"
    assert {p.key: p.value for p in model.metadata_props}["zoo_seed"] == "2"
    with pytest.raises(zoo.ZooError, match="not a valid int"):
        npu_zoo("build", "lstm", "-o", str(out), "--param", "timesteps=many")
