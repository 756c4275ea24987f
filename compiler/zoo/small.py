"""Small networks: an MLP and a CNN tiny enough for RTL simulation."""
from __future__ import annotations

from collections.abc import Sequence

import onnx

from compiler.zoo.layers import GraphBuilder


def build_mlp(name: str, *, seed: int, input_size: int, hidden: Sequence[int] = (512, 512),
              num_classes: int = 10) -> onnx.ModelProto:
    """Gemm+Relu layers ``input_size -> hidden... -> num_classes`` (default 784-512-512-10)."""
    b = GraphBuilder(name, seed=seed)
    x = b.input("input", (1, input_size))
    for i, width in enumerate(hidden):
        x = b.relu(b.gemm(x, width, f"layers.{2 * i}"), f"layers.{2 * i + 1}")
    out = b.gemm(x, num_classes, f"layers.{2 * len(hidden)}", output="output")
    return b.finish([out], doc=f"{name}: {'-'.join(map(str, (input_size, *hidden, num_classes)))} MLP")


def build_tiny_cnn(name: str, *, seed: int, input_size: int, in_channels: int = 3,
                   num_classes: int = 10) -> onnx.ModelProto:
    """A ResNet in miniature for an 8-wide NPU: about 69k MACs at 3x8x8.

    conv3x3 -> 8, BN, Relu; MaxPool 2x2; conv3x3 -> 16, BN, Relu; a residual
    conv3x3 -> 16, BN added back, Relu; GlobalAveragePool, Flatten, Gemm.
    The 3 input channels deliberately do not fill a native vector.
    """
    b = GraphBuilder(name, seed=seed)
    x = b.input("input", (1, in_channels, input_size, input_size))
    x = b.conv_bn(x, 8, 3, "conv1", "bn1", relu="relu1", pad=1)
    x = b.maxpool(x, 2, 2, "pool")
    x = b.conv_bn(x, 16, 3, "conv2", "bn2", relu="relu2", pad=1)
    y = b.conv_bn(x, 16, 3, "conv3", "bn3", pad=1, gamma_scale=0.5)
    x = b.relu(b.add(x, y, "residual"), "relu3")
    x = b.flatten(b.global_avgpool(x, "avgpool"))
    out = b.gemm(x, num_classes, "fc", output="output")
    return b.finish([out], doc=f"{name}: {in_channels}x{input_size}x{input_size} tiny CNN")
