"""A small CNN trained here on scikit-learn's bundled 8x8 digits (no download, no deep-learning framework).

``Conv 3x3 (1->16, pad 1) -> Relu -> MaxPool 2 -> Conv 3x3 (16->32, pad 1) -> Relu -> Flatten -> Gemm 512->10``
on ``input`` [1, 1, 8, 8] (intensities 0..16 scaled to 0..1, the split of compiler/zoo/digits.py). Training is
plain numpy (im2col convolutions, hand-written backward pass, Adam, cross-entropy), seeded, a few seconds: a
network whose weights carry a trained network's structure, for judging number formats by accuracy
(benchmarks/bench_fidelity.py --accuracy) rather than by agreement with float on random weights.
"""
from __future__ import annotations

import functools

import numpy as np
import onnx

from compiler.zoo import digits
from compiler.zoo.layers import GraphBuilder
from compiler.zoo.train import fit, xent_grad

C1, C2, CLASSES = 16, 32, 10
EPOCHS, BATCH, LR, L2 = 8, 32, 5e-3, 1e-4


def _cols(x: np.ndarray) -> np.ndarray:
    """3x3, pad 1, stride 1 patches of x [B, C, H, W]: [B*H*W, C*9] (channel-major, as ONNX weights flatten)."""
    B, C, H, W = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))  # [B, C, H, W, 3, 3]
    return np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5)).reshape(B * H * W, C * 9)


def _conv(x, w, b):
    B, _, H, W = x.shape
    cols = _cols(x)
    out = cols @ w.reshape(len(w), -1).T + b
    return out.reshape(B, H, W, len(w)).transpose(0, 3, 1, 2), cols


def _conv_back(dout, cols, w, x_shape):
    B, C, H, W = x_shape
    d = dout.transpose(0, 2, 3, 1).reshape(-1, len(w))
    dw = (d.T @ cols).reshape(w.shape)
    dcols = (d @ w.reshape(len(w), -1)).reshape(B, H, W, C, 3, 3)
    dxp = np.zeros((B, C, H + 2, W + 2), np.float32)
    for ky in range(3):
        for kx in range(3):
            dxp[:, :, ky:ky + H, kx:kx + W] += dcols[..., ky, kx].transpose(0, 3, 1, 2)
    return dxp[:, :, 1:-1, 1:-1], dw, d.sum(0)


def _forward(p, x, keep: bool = False):
    a1, cols1 = _conv(x, p["w1"], p["b1"])
    r1 = np.maximum(a1, 0)
    B, C, H, W = r1.shape
    blocks = r1.reshape(B, C, H // 2, 2, W // 2, 2)
    m1 = blocks.max(axis=(3, 5))
    a2, cols2 = _conv(m1, p["w2"], p["b2"])
    r2 = np.maximum(a2, 0)
    flat = r2.reshape(B, -1)
    logits = flat @ p["w3"].T + p["b3"]
    if not keep:
        return logits
    return logits, dict(x=x, cols1=cols1, a1=a1, blocks=blocks, m1=m1, cols2=cols2, a2=a2, flat=flat)


def _grads(p, x, y):
    logits, t = _forward(p, x, keep=True)
    dlog = xent_grad(logits, y)
    g = {"w3": dlog.T @ t["flat"], "b3": dlog.sum(0)}
    dflat = dlog @ p["w3"]
    da2 = dflat.reshape(t["a2"].shape) * (t["a2"] > 0)
    dm1, g["w2"], g["b2"] = _conv_back(da2, t["cols2"], p["w2"], t["m1"].shape)
    blocks = t["blocks"]
    mask = blocks == t["m1"][:, :, :, None, :, None]
    mask = mask / mask.sum(axis=(3, 5), keepdims=True)  # ties share the gradient
    dr1 = (mask * dm1[:, :, :, None, :, None]).reshape(t["a1"].shape)
    da1 = dr1 * (t["a1"] > 0)
    _, g["w1"], g["b1"] = _conv_back(da1, t["cols1"], p["w1"], t["x"].shape)
    for k in ("w1", "w2", "w3"):
        g[k] = g[k] + L2 * p[k]
    return g


@functools.lru_cache(maxsize=4)
def _train(seed: int) -> tuple[tuple[str, np.ndarray], ...]:
    """Trained parameters (float32), deterministic for a seed on a given machine."""
    rng = np.random.default_rng(seed)
    x_train, _, y_train, _ = digits._split()
    x = x_train.reshape(-1, 1, digits.SIDE, digits.SIDE).astype(np.float32)

    def he(*shape):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))).astype(np.float32)

    p = {"w1": he(C1, 1, 3, 3), "b1": np.zeros(C1, np.float32), "w2": he(C2, C1, 3, 3),
         "b2": np.zeros(C2, np.float32), "w3": he(CLASSES, C2 * 16), "b3": np.zeros(CLASSES, np.float32)}
    p = fit(p, _grads, x, y_train, epochs=EPOCHS, batch=BATCH, lr=LR, rng=rng)
    return tuple((k, p[k]) for k in ("w1", "b1", "w2", "b2", "w3", "b3"))


def dataset(seed: int = 0) -> digits.DigitsData:
    """The held-out digits and the float accuracy of ``build("digits_cnn", seed=seed)`` on them."""
    _, x_test, _, y_test = digits._split()
    x = x_test.reshape(-1, 1, digits.SIDE, digits.SIDE)
    pred = _forward(dict(_train(seed)), x).argmax(1)
    return digits.DigitsData(x, y_test, float((pred == y_test).mean()))


def build(name: str, *, seed: int, input_size: int) -> onnx.ModelProto:
    p = dict(_train(seed))
    b = GraphBuilder(name, seed=seed)
    x = b.input("input", (1, 1, input_size, input_size))
    s = input_size
    for k, (w, bias, out) in enumerate(((p["w1"], p["b1"], C1), (p["w2"], p["b2"], C2)), 1):
        x = b.node("Conv", [x, b.param(f"conv{k}.weight", w), b.param(f"conv{k}.bias", bias)], f"conv{k}",
                   (1, out, s, s), kernel_shape=[3, 3], pads=[1] * 4, strides=[1, 1], dilations=[1, 1], group=1)
        x = b.relu(x, f"relu{k}")
        if k == 1:
            x = b.maxpool(x, 2, 2, "pool")
            s //= 2
    x = b.flatten(x, "flatten")
    out = b.linear(x, p["w3"], p["b3"], "fc", output="output")
    return b.finish([out], doc=f"{name}: a 2-conv CNN trained here on sklearn digits (seed {seed})")
