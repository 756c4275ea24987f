"""Fold QuantizeLinear -> DequantizeLinear pairs on activations to float.

The NPU computes in its own block-floating-point formats, so an ONNX
fake-quantization pair is dropped (its consumers read the float input) rather
than rejected.  DequantizeLinear of a constant is left to constant folding.
"""
from __future__ import annotations

from compiler.ir import Graph


def fold_qdq(g: Graph) -> int:
    folded = 0
    for node in list(g.nodes.values()):
        if node.op != "DequantizeLinear" or node.name not in g.nodes:
            continue
        q = g.producer_of(node.inputs[0])
        if q is None or q.op != "QuantizeLinear" or g.value(q.inputs[0]) is not None:
            continue
        src = q.inputs[0]
        g.remove(node.name)
        g.redirect(node.outputs[0], src)
        if node.outputs[0] in g.outputs:
            g.outputs = [src if o == node.outputs[0] else o for o in g.outputs]
        if not g.consumers_of(q.outputs[0]) and q.outputs[0] not in g.outputs:
            g.remove(q.name)
        folded += 1
    return folded
