"""A graph builder that runs what it builds, so BatchNorm statistics and the classifier are set from
real activations, as training leaves them.

With He-initialised weights and made-up BatchNorm statistics a deep CNN's activations drift by orders
of magnitude (MobileNetV2's outputs were ~3e-9, below fp16) and its output barely depends on its input
(two images gave outputs at cosine 0.9999).  :class:`CalibratingBuilder` keeps the value of every
tensor for a small batch of calibration inputs, half image-like (smooth random fields with per-image
colour and brightness, normalised like ImageNet inputs) and half white noise N(0, 1) (what `npu check`
feeds; a network calibrated on smooth images only amplifies its high frequencies layer after layer,
1e5 x at EfficientNet-B0's end): each BatchNorm gets the running mean and variance of
the activations it really sees (so its output is gamma * unit + beta), and :meth:`classifier` centres
and scales the logits over the batch (so they are driven by the input, not by a common offset).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

from compiler.zoo.layers import BN_EPSILON, BN_MOMENTUM, GraphBuilder

CALIBRATION_SAMPLES = 4
LOGIT_STD = 2.0


def image_like(rng: np.random.Generator, count: int, shape: Sequence[int]) -> np.ndarray:
    """[count, C, H, W] smooth random images, about zero mean and unit variance per channel."""
    _, c, h, w = shape
    out = np.empty((count, c, h, w), np.float32)
    for k in range(count):
        img = np.zeros((c, h, w), np.float32)
        for cells in (2, 4, 8, 16):  # a few octaves of bilinearly upsampled noise (1/f-like spectrum)
            coarse = rng.standard_normal((c, cells + 1, cells + 1)).astype(np.float32)
            ys, xs = np.linspace(0, cells, h), np.linspace(0, cells, w)
            y0, x0 = np.minimum(ys.astype(int), cells - 1), np.minimum(xs.astype(int), cells - 1)
            fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
            a, b = coarse[:, y0][:, :, x0], coarse[:, y0][:, :, x0 + 1]
            cc, d = coarse[:, y0 + 1][:, :, x0], coarse[:, y0 + 1][:, :, x0 + 1]
            img += (a * (1 - fy) * (1 - fx) + b * (1 - fy) * fx + cc * fy * (1 - fx) + d * fy * fx) * (4.0 / cells)
        img += rng.standard_normal((c, 1, 1)).astype(np.float32) * 0.5       # colour cast and brightness
        img += rng.standard_normal((c, h, w)).astype(np.float32) * 0.1       # sensor noise
        out[k] = img / img.std()
    return out


class CalibratingBuilder(GraphBuilder):
    """A :class:`GraphBuilder` that evaluates every node on a calibration batch (onnxruntime, one
    node at a time) as it is added; the batch rides in dimension 0, so builders using it must keep
    that dimension free (Flatten, not a Reshape to [1, ...])."""

    def __init__(self, name: str, *, seed: int, samples: int | None = None):
        super().__init__(name, seed=seed)
        self.samples = samples
        self.calibration_rng = np.random.default_rng([seed, 0xCA1])  # inputs; weights keep self.rng
        self.values: dict[str, np.ndarray] = {}

    def input(self, name: str, shape: Sequence[int]) -> str:
        out = super().input(name, shape)
        if self.samples is None:
            # enough samples that a 32x-downsampled map still gives each BatchNorm >= 32 values
            self.samples = int(min(32, max(CALIBRATION_SAMPLES, -(-32 * 32 * 32 // (shape[2] * shape[3])))))
        smooth = image_like(self.calibration_rng, self.samples // 4, shape)
        noise = self.calibration_rng.standard_normal((self.samples - self.samples // 4, *shape[1:])).astype(np.float32)
        self.values[name] = np.concatenate([smooth, noise])
        return out

    def param(self, name: str, array: np.ndarray) -> str:
        out = super().param(name, array)
        self.values[name] = array
        return out

    def constant(self, name: str, array: np.ndarray) -> str:
        out = super().constant(name, array)
        self.values[out] = array
        return out

    def node(self, op: str, inputs: Sequence[str], path: str, shape: Sequence[int], *, output: str | None = None,
             **attrs) -> str:
        out = super().node(op, inputs, path, shape, output=output, **attrs)
        self.values[out] = self._run(self._graph.node[-1])
        return out

    def _run(self, node: onnx.NodeProto) -> np.ndarray:
        import onnxruntime as ort

        feeds = {i: self.values[i] for i in node.input if i}
        graph = helper.make_graph(
            [node], "calibrate",
            [helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
             for i, v in feeds.items()],
            [helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, None)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return sess.run(None, feeds)[0]

    # -- calibrated layers ----------------------------------------------------------------------------

    def batchnorm(self, x: str, path: str, *, gamma_scale: float = 1.0) -> str:
        """``nn.BatchNorm2d`` whose running statistics are those of its input on the calibration batch."""
        c = self.shapes[x][1]
        v = self.values[x].astype(np.float64)
        mean = v.mean(axis=(0, 2, 3)).astype(np.float32)
        var = v.var(axis=(0, 2, 3))
        # few samples at 1x1 pixels make some variances tiny: floor them so no channel is blown up
        var = np.maximum(var, max(1e-4, 0.05 * float(np.median(var)))).astype(np.float32)
        gamma = (gamma_scale * self.rng.uniform(0.8, 1.2, c)).astype(np.float32)
        beta = self.rng.normal(0.0, 0.1, c).astype(np.float32)
        inputs = [x, self.param(f"{path}.weight", gamma), self.param(f"{path}.bias", beta),
                  self.param(f"{path}.running_mean", mean), self.param(f"{path}.running_var", var)]
        return self.node("BatchNormalization", inputs, path, self.shapes[x], epsilon=BN_EPSILON, momentum=BN_MOMENTUM)

    def classifier(self, x: str, out_features: int, path: str, *, output: str | None = None) -> str:
        """``nn.Linear`` whose logits, over the calibration batch, have zero mean per class and standard
        deviation :data:`LOGIT_STD`."""
        in_features = self.shapes[x][1]
        w = self.he_normal((out_features, in_features), in_features).astype(np.float64)
        logits = self.values[x].astype(np.float64) @ w.T
        bias = -logits.mean(axis=0)
        scale = LOGIT_STD / max(float((logits + bias).std()), 1e-12)
        return self.linear(x, (w * scale).astype(np.float32), (bias * scale).astype(np.float32), path, output=output)
