"""GELU (erf and tanh idioms, opset-20 Gelu), swish x*Sigmoid(x), HardSwish, HardSigmoid and x*HardSigmoid(x)
as activation-unit instructions (compiler/passes/activations.py, compiler/ops/eltwise.py), end to end against
onnxruntime, input-sensitively: out(x1) - out(x2) on the simulator against onnxruntime's."""
from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import helper

from compiler import compile_model
from helpers import cosine, make_model, reference, weights
from npu.modelfile import read_model
from runtime.executor import Executor

RNG = np.random.default_rng(0)
D = 16


def c(name, value):
    return name, np.array(value, np.float32)


def gelu_erf(x, y):
    return [helper.make_node("Div", [x, "sqrt2"], ["g.d"]), helper.make_node("Erf", ["g.d"], ["g.e"]),
            helper.make_node("Add", ["g.e", "one"], ["g.a"]), helper.make_node("Mul", [x, "g.a"], ["g.m"]),
            helper.make_node("Mul", ["g.m", "half"], [y])]


def gelu_tanh(x, y):
    return [helper.make_node("Mul", [x, "half"], ["g.h"]), helper.make_node("Pow", [x, "three"], ["g.p"]),
            helper.make_node("Mul", ["g.p", "k1"], ["g.c"]), helper.make_node("Add", [x, "g.c"], ["g.s"]),
            helper.make_node("Mul", ["k0", "g.s"], ["g.k"]), helper.make_node("Tanh", ["g.k"], ["g.t"]),
            helper.make_node("Add", ["one", "g.t"], ["g.a"]), helper.make_node("Mul", ["g.h", "g.a"], [y])]


def swish(x, y):
    return [helper.make_node("Sigmoid", [x], ["g.s"]), helper.make_node("Mul", ["g.s", x], [y])]


def hard_swish_keras(x, y):
    return [helper.make_node("HardSigmoid", [x], ["g.s"], alpha=1 / 6, beta=0.5), helper.make_node("Mul", [x, "g.s"], [y])]


IDIOMS = {
    "gelu_erf": (gelu_erf, 17, "v_gelu"),
    "gelu_tanh": (gelu_tanh, 17, "v_gelut"),
    "gelu_op": (lambda x, y: [helper.make_node("Gelu", [x], [y])], 20, "v_gelu"),
    "gelu_op_tanh": (lambda x, y: [helper.make_node("Gelu", [x], [y], approximate="tanh")], 20, "v_gelut"),
    "swish": (swish, 17, "v_swish"),
    "hardswish": (lambda x, y: [helper.make_node("HardSwish", [x], [y])], 17, "v_hswish"),
    "hardswish_keras": (hard_swish_keras, 17, "v_hswish"),
    "hardsigmoid_torch": (lambda x, y: [helper.make_node("HardSigmoid", [x], [y], alpha=1 / 6)], 17, "v_hsigm"),
    "hardsigmoid_onnx": (lambda x, y: [helper.make_node("HardSigmoid", [x], [y])], 17, "v_hsigm"),
}
CONSTS = dict([c("sqrt2", math.sqrt(2)), c("one", 1.0), c("half", 0.5), c("three", 3.0), c("k1", 0.044715),
               c("k0", math.sqrt(2 / math.pi))])


def _model(name: str):
    idiom, opset, _ = IDIOMS[name]
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], transB=1), *idiom("h", "a"),
             helper.make_node("Gemm", ["a", "W2", "b2"], ["y"], transB=1)]
    inits = {"W1": weights(RNG, D, D, scale=0.8), "b1": weights(RNG, D, scale=0.3),
             "W2": weights(RNG, D, D), "b2": weights(RNG, D, scale=0.1), **CONSTS}
    used = {i for n in nodes for i in n.input}
    return make_model(nodes, {"x": [4, D]}, {"y": [4, D]}, {k: v for k, v in inits.items() if k in used}, opset=opset)


@pytest.mark.parametrize("name", sorted(IDIOMS))
def test_idiom_runs_on_the_npu_as_one_instruction(name):
    model = _model(name)
    data = compile_model(model, config="tiny")
    mf = read_model(data)
    assert {s["kind"] for s in mf.manifest["plan"]} == {"npu"}, name
    mnemonics = [i.mnemonic for s in mf.manifest["plan"] for i in mf.program(s["program"]).instructions]
    assert IDIOMS[name][2] in mnemonics
    # no leftover Erf/Tanh/Sigmoid instruction or extra elementwise multiply for the idiom
    assert "v_tanh" not in mnemonics and "v_sigm" not in mnemonics
    ex = Executor(mf)
    rng = np.random.default_rng(1)
    x1, x2 = (rng.standard_normal((4, D)).astype(np.float32) * 2 for _ in range(2))
    (g1, _), (g2, _) = ex.run({"x": x1}), ex.run({"x": x2})
    r1, r2 = reference(model, {"x": x1})["y"], reference(model, {"x": x2})["y"]
    assert cosine(g1["y"], r1) > 0.999
    assert cosine(g1["y"] - g2["y"], r1 - r2) > 0.999, name


def test_idiom_with_another_reader_is_left_alone():
    """The Erf's input also feeds the output: fusing would lose it; the nodes stay as they are."""
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], transB=1), *gelu_erf("h", "a"),
             helper.make_node("Add", ["a", "g.e"], ["y"])]
    inits = {"W1": weights(RNG, D, D), "b1": weights(RNG, D), **CONSTS}
    model = make_model(nodes, {"x": [4, D]}, {"y": [4, D]},
                       {k: v for k, v in inits.items() if k in {i for n in nodes for i in n.input}})
    mf = read_model(compile_model(model, config="tiny"))
    ex = Executor(mf)
    x = np.random.default_rng(2).standard_normal((4, D)).astype(np.float32)
    (got, _) = ex.run({"x": x})
    assert cosine(got["y"], reference(model, {"x": x})["y"]) > 0.999


def test_fused_node_falls_back_to_the_host():
    """A fused GELU whose input the NPU cannot take (rank 5) runs on the host as com.microsoft.Gelu."""
    nodes = gelu_erf("x", "y")
    model = make_model(nodes, {"x": [1, 2, 3, 4, 5]}, {"y": [1, 2, 3, 4, 5]},
                       {k: v for k, v in CONSTS.items() if k in ("sqrt2", "one", "half")})
    mf = read_model(compile_model(model, config="tiny"))
    ex = Executor(mf)
    x = np.random.default_rng(3).standard_normal((1, 2, 3, 4, 5)).astype(np.float32)
    (got, _) = ex.run({"x": x})
    np.testing.assert_allclose(got["y"], reference(model, {"x": x})["y"], rtol=1e-5, atol=1e-6)
