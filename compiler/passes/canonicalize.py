"""Bring linear layers to one form: Gemm with a constant weight [out, in] and bias [out].

Gemm (transA=0, constant B and C) and MatMul with a 2-D constant right operand
become ``Gemm`` with ``transB=1``, alpha folded into the weight and beta into
the bias, so later passes (BatchNorm folding, lowering) see one layout.

A MatMul of an activation of rank >= 3 ([..., T, K], a Transformer's Linear
layers) by a constant [K, M] is a batch of vectors through the same weights:
``Reshape -> [prod(...) * T, K]``, the canonical Gemm, ``Reshape`` back; a
following ``Add`` of a constant bias broadcast over the last axis folds into
the Gemm's bias (torch.onnx.export writes nn.Linear on rank-3 inputs as
MatMul + Add).
"""
from __future__ import annotations

import numpy as np

from compiler.ir import Graph, Node, Tensor


def _bias_of_add(g: Graph, node: Node, m: int) -> tuple[Node, np.ndarray] | None:
    """The Add that adds a constant [m] (broadcast over every leading axis) to the node's only output."""
    out = node.outputs[0]
    users = g.consumers_of(out)
    if len(users) != 1 or users[0].op != "Add" or out in g.outputs:
        return None
    add = users[0]
    other = [i for i in add.inputs if i != out]
    if len(other) != 1 or len(add.inputs) != 2:
        return None
    c = g.value(other[0])
    if c is None or c.dtype.kind != "f" or c.ndim > len(g.shape(out)) or c.size not in (1, m):
        return None
    if c.size == m and (c.ndim == 0 or c.shape[-1] != m):
        return None
    return add, np.broadcast_to(np.asarray(c, np.float32).reshape(-1), (m,)).copy()


def _matmul_nd(g: Graph, node: Node) -> list[Node] | None:
    """MatMul [..., K] x const [K, M] (rank >= 3) -> Reshape, canonical Gemm, Reshape; returns the new nodes."""
    w = g.value(node.inputs[1])
    shape = g.shape(node.inputs[0])
    out_shape = g.shape(node.outputs[0])
    if w is None or w.ndim != 2 or w.dtype.kind != "f" or shape is None or len(shape) < 3 or out_shape is None:
        return None
    if g.value(node.inputs[0]) is not None or min(shape) <= 0:
        return None
    K, M = w.shape
    rows = int(np.prod(shape[:-1]))
    bias = _bias_of_add(g, node, M)
    final = node
    c = np.zeros(M, np.float32)
    if bias is not None:
        final, c = bias
    y = final.outputs[0]
    flat_shape = g.fresh_name(f"{node.name}.rows_shape")
    g.const(flat_shape, np.array([rows, K], np.int64))
    x2 = g.fresh_name(f"{node.inputs[0]}.rows")
    g.tensors[x2] = Tensor(x2, (rows, K), g.tensors[node.inputs[0]].dtype)
    y2 = g.fresh_name(f"{y}.rows")
    g.tensors[y2] = Tensor(y2, (rows, M), g.tensors[y].dtype if y in g.tensors else "float32")
    back = g.fresh_name(f"{node.name}.out_shape")
    g.const(back, np.array(out_shape, np.int64))
    wname = g.fresh_name(f"{node.name}.weight")
    g.const(wname, np.ascontiguousarray(w.astype(np.float32).T))
    bname = g.fresh_name(f"{node.name}.bias")
    g.const(bname, c)
    x = node.inputs[0]
    fused = [final.name] if final is not node else []
    g.remove(node.name)
    if final is not node:
        g.remove(final.name)
    new = [Node(f"{node.name}.flatten", "Reshape", [x, flat_shape], [x2]),
           Node(node.name, "Gemm", [x2, wname, bname], [y2], {"transB": 1, "_canonical": 1}, fused=fused),
           Node(f"{node.name}.unflatten", "Reshape", [y2, back], [y])]
    for n in new:
        g.add(n)
    moved = _hoist_flatten(g, new[0])
    return moved + new[1:] if moved else new


