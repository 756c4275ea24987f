"""Parameter and multiply-accumulate counts of an ONNX model."""
from __future__ import annotations

import math

import onnx
from onnx import TensorProto

# BatchNormalization inputs 3 and 4 (running mean, var) are buffers, not parameters.
_BN_BUFFERS = (3, 4)
_RECURRENT = ("LSTM", "GRU", "RNN")


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


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    graph = model.graph
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    for v in (*graph.input, *graph.value_info, *graph.output):
        dims = v.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[v.name] = [d.dim_value for d in dims]
    return shapes


def count_macs(model: onnx.ModelProto) -> int:
    """Multiply-accumulates of one inference: Conv, Gemm, MatMul, LSTM, GRU and RNN nodes.

    Needs static shapes; a model without ``value_info`` (not built by the zoo)
    is shape-inferred first.
    """
    shapes = _shapes(model)
    needed = [o for n in model.graph.node for o in n.output[:1]]
    if any(o not in shapes for o in needed):
        shapes = _shapes(onnx.shape_inference.infer_shapes(model))
    total = 0
    for node in model.graph.node:
        op = node.op_type
        if op == "Conv":
            weight = shapes[node.input[1]]  # [out, in / group, kh, kw]
            total += math.prod(shapes[node.output[0]]) * math.prod(weight[1:])
        elif op in ("Gemm", "MatMul"):
            a = shapes[node.input[0]]
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            k = a[-2] if trans_a else a[-1]
            total += math.prod(shapes[node.output[0]]) * k
        elif op in _RECURRENT:
            seq, batch, features = shapes[node.input[0]]  # layout 0
            directions, rows, hidden = shapes[node.input[2]]
            total += seq * batch * directions * rows * (features + hidden)
    return total
