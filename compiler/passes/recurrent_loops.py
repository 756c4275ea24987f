"""Keras recurrent layers as the recurrent operators they are: an ONNX Loop that tf2onnx writes for a Keras
LSTM, GRU or SimpleRNN becomes one ONNX LSTM, GRU or RNN node, which the NPU runs (compiler/ops/rnn.py).

Keras 3 layers export as a ``while`` loop (tf2onnx's own LSTM/GRU rewriters no longer match them): per
iteration the body Gathers timestep i of the time-major input, multiplies it by the kernel and the state by
the recurrent kernel, adds the bias and applies the cell's gates. This pass proposes, from the loop's
structure alone, the recurrent node it would be (the cell from the recurrent kernel's width, G x H with G = 4,
3 or 1; the weights in Keras's gate order, converted to ONNX's) and then *checks the proposal numerically*:
onnxruntime runs the original Loop and the proposed node on seeded random inputs, and only a match within
float32 rounding replaces the Loop. A loop that is anything else (another cell, other activations, a data-
dependent trip count, a sequence read in another order) fails the check and stays as it is, on the host.

Works on the ModelProto before the graph IR is built (compiler/driver.py's ``to_graph`` pass), so what
follows sees ordinary recurrent nodes.
"""
from __future__ import annotations

import itertools

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compiler.frontend import infer_shapes

#: Keras gate order -> ONNX gate order (row blocks of W/R, as indices into Keras's blocks)
_KERAS_TO_ONNX = {"LSTM": [0, 3, 1, 2],   # Keras i, f, c, o -> ONNX i, o, f, c
                  "GRU": [0, 1, 2],       # Keras z, r, h -> ONNX z, r, h
                  "RNN": [0]}
_CELLS = {4: "LSTM", 3: "GRU", 1: "RNN"}
MAX_CHECK_ELEMENTS = 1 << 22  # a loop whose check would move more than this stays on the host


def _const(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in graph.initializer}


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    out = {}
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if vi.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            out[vi.name] = [d.dim_value for d in dims]
    return out


def _ancestors(graph: onnx.GraphProto, names: list[str], stop: set[str]) -> list[onnx.NodeProto]:
    """The nodes computing `names` from the graph's initializers, inputs and the tensors in `stop`, in graph
    order."""
    producer = {o: n for n in graph.node for o in n.output}
    need, seen = list(names), set()
    while need:
        t = need.pop()
        n = None if t in stop else producer.get(t)
        if n is None or id(n) in seen:
            continue
        seen.add(id(n))
        need += list(n.input)
    return [n for n in graph.node if id(n) in seen]


