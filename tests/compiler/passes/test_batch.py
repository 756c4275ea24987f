"""A batch of independent samples compiles at batch 1 and runs sample by sample (compiler/passes/batch.py)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from compiler import compile_model, compile_report, zoo
from compiler.passes.batch import split_batch
from helpers import cosine, make_model, reference, weights
from npu.errors import ModelFileError
from npu.modelfile import read_model
from runtime.executor import Executor


def batched(model: onnx.ModelProto, b: int) -> onnx.ModelProto:
    """The zoo model with batch ``b`` declared on its input and output (as an exporter with a fixed batch writes)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in list(m.graph.input) + list(m.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_value = b
    del m.graph.value_info[:]
    return m


def test_a_cnn_at_batch_3_runs_every_sample_on_the_npu():
    model = batched(zoo.build("tiny_cnn", seed=0), 3)
    rep = compile_report(model, config="tiny")
    assert rep.npu_mac_share == 1.0 and rep.batch == 3      # batch-1-only layers (Conv, MaxPool) stay on the NPU
    data = compile_model(model, config="tiny")
    ex = Executor(read_model(data))
    x = np.random.default_rng(1).standard_normal((3, 3, 8, 8)).astype(np.float32)
    (name,) = [o.name for o in model.graph.output]
    got, stats = ex.run({model.graph.input[0].name: x})
    want = reference(model, {model.graph.input[0].name: x})[name]
    assert got[name].shape == want.shape == (3, 10)
    for i in range(3):
        assert cosine(got[name][i], want[i]) > 0.999
    # what depends on the sample: the differences between the samples' outputs
    assert cosine(got[name][0] - got[name][1], want[0] - want[1]) > 0.99
    assert cosine(got[name][1] - got[name][2], want[1] - want[2]) > 0.99
    one = Executor(read_model(compile_model(zoo.build("tiny_cnn", seed=0), config="tiny")))
    _, single = one.run({model.graph.input[0].name: x[:1]})
    assert stats.npu_cycles == 3 * single.npu_cycles and stats.extra["batch"] == 3


def test_samples_that_meet_keep_their_batch():
    """y = conv(x) - mean over the batch of conv(x): the samples interact, so batch 1 would change the result."""
    rng = np.random.default_rng(0)
    model = make_model([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                        helper.make_node("ReduceMean", ["c"], ["m"], axes=[0], keepdims=1),
                        helper.make_node("Sub", ["c", "m"], ["y"])],
                       {"x": [2, 4, 6, 6]}, {"y": [2, 8, 6, 6]}, {"w": weights(rng, 8, 4, 3, 3)}, opset=17)
    kept, b = split_batch(model)
    assert b == 1 and kept is model


def test_a_native_batch_is_left_alone():
    """Gemm maps [B, K] itself: an MLP at batch 4 is not split."""
    model = batched(zoo.build("mlp", seed=0), 4)
    _, b = split_batch(model)
    assert b == 1
    assert compile_report(model, config="small").batch == 1


def test_a_model_file_whose_batch_disagrees_with_its_inputs_is_refused(tmp_path):
    import json
    import zipfile

    data = compile_model(batched(zoo.build("tiny_cnn", seed=0), 2), config="tiny")
    src, dst = tmp_path / "m.npu", tmp_path / "bad.npu"
    src.write_bytes(data)
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            body = zin.read(item.filename)
            if item.filename == "manifest.json":
                manifest = json.loads(body)
                manifest["batch"]["size"] = 5
                body = json.dumps(manifest).encode()
            zout.writestr(item, body)
    with pytest.raises(ModelFileError, match=r"manifest.inputs\[0\].shape"):
        read_model(dst.read_bytes())
