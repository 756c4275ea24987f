"""The registry of zoo models and :func:`build`."""
from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

import onnx

from compiler.zoo import densenet, digits, digits_cnn, digits_rnn, mobile, resnet, rnn, small, ssd, transformer, vgg
from compiler.zoo.errors import ZooError

Kind = Literal["classifier", "detector", "rnn", "sequence"]


@dataclass(frozen=True)
class ZooModel:
    """One buildable network.

    Members
    -------
    name:
        Registry key, e.g. ``"resnet50"``.
    description:
        One line for ``npu zoo list``.
    builder:
        ``builder(name, *, seed, input_size, **params) -> onnx.ModelProto``.
    params:
        Default keyword parameters besides ``input_size``; :func:`build` accepts
        exactly these names.
    input_size:
        Default input size: height = width for CNNs, the feature width for RNNs
        and the MLP.
    kind:
        ``"classifier"`` (output ``output`` [1, classes]), ``"detector"``
        (outputs ``boxes`` and ``scores``), ``"rnn"`` or ``"sequence"`` (a
        Transformer: ``input`` [1, T, hidden] embeddings in, ``output``
        [1, T, hidden] out; the input size is the sequence length T).
    min_input_size, max_input_size:
        The input sizes the model accepts (inclusive); ``max_input_size`` None
        means unbounded.  Digits is fixed at 8.
    """

    name: str
    description: str
    builder: Callable[..., onnx.ModelProto]
    params: Mapping[str, object] = field(default_factory=dict)
    input_size: int = 224
    kind: Kind = "classifier"
    min_input_size: int = 32
    max_input_size: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))


def _defaults(fn: Callable, **overrides) -> dict[str, object]:
    """A builder's keyword defaults (less seed, input_size and what a partial fixes),
    so each default is stated once, in the builder's signature."""
    fixed = fn.keywords if isinstance(fn, functools.partial) else {}
    params = {p.name: p.default for p in inspect.signature(fn).parameters.values()
              if p.kind is p.KEYWORD_ONLY and p.default is not p.empty and p.name not in fixed}
    return {**params, **overrides}


_LSTM = functools.partial(rnn.build, cell="lstm")
_GRU = functools.partial(rnn.build, cell="gru")


_MODELS = (
    ZooModel("resnet50", "ResNet-50 v1.5 (torchvision layout), ImageNet classes",
             resnet.build, _defaults(resnet.build)),
    ZooModel("resnet152", "ResNet-152 v1.5 (torchvision layout), ImageNet classes",
             resnet.build, _defaults(resnet.build)),
    ZooModel("densenet121", "DenseNet-121 (growth 32, blocks 6/12/24/16), ImageNet classes",
             densenet.build, _defaults(densenet.build)),
    ZooModel("vgg16", "VGG-16 (13 convs, FC 4096/4096/classes), ImageNet classes",
             vgg.build, _defaults(vgg.build)),
    ZooModel("ssd_vgg16", "SSD300 on VGG-16: outputs boxes [1,P,4] and scores [1,P,classes]",
             ssd.build, _defaults(ssd.build), input_size=300, kind="detector"),
    ZooModel("mobilenet_v2", "MobileNetV2 (torchvision layout, ReLU6, depthwise), BN calibrated, ImageNet classes",
             mobile.build_mobilenet_v2, _defaults(mobile.build_mobilenet_v2)),
    ZooModel("efficientnet_b0", "EfficientNet-B0 (torchvision layout, SiLU, squeeze-excitation), BN calibrated, "
             "ImageNet classes", mobile.build_efficientnet_b0, _defaults(mobile.build_efficientnet_b0)),
    ZooModel("bert_base", "BERT-base encoder (12 layers, hidden 768, 12 heads, post-LN, erf GELU) on embeddings",
             transformer.build_bert, _defaults(transformer.build_bert), input_size=128, kind="sequence",
             min_input_size=1),
    ZooModel("gpt2", "GPT-2 small decoder (12 layers, hidden 768, causal mask, tanh GELU, final LN) on embeddings",
             transformer.build_gpt2, _defaults(transformer.build_gpt2), input_size=128, kind="sequence",
             min_input_size=1),
    ZooModel("vit_b16", "ViT-B/16 (torchvision layout: patch conv, class token, 12 pre-LN layers), ImageNet classes",
             transformer.build_vit, _defaults(transformer.build_vit), min_input_size=16),
    ZooModel("lstm", "one LSTM layer, DeepBench-like (hidden 512, input 512, 25 steps)",
             _LSTM, _defaults(_LSTM),
             input_size=512, kind="rnn", min_input_size=1),
    ZooModel("lstm2", "two stacked LSTM layers, hidden 512, input 256, 25 steps (224 tiles: two NPUs' MRFs)",
             rnn.build_stack, _defaults(rnn.build_stack), input_size=256, kind="rnn", min_input_size=1),
    ZooModel("gru", "one GRU layer (linear_before_reset=1), DeepBench-like (512/512/25)",
             _GRU, _defaults(_GRU),
             input_size=512, kind="rnn", min_input_size=1),
    ZooModel("mlp", "MLP 784-512-512-10 with Relu",
             small.build_mlp, _defaults(small.build_mlp), input_size=784, min_input_size=1),
    ZooModel("tiny_cnn", "3x8x8 CNN with BN, pool and a residual Add (~69k MACs) for RTL runs",
             small.build_tiny_cnn, _defaults(small.build_tiny_cnn), input_size=8, min_input_size=2),
    ZooModel("tiny_rnn", "LSTM (or cell=gru) hidden 8, input 8, 4 steps, Gemm head to 8, for RTL runs",
             rnn.build, _defaults(rnn.build, hidden_size=8, timesteps=4, output_size=8),
             input_size=8, kind="rnn", min_input_size=1),
    ZooModel("digits", "MLP 64-32-10 trained here on sklearn's 8x8 digits (see digits_dataset)",
             digits.build, _defaults(digits.build), input_size=8, min_input_size=8, max_input_size=8),
    ZooModel("digits_cnn", "CNN (2 convs, 16/32 channels) trained here on sklearn's 8x8 digits, 98 % held out",
             digits_cnn.build, _defaults(digits_cnn.build), input_size=8, min_input_size=8, max_input_size=8),
    ZooModel("digits_rnn", "RNN (tanh, hidden 48) over a digit's 8 rows, trained here on sklearn's 8x8 digits",
             digits_rnn.build, _defaults(digits_rnn.build), input_size=8, kind="rnn", min_input_size=8,
             max_input_size=8),
)

