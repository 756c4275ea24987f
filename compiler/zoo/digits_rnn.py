"""A recurrent classifier trained here on scikit-learn's bundled 8x8 digits, read as sequences of rows.

``RNN (tanh, hidden 48) over 8 timesteps of 8 pixels -> Flatten(Y_h) -> Gemm 48->10`` on ``input`` [8, 1, 8]
(a digit's rows top to bottom, intensities 0..16 scaled to 0..1, the split of compiler/zoo/digits.py). Training
is plain numpy backpropagation through time with Adam, seeded, about a second: a recurrent network with trained
weights for judging number formats by accuracy (benchmarks/bench_fidelity.py), beside the MLP and the CNN.
"""
from __future__ import annotations

import functools

import numpy as np
import onnx

from compiler.zoo import digits
from compiler.zoo.layers import GraphBuilder
from compiler.zoo.train import fit, xent_grad

HIDDEN, CLASSES = 48, 10
EPOCHS, BATCH, LR = 40, 32, 1e-2


def _sequences(x: np.ndarray) -> np.ndarray:
    """[N, 64] intensities -> [N, T=8, 1, 8] sequences of rows (each one the model's [8, 1, 8] input)."""
    return x.reshape(-1, digits.SIDE, 1, digits.SIDE).astype(np.float32)


def _forward(p, xs: np.ndarray):
    """xs [N, T, 8]: hidden states [T+1, N, H] (h_0 = 0) and logits [N, 10]."""
    n, T, _ = xs.shape
    hs = [np.zeros((n, HIDDEN), np.float32)]
    for t in range(T):
        hs.append(np.tanh(xs[:, t] @ p["w"].T + hs[-1] @ p["r"].T + p["b"]))
    return hs, hs[-1] @ p["v"].T + p["c"]


def _grads(p, xs, y):
    hs, logits = _forward(p, xs)
    dlog = xent_grad(logits, y)
    g = {"v": dlog.T @ hs[-1], "c": dlog.sum(0), "w": np.zeros_like(p["w"]), "r": np.zeros_like(p["r"]),
         "b": np.zeros_like(p["b"])}
    dh = dlog @ p["v"]
    for t in range(xs.shape[1], 0, -1):
        da = dh * (1 - hs[t] ** 2)
        g["w"] += da.T @ xs[:, t - 1]
        g["r"] += da.T @ hs[t - 1]
        g["b"] += da.sum(0)
        dh = da @ p["r"]
    return g


@functools.lru_cache(maxsize=4)
def _train(seed: int) -> tuple[tuple[str, np.ndarray], ...]:
    rng = np.random.default_rng(seed)
    x_train, _, y_train, _ = digits._split()
    xs = _sequences(x_train)[:, :, 0, :]
    s = 1 / np.sqrt(HIDDEN)
    p = {"w": rng.uniform(-s, s, (HIDDEN, digits.SIDE)), "r": rng.uniform(-s, s, (HIDDEN, HIDDEN)),
         "b": np.zeros(HIDDEN), "v": rng.uniform(-s, s, (CLASSES, HIDDEN)), "c": np.zeros(CLASSES)}
    p = fit(p, _grads, xs, y_train, epochs=EPOCHS, batch=BATCH, lr=LR, rng=rng, clip=1.0)  # clipped: a recurrence
    return tuple((k, p[k]) for k in ("w", "r", "b", "v", "c"))


def dataset(seed: int = 0) -> digits.DigitsData:
    """The held-out digits as [N, 8, 1, 8] sequences (feed ``x_test[i]``) and the float accuracy of
    ``build("digits_rnn", seed=seed)`` on them."""
    _, x_test, _, y_test = digits._split()
    seqs = _sequences(x_test)
    _, logits = _forward(dict(_train(seed)), seqs[:, :, 0, :])
    return digits.DigitsData(seqs, y_test, float((logits.argmax(1) == y_test).mean()))


def build(name: str, *, seed: int, input_size: int) -> onnx.ModelProto:
    p = dict(_train(seed))
    b = GraphBuilder(name, seed=seed)
    x = b.input("input", (input_size, 1, input_size))  # the registry fixes input_size at 8
    bias = np.concatenate([p["b"], np.zeros(HIDDEN, np.float32)])[None]  # ONNX B = [Wb, Rb]
    y, y_h = b.multi_output_node(
        "RNN", [x, b.param("rnn.W", p["w"][None]), b.param("rnn.R", p["r"][None]), b.param("rnn.B", bias)], "rnn",
        [None, (1, 1, HIDDEN)], hidden_size=HIDDEN)  # Y_h only
    h = b.flatten(y_h, "flatten")
    out = b.linear(h, p["v"], p["c"], "fc", output="output")
    return b.finish([out], doc=f"{name}: an RNN over a digit's 8 rows, trained here on sklearn digits (seed {seed})")
