"""Parameter and multiply-accumulate counts of an ONNX model."""
from __future__ import annotations

import math

import onnx
from onnx import TensorProto

# BatchNormalization inputs 3 and 4 (running mean, var) are buffers, not parameters.
_BN_BUFFERS = (3, 4)


def count_parameters(model: onnx.ModelProto) -> int:
    """Trainable parameters as PyTorch counts them: float weights, biases, BN gamma and beta.

    BatchNormalization running statistics and integer constants (Reshape
    shapes) are left out, so a torchvision-layout model matches
    ``sum(p.numel() for p in net.parameters())``.
    """
    buffers = {n.input[i] for n in model.graph.node if n.op_type == "BatchNormalization"
               for i in _BN_BUFFERS}
    return sum(math.prod(t.dims) for t in model.graph.initializer
               if t.data_type == TensorProto.FLOAT and t.name not in buffers)


def _shapes_known(model: onnx.ModelProto) -> bool:
    graph = model.graph
    known = {t.name for t in graph.initializer}
    for v in (*graph.input, *graph.value_info, *graph.output):
        if all(d.HasField("dim_value") for d in v.type.tensor_type.shape.dim):
            known.add(v.name)
    return all(o in known for n in graph.node for o in n.output[:1])


def count_macs(model: onnx.ModelProto) -> int:
    """Multiply-accumulates of one inference, as the compiler's operator records count them
    (compiler/ops/: Conv, Gemm, MatMul, LSTM, GRU, RNN, Loop bodies, ...).

    Needs static shapes; a model without ``value_info`` (not built by the zoo)
    is shape-inferred first.
    """
    from compiler.frontend import to_graph
    from compiler.ops import node_macs

    if not _shapes_known(model):
        model = onnx.shape_inference.infer_shapes(model)
    g = to_graph(model)
    return sum(node_macs(g, n) for n in g.nodes.values())
