"""The little training the zoo does itself (numpy, no framework): minibatch Adam and the softmax cross-entropy
gradient, shared by the digits models trained here (compiler/zoo/digits_cnn.py, digits_rnn.py)."""
from __future__ import annotations

from typing import Callable

import numpy as np


def xent_grad(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """d(mean softmax cross-entropy)/d(logits) for logits [N, classes] and integer labels [N]."""
    z = logits - logits.max(1, keepdims=True)
    prob = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    prob[np.arange(len(labels)), labels] -= 1
    return prob / len(labels)


def fit(params: dict[str, np.ndarray], grads: Callable, x: np.ndarray, y: np.ndarray, *, epochs: int, batch: int,
        lr: float, rng: np.random.Generator, clip: float | None = None) -> dict[str, np.ndarray]:
    """Adam (beta 0.9/0.999) over shuffled minibatches; ``grads(params, x, y)`` returns a gradient per parameter
    (each clipped to +-clip when given). Returns the trained float32 parameters, read-only."""
    p = {k: v.astype(np.float32) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(v) for k, v in p.items()}
    step = 0
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for s in range(0, len(x), batch):
            idx = order[s:s + batch]
            g = grads(p, x[idx], y[idx])
            step += 1
            for k in p:
                gk = g[k] if clip is None else np.clip(g[k], -clip, clip)
                m[k] = 0.9 * m[k] + 0.1 * gk
                v[k] = 0.999 * v[k] + 0.001 * gk ** 2
                p[k] = (p[k] - lr * (m[k] / (1 - 0.9 ** step)) / (np.sqrt(v[k] / (1 - 0.999 ** step)) + 1e-8)
                        ).astype(np.float32)
    for a in p.values():
        a.flags.writeable = False
    return p
