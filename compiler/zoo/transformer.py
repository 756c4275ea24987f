"""Transformers as torch.onnx.export (opset 17) writes them: BERT (post-LN encoder), GPT-2 (pre-LN
decoder with a causal mask) and ViT (pre-LN encoder on 16x16 patches).

Every ``nn.Linear`` is ``MatMul(x [1, T, in], W [in, out]) + Add(b)``; attention is
Reshape [1, T, heads, d] -> Transpose -> ``MatMul(Q, K^T)`` -> Div by sqrt(d) (+ the causal mask)
-> Softmax -> ``MatMul(., V)`` -> Transpose -> Reshape; LayerNormalization is the opset-17 operator;
GELU is the erf form (BERT, ViT) or GPT-2's tanh form, written out as the exporter does.

No tokenizer or vocabulary: BERT and GPT-2 take the embeddings, ``input`` [1, T, hidden] (the
embedding lookup is a Gather the host would do), and return the last hidden state ``output``
[1, T, hidden] (GPT-2's after its final LayerNorm).  ViT takes an image [1, 3, S, S] and returns
class scores.  Weights are N(0, 1/fan_in) (so each sublayer contributes as much as its input, and
the output depends on the input), biases N(0, 0.02), LayerNorm gamma U(0.8, 1.2) and beta N(0, 0.02):
LayerNorm keeps every activation in range whatever the depth.
"""
from __future__ import annotations

import math

import numpy as np
import onnx

from compiler.zoo.errors import ZooError
from compiler.zoo.layers import GraphBuilder

LN_EPSILON = 1e-12  # BERT's; GPT-2 and ViT use 1e-5 / 1e-6 (passed explicitly)
MASK_VALUE = -10000.0  # what GPT-2's exporter adds where attention is masked (fp16-representable)


