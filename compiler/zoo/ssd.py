"""SSD300 with a VGG-16 backbone, in the layout of the widely used PyTorch SSD (ssd.pytorch).

Backbone: VGG-16's convs with a ceil-mode third pool, ``pool5`` 3x3/1, a dilated
(6) 3x3 ``conv6`` and a 1x1 ``conv7``; four pairs of extra layers; six sources
(conv4_3, conv7, extras 1, 3, 5, 7) with 4, 6, 6, 6, 4, 4 anchors per location,
each feeding a 3x3 location head and a 3x3 confidence head.  Every head output
is exported as PyTorch does ``o.permute(0, 2, 3, 1).view(1, -1)``: Transpose,
Reshape, then one Concat per kind and a final Reshape to ``boxes`` [1, P, 4]
and ``scores`` [1, P, num_classes] (raw class logits; P = 8732 at 300x300).

Two simplifications keep the graph to the toolkit's ops:

* L2Norm on conv4_3 is replaced by a per-channel Mul by a constant
  (``L2Norm.weight``, 512 values around 1), with no normalisation.
* The last two extra 3x3 convs are unpadded in SSD300; when a reduced input
  makes their input smaller than 3x3 they are padded by 1 so that small test
  sizes (32, 64) still build.
"""
from __future__ import annotations

import numpy as np
import onnx

from compiler.zoo import vgg
from compiler.zoo.layers import GraphBuilder

BASE = (64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512, "M", 512, 512, 512)
CONV4_3_RELU = 22  # index in the backbone's Sequential
POOL5 = 30  # the index after BASE's 13 conv+relu pairs and 4 pools
# (out channels, kernel, stride, pad) of extras.0 .. extras.7; odd ones are sources.
EXTRAS = ((256, 1, 1, 0), (512, 3, 2, 1), (128, 1, 1, 0), (256, 3, 2, 1),
          (128, 1, 1, 0), (256, 3, 1, 0), (128, 1, 1, 0), (256, 3, 1, 0))
ANCHORS = (4, 6, 6, 6, 4, 4)


def build(name: str, *, seed: int, input_size: int, num_classes: int = 21) -> onnx.ModelProto:
    b = GraphBuilder(name, seed=seed)
    x = b.input("input", (1, 3, input_size, input_size))
    x, taps = vgg.features(b, x, BASE, "vgg", taps=(CONV4_3_RELU,))
    scale = b.param("L2Norm.weight", b.rng.uniform(0.8, 1.2, (1, 512, 1, 1)).astype(np.float32))
    sources = [b.mul(taps[CONV4_3_RELU], scale, "L2Norm")]
    i = POOL5
    x = b.maxpool(x, 3, 1, f"vgg.{i}", pad=1)
    x = b.relu(b.conv(x, 1024, 3, f"vgg.{i + 1}", pad=6, dilation=6), f"vgg.{i + 2}")
    x = b.relu(b.conv(x, 1024, 1, f"vgg.{i + 3}"), f"vgg.{i + 4}")
    sources.append(x)
    for k, (channels, kernel, stride, pad) in enumerate(EXTRAS):
        if kernel == 3 and pad == 0 and b.shapes[x][2] < 3:
            pad = 1  # reduced input sizes only; see the module docstring
        x = b.relu(b.conv(x, channels, kernel, f"extras.{k}", stride=stride, pad=pad), f"extras.{k}")
        if k % 2 == 1:
            sources.append(x)

    boxes, scores = [], []
    for k, (source, anchors) in enumerate(zip(sources, ANCHORS)):
        for head, per_anchor, out in (("loc", 4, boxes), ("conf", num_classes, scores)):
            y = b.conv(source, anchors * per_anchor, 3, f"{head}.{k}", pad=1)
            y = b.transpose(y, (0, 2, 3, 1), f"{head}.{k}")
            out.append(b.reshape(y, (1, -1), f"{head}.{k}"))
    loc = b.concat(boxes, "loc")
    conf = b.concat(scores, "conf")
    boxes_out = b.reshape(loc, (1, -1, 4), "loc", output="boxes")
    scores_out = b.reshape(conf, (1, -1, num_classes), "conf", output="scores")
    return b.finish([boxes_out, scores_out],
                    doc=f"{name}: SSD300-VGG16 layout, {input_size}x{input_size} input, "
                        f"{b.shapes[boxes_out][1]} priors")
