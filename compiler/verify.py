"""The IR verifier: what every pass may assume of a :class:`~compiler.ir.Graph`, checked after each pass.

The driver runs it between passes when asked (``compile_graph(verify=True)``
or ``NPU_VERIFY_IR=1`` in the environment; tests/compiler/conftest.py sets
it), and not by default: it costs a walk over the graph per pass.  A broken
rule is a :class:`CompileError` naming the pass that broke it and the node.
"""
from __future__ import annotations

from compiler.ir import Graph, Node
from npu.errors import CompileError

TARGETS = ("npu", "host")


def verify(g: Graph, after: str, partitioned: bool = False) -> None:
    """Check the graph as the pass `after` left it; `partitioned` once every node must have a target.

    Rules: every tensor a node reads (inputs and epilogue operands) is a graph input, a constant or
    the output of a node; no tensor has two producers; the producer and consumer maps match the
    nodes; graph outputs exist; the graph is acyclic; after partitioning every node is on the NPU or
    the host, and an NPU node knows the shapes of the tensors it reads and writes, only NPU nodes
    carry epilogues and no epilogue reads the result it produces.
    """
    def fail(message: str, node: Node | None = None):
        raise CompileError(f"IR check after pass {after!r}: {message}", node=node.name if node else None,
                           op=node.op if node else None)

    producer: dict[str, str] = {}
    consumers: dict[str, dict[str, int]] = {}
    for n in g.nodes.values():
        for o in n.outputs:
            if o and o in producer:
                fail(f"tensor {o!r} is also written by {producer[o]!r}", n)
            if o:
                producer[o] = n.name
    for n in g.nodes.values():
        for t in g.node_inputs(n):
            users = consumers.setdefault(t, {})
            users[n.name] = users.get(n.name, 0) + 1
            if t not in producer and t not in g.inputs and g.value(t) is None:
                fail(f"reads {t!r}, which no node produces and is neither a graph input nor a constant", n)
    if producer != g.producer or consumers != g.consumers:
        stale = sorted({t for t in set(producer) | set(g.producer) if producer.get(t) != g.producer.get(t)} |
                       {t for t in set(consumers) | set(g.consumers) if consumers.get(t) != g.consumers.get(t)})
        fail(f"the producer/consumer maps disagree with the nodes about {stale[:5]} (a node was changed "
             "outside Graph.edit)")
    for o in g.outputs:
        if o not in producer and o not in g.inputs and g.value(o) is None:
            fail(f"graph output {o!r} is not produced")
    import networkx as nx

    if not nx.is_directed_acyclic_graph(g.nx):
        fail("the graph has a cycle")
    if not partitioned:
        return
    for n in g.nodes.values():
        if n.target not in TARGETS:
            fail(f"target is {n.target!r} after partitioning", n)
        if n.epilogue and n.target != "npu":
            fail("a host node carries epilogue operations", n)
        if any(e.tensor is not None and e.tensor in n.outputs for e in n.epilogue):
            fail("an epilogue operand is the node's own result", n)
        if n.target == "npu":
            for t in [i for i in g.node_inputs(n) if g.value(i) is None] + [o for o in n.outputs if o]:
                if g.shape(t) is None:
                    fail(f"NPU node without a static shape for {t!r}", n)
