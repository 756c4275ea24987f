"""LSTM and GRU (forward, batch 1) as per-timestep chains.

Per timestep, one mv_mul over the concatenated ``[x_t; h_{t-1}]`` computes
every gate (the buffer ``XH`` holds row t = ``[x_t, h_{t-1}]``, so the new h
is written straight into the next row), then MFU chains apply the
nonlinearities, products and sums.  Gate rows are laid out ``[i, f, o, c]``
(LSTM) so one ``v_sigm`` chain covers i, f and o; GRU with
``linear_before_reset=1`` uses ``[z, r, W_n x, R_n h]``.  The weights are one
set of chunks reused by every timestep.
"""
from __future__ import annotations

import numpy as np

from compiler.ir import Node
from compiler.kernels import ZERO, ChainOp, ChainSpec, LoweringError, Placement, Ref, View, WeightChunk
from compiler.lowering.core import Lowering
from npu.isa import Space


def _gate_blocks(w: np.ndarray, r: np.ndarray, b: np.ndarray | None, hidden: int, order: list[int]):
    """Split ONNX [G*H, I], [G*H, H], [2*G*H] into per-gate (W, R, Wb, Rb) in `order`."""
    G = w.shape[0] // hidden
    b = np.zeros(2 * G * hidden) if b is None else b
    out = []
    for g in order:
        s = slice(g * hidden, (g + 1) * hidden)
        out.append((w[s], r[s], b[s], b[G * hidden:][s]))
    return out