class _Transformer:
    """Layer helpers on a :class:`GraphBuilder` for [1, T, D] activations."""

    def __init__(self, b: GraphBuilder, heads: int, ln_eps: float):
        self.b, self.heads, self.ln_eps = b, heads, ln_eps
        self._consts: dict[tuple, str] = {}

    def const(self, value, dtype=np.float32) -> str:
        arr = np.asarray(value, dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            self._consts[key] = self.b.param(f"onnx::Constant_{len(self._consts)}", arr)
        return self._consts[key]

    def linear(self, x: str, out: int, path: str) -> str:
        b = self.b
        fan_in = b.shapes[x][-1]
        w = (b.rng.standard_normal((fan_in, out), dtype=np.float32) / np.float32(math.sqrt(fan_in)))
        bias = b.rng.normal(0.0, 0.02, out).astype(np.float32)
        y = b.node("MatMul", [x, b.param(f"{path}.weight", w)], path, (*b.shapes[x][:-1], out))
        return b.node("Add", [b.param(f"{path}.bias", bias), y], path, b.shapes[y])

    def layernorm(self, x: str, path: str) -> str:
        b = self.b
        d = b.shapes[x][-1]
        gamma = b.rng.uniform(0.8, 1.2, d).astype(np.float32)
        beta = b.rng.normal(0.0, 0.02, d).astype(np.float32)
        return b.node("LayerNormalization", [x, b.param(f"{path}.weight", gamma), b.param(f"{path}.bias", beta)],
                      path, b.shapes[x], axis=-1, epsilon=self.ln_eps)

    def gelu_erf(self, x: str, path: str) -> str:
        b, s = self.b, self.b.shapes[x]
        t = b.node("Div", [x, self.const(math.sqrt(2.0))], path, s)
        t = b.node("Erf", [t], path, s)
        t = b.node("Add", [t, self.const(1.0)], path, s)
        t = b.node("Mul", [x, t], path, s)
        return b.node("Mul", [t, self.const(0.5)], path, s)

    def gelu_tanh(self, x: str, path: str) -> str:
        b, s = self.b, self.b.shapes[x]
        cube = b.node("Pow", [x, self.const(3.0)], path, s)
        t = b.node("Mul", [cube, self.const(0.044715)], path, s)
        t = b.node("Add", [x, t], path, s)
        t = b.node("Mul", [t, self.const(math.sqrt(2.0 / math.pi))], path, s)
        t = b.node("Tanh", [t], path, s)
        t = b.node("Add", [t, self.const(1.0)], path, s)
        h = b.node("Mul", [x, self.const(0.5)], path, s)
        return b.node("Mul", [h, t], path, s)

    def _heads(self, x: str, path: str, key: bool = False) -> str:
        """[1, T, D] -> [1, heads, T, d] (keys: [1, heads, d, T])."""
        b = self.b
        _, T, D = b.shapes[x]
        h = self.heads
        y = b.reshape(x, [1, T, h, D // h], path)
        perm = [0, 2, 3, 1] if key else [0, 2, 1, 3]
        return b.transpose(y, perm, path)

    def attention(self, x: str, path: str, causal: bool = False) -> str:
        b = self.b
        _, T, D = b.shapes[x]
        h = self.heads
        d = D // h
        q = self._heads(self.linear(x, D, f"{path}.query"), f"{path}.q")
        k = self._heads(self.linear(x, D, f"{path}.key"), f"{path}.k", key=True)
        v = self._heads(self.linear(x, D, f"{path}.value"), f"{path}.v")
        s = b.node("MatMul", [q, k], path, (1, h, T, T))
        s = b.node("Div", [s, self.const(math.sqrt(d))], path, (1, h, T, T))
        if causal:
            mask = np.triu(np.full((T, T), MASK_VALUE, np.float32), 1).reshape(1, 1, T, T)
            s = b.node("Add", [s, b.param(f"{path}.causal_mask", mask)], path, (1, h, T, T))
        p = b.node("Softmax", [s], path, (1, h, T, T), axis=-1)
        o = b.node("MatMul", [p, v], path, (1, h, T, d))
        o = b.transpose(o, [0, 2, 1, 3], path)
        o = b.reshape(o, [1, T, D], path)
        return self.linear(o, D, f"{path}.output")


def _check(name: str, **sizes) -> None:
    for key, value in sizes.items():
        if not isinstance(value, int) or value < 1:
            raise ZooError(f"{name}: {key} must be a positive integer, not {value!r}")
    if sizes["hidden"] % sizes["heads"]:
        raise ZooError(f"{name}: hidden {sizes['hidden']} is not a multiple of heads {sizes['heads']}")


def build_bert(name: str, *, seed: int, input_size: int, layers: int = 12, hidden: int = 768, heads: int = 12,
               intermediate: int = 3072) -> onnx.ModelProto:
    """BERT-base encoder (post-LN): ``input_size`` is the sequence length; in and out [1, T, hidden]."""
    _check(name, layers=layers, hidden=hidden, heads=heads, intermediate=intermediate, input_size=input_size)
    b = GraphBuilder(name, seed=seed)
    t = _Transformer(b, heads, LN_EPSILON)
    x = b.input("input", (1, input_size, hidden))
    x = t.layernorm(x, "embeddings.LayerNorm")
    for i in range(layers):
        p = f"encoder.layer.{i}"
        a = t.attention(x, f"{p}.attention.self")
        x = t.layernorm(b.add(a, x, f"{p}.attention.output"), f"{p}.attention.output.LayerNorm")
        f = t.gelu_erf(t.linear(x, intermediate, f"{p}.intermediate.dense"), f"{p}.intermediate")
        f = t.linear(f, hidden, f"{p}.output.dense")
        out = "output" if i == layers - 1 else None
        x = b.add(f, x, f"{p}.output")
        x = b.node("LayerNormalization", [x, *_ln_params(t, f"{p}.output.LayerNorm", hidden)],
                   f"{p}.output.LayerNorm", b.shapes[x], output=out, axis=-1, epsilon=LN_EPSILON)
    return b.finish([x], doc=f"{name}: BERT encoder, {layers} layers, hidden {hidden}, {heads} heads, "
                             f"sequence {input_size}")


def _ln_params(t: _Transformer, path: str, d: int) -> list[str]:
    b = t.b
    gamma = b.rng.uniform(0.8, 1.2, d).astype(np.float32)
    beta = b.rng.normal(0.0, 0.02, d).astype(np.float32)
    return [b.param(f"{path}.weight", gamma), b.param(f"{path}.bias", beta)]


def build_gpt2(name: str, *, seed: int, input_size: int, layers: int = 12, hidden: int = 768, heads: int = 12,
               intermediate: int = 3072) -> onnx.ModelProto:
    """GPT-2 small (pre-LN, causal self-attention, tanh GELU, final LayerNorm); ``input_size`` is the
    sequence length; in and out [1, T, hidden]."""
    _check(name, layers=layers, hidden=hidden, heads=heads, intermediate=intermediate, input_size=input_size)
    b = GraphBuilder(name, seed=seed)
    t = _Transformer(b, heads, 1e-5)
    x = b.input("input", (1, input_size, hidden))
    for i in range(layers):
        p = f"h.{i}"
        a = t.attention(t.layernorm(x, f"{p}.ln_1"), f"{p}.attn", causal=True)
        x = b.add(x, a, f"{p}.attn")
        m = t.gelu_tanh(t.linear(t.layernorm(x, f"{p}.ln_2"), intermediate, f"{p}.mlp.c_fc"), f"{p}.mlp")
        x = b.add(x, t.linear(m, hidden, f"{p}.mlp.c_proj"), f"{p}.mlp")
    x = b.node("LayerNormalization", [x, *_ln_params(t, "ln_f", hidden)], "ln_f", b.shapes[x], output="output",
               axis=-1, epsilon=1e-5)
    return b.finish([x], doc=f"{name}: GPT-2 decoder, {layers} layers, hidden {hidden}, {heads} heads, "
                             f"sequence {input_size}")


def build_vit(name: str, *, seed: int, input_size: int, patch: int = 16, layers: int = 12, hidden: int = 768,
              heads: int = 12, intermediate: int = 3072, num_classes: int = 1000) -> onnx.ModelProto:
    """ViT-B/16 (torchvision's vit_b_16 layout): patch Conv, class token, position embedding, pre-LN
    encoder, final LayerNorm, head on the class token; input [1, 3, S, S], output [1, classes]."""
    _check(name, layers=layers, hidden=hidden, heads=heads, intermediate=intermediate, patch=patch,
           num_classes=num_classes, input_size=input_size)
    if input_size % patch:
        raise ZooError(f"{name}: input size {input_size} is not a multiple of the patch size {patch}")
    b = GraphBuilder(name, seed=seed)
    t = _Transformer(b, heads, 1e-6)
    x = b.input("input", (1, 3, input_size, input_size))
    x = b.conv(x, hidden, patch, "conv_proj", stride=patch)
    n = (input_size // patch) ** 2
    x = b.reshape(x, [1, hidden, n], "encoder")
    x = b.transpose(x, [0, 2, 1], "encoder")
    cls = b.param("class_token", b.rng.normal(0.0, 1.0, (1, 1, hidden)).astype(np.float32))
    x = b.node("Concat", [cls, x], "encoder", (1, n + 1, hidden), axis=1)
    pos = b.param("encoder.pos_embedding", b.rng.normal(0.0, 0.5, (1, n + 1, hidden)).astype(np.float32))
    x = b.node("Add", [x, pos], "encoder", (1, n + 1, hidden))
    for i in range(layers):
        p = f"encoder.layers.encoder_layer_{i}"
        a = t.attention(t.layernorm(x, f"{p}.ln_1"), f"{p}.self_attention")
        x = b.add(x, a, p)
        m = t.gelu_erf(t.linear(t.layernorm(x, f"{p}.ln_2"), intermediate, f"{p}.mlp.0"), f"{p}.mlp")
        x = b.add(x, t.linear(m, hidden, f"{p}.mlp.3"), p)
    x = t.layernorm(x, "encoder.ln")
    first = b.param("onnx::Gather_index", np.array(0, np.int64))
    x = b.node("Gather", [x, first], "encoder", (1, hidden), axis=1)
    out = b.gemm(x, num_classes, "heads.head", output="output")
    return b.finish([out], doc=f"{name}: ViT, patch {patch}, {layers} layers, hidden {hidden}, "
                               f"{input_size}x{input_size} input")
