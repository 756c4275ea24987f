"""The compiler's graph IR: typed tensors and nodes, topology in networkx.

A :class:`Graph` holds :class:`Tensor` facts (shape, dtype, constant value)
and :class:`Node` s (one per ONNX node, or a fused NPU node made by a pass).
Edges are derived from the nodes' input/output tensor names by
:meth:`Graph.rebuild`, so passes edit nodes and call ``rebuild()`` instead of
keeping two structures in step by hand.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np

from npu.errors import CompileError


@dataclass
class Tensor:
    """A value of the graph: its static shape, numpy dtype name and, for constants, its value."""

    name: str
    shape: tuple[int, ...] | None
    dtype: str = "float32"
    value: np.ndarray | None = None

    @property
    def is_const(self) -> bool:
        return self.value is not None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape is not None else -1


@dataclass(eq=False)
class EpOp:
    """One elementwise operation applied to a chain's result, in order.

    ``kind`` is one of add, sub (x - b), rsub (b - x), mul, max, min, relu,
    lrelu, sigm, tanh; ``const`` a constant operand broadcastable per channel,
    ``tensor`` the name of a tensor operand of the same shape.
    """

    kind: str
    const: np.ndarray | None = None
    tensor: str | None = None
    alpha: float = 0.0

    @property
    def stage(self) -> str:
        if self.kind in ("add", "sub", "rsub", "max", "min", "merge"):
            return "addsub"
        if self.kind == "mul":
            return "mul"
        return "act"


@dataclass(eq=False)
class Node:
    """One operation.

    ``attrs`` holds the ONNX attributes decoded to Python values; ``epilogue``
    the elementwise operations a fusion pass attached; ``target`` is "npu" or
    "host" once partitioned; ``proto`` the original ONNX node (host execution).
    """

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    domain: str = ""
    epilogue: list[EpOp] = field(default_factory=list)
    target: str | None = None
    reason: str = ""           # why it runs on the host
    fused: list[str] = field(default_factory=list)  # names of ONNX nodes folded into this one
    proto: Any = None

    def attr(self, name: str, default=None):
        return self.attrs.get(name, default)


class Graph:
    """Nodes, tensors and graph inputs/outputs; networkx DiGraph of node names for topology."""

    def __init__(self, opset: int = 17):
        self.nodes: dict[str, Node] = {}
        self.tensors: dict[str, Tensor] = {}
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.opset = opset
        self._nx: nx.DiGraph | None = None
        self.producer: dict[str, str] = {}
        self.consumers: dict[str, list[str]] = {}
        self.onnx_opsets: dict[str, int] = {"": opset}
        self.ir_version = 8
        self.type_protos: dict = {}  # original ONNX types (sequences, maps) for host subgraphs

    # ------------------------------------------------------------ editing
    def add(self, node: Node) -> Node:
        if node.name in self.nodes:
            base, k = node.name, 1
            while f"{base}_{k}" in self.nodes:
                k += 1
            node.name = f"{base}_{k}"
        self.nodes[node.name] = node
        return node

    def remove(self, name: str) -> None:
        del self.nodes[name]

    def const(self, name: str, value: np.ndarray) -> Tensor:
        t = Tensor(name, tuple(value.shape), str(value.dtype), value)
        self.tensors[name] = t
        return t

    def fresh_name(self, base: str) -> str:
        name, k = base, 0
        while name in self.tensors:
            k += 1
            name = f"{base}_{k}"
        return name

    def bypass(self, node: Node) -> None:
        """Remove a node whose output equals its first input: consumers read the input instead."""
        src, dst = node.inputs[0], node.outputs[0]
        self.remove(node.name)
        if dst in self.outputs:
            # keep the graph output's name: the producer of src now writes dst
            self.rename_tensor(src, dst)
        else:
            for n in self.nodes.values():
                n.inputs = [src if i == dst else i for i in n.inputs]
                for e in n.epilogue:
                    if e.tensor == dst:
                        e.tensor = src
        self.rebuild()

    def rename_tensor(self, old: str, new: str) -> None:
        if old in self.inputs:
            # a graph input that is also an output: keep it, route through an Identity
            self.add(Node(f"identity_{new}", "Identity", [old], [new]))
            return
        for n in self.nodes.values():
            n.inputs = [new if i == old else i for i in n.inputs]
            n.outputs = [new if o == old else o for o in n.outputs]
            for e in n.epilogue:
                if e.tensor == old:
                    e.tensor = new
        if old in self.tensors and new not in self.tensors:
            t = self.tensors[old]
            self.tensors[new] = Tensor(new, t.shape, t.dtype, t.value)

    def rebuild(self) -> None:
        """Recompute producer/consumer maps and the networkx edges from the nodes."""
        self.producer = {}
        self.consumers = {}
        for n in self.nodes.values():
            for o in n.outputs:
                if o:
                    self.producer[o] = n.name
        for n in self.nodes.values():
            for t in self.node_inputs(n):
                self.consumers.setdefault(t, []).append(n.name)
        self._nx = None  # rebuilt on demand: passes edit nodes far more often than they sort them

    @property
    def nx(self) -> nx.DiGraph:
        if self._nx is None:
            g = nx.DiGraph()
            g.add_nodes_from(self.nodes)
            for t, users in self.consumers.items():
                p = self.producer.get(t)
                if p is not None:
                    g.add_edges_from((p, u) for u in users if u != p)
            self._nx = g
        return self._nx

    @staticmethod
    def node_inputs(n: Node) -> list[str]:
        return [i for i in n.inputs if i] + [e.tensor for e in n.epilogue if e.tensor]

    # ------------------------------------------------------------ queries
    def producer_of(self, tensor: str) -> Node | None:
        p = self.producer.get(tensor)
        return self.nodes[p] if p else None

    def consumers_of(self, tensor: str) -> list[Node]:
        return [self.nodes[c] for c in self.consumers.get(tensor, [])]

    def value(self, tensor: str) -> np.ndarray | None:
        t = self.tensors.get(tensor)
        return None if t is None else t.value

    def shape(self, tensor: str) -> tuple[int, ...] | None:
        t = self.tensors.get(tensor)
        return None if t is None else t.shape

    def topo(self) -> list[Node]:
        rank = self._order
        try:
            order = list(nx.lexicographical_topological_sort(self.nx, key=lambda n: rank.get(n, 0)))
        except nx.NetworkXUnfeasible:
            raise CompileError("the graph has a cycle") from None
        return [self.nodes[n] for n in order]

    @property
    def _order(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.nodes)}

    def check_node(self, node: Node, message: str, hint: str | None = None):
        raise CompileError(message, node=node.name, op=node.op, hint=hint)


def nonnegative(g: Graph, tensor: str, depth: int = 0) -> bool:
    """True when the tensor provably holds no negative values (Relu/Sigmoid outputs, pools of them)."""
    p = g.producer_of(tensor)
    if p is None or p.target != "npu" or depth > 20:
        return False
    if p.epilogue:
        last = p.epilogue[-1].kind
        if last in ("relu", "sigm"):
            return True
        return False
    if p.op in ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Reshape", "Flatten",
                "Transpose", "Squeeze", "Unsqueeze", "Identity"):
        return nonnegative(g, p.inputs[0], depth + 1)
    if p.op == "Concat":
        return all(nonnegative(g, i, depth + 1) for i in p.inputs)
    return False


def copy_graph(g: Graph) -> Graph:
    """A copy whose nodes can be edited freely (tensor values are shared, never mutated)."""
    import copy

    h = Graph(g.opset)
    h.onnx_opsets = dict(g.onnx_opsets)
    h.ir_version = g.ir_version
    h.type_protos = g.type_protos
    h.tensors = dict(g.tensors)
    h.inputs, h.outputs = list(g.inputs), list(g.outputs)
    for n in g.nodes.values():
        m = copy.copy(n)
        m.inputs, m.outputs, m.attrs = list(n.inputs), list(n.outputs), dict(n.attrs)
        m.epilogue, m.fused = [copy.copy(e) for e in n.epilogue], list(n.fused)
        h.nodes[m.name] = m
    h.rebuild()
    return h
