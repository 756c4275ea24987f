"""The model zoo: the networks the toolkit compiles, built as ONNX (opset 17).

Each model is written the way PyTorch's exporter writes it (Conv without bias
before BatchNormalization, Linear as Gemm, ...) with seeded He-initialised
weights and non-trivial BatchNorm statistics, so BN folding is really
exercised.  No PyTorch is needed::

    from compiler import zoo
    model = zoo.build("resnet50", seed=0, input_size=64)
    zoo.save(model, "resnet50.onnx")

Every CNN takes reduced input sizes (32 and up) so tests stay fast.  The
``digits`` (an MLP) and ``digits_cnn`` (a CNN) models are trained here on
scikit-learn's bundled digits; :func:`digits_dataset` and
``compiler.zoo.digits_cnn.dataset`` return the held-out split and each
model's float accuracy.
"""
from __future__ import annotations

import os

import onnx

from compiler.zoo.digits import DigitsData
from compiler.zoo.errors import ZooError
from compiler.zoo.registry import MODELS, ZooModel, build, get, list_models
from compiler.zoo.stats import count_macs, count_parameters

__all__ = ["MODELS", "DigitsData", "ZooError", "ZooModel", "build", "count_macs", "count_parameters",
           "digits_dataset", "get", "list_models", "save"]


def save(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Write a model with its weights inline (every zoo model is under protobuf's 2 GB)."""
    onnx.save(model, os.fspath(path))


def digits_dataset(seed: int = 0, hidden: int | None = None) -> DigitsData:
    """Held-out digits (x_test float32 [N, 1, 8, 8], y_test) and the float accuracy of
    ``build("digits", seed=seed)`` (or of ``hidden=`` if that was overridden) on them."""
    from compiler.zoo import digits

    return digits.dataset(seed, digits.DEFAULT_HIDDEN if hidden is None else hidden)
