"""Mobile CNNs in torchvision's layout: MobileNetV2 and EfficientNet-B0.

Depthwise convolutions are ``Conv(group=C)``; ReLU6 is ``Clip(0, 6)``; SiLU is written as the exporter
writes it at opset 17, ``x * Sigmoid(x)``; squeeze-excitation is GlobalAveragePool -> Conv 1x1 -> SiLU ->
Conv 1x1 -> Sigmoid -> Mul.  Both are built with :class:`~compiler.zoo.calibrate.CalibratingBuilder`:
BatchNorm statistics come from the activations of image-like inputs and the classifier is centred, so
activations stay near unit scale through the depth and the output depends on the input.
"""
from __future__ import annotations

import numpy as np
import onnx

from compiler.zoo.calibrate import CalibratingBuilder

# (expansion t, output channels c, repeats n, first stride s): torchvision's inverted_residual_setting
MOBILENET_V2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))
# (expansion, kernel, first stride, output channels, repeats): EfficientNet-B0's MBConv stages
EFFICIENTNET_B0 = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
                   (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
# Scale of the BN gamma that ends a residual branch (keeps the sum of many blocks in range).
RESIDUAL_GAMMA = 0.5


def _relu6(b: CalibratingBuilder, x: str, path: str) -> str:
    lo = "onnx::Clip_min" if "onnx::Clip_min" in b.shapes else b.constant("onnx::Clip_min", np.array(0.0, np.float32))
    hi = "onnx::Clip_max" if "onnx::Clip_max" in b.shapes else b.constant("onnx::Clip_max", np.array(6.0, np.float32))
    return b.node("Clip", [x, lo, hi], path, b.shapes[x])


def _silu(b: CalibratingBuilder, x: str, path: str) -> str:
    s = b.node("Sigmoid", [x], path, b.shapes[x])
    return b.node("Mul", [x, s], path, b.shapes[x])


def _conv_bn(b: CalibratingBuilder, x: str, out: int, kernel: int, path: str, *, stride: int = 1,
             groups: int = 1, act=None, gamma_scale: float = 1.0) -> str:
    y = b.conv(x, out, kernel, f"{path}.0", stride=stride, pad=(kernel - 1) // 2, bias=False, groups=groups)
    y = b.batchnorm(y, f"{path}.1", gamma_scale=gamma_scale)
    return act(b, y, f"{path}.2") if act else y


def build_mobilenet_v2(name: str, *, seed: int, input_size: int, num_classes: int = 1000) -> onnx.ModelProto:
    b = CalibratingBuilder(name, seed=seed)
    x = b.input("input", (1, 3, input_size, input_size))
    x = _conv_bn(b, x, 32, 3, "features.0", stride=2, act=_relu6)
    index = 1
    for t, c, n, s in MOBILENET_V2:
        for i in range(n):
            path = f"features.{index}.conv"
            cin = b.shapes[x][1]
            hidden = cin * t
            y = x
            k = 0
            if t != 1:
                y = _conv_bn(b, y, hidden, 1, f"{path}.{k}", act=_relu6)
                k += 1
            y = _conv_bn(b, y, hidden, 3, f"{path}.{k}", stride=s if i == 0 else 1, groups=hidden, act=_relu6)
            residual = i > 0 and cin == c
            y = b.conv(y, c, 1, f"{path}.{k + 1}", bias=False)
            y = b.batchnorm(y, f"{path}.{k + 2}", gamma_scale=RESIDUAL_GAMMA if residual else 1.0)
            x = b.add(x, y, f"features.{index}") if residual else y
            index += 1
    x = _conv_bn(b, x, 1280, 1, f"features.{index}", act=_relu6)
    x = b.flatten(b.global_avgpool(x, "avgpool"))
    out = b.classifier(x, num_classes, "classifier.1", output="output")
    return b.finish([out], doc=f"{name}: torchvision MobileNetV2 layout, {input_size}x{input_size} input, "
                               "BN statistics calibrated on image-like inputs")


def _squeeze_excite(b: CalibratingBuilder, x: str, squeeze: int, path: str) -> str:
    s = b.global_avgpool(x, f"{path}.avgpool")
    s = _silu(b, b.conv(s, squeeze, 1, f"{path}.fc1"), f"{path}.activation")
    s = b.node("Sigmoid", [b.conv(s, b.shapes[x][1], 1, f"{path}.fc2")], f"{path}.scale_activation", b.shapes[s][:1]
               + (b.shapes[x][1], 1, 1))
    return b.node("Mul", [x, s], path, b.shapes[x])


def build_efficientnet_b0(name: str, *, seed: int, input_size: int, num_classes: int = 1000) -> onnx.ModelProto:
    b = CalibratingBuilder(name, seed=seed)
    x = b.input("input", (1, 3, input_size, input_size))
    x = _conv_bn(b, x, 32, 3, "features.0", stride=2, act=_silu)
    for stage, (e, kernel, s, c, n) in enumerate(EFFICIENTNET_B0, start=1):
        for i in range(n):
            path = f"features.{stage}.{i}.block"
            cin = b.shapes[x][1]
            hidden = cin * e
            y = x
            k = 0
            if e != 1:
                y = _conv_bn(b, y, hidden, 1, f"{path}.{k}", act=_silu)
                k += 1
            y = _conv_bn(b, y, hidden, kernel, f"{path}.{k}", stride=s if i == 0 else 1, groups=hidden, act=_silu)
            y = _squeeze_excite(b, y, max(1, cin // 4), f"{path}.{k + 1}")
            residual = i > 0 and cin == c
            y = _conv_bn(b, y, c, 1, f"{path}.{k + 2}", gamma_scale=RESIDUAL_GAMMA if residual else 1.0)
            x = b.add(y, x, f"features.{stage}.{i}") if residual else y
    x = _conv_bn(b, x, 1280, 1, "features.8", act=_silu)
    x = b.flatten(b.global_avgpool(x, "avgpool"))
    out = b.classifier(x, num_classes, "classifier.1", output="output")
    return b.finish([out], doc=f"{name}: torchvision EfficientNet-B0 layout, {input_size}x{input_size} input, "
                               "BN statistics calibrated on image-like inputs")