class _Loop:
    """What the structure of one Loop says, or why it is not a recurrent layer (``reason``)."""

    def __init__(self, node: onnx.NodeProto, graph: onnx.GraphProto, consts: dict, shapes: dict):
        self.node, self.reason = node, None
        body = next(a.g for a in node.attribute if a.name == "body")
        self.body = body
        b_in = [i.name for i in body.input]
        b_out = [o.name for o in body.output]
        self.n_carried = len(node.input) - 2
        self.n_scan = len(b_out) - 1 - self.n_carried
        trips = consts.get(node.input[0]) if node.input[0] else None
        if trips is None or trips.size != 1:
            self.reason = "no constant trip count"
            return
        self.T = int(trips.reshape(-1)[0])
        inner = _const(body)
        local = set(b_in) | {o for n in body.node for o in n.output} | set(inner)
        outer_used = {t for n in body.node for t in n.input if t and t not in local}
        # weights: loop-carried constants passed through unchanged, and outer initializers
        self.params = {}
        for j in range(self.n_carried):
            v, bi, bo = node.input[2 + j], b_in[2 + j], b_out[1 + j]
            if bi == bo and v in consts:
                self.params[bi] = consts[v]
        self.params.update({t: consts[t] for t in outer_used if t in consts})
        rk = [(k, a) for k, a in self.params.items() if a.ndim == 2 and a.shape[1] % a.shape[0] == 0
              and a.shape[1] // a.shape[0] in _CELLS]
        if len(rk) < 1:
            self.reason = "no recurrent kernel [H, G*H]"
            return
        # the sequence: an outer tensor [T, B, I] the body Gathers from
        seqs = [n.input[0] for n in body.node if n.op_type == "Gather" and n.input[0] in outer_used
                and n.input[0] not in consts and len(shapes.get(n.input[0], [])) == 3]
        if len(seqs) != 1 or shapes[seqs[0]][0] != self.T:
            self.reason = "no time-major sequence read one timestep per iteration"
            return
        self.X = seqs[0]
        self.Tx, self.B, self.I = shapes[self.X]
        self.rk_candidates = rk
        # float states: loop-carried, not passed through, [B, H] (not the timestep counter Keras carries too)
        passed = {b_in.index(k) - 2 for k in self.params if k in b_in}
        self.states = [j for j in range(self.n_carried) if j not in passed
                       and len(shapes.get(node.input[2 + j], consts.get(node.input[2 + j], np.zeros(0)).shape)) == 2]
        self.outer = sorted(outer_used - set(consts) - {self.X})


def _proposals(loop: _Loop):
    """(op, attrs, W, R, Bias, state slots) for each cell the loop's weights allow, in Keras's conventions."""
    for rk_name, RK in loop.rk_candidates:
        H = RK.shape[0]
        G = RK.shape[1] // H
        op = _CELLS[G]
        kernels = [a for k, a in loop.params.items() if k != rk_name and a.shape == (loop.I, G * H)]
        biases = [a for a in loop.params.values() if a.shape in ((G * H,), (2, G * H))]
        for K in kernels:
            for bias in biases or [np.zeros(G * H, np.float32)]:
                order = _KERAS_TO_ONNX[op]

                def blocks(m):  # [X, G*H] (Keras) -> [G*H, X] in ONNX gate order
                    return np.concatenate([m[:, g * H:(g + 1) * H].T for g in order])

                def bias_blocks(v):
                    return np.concatenate([v[g * H:(g + 1) * H] for g in order])

                W, R = blocks(K), blocks(RK)
                if bias.ndim == 2:  # GRU reset_after: [input bias, recurrent bias]
                    B = np.concatenate([bias_blocks(bias[0]), bias_blocks(bias[1])])
                    variants = [{"linear_before_reset": 1}] if op == "GRU" else []
                else:
                    B = np.concatenate([bias_blocks(bias), np.zeros(G * H, np.float32)])
                    variants = [{"linear_before_reset": 0}, {"linear_before_reset": 1}] if op == "GRU" else [{}]
                for attrs in variants:
                    yield op, dict(attrs, hidden_size=H), W, R, B


def _replacement(loop: _Loop, op, attrs, W, R, B, h_slot, c_slot, outs) -> tuple[list, list]:
    """Nodes and initializers replacing the Loop: the recurrent node, then each Loop output it gives."""
    node, name = loop.node, loop.node.name or "loop"
    p = f"{name}.{op.lower()}"
    inits = [numpy_helper.from_array(W[None].astype(np.float32), f"{p}.W"),
             numpy_helper.from_array(R[None].astype(np.float32), f"{p}.R"),
             numpy_helper.from_array(B[None].astype(np.float32), f"{p}.B"),
             numpy_helper.from_array(np.array([0], np.int64), f"{p}.axis0"),
             numpy_helper.from_array(np.array([1], np.int64), f"{p}.axis1")]
    init_h = node.input[2 + h_slot]
    ins = [loop.X, f"{p}.W", f"{p}.R", f"{p}.B", "", f"{p}.h0"]
    nodes = [helper.make_node("Unsqueeze", [init_h, f"{p}.axis0"], [f"{p}.h0"], name=f"{p}.h0")]
    if op == "LSTM":
        ins.append(f"{p}.c0")
        nodes.append(helper.make_node("Unsqueeze", [node.input[2 + c_slot], f"{p}.axis0"], [f"{p}.c0"],
                                      name=f"{p}.c0"))
    y, yh, yc = f"{p}.Y", f"{p}.Y_h", f"{p}.Y_c"
    nodes.append(helper.make_node(op, ins, [y, yh] + ([yc] if op == "LSTM" else []), name=p, **attrs))
    scan, final_h, final_c = outs
    if scan is not None:
        nodes.append(helper.make_node("Squeeze", [y, f"{p}.axis1"], [node.output[scan]], name=f"{p}.y"))
    if final_h is not None:
        nodes.append(helper.make_node("Squeeze", [yh, f"{p}.axis0"], [node.output[final_h]], name=f"{p}.yh"))
    if final_c is not None:
        nodes.append(helper.make_node("Squeeze", [yc, f"{p}.axis0"], [node.output[final_c]], name=f"{p}.yc"))
    return nodes, inits


def _used(graph: onnx.GraphProto, names) -> set[str]:
    consumed = {t for n in graph.node for t in n.input} | {o.name for o in graph.output}
    return {t for t in names if t and t in consumed}


def _check(model: onnx.ModelProto, loop: _Loop, nodes: list, inits: list, compared: list[str],
           seed: int = 0) -> bool:
    """Does the replacement give the Loop's outputs `compared`, on random sequences and states?"""
    import onnxruntime as ort

    g = model.graph
    feeds_names = [loop.X] + [t for t in loop.outer] + [loop.node.input[2 + j] for j in loop.states]
    feeds_names = [t for t in dict.fromkeys(feeds_names) if t not in _const(g)]
    shapes = _shapes(model)
    if any(t not in shapes for t in feeds_names):
        return False
    if sum(int(np.prod(shapes[t])) for t in feeds_names) * loop.T > MAX_CHECK_ELEMENTS:
        return False
    rng = np.random.default_rng(seed)
    feeds = {t: rng.uniform(-1, 1, shapes[t]).astype(np.float32) for t in feeds_names}
    # what the Loop needs from the outer graph besides the fed tensors: its trip count and condition
    pre = _ancestors(g, [t for t in loop.node.input if t], set(feeds_names))
    # only the weights the loop and what computes its trip count read (not every weight of the model, each run)
    need = _node_reads(pre + [loop.node])
    const_inits = [i for i in g.initializer if i.name in need]

    def run(body_nodes, extra_inits):
        graph = helper.make_graph(
            pre + body_nodes, "check",
            [helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, shapes[t]) for t in feeds_names],
            [helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in compared],
            const_inits + extra_inits)
        m = helper.make_model(graph, opset_imports=list(model.opset_import))
        m.ir_version = model.ir_version
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # a proposal leaves the Loop's own weights unused; no news
        sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return sess.run(compared, feeds)

    try:
        want = run([loop.node], [])
        got = run(nodes, inits)
    except Exception:  # an ill-formed proposal is simply not the loop
        return False
    return all(a.shape == b.shape and np.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(want, got))


