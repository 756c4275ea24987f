"""VGG-16 (torchvision ``vgg16``, configuration D, no batch norm).

Also holds the configuration-driven feature extractor SSD's backbone reuses.
"""
from __future__ import annotations

from collections.abc import Sequence

import onnx

from compiler.zoo.layers import GraphBuilder

# Channels of each 3x3 conv; "M" max-pools 2x2, "C" is the same with ceil_mode (SSD).
VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
POOLED = 7  # torchvision's AdaptiveAvgPool2d((7, 7))


def features(b: GraphBuilder, x: str, cfg: Sequence[int | str], path: str,
             taps: Sequence[int] = ()) -> tuple[str, dict[int, str]]:
    """Conv3x3(pad 1, bias)+Relu and pooling layers named like ``nn.Sequential`` indices.

    Returns the last tensor and the outputs of the modules whose indices are in ``taps``.
    """
    tapped = {}
    i = 0
    for item in cfg:
        if item in ("M", "C"):
            x = b.maxpool(x, 2, 2, f"{path}.{i}", ceil=item == "C")
            tapped[i] = x
            i += 1
        else:
            x = b.conv(x, item, 3, f"{path}.{i}", pad=1)
            x = b.relu(x, f"{path}.{i + 1}")
            tapped[i], tapped[i + 1] = None, x
            i += 2
    return x, {k: tapped[k] for k in taps}


def build(name: str, *, seed: int, input_size: int, num_classes: int = 1000) -> onnx.ModelProto:
    """VGG-16; the classifier's input size follows the feature map.

    torchvision pools the 512-channel map to 7x7 adaptively.  That is kept where it
    is exact (an identity at 224, an AveragePool when the map is a multiple of 7);
    elsewhere (e.g. 1x1 at 32) the first Linear takes the flattened map as is.
    """
    b = GraphBuilder(name, seed=seed)
    x = b.input("input", (1, 3, input_size, input_size))
    x, _ = features(b, x, VGG16, "features")
    side = b.shapes[x][2]
    if side != POOLED and side % POOLED == 0:
        x = b.avgpool(x, side // POOLED, side // POOLED, "avgpool")
    x = b.flatten(x)
    x = b.relu(b.gemm(x, 4096, "classifier.0"), "classifier.1")
    x = b.relu(b.gemm(x, 4096, "classifier.3"), "classifier.4")
    out = b.gemm(x, num_classes, "classifier.6", output="output")
    return b.finish([out], doc=f"{name}: torchvision layout, {input_size}x{input_size} input")