MODELS: Mapping[str, ZooModel] = MappingProxyType({m.name: m for m in _MODELS})


def list_models() -> list[ZooModel]:
    """Every registered model, in registry order."""
    return list(MODELS.values())


def get(name: str) -> ZooModel:
    """The registry entry for ``name``; a :class:`ZooError` listing valid names otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        raise ZooError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}") from None


def resolve(name: str, input_size: int | None = None, **params) -> tuple[ZooModel, int, dict]:
    """Check a request against the registry: the entry, the input size and the full parameters."""
    model = get(name)
    unknown = sorted(set(params) - set(model.params))
    if unknown:
        valid = ", ".join(model.params) or "none"
        raise ZooError(f"{name}: unknown parameter(s) {', '.join(unknown)}; valid: {valid}")
    size = model.input_size if input_size is None else input_size
    if not isinstance(size, int) or isinstance(size, bool):
        raise ZooError(f"{name}: input size must be an integer, not {size!r}")
    if model.max_input_size == model.min_input_size and size != model.min_input_size:
        raise ZooError(f"{name}: the input size is fixed at {model.min_input_size}, not {size}")
    if size < model.min_input_size:
        raise ZooError(f"{name}: input size {size} is too small; it needs at least {model.min_input_size}")
    if model.max_input_size is not None and size > model.max_input_size:
        raise ZooError(f"{name}: input size {size} is too large; at most {model.max_input_size}")
    return model, size, {**model.params, **params}


def build(name: str, *, seed: int = 0, input_size: int | None = None, **params) -> onnx.ModelProto:
    """Build a zoo model as an ONNX ModelProto (opset 17), weights drawn from ``seed``.

    ``input_size`` is the height = width of a CNN's input (the feature width of
    an RNN or MLP); ``params`` override the entry's :attr:`ZooModel.params`.
    The model carries its name, seed, input size and parameters in
    ``metadata_props`` (``zoo_name``, ``zoo_seed``, ``zoo_input_size``, ``zoo_params``).
    """
    model, size, full = resolve(name, input_size, **params)
    proto = model.builder(name, seed=seed, input_size=size, **full)
    for key, value in (("zoo_name", name), ("zoo_seed", str(seed)), ("zoo_input_size", str(size)),
                       ("zoo_params", json.dumps(full, sort_keys=True))):
        proto.metadata_props.add(key=key, value=value)
    return proto
