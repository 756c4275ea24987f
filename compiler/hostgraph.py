"""Host segments as standalone ONNX models for onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compiler.ir import Graph, Node

PRIVATE = "_"


def node_proto(node: Node) -> onnx.NodeProto:
    if node.proto is not None:
        p = onnx.NodeProto()
        p.CopyFrom(node.proto)
        del p.input[:]
        p.input.extend(node.inputs)
        del p.output[:]
        p.output.extend(node.outputs)
        return p
    attrs = {k: v for k, v in node.attrs.items() if not k.startswith(PRIVATE) and v is not None}
    return helper.make_node(node.op, node.inputs, node.outputs, name=node.name, domain=node.domain or None, **attrs)


def _value_info(g: Graph, name: str) -> onnx.ValueInfoProto:
    t = g.tensors.get(name)
    tp = g.type_protos.get(name)
    if tp is not None and not tp.HasField("tensor_type"):
        vi = onnx.ValueInfoProto(name=name)
        vi.type.CopyFrom(tp)
        return vi
    dtype = np.dtype(t.dtype if t is not None else "float32")
    elem = helper.np_dtype_to_tensor_dtype(dtype)
    shape = list(t.shape) if t is not None and t.shape is not None else None
    return helper.make_tensor_value_info(name, elem, shape)


def build(g: Graph, seg) -> onnx.ModelProto:
    protos = []
    for n in seg.nodes:
        # a subgraph reads outer tensors by the names they had in the ONNX model: a tensor a pass renamed
        # gets its old name back through an Identity
        protos += [helper.make_node("Identity", [now], [then]) for then, now in n.implicit.items() if then != now]
        protos.append(node_proto(n))
    used = {i for p in protos for i in p.input if i} | {t for n in seg.nodes for t in n.implicit.values()}
    inits = [numpy_helper.from_array(np.asarray(g.value(t)), t) for t in sorted(used) if g.value(t) is not None]
    graph = helper.make_graph(protos, f"host{seg.index}", [_value_info(g, t) for t in seg.inputs],
                              [_value_info(g, t) for t in seg.outputs], initializer=inits)
    opsets = [helper.make_opsetid(d, v) for d, v in g.onnx_opsets.items()]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = max(g.ir_version, 7) if g.ir_version else 8
    return model
