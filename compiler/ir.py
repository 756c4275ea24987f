"""The compiler's graph IR: typed tensors and nodes, topology in networkx.

A :class:`Graph` holds :class:`Tensor` facts (shape, dtype, constant value)
and :class:`Node` s (one per ONNX node, or a fused NPU node made by a pass).
Its producer and consumer maps follow every edit made through the graph
(:meth:`Graph.add`, :meth:`Graph.remove`, :meth:`Graph.edit`,
:meth:`Graph.redirect`, :meth:`Graph.rename_tensor`,
:meth:`Graph.extend_epilogue`, :meth:`Graph.set_output`) in time
proportional to the edited node, so a pass that rewrites every node of a
long chain stays linear; the networkx DiGraph is derived from the maps when
a pass sorts.
A pass that changes a node's inputs, outputs or epilogue does it inside
``with g.edit(node):``; compiler/verify.py checks the maps against the nodes.
``str(graph)`` (or :meth:`Graph.dump`) is the IR as text, one line per node.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from npu.errors import CompileError
from npu.isa import ACT_TABLE_OPS, BY_MNEMONIC, Space


@dataclass
class Tensor:
    """A value of the graph: its static shape, numpy dtype name and, for constants, its value."""

    name: str
    shape: tuple[int, ...] | None
    dtype: str = "float32"
    value: np.ndarray | None = None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape is not None else -1


#: The MFU instruction of each epilogue kind; its stage and operand memory are the ISA table's.
EP_MNEMONICS = {"add": "vv_add", "merge": "vv_add", "sub": "vv_a_sub_b", "rsub": "vv_b_sub_a", "max": "vv_max",
                "min": "vv_min", "mul": "vv_mul", "relu": "v_relu", "lrelu": "v_lrelu", "sigm": "v_sigm",
                "tanh": "v_tanh", **{fn: mn for mn, fn in ACT_TABLE_OPS.items()}}


@dataclass(eq=False)
class EpOp:
    """One elementwise operation applied to a chain's result, in order.

    ``kind`` is a key of :data:`EP_MNEMONICS` (sub is x - b, rsub b - x,
    merge the add of a concatenation part into its group's buffer); ``const``
    a constant operand broadcastable per channel, ``tensor`` the name of a
    tensor operand of the same shape.
    """

    kind: str
    const: np.ndarray | None = None
    tensor: str | None = None
    alpha: float = 0.0

    @property
    def mnemonic(self) -> str:
        return EP_MNEMONICS[self.kind]

    @property
    def stage(self) -> str:
        """The MFU stage that runs it (an npu.config.MFU_STAGES name)."""
        return BY_MNEMONIC[self.mnemonic].stage

    @property
    def vrf(self) -> Space | None:
        """The vector memory a binary op reads its second operand from; None for a unary op."""
        return BY_MNEMONIC[self.mnemonic].vrf

    def __str__(self) -> str:
        if self.tensor is not None:
            return f"{self.kind}({self.tensor})"
        if self.const is not None:
            c = np.asarray(self.const)
            return f"{self.kind}({float(c.reshape(-1)[0]):g})" if c.size == 1 else f"{self.kind}(const[{c.size}])"
        return f"{self.kind}({self.alpha:g})" if self.kind == "lrelu" else self.kind


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
    implicit: dict[str, str] = field(default_factory=dict)  # outer tensors its subgraphs read: name there -> here

    def attr(self, name: str, default=None):
        return self.attrs.get(name, default)


class Graph:
    """Nodes, tensors and graph inputs/outputs; networkx DiGraph of node names for topology.

    ``producer`` maps a tensor to the node that writes it, ``consumers`` a
    tensor to {node that reads it: how many times, as inputs and epilogue
    operands}; the editing methods keep both: read them, never assign them.
    """

    def __init__(self, opset: int = 17):
        self.nodes: dict[str, Node] = {}
        self.tensors: dict[str, Tensor] = {}
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.opset = opset
        self._nx = None
        self.producer: dict[str, str] = {}
        self.consumers: dict[str, dict[str, int]] = {}
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
        self._link(node)
        return node

    def remove(self, name: str) -> None:
        self._unlink(self.nodes.pop(name))

    @contextmanager
    def edit(self, node: Node):
        """Change a node's inputs, outputs or epilogue inside this block; the maps follow."""
        self._unlink(node)
        try:
            yield node
        finally:
            self._link(node)

    def extend_epilogue(self, node: Node, ops: list[EpOp]) -> None:
        """Append epilogue ops (their tensor operands become readers' inputs), in time of the new ops only."""
        node.epilogue.extend(ops)
        for e in ops:
            if e.tensor:
                self._read(e.tensor, node.name)
        self._nx = None

    def set_output(self, node: Node, k: int, tensor: str) -> None:
        """Node output k becomes `tensor`."""
        old = node.outputs[k]
        if old and self.producer.get(old) == node.name:
            del self.producer[old]
        node.outputs[k] = tensor
        self.producer[tensor] = node.name
        self._nx = None

    def _read(self, tensor: str, name: str) -> None:
        users = self.consumers.setdefault(tensor, {})
        users[name] = users.get(name, 0) + 1

    def _link(self, n: Node) -> None:
        for o in n.outputs:
            if o:
                self.producer[o] = n.name
        for t in self.node_inputs(n):
            self._read(t, n.name)
        self._nx = None

    def _unlink(self, n: Node) -> None:
        for o in n.outputs:
            if o and self.producer.get(o) == n.name:
                del self.producer[o]
        for t in self.node_inputs(n):
            users = self.consumers[t]
            users[n.name] -= 1
            if not users[n.name]:
                del users[n.name]
                if not users:
                    del self.consumers[t]
        self._nx = None

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
            self.redirect(dst, src)

    def redirect(self, old: str, new: str) -> None:
        """Every reader of tensor `old` (as an input or an epilogue operand) reads `new` instead."""
        for name in list(self.consumers.get(old, ())):
            self._rename_in(self.nodes[name], old, new)

    def rename_tensor(self, old: str, new: str) -> None:
        if old in self.inputs:
            # a graph input that is also an output: keep it, route through an Identity
            self.add(Node(f"identity_{new}", "Identity", [old], [new]))
            return
        names = list(self.consumers.get(old, ()))
        if old in self.producer:
            names.append(self.producer[old])
        for name in dict.fromkeys(names):
            self._rename_in(self.nodes[name], old, new)
        if old in self.tensors and new not in self.tensors:
            t = self.tensors[old]
            self.tensors[new] = Tensor(new, t.shape, t.dtype, t.value)

    def _rename_in(self, n: Node, old: str, new: str) -> None:
        with self.edit(n):
            n.inputs = [new if i == old else i for i in n.inputs]
            n.outputs = [new if o == old else o for o in n.outputs]
            n.implicit = {k: new if v == old else v for k, v in n.implicit.items()}
            for e in n.epilogue:
                if e.tensor == old:
                    e.tensor = new

    def rebuild(self) -> None:
        """Recompute the producer and consumer maps from the nodes (after building a graph wholesale)."""
        self.producer, self.consumers = {}, {}
        for n in self.nodes.values():
            self._link(n)

    @property
    def nx(self):
        # networkx is imported here, not at the top: `npu --help` lists the pass names from the driver
        import networkx as nx

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
        """Every tensor the node reads: inputs, epilogue operands, and what its subgraphs read of this graph."""
        return [i for i in n.inputs if i] + [e.tensor for e in n.epilogue if e.tensor] + list(n.implicit.values())

    # ------------------------------------------------------------ queries
    def producer_of(self, tensor: str) -> Node | None:
        p = self.producer.get(tensor)
        return self.nodes[p] if p else None

    def consumers_of(self, tensor: str) -> list[Node]:
        """The nodes reading `tensor`, a node once per input (or epilogue operand) it reads it as."""
        return [self.nodes[c] for c, k in self.consumers.get(tensor, {}).items() for _ in range(k)]

    def value(self, tensor: str) -> np.ndarray | None:
        t = self.tensors.get(tensor)
        return None if t is None else t.value

    def shape(self, tensor: str) -> tuple[int, ...] | None:
        t = self.tensors.get(tensor)
        return None if t is None else t.shape

    def topo(self) -> list[Node]:
        import networkx as nx

        rank = {name: i for i, name in enumerate(self.nodes)}
        try:
            order = list(nx.lexicographical_topological_sort(self.nx, key=rank.__getitem__))
        except nx.NetworkXUnfeasible:
            raise CompileError("the graph has a cycle") from None
        return [self.nodes[n] for n in order]

    # ------------------------------------------------------------ text
    def describe(self, tensor: str) -> str:
        """``name:1x64x56x56``; ``?`` for an unknown shape, ``=const`` after a constant."""
        if not tensor:
            return "-"
        t = self.tensors.get(tensor)
        shape = "?" if t is None or t.shape is None else "x".join(str(d) for d in t.shape) or "scalar"
        return f"{tensor}:{shape}" + ("=const" if t is not None and t.value is not None else "")

    def dump(self) -> str:
        """The IR as text: the graph's inputs and outputs, then one line per node (topological order)::

            name  Op  inputs -> outputs  target  [epilogue ops]  fused: ONNX nodes  (why it runs on the host)
        """
        try:
            nodes = self.topo()
        except CompileError:
            nodes = list(self.nodes.values())  # a broken graph still prints
        lines = [f"graph (opset {self.opset}): inputs {', '.join(map(self.describe, self.inputs))}; "
                 f"outputs {', '.join(map(self.describe, self.outputs))}"]
        for n in nodes:
            line = f"  {n.name}  {n.op}  {', '.join(map(self.describe, n.inputs))} -> " \
                   f"{', '.join(map(self.describe, n.outputs))}  {n.target or '-'}"
            if n.epilogue:
                line += f"  [{', '.join(map(str, n.epilogue))}]"
            if n.fused and n.fused != [n.name]:
                line += f"  fused: {', '.join(n.fused)}"
            if n.reason:
                line += f"  ({n.reason})"
            lines.append(line)
        return "\n".join(lines)

    __str__ = dump


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
        m.epilogue, m.fused, m.implicit = [copy.copy(e) for e in n.epilogue], list(n.fused), dict(n.implicit)
        h.nodes[m.name] = m
    h.rebuild()
    return h
