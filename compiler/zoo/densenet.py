"""DenseNet-121 in torchvision's layout (growth 32, blocks 6/12/24/16, bn_size 4).

Pre-activation: every dense layer is BN-Relu-Conv1x1-BN-Relu-Conv3x3 on the
concatenation of all earlier outputs of its block, written as one Concat node
per layer exactly as torchvision's ``torch.cat(features, 1)`` exports.  Its
parameter count equals torchvision's 7,978,856 at 1000 classes.
"""
from __future__ import annotations

import onnx

from compiler.zoo.layers import GraphBuilder

GROWTH = 32
BLOCKS = (6, 12, 24, 16)
BN_SIZE = 4
INIT_FEATURES = 64


def _dense_layer(b: GraphBuilder, features: list[str], path: str) -> str:
    x = b.concat(features, path) if len(features) > 1 else features[0]
    x = b.relu(b.batchnorm(x, f"{path}.norm1"), f"{path}.relu1")
    x = b.conv_bn(x, BN_SIZE * GROWTH, 1, f"{path}.conv1", f"{path}.norm2", relu=f"{path}.relu2")
    return b.conv(x, GROWTH, 3, f"{path}.conv2", pad=1, bias=False)


def build(name: str, *, seed: int, input_size: int, num_classes: int = 1000) -> onnx.ModelProto:
    b = GraphBuilder(name, seed=seed)
    x = b.input("input", (1, 3, input_size, input_size))
    x = b.conv_bn(x, INIT_FEATURES, 7, "features.conv0", "features.norm0", relu="features.relu0",
                  stride=2, pad=3)
    x = b.maxpool(x, 3, 2, "features.pool0", pad=1)
    for i, layers in enumerate(BLOCKS, start=1):
        block = f"features.denseblock{i}"
        features = [x]
        for j in range(1, layers + 1):
            features.append(_dense_layer(b, features, f"{block}.denselayer{j}"))
        x = b.concat(features, block)
        if i < len(BLOCKS):
            t = f"features.transition{i}"
            x = b.relu(b.batchnorm(x, f"{t}.norm"), f"{t}.relu")
            x = b.conv(x, b.shapes[x][1] // 2, 1, f"{t}.conv", bias=False)
            x = b.avgpool(x, 2, 2, f"{t}.pool")
    x = b.relu(b.batchnorm(x, "features.norm5"), "features")
    x = b.flatten(b.global_avgpool(x, "avgpool"))
    out = b.gemm(x, num_classes, "classifier", output="output")
    return b.finish([out], doc=f"{name}: torchvision layout, {input_size}x{input_size} input")
