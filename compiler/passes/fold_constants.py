"""Constant folding: evaluate every node whose inputs are all constants.

Uses the ONNX reference evaluator one node at a time, and turns ``Shape`` of a
statically shaped tensor into a constant (exporters compute Reshape targets
that way).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compiler.ir import Graph

NEVER_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Loop",
              "If", "Scan"}
MAX_FOLD_ELEMENTS = 1 << 26


def _evaluate(g: Graph, node) -> list[np.ndarray] | None:
    from onnx.reference import ReferenceEvaluator

    inputs = [helper.make_tensor_value_info(f"i{k}", onnx.TensorProto.UNDEFINED, None) for k in range(len(node.inputs))]
    proto = onnx.NodeProto()
    proto.CopyFrom(node.proto)
    del proto.input[:]
    proto.input.extend([f"i{k}" if name else "" for k, name in enumerate(node.inputs)])
    del proto.output[:]
    proto.output.extend([f"o{k}" for k in range(len(node.outputs))])
    graph = helper.make_graph([proto], "fold", [vi for vi, name in zip(inputs, node.inputs) if name],
                              [helper.make_tensor_value_info(f"o{k}", onnx.TensorProto.UNDEFINED, None)
                               for k in range(len(node.outputs))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in g.onnx_opsets.items()])
    feeds = {f"i{k}": g.value(name) for k, name in enumerate(node.inputs) if name}
    try:
        return list(ReferenceEvaluator(model).run(None, feeds))
    except Exception:
        return None


def fold_constants(g: Graph) -> int:
    folded = 0
    changed = True
    while changed:
        changed = False
        for node in g.topo():
            if node.op in NEVER_FOLD or node.proto is None or node.epilogue:
                continue
            if node.op == "Shape":
                shape = g.shape(node.inputs[0])
                if shape is None or node.attrs:
                    continue
                values = [np.asarray(shape, dtype=np.int64)]
            else:
                ins = [i for i in node.inputs if i]
                if not ins or any(g.value(i) is None for i in ins):
                    continue
                if sum(g.value(i).size for i in ins) > MAX_FOLD_ELEMENTS:
                    continue
                values = _evaluate(g, node)
                if values is None:
                    continue
            g.remove(node.name)
            for name, v in zip(node.outputs, values):
                if name:
                    g.const(name, np.asarray(v))
            folded += 1
            changed = True
        g.rebuild()
    # graph outputs that became constants stay constants (the executor returns them directly)
    return folded


def constant_proto(g: Graph, name: str) -> onnx.TensorProto:
    return numpy_helper.from_array(g.value(name), name)
