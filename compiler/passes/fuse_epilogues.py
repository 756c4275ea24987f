"""Fusion of bias, activations, BatchNormalization and residual adds into chains.

Every NPU elementwise node (an operator whose record has an ``epilogue``,
compiler/ops/eltwise.py) becomes an :class:`~compiler.ir.EpOp` list: it is
appended to the epilogue of its producer (a Conv, Gemm, pool or another
elementwise node, whose record ``absorbs``) when that producer's result has no
other reader; otherwise it becomes a standalone ``Eltwise`` node.  The MFU
stage assignment later splits epilogues that do not fit one chain.
"""
from __future__ import annotations

from compiler.ir import Graph
from compiler.ops import OPS
from compiler.ops.base import producer_absorbs


def fuse_epilogues(g: Graph) -> int:
    fused = 0
    for node in g.topo():
        if node.target != "npu" or node.name not in g.nodes or OPS[node.op].epilogue is None:
            continue
        x, ops = OPS[node.op].epilogue(g, node)
        prev = g.producer_of(x)
        if prev is not None and producer_absorbs(g, x) and prev.outputs[0] == x:
            g.remove(node.name)
            # not Graph.edit: a chain of n fused nodes would relink an epilogue of up to n ops n times
            g.extend_epilogue(prev, ops)
            g.set_output(prev, 0, node.outputs[0])
            prev.fused.append(node.name)
            prev.proto = None
            fused += 1
        else:
            # the original proto stays: it is what the host would run if lowering gives the node up
            with g.edit(node):
                node.op, node.inputs, node.epilogue, node.attrs = "Eltwise", [x], ops, {}
            node.fused.append(node.name)
    return fused
