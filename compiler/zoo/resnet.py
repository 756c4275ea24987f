"""ResNet-50 / ResNet-152 in torchvision's layout (Bottleneck v1.5: the stride sits on the 3x3).

Module names match torchvision (``conv1``, ``bn1``, ``layer3.5.conv2``,
``layer2.0.downsample.0``, ``fc``), so the parameter count equals torchvision's
(25,557,032 for ResNet-50 and 60,192,808 for ResNet-152 at 1000 classes).
"""
from __future__ import annotations

import onnx

from compiler.zoo.layers import GraphBuilder

BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet152": (3, 8, 36, 3)}
EXPANSION = 4
# Scale of each residual branch's last BN gamma.  With gamma ~ 1 the activations of
# ResNet-152 grow block after block; 0.2 keeps the logits' spread in single digits.
RESIDUAL_GAMMA = 0.1


def _bottleneck(b: GraphBuilder, x: str, width: int, stride: int, path: str) -> str:
    in_channels = b.shapes[x][1]
    out_channels = width * EXPANSION
    y = b.conv_bn(x, width, 1, f"{path}.conv1", f"{path}.bn1", relu=f"{path}.relu")
    y = b.conv_bn(y, width, 3, f"{path}.conv2", f"{path}.bn2", relu=f"{path}.relu", stride=stride, pad=1)
    y = b.conv_bn(y, out_channels, 1, f"{path}.conv3", f"{path}.bn3", gamma_scale=RESIDUAL_GAMMA)
    if stride != 1 or in_channels != out_channels:
        x = b.conv_bn(x, out_channels, 1, f"{path}.downsample.0", f"{path}.downsample.1", stride=stride)
    return b.relu(b.add(y, x, path), f"{path}.relu")


def build(name: str, *, seed: int, input_size: int, num_classes: int = 1000) -> onnx.ModelProto:
    b = GraphBuilder(name, seed=seed)
    x = b.input("input", (1, 3, input_size, input_size))
    x = b.conv_bn(x, 64, 7, "conv1", "bn1", relu="relu", stride=2, pad=3)
    x = b.maxpool(x, 3, 2, "maxpool", pad=1)
    for stage, (blocks, width) in enumerate(zip(BLOCKS[name], (64, 128, 256, 512)), start=1):
        for i in range(blocks):
            stride = 2 if stage > 1 and i == 0 else 1
            x = _bottleneck(b, x, width, stride, f"layer{stage}.{i}")
    x = b.flatten(b.global_avgpool(x, "avgpool"))
    out = b.gemm(x, num_classes, "fc", output="output")
    return b.finish([out], doc=f"{name}: torchvision layout, {input_size}x{input_size} input")
