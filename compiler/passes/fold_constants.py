"""Constant folding: evaluate every node whose inputs are all constants.

Uses the ONNX reference evaluator one node at a time, and turns ``Shape`` of a
statically shaped tensor into a constant (exporters compute Reshape targets
that way).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from compiler.ir import Graph

NEVER_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Loop",
              "If", "Scan"}
MAX_FOLD_ELEMENTS = 1 << 26


def _evaluate(g: Graph, node) -> list[np.ndarray] | None:
    """Run one node on constant inputs: onnxruntime, else the ONNX reference evaluator."""
    feeds = {f"i{k}": np.asarray(g.value(name)) for k, name in enumerate(node.inputs) if name}
    proto = onnx.NodeProto()
    proto.CopyFrom(node.proto)
    del proto.input[:]
    proto.input.extend([f"i{k}" if name else "" for k, name in enumerate(node.inputs)])
    del proto.output[:]
    proto.output.extend([f"o{k}" for k in range(len(node.outputs))])
    inputs = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
              for k, v in feeds.items()]
    opsets = [helper.make_opsetid(d, v) for d, v in g.onnx_opsets.items()]
    for typed in (True, False):
        outputs = []
        for k, name in enumerate(node.outputs):
            t = g.tensors.get(name)
            elem = helper.np_dtype_to_tensor_dtype(np.dtype(t.dtype)) if typed and t is not None else 0
            outputs.append(helper.make_tensor_value_info(f"o{k}", elem, None))
        model = helper.make_model(helper.make_graph([proto], "fold", inputs, outputs), opset_imports=opsets)
        model.ir_version = 8
        try:
            if typed:
                import onnxruntime as ort

                opts = ort.SessionOptions()
                opts.log_severity_level = 4
                sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
                return list(sess.run(None, feeds))
            from onnx.reference import ReferenceEvaluator

            return list(ReferenceEvaluator(model).run(None, feeds))
        except Exception:
            continue
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
    # graph outputs that became constants stay constants (the executor returns them directly)
    return folded

