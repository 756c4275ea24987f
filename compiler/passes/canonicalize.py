"""Bring linear layers to one form: Gemm with a constant weight [out, in] and bias [out].

Gemm (transA=0, constant B and C) and MatMul with a 2-D constant right operand
become ``Gemm`` with ``transB=1``, alpha folded into the weight and beta into
the bias, so later passes (BatchNorm folding, lowering) see one layout.
"""
from __future__ import annotations

import numpy as np

from compiler.ir import Graph, Node, Tensor


def canonicalize_linear(g: Graph) -> int:
    changed = 0
    for node in list(g.nodes.values()):
        if node.op == "Gemm":
            if node.attr("transA", 0) or g.value(node.inputs[1]) is None:
                continue
            if node.attr("_canonical"):
                continue
            w = g.value(node.inputs[1]).astype(np.float32)
            if node.attr("transB", 0) == 0:
                w = w.T
            w = w * np.float32(node.attr("alpha", 1.0))
            m = w.shape[0]
            c = g.value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else np.zeros(m, np.float32)
            if c is None:
                continue
            c = np.asarray(c, np.float32) * np.float32(node.attr("beta", 1.0))
            if c.size == 1:
                c = np.full(m, c.reshape(-1)[0], np.float32)
            elif c.shape not in ((m,), (1, m)):
                continue
        elif node.op == "MatMul":
            w = g.value(node.inputs[1])
            shape = g.shape(node.inputs[0])
            if w is None or w.ndim != 2 or shape is None or len(shape) != 2:
                continue
            w = w.astype(np.float32).T
            c = np.zeros(w.shape[0], np.float32)
        else:
            continue
        wname = g.fresh_name(f"{node.name}.weight")
        g.const(wname, np.ascontiguousarray(w))
        bname = g.fresh_name(f"{node.name}.bias")
        g.const(bname, c.reshape(-1))
        with g.edit(node):
            node.op = "Gemm"
            node.inputs = [node.inputs[0], wname, bname]
        node.attrs = {"transB": 1, "_canonical": 1}
        node.proto = None
        changed += 1
    return changed


def canonicalize_elementwise(g: Graph) -> int:
    """Exporter idioms as the ops the NPU maps: Pad(zeros) -> Conv becomes the Conv's padding,
    ReduceMean over H and W becomes GlobalAveragePool, division by a constant a multiplication."""
    changed = 0
    for node in list(g.nodes.values()):
        if node.name not in g.nodes:
            continue
        if node.op in ("Sum", "Max", "Min") and len(node.inputs) > 2:
            # variadic -> a chain of two-input nodes (each fuses as one MFU op)
            acc = node.inputs[0]
            for k, other in enumerate(node.inputs[1:-1]):
                mid = g.fresh_name(f"{node.outputs[0]}.part{k}")
                g.tensors[mid] = Tensor(mid, g.shape(node.outputs[0]))
                g.add(Node(f"{node.name}.{k}", node.op, [acc, other], [mid]))
                acc = mid
            with g.edit(node):
                node.inputs = [acc, node.inputs[-1]]
            node.proto = None
            changed += 1
        elif node.op == "Div" and g.value(node.inputs[1]) is not None and g.value(node.inputs[0]) is None:
            c = g.value(node.inputs[1]).astype(np.float64)
            if np.all(c != 0) and np.issubdtype(g.value(node.inputs[1]).dtype, np.floating):
                name = g.fresh_name(f"{node.name}.reciprocal")
                g.const(name, (1.0 / c).astype(np.float32))
                with g.edit(node):
                    node.op, node.inputs, node.proto = "Mul", [node.inputs[0], name], None
                changed += 1
        elif node.op == "ReduceMean":
            shape = g.shape(node.inputs[0])
            axes = node.attr("axes")
            if axes is None and len(node.inputs) > 1 and node.inputs[1]:
                axes = g.value(node.inputs[1])
            if shape is None or len(shape) != 4 or axes is None:
                continue
            if sorted(int(a) % 4 for a in np.asarray(axes).reshape(-1)) != [2, 3]:
                continue
            keep = node.attr("keepdims", 1)
            if keep:
                with g.edit(node):
                    node.op, node.inputs, node.attrs, node.proto = "GlobalAveragePool", [node.inputs[0]], {}, None
            else:
                mid = g.fresh_name(f"{node.name}.pooled")
                g.tensors[mid] = Tensor(mid, (shape[0], shape[1], 1, 1))
                g.add(Node(f"{node.name}.gap", "GlobalAveragePool", [node.inputs[0]], [mid]))
                with g.edit(node):
                    node.op, node.inputs, node.attrs, node.proto = "Flatten", [mid], {"axis": 1}, None
            changed += 1
        elif node.op == "Pad":
            pads = g.value(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] else node.attr("pads")
            value = g.value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else node.attr("value", 0.0)
            users = g.consumers_of(node.outputs[0])
            if pads is None or node.attr("mode", "constant") != "constant" or (value is not None and float(np.asarray(value)) != 0.0):
                continue
            if len(node.inputs) > 3 and node.inputs[3]:
                continue
            pads = [int(p) for p in np.asarray(pads).reshape(-1)]
            if len(pads) != 8 or any(pads[k] for k in (0, 1, 4, 5)) or min(pads) < 0:
                continue
            if len(users) != 1 or users[0].op != "Conv" or users[0].inputs[0] != node.outputs[0] or \
                    users[0].attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID") or node.outputs[0] in g.outputs:
                continue
            conv = users[0]
            cp = list(conv.attr("pads") or [0, 0, 0, 0])
            conv.attrs["pads"] = [cp[0] + pads[2], cp[1] + pads[3], cp[2] + pads[6], cp[3] + pads[7]]
            conv.attrs.pop("auto_pad", None)
            conv.proto = None
            g.bypass(node)
            changed += 1
    return changed