#: Elementwise operators of one activation (attributes apply per element).
_UNARY = ("Relu", "Sigmoid", "Tanh", "Erf", "LeakyRelu", "Neg", "Abs", "Exp", "Sqrt", "Softplus", "Elu", "Selu",
          "HardSigmoid", "HardSwish", "Gelu", "Reciprocal", "Log", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos")
#: Elementwise operators of an activation and a constant.
_BINARY = ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min")


def _rows_constant(g: Graph, name: str, k: int) -> str | None:
    """A constant that broadcasts the same over [..., T, k] and [rows, k], as a scalar or [k] (None if not)."""
    c = g.value(name)
    if c is None:
        return None
    if c.size == 1:
        new = c.reshape(())
    elif c.ndim >= 1 and c.shape[-1] == k and c.size == k:
        new = c.reshape(k)
    else:
        return None
    if new.shape == c.shape:
        return name
    out = g.fresh_name(f"{name}.rows")
    g.const(out, np.ascontiguousarray(new))
    return out


def _hoist_flatten(g: Graph, flat: Node) -> list[Node]:
    """Move the Reshape [..., K] -> [rows, K] in front of the elementwise ops that make its input, so
    they compute on rows too; returns the nodes it moved (and the Reshapes it added), in order.

    The NPU lays a [1, T, K] tensor out as K pixels of T channels (a Conv1d's layout) while a Gemm reads
    T pixels of K: with the Reshape ahead of GELU, its multiplications (on the NPU) write rows and the
    Gemm reads them directly.  An op moves when the Reshape is the only reader of its result and each of
    its inputs is a constant that broadcasts alike over both shapes, or an activation of the same
    shape; an input that is itself a Reshape of a [rows, K] tensor (the previous Gemm's) is read as
    that tensor, and a Reshape nobody reads any more is removed."""
    rows_shape = g.shape(flat.outputs[0])
    k = rows_shape[-1]
    order: list[Node] = []
    work = [flat]
    while work:
        r = work.pop()
        x = r.inputs[0]
        p = g.producer_of(x)
        if p is None or x in g.outputs or len(g.consumers_of(x)) != 1 or len(p.outputs) != 1 or p.epilogue \
                or p.domain not in ("", "ai.onnx") or r.name not in g.nodes:
            continue
        data = [i for i in p.inputs if i and g.value(i) is None]
        if not data or any(g.shape(d) != g.shape(x) for d in data):
            continue
        consts: dict[str, str] = {}
        if p.op in _BINARY and len(p.inputs) == 2 and (p.op != "Pow" or p.inputs[0] in data):
            for i in p.inputs:
                c = _rows_constant(g, i, k) if i not in data else i
                if c is None:
                    break
                if i not in data:
                    consts[i] = c
            else:
                c = ""
            if c is None:
                continue
        elif not (p.op in _UNARY and len(p.inputs) == 1):
            continue
        g.remove(r.name)
        new_inputs, fresh, bypassed = {}, [], []
        for d in dict.fromkeys(data):
            q = g.producer_of(d)
            if q is not None and q.op == "Reshape" and g.shape(q.inputs[0]) == rows_shape:
                new_inputs[d] = q.inputs[0]           # undo the previous Gemm's unflatten
                bypassed.append(d)
                continue
            mid = g.fresh_name(f"{d}.rows")
            g.tensors[mid] = Tensor(mid, rows_shape, g.tensors[d].dtype)
            new_inputs[d] = mid
            fresh.append(Node(f"{r.name}.{len(fresh)}" if fresh else r.name, "Reshape", [d, r.inputs[1]], [mid]))
        with g.edit(p):
            p.inputs = [new_inputs.get(i, consts.get(i, i)) for i in p.inputs]
            p.outputs = [r.outputs[0]]
        # p.proto stays: the host builds it with the new inputs and outputs (compiler/hostgraph.py)
        for n in fresh:
            g.add(n)
        for d in bypassed:
            q = g.producer_of(d)
            if q is not None and not g.consumers_of(d) and d not in g.outputs:
                g.remove(q.name)                     # an unflatten nobody reads any more
        order = fresh + [p] + order
        work.extend(fresh)
    return order


def _reorder(g: Graph, before: list[str], placed: dict[str, list[Node]]) -> None:
    """Put each group of new nodes where the node it replaced stood (the graph's order breaks ties in
    segmenting and the topological sort)."""
    order: dict[str, Node] = {}
    new = {n.name for group in placed.values() for n in group}
    for name in before + list(g.nodes):
        if name in placed:
            for n in placed.pop(name):
                if g.nodes.get(n.name) is n:         # (a later rewrite may have removed it)
                    order[n.name] = n
        elif name in g.nodes and name not in new:
            order[name] = g.nodes[name]
    assert len(order) == len(g.nodes)
    g.nodes.clear()
    g.nodes.update(order)


def canonicalize_linear(g: Graph) -> int:
    changed = 0
    placed: dict[str, list[Node]] = {}
    before = list(g.nodes)
    for node in list(g.nodes.values()):
        if node.name not in g.nodes:
            continue
        if node.op == "MatMul" and len(g.shape(node.inputs[0]) or ()) >= 3:
            new = _matmul_nd(g, node)
            if new is not None:
                placed[node.name] = new
                changed += 1
            continue
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
    if placed:
        _reorder(g, before, placed)
    return changed


#: Producers whose output is never negative: a zero pad before a MaxPool reading them acts as -inf would.
_NONNEGATIVE = ("Relu", "Sigmoid", "Softplus", "Abs", "Exp")


def _fold_pad(g: Graph, node: Node) -> bool:
    """A constant Pad of H and W folded into its only reader's own padding where the result is the same:
    zeros before a Conv (or AveragePool with count_include_pad=1); -inf, or zeros on a nonnegative
    tensor, before a MaxPool (every window keeps a real element: total padding < kernel); a Pad of
    nothing is removed whatever reads it."""
    pads = g.value(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] else node.attr("pads")
    value = g.value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else node.attr("value", 0.0)
    if pads is None or node.attr("mode", "constant") != "constant" or value is None or np.asarray(value).size != 1:
        return False
    if len(node.inputs) > 3 and node.inputs[3]:
        return False  # an axes input (opset 18)
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    shape = g.shape(node.inputs[0])
    if shape is None or len(pads) != 2 * len(shape):
        return False
    if not any(pads) and g.value(node.inputs[0]) is None and not (node.inputs[0] in g.inputs and node.outputs[0] in g.outputs):
        g.bypass(node)  # zero-size padding
        return True
    if len(pads) != 8 or any(pads[k] for k in (0, 1, 4, 5)) or min(pads) < 0:
        return False
    users = g.consumers_of(node.outputs[0])
    if len(users) != 1 or users[0].inputs[0] != node.outputs[0] or node.outputs[0] in g.outputs or \
            users[0].attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return False
    user = users[0]
    value = float(np.asarray(value).reshape(-1)[0])
    if user.op == "Conv" or (user.op == "AveragePool" and user.attr("count_include_pad", 0)
                             and not user.attr("ceil_mode", 0)):
        if value != 0.0:
            return False
    elif user.op == "MaxPool":
        producer = g.producer_of(node.inputs[0])
        zero_ok = value == 0.0 and producer is not None and producer.op in _NONNEGATIVE
        if not (value == float("-inf") or zero_ok) or user.attr("ceil_mode", 0) or \
                len([o for o in user.outputs if o]) != 1:
            return False
        kernel = list(user.attr("kernel_shape") or [])
        mp = list(user.attr("pads") or [0, 0, 0, 0])
        dil = list(user.attr("dilations") or [1, 1])
        total = [mp[0] + pads[2], mp[1] + pads[3], mp[2] + pads[6], mp[3] + pads[7]]
        span = [dil[k % 2] * (kernel[k % 2] - 1) + 1 for k in range(4)] if len(kernel) == 2 else None
        if span is None or any(t >= s for t, s in zip(total, span)):
            return False
    else:
        return False
    cp = list(user.attr("pads") or [0, 0, 0, 0])
    user.attrs["pads"] = [cp[0] + pads[2], cp[1] + pads[3], cp[2] + pads[6], cp[3] + pads[7]]
    user.attrs.pop("auto_pad", None)
    user.proto = None
    g.bypass(node)
    return True


def canonicalize_elementwise(g: Graph) -> int:
    """Exporter idioms as the ops the NPU maps: a constant Pad becomes its reader's padding (zeros before
    a Conv, -inf before a MaxPool), ReduceMean over H and W becomes GlobalAveragePool, division by a
    constant a multiplication; GELU, swish and hard swish idioms become one node each
    (compiler/passes/activations.py)."""
    from compiler.passes.activations import fuse_activations

    changed = fuse_activations(g)
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
            if _fold_pad(g, node):
                changed += 1
    return changed
