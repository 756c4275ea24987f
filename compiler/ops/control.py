"""Control flow (Loop, Scan, If): host operators whose MACs are those of their subgraphs.

A subgraph's shapes are not in the model (ONNX shape inference does not
reach into a body whose inputs have no shapes), so the body is shape-inferred
on its own, with the shapes its inputs take in this node and the outer
tensors it reads declared as its inputs, and its nodes are counted through
the registry: nested loops count their bodies in turn.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compiler.ir import Graph, Node
from compiler.ops.base import OpDef, node_macs, register

SMALL_CONSTANT = 4096  # elements: outer constants this small go in as values (Reshape shapes), larger as shapes


def _subgraph(node: Node, attr: str) -> onnx.GraphProto | None:
    if node.proto is None:
        return None
    return next((a.g for a in node.proto.attribute if a.name == attr), None)


def body_macs(g: Graph, node: Node, attr: str, input_shapes: list) -> int:
    """MACs of one run of subgraph `attr`, its k-th input having shape ``input_shapes[k]`` (None: as declared)."""
    from compiler.frontend import subgraph_reads, to_graph

    body = _subgraph(node, attr)
    if body is None:
        return 0
    graph = onnx.GraphProto()
    graph.CopyFrom(body)
    for vi, shape in zip(graph.input, input_shapes):
        if shape is not None:
            vi.type.tensor_type.ClearField("shape")
            vi.type.tensor_type.shape.dim.extend(onnx.TensorShapeProto.Dimension(dim_value=int(d)) for d in shape)
    for name in sorted(subgraph_reads(graph)):
        t = g.tensors.get(node.implicit.get(name, name))
        if t is None:
            continue
        if t.value is not None and t.value.size <= SMALL_CONSTANT:
            graph.initializer.append(numpy_helper.from_array(np.asarray(t.value), name))
        else:
            elem = helper.np_dtype_to_tensor_dtype(np.dtype(t.dtype))
            graph.input.append(helper.make_tensor_value_info(name, elem, list(t.shape) if t.shape else None))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in g.onnx_opsets.items()])
    model.ir_version = g.ir_version or 8
    try:
        inner = to_graph(onnx.shape_inference.infer_shapes(model, data_prop=True))
    except Exception:  # a body ONNX cannot infer on its own: its MACs stay unknown
        return 0
    return sum(node_macs(inner, n) for n in inner.nodes.values())


def loop_macs(g: Graph, node: Node) -> int:
    """The body's MACs times the trip count M when M is a constant (once when it is not known)."""
    ins = node.inputs + ["", ""]
    trips = g.value(ins[0]) if ins[0] else None
    cond = g.value(ins[1]) if ins[1] else None
    if cond is not None and not bool(np.asarray(cond)):
        return 0
    carried = [g.shape(t) for t in node.inputs[2:]]
    per_trip = body_macs(g, node, "body", [(), ()] + carried)
    return per_trip * (int(np.asarray(trips)) if trips is not None else 1)


def scan_macs(g: Graph, node: Node) -> int:
    """The body's MACs times the length of the scanned axis."""
    m = int(node.attr("num_scan_inputs"))
    states, scanned = node.inputs[:len(node.inputs) - m], node.inputs[len(node.inputs) - m:]
    axes = list(node.attr("scan_input_axes") or [0] * m)
    shapes = [g.shape(t) for t in scanned]
    elems = [tuple(d for k, d in enumerate(s) if k != a % len(s)) for s, a in zip(shapes, axes)]
    trips = shapes[0][axes[0] % len(shapes[0])]
    return body_macs(g, node, "body", [g.shape(t) for t in states] + elems) * int(trips)


def if_macs(g: Graph, node: Node) -> int:
    """The larger branch (which one runs is known only at run time)."""
    return max(body_macs(g, node, "then_branch", []), body_macs(g, node, "else_branch", []))


register(
    OpDef("Loop", macs=loop_macs),
    OpDef("Scan", macs=scan_macs),
    OpDef("If", macs=if_macs),
)
