"""Remove nodes that compute nothing at inference: Identity, Dropout, Cast to the same type."""
from __future__ import annotations

from compiler.ir import Graph

PASS_THROUGH = {"Identity", "Dropout"}


def remove_identities(g: Graph) -> int:
    removed = 0
    for node in list(g.nodes.values()):
        if node.name not in g.nodes:
            continue
        if node.op == "Dropout" and len([o for o in node.outputs if o]) > 1 and g.consumers_of(node.outputs[1]):
            continue
        same_cast = (node.op == "Cast" and g.tensors.get(node.inputs[0]) is not None
                     and g.tensors.get(node.outputs[0]) is not None
                     and g.tensors[node.inputs[0]].dtype == g.tensors[node.outputs[0]].dtype)
        if node.op in PASS_THROUGH or same_cast:
            if node.inputs[0] in g.inputs and node.outputs[0] in g.outputs:
                continue
            g.bypass(node)
            removed += 1
    return removed