def _reads(g: onnx.GraphProto) -> set[str]:
    """Every tensor name a node of g reads, subgraphs (their outer-scope references) included."""
    return _node_reads(g.node)


def _node_reads(nodes) -> set[str]:
    out = set()
    for n in nodes:
        out.update(n.input)
        for a in n.attribute:
            for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                out |= _reads(sub)
    return out


def _prune(g: onnx.GraphProto) -> None:
    """Drop the nodes and initializers nothing reads any more (the loop's condition and weights)."""
    while True:
        used = _reads(g) | {o.name for o in g.output}
        dead = [n for n in g.node if not any(o in used for o in n.output if o)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    used = _reads(g) | {o.name for o in g.output}
    for init in [i for i in g.initializer if i.name not in used]:
        g.initializer.remove(init)


def rewrite_recurrent_loops(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every Keras recurrent Loop replaced by its recurrent node (a copy; the same model when
    there is none)."""
    if not any(n.op_type == "Loop" for n in model.graph.node):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    consts, shapes = _const(g), _shapes(out)
    changed = False
    for node in list(g.node):
        if node.op_type != "Loop":
            continue
        loop = _Loop(node, g, consts, shapes)
        if loop.reason or not 1 <= len(loop.states) <= 2 or loop.n_scan > 1:
            continue
        used = _used(g, node.output)
        carried_out = {j: node.output[j] for j in range(loop.n_carried)}
        if any(carried_out[j] in used for j in range(loop.n_carried) if j not in loop.states):
            continue  # a counter or a weight read after the loop: not worth the trouble
        scan = loop.n_carried if loop.n_scan and node.output[loop.n_carried] in used else None
        done = False
        for op, attrs, W, R, B in _proposals(loop):
            if done or (op == "LSTM") != (len(loop.states) == 2):
                continue
            for hc in itertools.permutations(loop.states):
                h_slot, c_slot = hc[0], (hc[1] if op == "LSTM" else None)
                final_h = h_slot if node.output[h_slot] in used else None
                final_c = c_slot if c_slot is not None and node.output[c_slot] in used else None
                compared = [node.output[j] for j in (scan, final_h, final_c) if j is not None]
                if not compared:
                    break
                nodes, inits = _replacement(loop, op, attrs, W, R, B, h_slot, c_slot, (scan, final_h, final_c))
                if _check(out, loop, nodes, inits, compared):
                    at = list(g.node).index(node)
                    g.node.remove(node)
                    for k, n in enumerate(nodes):
                        g.node.insert(at + k, n)
                    g.initializer.extend(inits)
                    changed = done = True
                    break
    if not changed:
        return model
    _prune(g)
    return infer_shapes(out)  # the frontend's inference: big weights left out, shapes by execution kept
