"""The one graph builder every zoo model is written with.

:class:`GraphBuilder` appends ONNX nodes the way PyTorch's exporter writes the
corresponding ``torch.nn`` modules (Conv without bias before BatchNormalization,
Linear as ``Gemm(transB=1)``, adaptive average pooling to 1x1 as
GlobalAveragePool, ...), creates their seeded weights and tracks every tensor's
shape, so a model can size its classifier from the feature map it really gets
and the finished graph carries complete ``value_info``.

Naming follows the exporter too: an initializer is named after the module
parameter (``layer1.0.conv1.weight``), a node after its module path and op
(``/layer1/0/conv1/Conv``) and its output ``<node>_output_0``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

from compiler.zoo.errors import ZooError

OPSET = 17
# The IR version PyTorch writes next to opset 17; onnxruntime reads it everywhere.
IR_VERSION = 8
BN_EPSILON = 1e-5
# PyTorch's BatchNorm momentum 0.1 is exported as ONNX momentum 1 - 0.1.
BN_MOMENTUM = 0.9

Shape = tuple[int, ...]


class GraphBuilder:
    """Accumulates the nodes, weights and shapes of one ONNX model.

    Parameters
    ----------
    name:
        The graph's name; also used in error messages.
    seed:
        Seed of the ``numpy.random.default_rng`` that draws every weight, in
        the order the layers are added, so a model is a pure function of
        (name, seed, sizes).

    Members
    -------
    rng:
        The generator, for builders that draw weights of their own (RNNs).
    shapes:
        Tensor name to shape, for every tensor added so far.
    """

    def __init__(self, name: str, *, seed: int):
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.shapes: dict[str, Shape] = {}
        # Nodes and weights go straight into the model: copying VGG-16's 550 MB of
        # initializers through make_graph/make_model would double the build time.
        self._model = onnx.ModelProto()
        self._graph = self._model.graph
        self._initializer_names: set[str] = set()
        self._node_names: set[str] = set()

    # -- graph plumbing -------------------------------------------------------------

    def input(self, name: str, shape: Sequence[int]) -> str:
        """Declare a float32 graph input."""
        self.shapes[name] = tuple(shape)
        self._graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        return name

    def param(self, name: str, array: np.ndarray) -> str:
        """Add an initializer (float32 weights, or int64 shapes) and return its name."""
        assert array.dtype in (np.float32, np.int64), array.dtype
        assert name not in self._initializer_names, name
        self._initializer_names.add(name)
        tensor = self._graph.initializer.add()
        tensor.name = name
        tensor.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
        tensor.dims.extend(array.shape)
        # ONNX raw_data is little-endian whatever the host.
        tensor.raw_data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        self.shapes[name] = array.shape
        return name

    def _node_name(self, path: str, op: str) -> str:
        """``/layer1/0/conv1/Conv`` for module path ``layer1.0.conv1``.

        A module called twice (torchvision's shared ``relu``) gets ``_1``, ``_2``...
        on its last scope, as the exporter does.
        """
        scope = "/" + path.replace(".", "/") if path else ""
        name = f"{scope}/{op}"
        k = 0
        while name in self._node_names:
            k += 1
            name = f"{scope}_{k}/{op}"
        self._node_names.add(name)
        return name

    def _shape(self, path: str, shape: Sequence[int]) -> Shape:
        shape = tuple(int(d) for d in shape)
        if min(shape) < 1:
            raise ZooError(f"{self.name}: the input is too small: {path} would produce "
                           f"a tensor of shape {list(shape)}; use a larger input size")
        return shape

    def node(self, op: str, inputs: Sequence[str], path: str, shape: Sequence[int],
             *, output: str | None = None, **attrs) -> str:
        """Append one node with a single output of the given shape and return that output.

        ``path`` is the module path (``layer1.0.conv1``) the node is named after;
        ``output`` names the output instead of ``<node name>_output_0``.
        """
        name = self._node_name(path, op)
        out = output or f"{name}_output_0"
        self.shapes[out] = self._shape(path or op, shape)
        self._graph.node.append(helper.make_node(op, list(inputs), [out], name=name, **attrs))
        return out

    def constant(self, name: str, array: np.ndarray) -> str:
        """A ``Constant`` node (as the exporter writes Clip's bounds): a value that is not a parameter."""
        self._node_names.add(name)
        self.shapes[name] = tuple(array.shape)
        self._graph.node.append(helper.make_node("Constant", [], [name], name=name,
                                                 value=onnx.numpy_helper.from_array(array, name)))
        return name

    def multi_output_node(self, op: str, inputs: Sequence[str], path: str,
                          shapes: Sequence[Sequence[int] | None], **attrs) -> list[str]:
        """Append a node with several outputs; one whose shape is ``None`` is not produced ('')."""
        name = self._node_name(path, op)
        outputs = []
        for i, shape in enumerate(shapes):
            out = "" if shape is None else f"{name}_output_{i}"
            if out:
                self.shapes[out] = self._shape(path or op, shape)
            outputs.append(out)
        self._graph.node.append(helper.make_node(op, list(inputs), outputs, name=name, **attrs))
        return outputs

    def finish(self, outputs: Sequence[str], *, doc: str = "") -> onnx.ModelProto:
        """Close the graph with the given outputs and return the model (opset 17).

        Every intermediate tensor gets a ``value_info`` entry from the tracked
        shapes; ``onnx.checker.check_model(full_check=True)`` then verifies
        them against ONNX's own shape inference.
        """
        graph = self._graph
        graph.name = self.name
        graph.output.extend(helper.make_tensor_value_info(o, TensorProto.FLOAT, list(self.shapes[o]))
                            for o in outputs)
        declared = {v.name for v in graph.input} | self._initializer_names | set(outputs)
        graph.value_info.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s))
                                for n, s in self.shapes.items() if n not in declared)
        model = self._model
        model.ir_version = IR_VERSION
        model.opset_import.append(helper.make_opsetid("", OPSET))
        model.producer_name = "npu.zoo"
        model.doc_string = doc
        return model

    # -- weights ------------------------------------------------------------------

    def he_normal(self, shape: Sequence[int], fan_in: int) -> np.ndarray:
        """He (Kaiming) normal initialisation: N(0, 2 / fan_in)."""
        w = self.rng.standard_normal(tuple(shape), dtype=np.float32)
        w *= np.float32(math.sqrt(2.0 / fan_in))
        return w

    def small_bias(self, n: int) -> np.ndarray:
        return self.rng.normal(0.0, 0.01, n).astype(np.float32)

    # -- layers -------------------------------------------------------------------

    def conv(self, x: str, out_channels: int, kernel: int, path: str, *, stride: int = 1,
             pad: int = 0, dilation: int = 1, bias: bool = True, groups: int = 1) -> str:
        """``nn.Conv2d`` (square kernel, symmetric padding, ``groups``: depthwise when it equals the
        channels); He-initialised."""
        n, c, h, w = self.shapes[x]
        if c % groups or out_channels % groups:
            raise ZooError(f"{self.name}: {path}: {c} -> {out_channels} channels do not divide into {groups} groups")
        fan_in = c // groups * kernel * kernel
        inputs = [x, self.param(f"{path}.weight",
                                self.he_normal((out_channels, c // groups, kernel, kernel), fan_in))]
        if bias:
            inputs.append(self.param(f"{path}.bias", self.small_bias(out_channels)))
        span = dilation * (kernel - 1) + 1
        oh = (h + 2 * pad - span) // stride + 1
        ow = (w + 2 * pad - span) // stride + 1
        return self.node("Conv", inputs, path, (n, out_channels, oh, ow),
                         dilations=[dilation, dilation], group=groups, kernel_shape=[kernel, kernel],
                         pads=[pad] * 4, strides=[stride, stride])

    def batchnorm(self, x: str, path: str, *, gamma_scale: float = 1.0) -> str:
        """``nn.BatchNorm2d`` in eval mode with non-trivial running statistics.

        gamma ~ gamma_scale * U(0.8, 1.2), beta ~ N(0, 0.05), mean ~ N(0, 0.1),
        var ~ U(0.5, 1.5): folding it into the previous conv changes every weight.
        A small ``gamma_scale`` on a residual branch's last BN keeps deep
        networks' activations bounded (as zero-init-residual training does).
        """
        c = self.shapes[x][1]
        rng = self.rng
        gamma = (gamma_scale * rng.uniform(0.8, 1.2, c)).astype(np.float32)
        beta = rng.normal(0.0, 0.05, c).astype(np.float32)
        mean = rng.normal(0.0, 0.1, c).astype(np.float32)
        var = rng.uniform(0.5, 1.5, c).astype(np.float32)
        inputs = [x, self.param(f"{path}.weight", gamma), self.param(f"{path}.bias", beta),
                  self.param(f"{path}.running_mean", mean), self.param(f"{path}.running_var", var)]
        return self.node("BatchNormalization", inputs, path, self.shapes[x],
                         epsilon=BN_EPSILON, momentum=BN_MOMENTUM)

    def relu(self, x: str, path: str) -> str:
        return self.node("Relu", [x], path, self.shapes[x])

    def conv_bn(self, x: str, out_channels: int, kernel: int, conv: str, bn: str, *,
                relu: str | None = None, stride: int = 1, pad: int = 0,
                gamma_scale: float = 1.0) -> str:
        """Conv (no bias) + BatchNormalization, then Relu if ``relu`` names its module."""
        y = self.conv(x, out_channels, kernel, conv, stride=stride, pad=pad, bias=False)
        y = self.batchnorm(y, bn, gamma_scale=gamma_scale)
        return self.relu(y, relu) if relu else y

    def _pool_shape(self, x: str, kernel: int, stride: int, pad: int, ceil: bool) -> Shape:
        n, c, h, w = self.shapes[x]

        def out(d: int) -> int:
            span = d + 2 * pad - kernel
            size = (-(-span // stride) if ceil else span // stride) + 1
            # PyTorch's (and ONNX's) rule: the last window must start inside the input.
            if ceil and (size - 1) * stride >= d + pad:
                size -= 1
            return size

        return (n, c, out(h), out(w))

    def maxpool(self, x: str, kernel: int, stride: int, path: str, *, pad: int = 0,
                ceil: bool = False) -> str:
        return self.node("MaxPool", [x], path, self._pool_shape(x, kernel, stride, pad, ceil),
                         ceil_mode=int(ceil), kernel_shape=[kernel, kernel], pads=[pad] * 4,
                         strides=[stride, stride])

    def avgpool(self, x: str, kernel: int, stride: int, path: str) -> str:
        return self.node("AveragePool", [x], path, self._pool_shape(x, kernel, stride, 0, False),
                         ceil_mode=0, kernel_shape=[kernel, kernel], pads=[0] * 4,
                         strides=[stride, stride])

    def global_avgpool(self, x: str, path: str) -> str:
        n, c = self.shapes[x][:2]
        return self.node("GlobalAveragePool", [x], path, (n, c, 1, 1))

    def flatten(self, x: str, path: str = "") -> str:
        shape = self.shapes[x]
        return self.node("Flatten", [x], path, (shape[0], math.prod(shape[1:])), axis=1)

    def gemm(self, x: str, out_features: int, path: str, *, output: str | None = None) -> str:
        """``nn.Linear``: ``Gemm(x, W[out, in], b, transB=1)``, He-initialised."""
        in_features = self.shapes[x][1]
        return self.linear(x, self.he_normal((out_features, in_features), in_features),
                           self.small_bias(out_features), path, output=output)

    def linear(self, x: str, weight: np.ndarray, bias: np.ndarray, path: str, *,
               output: str | None = None) -> str:
        """``nn.Linear`` with given (e.g. trained) weight [out, in] and bias [out]."""
        batch, in_features = self.shapes[x]
        assert weight.shape == (bias.shape[0], in_features), (weight.shape, bias.shape, in_features)
        w = self.param(f"{path}.weight", weight.astype(np.float32))
        b = self.param(f"{path}.bias", bias.astype(np.float32))
        return self.node("Gemm", [x, w, b], path, (batch, weight.shape[0]), output=output,
                         alpha=1.0, beta=1.0, transB=1)

    def add(self, a: str, b: str, path: str = "") -> str:
        assert self.shapes[a] == self.shapes[b], (self.shapes[a], self.shapes[b])
        return self.node("Add", [a, b], path, self.shapes[a])

    def mul(self, x: str, scale: str, path: str = "") -> str:
        """Elementwise Mul by a (broadcast) initializer; the output has x's shape."""
        return self.node("Mul", [x, scale], path, self.shapes[x])

    def concat(self, xs: Sequence[str], path: str = "", *, axis: int = 1,
               output: str | None = None) -> str:
        shape = list(self.shapes[xs[0]])
        shape[axis] = sum(self.shapes[x][axis] for x in xs)
        return self.node("Concat", list(xs), path, shape, output=output, axis=axis)

    def transpose(self, x: str, perm: Sequence[int], path: str = "") -> str:
        shape = self.shapes[x]
        return self.node("Transpose", [x], path, [shape[p] for p in perm], perm=list(perm))

    def reshape(self, x: str, shape: Sequence[int], path: str = "", *,
                output: str | None = None) -> str:
        """Reshape to a constant shape (one -1 allowed), as the exporter folds ``view``."""
        size = math.prod(self.shapes[x])
        known = math.prod(d for d in shape if d != -1)
        full = [size // known if d == -1 else d for d in shape]
        assert math.prod(full) == size, (self.shapes[x], shape)
        scope = "/" + path.replace(".", "/") if path else ""
        target = self.param(f"{scope}/Reshape_shape_{len(self._graph.node)}", np.array(shape, dtype=np.int64))
        return self.node("Reshape", [x, target], path, full, output=output)
