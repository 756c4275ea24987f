"""npu check (compiler/check.py): what it reports is the compiled model's, for every output."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import helper

from compiler import compile_model, compile_report, zoo
from compiler.check import check_model, random_feeds
from helpers import make_model
from npu.modelfile import read_model
from runtime.executor import Executor


def test_per_layer_comparison_reports_the_latency_of_the_model_as_compiled():
    """The per-layer outputs come from a second compilation (they stop fusions and add output chains);
    latency and output errors are the plain model's."""
    model = zoo.build("tiny_cnn", seed=0)
    plain = check_model(model, "tiny", inputs=2)
    layered = check_model(model, "tiny", inputs=2, per_layer=True)
    assert layered.npu_cycles == plain.npu_cycles == compile_report(model, "tiny").total_cycles
    assert layered.latency_us == plain.latency_us and layered.outputs == plain.outputs
    assert len(layered.layers) > 5 and min(t.cosine_min for t in layered.layers) > 0.99


def two_heads():
    """A trunk and two classifier heads (10 and 5 classes) and a regression output."""
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("Gemm", ["x", "W"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "A"], ["logits_a"], transB=1),
             helper.make_node("Gemm", ["r", "B"], ["logits_b"], transB=1),
             helper.make_node("Gemm", ["r", "C"], ["box"], transB=1), helper.make_node("Flatten", ["box"], ["value"])]
    inits = {k: (rng.standard_normal(s) / np.sqrt(s[1])).astype(np.float32)
             for k, s in {"W": (24, 16), "A": (10, 24), "B": (5, 24), "C": (1, 24)}.items()}
    return make_model(nodes, {"x": [1, 16]}, {"logits_a": None, "logits_b": None, "value": None}, inits)


def test_top_k_agreement_of_every_classifier_output():
    model = two_heads()
    res = check_model(model, "tiny", fmt="bfp-e8m3b8", inputs=30, seed=1)
    # the reference: the same feeds through the simulator and onnxruntime, counted here
    ex = Executor(read_model(compile_model(model, "tiny", fmt="bfp-e8m3b8")))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    agree = {"logits_a": [0, 0], "logits_b": [0, 0]}
    for feed in random_feeds(model, 30, 1):
        got, ref = ex.run(feed)[0], dict(zip(["logits_a", "logits_b"], sess.run(["logits_a", "logits_b"], feed)))
        for name, (r, g) in {n: (ref[n].ravel(), got[n].ravel()) for n in agree}.items():
            agree[name][0] += int(g.argmax() == r.argmax())
            agree[name][1] += int(r.argmax() in np.argsort(-g)[:5])
    outs = {t.name: t for t in res.outputs}
    for name, (top1, top5) in agree.items():
        assert (outs[name].top1_agreement, outs[name].top5_agreement) == (top1 / 30, top5 / 30)
    assert outs["value"].top1_agreement is None  # [1, 1]: not a classifier
    assert res.top1_agreement == min(agree["logits_a"][0], agree["logits_b"][0]) / 30
    assert res.top5_agreement == min(agree["logits_a"][1], agree["logits_b"][1]) / 30