class _Recurrence:
    """The shared skeleton: XH rows, the gate matrix chunks, zeroed state, Y and Y_h placements."""

    def __init__(self, lw: Lowering, node: Node, gates: int):
        g = lw.g
        self.lw = lw
        self.node = node
        x = node.inputs[0]
        T, _, I = g.shape(x)
        H = int(node.attr("hidden_size") or g.value(node.inputs[2]).shape[-1])
        self.T, self.I, self.H = T, I, H
        self.it, self.ht = lw.ct(I), lw.ct(H)
        self.row = self.it + self.ht
        self.gates = gates
        # XH rows 0..T: [x_t, h_{t-1}]; row T holds h_T in its h part
        self.xh = lw.buffer(f"{node.name}.xh", (T + 1) * self.row)
        src = lw.placement(x)
        slots = src.grid_slots()
        if slots is None or (src.view.H, src.view.W) != (1, T) or not np.array_equal(slots, np.arange(I)):
            raise LoweringError("RNN input is not one timestep per pixel")
        lw.chain(ChainSpec(src.view.pixel_ref(), self.it, (1, T), writes=[Ref(self.xh, 0, 0, self.row)]))
        lw.chain(ChainSpec(self.state(5), self.ht, (1, 1), writes=[Ref(self.xh, self.it)]))
        self.y = lw.buffer(f"{node.name}.y", T * self.ht)

    def state(self, index: int) -> Ref:
        """Where an initial state (input `index`: 5 = initial_h, 6 = initial_c) is read from: ZERO when
        absent or all zeros, a constant, or the tensor's placement."""
        lw, n = self.lw, self.lw.n
        name = (self.node.inputs + [""] * 8)[index]
        value = lw.g.value(name) if name else None
        if not name or (value is not None and not np.any(value)):
            return ZERO
        if value is not None:
            vec = np.zeros(self.ht * n)
            vec[:self.H] = np.asarray(value, np.float64).reshape(-1)
            return Ref(lw.const(vec, Space.ASVRF, 0))
        p = lw.placement(name)
        slots = p.grid_slots()
        if slots is None or not np.array_equal(slots, np.arange(self.H)) or p.view.ct != self.ht:
            raise LoweringError("initial state is not one vector run of hidden units")
        return p.view.pixel_ref()

    def matrix(self, blocks) -> tuple[np.ndarray, np.ndarray]:
        """Gate matrix [gates*Ht*N, (It+Ht)*N] and bias [gates*Ht*N] from (W, R, bias) blocks."""
        n, ht = self.lw.n, self.ht
        m = np.zeros((len(blocks) * ht * n, self.row * n))
        bias = np.zeros(len(blocks) * ht * n)
        for k, (w, r, b) in enumerate(blocks):
            r0 = k * ht * n
            if w is not None:
                m[r0:r0 + self.H, :self.I] = w
            if r is not None:
                m[r0:r0 + self.H, self.it * n:self.it * n + self.H] = r
            bias[r0:r0 + self.H] = b
        return m, bias

    def gate_chains(self, m: np.ndarray, bias: np.ndarray, dst: list[Ref]) -> list:
        """Chunks of the gate matrix and a function emitting one timestep's mv_mul chains."""
        lw, n = self.lw, self.lw.n
        R, C = m.shape[0] // n, self.row
        if C > lw.capacity:
            raise LoweringError("an RNN row [x; h] exceeds the MRF share")
        rc = max(1, min(R, lw.capacity // C))
        chunks = []
        for r0 in range(0, R, rc):
            rows = min(rc, R - r0)
            ch = WeightChunk(np.ascontiguousarray(m[r0 * n:(r0 + rows) * n]), rows, C, f"{self.node.name}[{r0}]")
            ch.owner = self.node.name
            lw.shared.chunks.append(ch)
            bconst = lw.const(bias[r0 * n:(r0 + rows) * n], Space.ASVRF, 0)
            chunks.append((r0, rows, ch, bconst))

        def emit(t: int):
            for r0, rows, ch, bconst in chunks:
                lw.chain(ChainSpec(Ref(self.xh, t * self.row), rows, (1, 1), C, weights=ch,
                                   ops=[ChainOp("vv_add", 0, Ref(bconst))],
                                   writes=[d.shifted(r0) for d in dst]))
        return emit

    def outputs(self) -> None:
        lw, node, n = self.lw, self.node, self.lw.n
        g = lw.g
        T, H, ht = self.T, self.H, self.ht
        outs = node.outputs + ["", ""]
        if outs[0]:
            shape = tuple(g.shape(outs[0]))  # [T, 1, 1, H]
            emap = (np.arange(T)[:, None] * (ht * n) + np.arange(H)[None, :]).reshape(-1)
            lw.placements[outs[0]] = Placement(View(self.y, 1, T, ht), shape, n, emap_=emap)
        if outs[1]:
            shape = tuple(g.shape(outs[1]))  # [1, 1, H]
            view = View(self.xh, 1, 1, ht, offset=T * self.row + self.it)
            lw.placements[outs[1]] = Placement(view, shape, n, emap_=np.arange(H))


def lower_lstm(lw: Lowering, node: Node) -> None:
    rec = _Recurrence(lw, node, 4)
    g = lw.g
    ht, T = rec.ht, rec.T
    w, r = g.value(node.inputs[1])[0], g.value(node.inputs[2])[0]
    b = g.value(node.inputs[3])[0] if len(node.inputs) > 3 and node.inputs[3] else None
    # ONNX order i, o, f, c -> ours i, f, o, c
    blocks = [(W, R, Wb + Rb) for W, R, Wb, Rb in _gate_blocks(w, r, b, rec.H, [0, 2, 1, 3])]
    m, bias = rec.matrix(blocks)
    G = lw.buffer(f"{node.name}.gates", 4 * ht)
    S = lw.buffer(f"{node.name}.sig", 3 * ht)
    SO = lw.buffer(f"{node.name}.sig_o", 3 * ht, Space.MULVRF, 1)
    CC = lw.buffer(f"{node.name}.cand", ht, Space.MULVRF, 0)
    IC = lw.buffer(f"{node.name}.ic", ht, Space.ASVRF, 1)
    CS = lw.buffer(f"{node.name}.c", ht, Space.MULVRF, 0)
    lw.chain(ChainSpec(rec.state(6), ht, (1, 1), writes=[Ref(CS)]))
    gates = rec.gate_chains(m, bias, [Ref(G)])
    for t in range(T):
        gates(t)
        lw.chain(ChainSpec(Ref(G), 3 * ht, ops=[ChainOp("v_sigm", 0)], writes=[Ref(S), Ref(SO)]))
        lw.chain(ChainSpec(Ref(G, 3 * ht), ht, ops=[ChainOp("v_tanh", 0)], writes=[Ref(CC)]))
        lw.chain(ChainSpec(Ref(S), ht, ops=[ChainOp("vv_mul", 0, Ref(CC))], writes=[Ref(IC)]))
        lw.chain(ChainSpec(Ref(S, ht), ht, ops=[ChainOp("vv_mul", 0, Ref(CS)), ChainOp("vv_add", 1, Ref(IC))],
                           writes=[Ref(CS)]))
        lw.chain(ChainSpec(Ref(CS), ht, ops=[ChainOp("v_tanh", 0), ChainOp("vv_mul", 1, Ref(SO, 2 * ht))],
                           writes=[Ref(rec.xh, (t + 1) * rec.row + rec.it), Ref(rec.y, t * ht)]))
    rec.outputs()


def lower_gru(lw: Lowering, node: Node) -> None:
    rec = _Recurrence(lw, node, 4)
    g = lw.g
    ht, T = rec.ht, rec.T
    w, r = g.value(node.inputs[1])[0], g.value(node.inputs[2])[0]
    b = g.value(node.inputs[3])[0] if len(node.inputs) > 3 and node.inputs[3] else None
    (Wz, Rz, Wbz, Rbz), (Wr, Rr, Wbr, Rbr), (Wn, Rn, Wbn, Rbn) = _gate_blocks(w, r, b, rec.H, [0, 1, 2])
    m, bias = rec.matrix([(Wz, Rz, Wbz + Rbz), (Wr, Rr, Wbr + Rbr), (Wn, None, Wbn), (None, Rn, Rbn)])
    G = lw.buffer(f"{node.name}.gates", 4 * ht)
    GA = lw.buffer(f"{node.name}.gates_a", 4 * ht, Space.ASVRF, 1)
    ZR = lw.buffer(f"{node.name}.zr", 2 * ht, Space.MULVRF, 0)
    N0 = lw.buffer(f"{node.name}.n0", ht, Space.ASVRF, 0)
    N1 = lw.buffer(f"{node.name}.n1", ht, Space.ASVRF, 1)
    gates = rec.gate_chains(m, bias, [Ref(G), Ref(GA)])
    for t in range(T):
        gates(t)
        lw.chain(ChainSpec(Ref(G), 2 * ht, ops=[ChainOp("v_sigm", 0)], writes=[Ref(ZR)]))
        # n = tanh(W_n x + b + r * (R_n h + b))
        lw.chain(ChainSpec(Ref(G, 3 * ht), ht, ops=[ChainOp("vv_mul", 0, Ref(ZR, ht)),
                                                     ChainOp("vv_add", 1, Ref(GA, 2 * ht)), ChainOp("v_tanh", 1)],
                           writes=[Ref(N0), Ref(N1)]))
        # h = n + z * (h_prev - n)
        lw.chain(ChainSpec(Ref(rec.xh, t * rec.row + rec.it), ht,
                           ops=[ChainOp("vv_a_sub_b", 0, Ref(N0)), ChainOp("vv_mul", 0, Ref(ZR)),
                                ChainOp("vv_add", 1, Ref(N1))],
                           writes=[Ref(rec.xh, (t + 1) * rec.row + rec.it), Ref(rec.y, t * ht)]))
    rec.outputs()
