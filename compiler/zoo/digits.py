"""A classifier trained here on scikit-learn's bundled 8x8 digits (no download).

``Flatten -> Gemm 64->hidden -> Relu -> Gemm hidden->10`` on ``input``
[1, 1, 8, 8] holding pixel intensities scaled from 0..16 to 0..1.  Training
is scikit-learn's MLPClassifier (Adam, fixed ``random_state`` = the build
seed), deterministic and about a second long; the split is fixed (25 % held
out, stratified, ``random_state=0``) whatever the seed, so accuracies of
different seeds are comparable.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np
import onnx

from compiler.zoo.layers import GraphBuilder

SIDE = 8
PIXEL_MAX = 16.0
TEST_FRACTION = 0.25
SPLIT_SEED = 0
DEFAULT_HIDDEN = 32


@dataclass(frozen=True)
class DigitsData:
    """The held-out split and the exported float model's accuracy on it.

    Members
    -------
    x_test:
        float32 [N, 1, 8, 8] in the model's input layout; feed one row at a time
        (``x_test[i:i + 1]``), the model's batch is 1.
    y_test:
        int64 [N] labels 0..9.
    float_accuracy:
        Fraction of ``x_test`` the float32 model classifies correctly.
    """

    x_test: np.ndarray
    y_test: np.ndarray
    float_accuracy: float


def _split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / PIXEL_MAX).astype(np.float32)
    return train_test_split(x, digits.target.astype(np.int64), test_size=TEST_FRACTION,
                            random_state=SPLIT_SEED, stratify=digits.target)


@functools.lru_cache(maxsize=8)
def _train(seed: int, hidden: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Trained (weight [out, in], bias [out]) pairs, float32, as Gemm(transB=1) wants them."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x_train, _, y_train, _ = _split()
    clf = MLPClassifier(hidden_layer_sizes=(hidden,), alpha=1e-4, max_iter=200,
                        random_state=seed)
    with warnings.catch_warnings():
        # Adam stopping at max_iter is expected and harmless here; accuracy is checked.
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_train, y_train)
    layers = tuple((w.T.astype(np.float32), b.astype(np.float32))
                   for w, b in zip(clf.coefs_, clf.intercepts_))
    for w, b in layers:
        w.flags.writeable = b.flags.writeable = False
    return layers


def _predict(layers, x: np.ndarray) -> np.ndarray:
    """The exported graph's arithmetic in float32 numpy."""
    h = x.reshape(len(x), -1)
    for i, (w, b) in enumerate(layers):
        h = h @ w.T + b
        if i < len(layers) - 1:
            h = np.maximum(h, 0)
    return h.argmax(axis=1)


def dataset(seed: int = 0, hidden: int = DEFAULT_HIDDEN) -> DigitsData:
    """The held-out digits and the accuracy of the model ``build(seed=seed, hidden=hidden)``."""
    _, x_test, _, y_test = _split()
    accuracy = float((_predict(_train(seed, hidden), x_test) == y_test).mean())
    return DigitsData(x_test.reshape(-1, 1, SIDE, SIDE), y_test, accuracy)


def build(name: str, *, seed: int, input_size: int, hidden: int = DEFAULT_HIDDEN) -> onnx.ModelProto:
    b = GraphBuilder(name, seed=seed)
    x = b.flatten(b.input("input", (1, 1, input_size, input_size)))
    (w1, b1), (w2, b2) = _train(seed, hidden)
    x = b.relu(b.linear(x, w1, b1, "fc1"), "relu")
    out = b.linear(x, w2, b2, "fc2", output="output")
    return b.finish([out], doc=f"{name}: 64-{hidden}-10 MLP trained on sklearn digits (seed {seed})")
