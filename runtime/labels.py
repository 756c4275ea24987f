"""Class labels and the top-k helper.

``manifest["preprocessing"]["labels"]`` is ``"imagenet"`` (the 1,000 ILSVRC-2012
class names shipped in runtime/data/imagenet_classes.txt, in class-index order)
or an explicit list.
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np


@lru_cache(maxsize=None)
def imagenet_classes() -> tuple[str, ...]:
    text = resources.files("runtime").joinpath("data/imagenet_classes.txt").read_text(encoding="utf-8")
    names = tuple(line for line in text.splitlines() if line)
    assert len(names) == 1000, f"imagenet_classes.txt has {len(names)} names, expected 1000"
    return names


def labels_for(manifest_or_labels) -> tuple[str, ...] | None:
    """The label list a manifest names (None when it names none)."""
    labels = manifest_or_labels
    if isinstance(manifest_or_labels, dict):
        labels = (manifest_or_labels.get("preprocessing") or {}).get("labels")
    if labels is None:
        return None
    if labels == "imagenet":
        return imagenet_classes()
    if isinstance(labels, str):
        raise ValueError(f"unknown label set {labels!r}: use 'imagenet' or a list of names")
    return tuple(str(label) for label in labels)


def softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _looks_like_probabilities(scores: np.ndarray) -> bool:
    return bool(scores.min() >= 0.0 and scores.max() <= 1.0 and abs(scores.sum() - 1.0) < 1e-3)


def top_k(scores, k: int = 5, labels=None) -> list[tuple[int, str, float]]:
    """The ``k`` best classes of one score vector as (index, label, confidence).

    Confidences are the softmax of the scores, unless the scores already are
    probabilities (non-negative, summing to 1).  A leading batch axis of 1 is
    dropped.  ``labels`` is a sequence of names, "imagenet", or None (names are
    then "class N").
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim > 1 and scores.shape[0] == 1:
        scores = scores.reshape(scores.shape[1:])
    scores = scores.reshape(-1)
    probs = scores / scores.sum() if _looks_like_probabilities(scores) else softmax(scores)
    names = labels_for(labels) if labels is not None else None
    order = np.argsort(-probs, kind="stable")[:k]
    return [(int(i), names[i] if names is not None and i < len(names) else f"class {i}", float(probs[i]))
            for i in order]
