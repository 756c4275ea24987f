"""Recurrent layers: LSTM, GRU (either linear_before_reset) and RNN on the NPU (any batch; forward, reverse
or bidirectional) as per-timestep chains; what the NPU does not map (other activations, clip, peepholes,
layout 1) on the host.

Per timestep, one mv_mul over the concatenated ``[x_t; h_{t-1}]`` computes
every gate (the buffer ``XH`` holds row (t, b) = ``[x_t, h_{t-1}]`` of sequence b, so the new h
is written straight into the next row), then MFU chains apply the
nonlinearities, products and sums.  Gate rows are laid out ``[i, f, o, c]``
(LSTM) so one ``v_sigm`` chain covers i, f and o; GRU with
``linear_before_reset=1`` uses ``[z, r, W_n x, R_n h]``; with ``linear_before_reset=0`` an MFU chain
multiplies ``r * h`` and a second mv_mul applies ``R_n`` to it; an RNN's tanh fuses into its mv_mul
chain.  The weights are one
set of chunks reused by every timestep.  A reverse direction walks the
timesteps backwards (its XH row k holds x_{T-1-k}); a bidirectional layer runs
both directions one after the other into the shared Y.

A batch of B sequences runs each timestep's chains over B iterations (one per sequence): every operand steps
by its per-sequence size, the gate matrix is read from the MRF once per chain and reused by every sequence,
as the FPT'20 NPU batches its RNNs.

On a machine with the MVM bypass (``NpuConfig.mvm_bypass``, docs/pipeline.md unit 11) the LSTM, the GRU with
``linear_before_reset=0`` and large batch-1 RNNs (:func:`_splits`) split the gate product: the recurrent part
``R h_{k-1} + b`` per step, and the input projection ``W x_{k+1}`` one step ahead as an MVM-only chain (the bypass),
which the MVM multiplies while step k's gate chains run; x and h then live in buffers of their own
(``_Recurrence.split_gates``).  A batch on that machine: an RNN runs sequence by sequence, its projections reading
the queue (``sequence_steps``) or, where the fused product takes fewer MAC rounds, one fused product per sequence
(``fused_sequence_steps``); an LSTM multiplies every product through the bypass (``batch_steps``).  From a zero
initial state the split recurrences skip step 0's R h (``skip_r0``).  On a pipelined machine without the bypass an
RNN's batch runs in two interleaved halves (``_Recurrence.groups``).  docs/pipeline.md has the measurements.
"""
from __future__ import annotations

import numpy as np

from compiler.attrs import rnn
from compiler.chain_ir import ZERO, Buffer, ChainOp, ChainSpec, LoweringError, Placement, Ref, View, WeightChunk
from compiler.ir import Graph, Node
from compiler.lowering import Lowering
from compiler.ops.base import OpDef, ct, float_shape, prod, register, weight_shape
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


def _fused_pays(cfg, it: int, ht: int) -> bool:
    """Whether a batch RNN's sequences multiply ``[W R] [x; h]`` in one product rather than W x and R h apart: when
    the fused product takes fewer MAC rounds (tiles / tile engines, each round `cycles_per_tile`) and its rounds
    take at least as long as the link delivers one sequence's x (else the link bounds the layer and the split's
    projections reading the queue keep it busy).  Measured (benchmarks/bench_rnn.py, brainwave-s10, batch 6, 8
    steps): RNN 1792 (5 tiles: 9 rounds fused, 5 + 5 split) 67.6 -> 75.3 %; RNN 1024 (3 tiles: 3 against 2 + 2, but
    30 cycles a sequence against the link's 39) stays split."""
    e = cfg.tile_engines

    def rounds(cols):
        return -(-ht * cols // e)
    fused = rounds(it + ht)
    return fused < rounds(it) + rounds(ht) and fused * cfg.cycles_per_tile >= it * cfg.port_cost(Space.NETQ)


def _splits(node: Node, batch: int, ht: int) -> bool:
    """Whether a layer software-pipelines its input projections (_Recurrence.split_gates) on a machine with the
    MVM bypass.  Measured on brainwave-s10 (benchmarks/bench_rnn.py, docs/pipeline.md): the LSTM gains at every
    size and batch; an RNN's gate chain (add, tanh) is short, so its split only pays when the projection's MVM
    work covers the extra chain: at batch 1 from 4 hidden tiles on (RNN 1536: 48.4 -> 49.3 %, 2560 25 steps:
    63.6 -> 70.7 %; at 3 tiles the two half-size products lose MAC rounds).  A batch RNN always takes the
    bypass path, sequence by sequence (_Recurrence.sequence_steps, or fused_sequence_steps where _fused_pays):
    RNN 1024 batch 6 48.5 -> 50.8 %, 1792 61.7 -> 73.7 %.  The GRU with linear_before_reset = 0 splits from 3 hidden tiles on (its z, r rows; the n
    rows' input part rides with P and R_n stays the second product): 2800 at 25 steps 70.0 -> 85.6 %, 1024 at
    batch 6 45.1 -> 52.6 %; at 512 (2 tiles) batch 6 it would lose (21.2 -> 20.5 %)."""
    op = node.op
    if op == "GRU":  # linear_before_reset = 1 keeps its fused [z, r, W_n x, R_n h] product (not split yet)
        return not rnn(node).linear_before_reset and ht >= 3
    if op == "LSTM":
        return True
    return op == "RNN" and (batch > 1 or ht >= 4)


class _Recurrence:
    """One direction's skeleton: XH rows, the gate matrix chunks, initial state, Y and Y_h."""

    def __init__(self, lw: Lowering, node: Node, d: int, ndir: int, reverse: bool, y: "Buffer"):
        g = lw.g
        self.lw = lw
        self.node = node
        self.d, self.ndir, self.reverse, self.y = d, ndir, reverse, y
        x = node.inputs[0]
        T, B, I = g.shape(x)
        H = int(node.attr("hidden_size") or g.value(node.inputs[2]).shape[-1])
        self.T, self.B, self.I, self.H = T, B, I, H
        self.it, self.ht = lw.ct(I), lw.ct(H)
        self.row = self.it + self.ht
        self.b0, self.nb = 0, B  # the sequences the chains being emitted run over (use())
        #: software-pipelined input projections (class doc of _Recurrence.split_gates): the machine has the MVM bypass
        self.split = bool(lw.config.mvm_bypass) and T > 1 and _splits(node, B, self.ht)
        #: a batch's split RNN or LSTM: its input projections read x straight from the layer's input (the queue,
        #: once compiler/passes/queue_io.py folds the input copy into them), no per-step copy chains
        self.direct = self.split and B > 1 and node.op in ("RNN", "LSTM")
        #: a batch's RNN on the bypass design runs sequence by sequence (sequence_steps)
        self.by_sequence = self.direct and node.op == "RNN"
        #: ... with one fused [x; h] product per sequence where that takes fewer MAC rounds than W x and R h apart
        #: and the MVM, not the link, bounds it (_fused_pays); x then goes into XH rows by copy chains
        self.fused = self.by_sequence and _fused_pays(lw.config, self.it, self.ht)
        if self.fused:
            self.split = self.direct = False
        # a fused RNN batch without the bypass runs in two interleaved halves (groups()); measured
        # (benchmarks/bench_rnn.py): RNN 1024 and 1792 at batch 6 gain 1.6 and 1.5 points
        self.interleave = node.op == "RNN" and not self.split and not self.by_sequence
        if self.split:  # x of step k (each sequence) and h entering step k in buffers of their own
            if not self.direct:
                self.xs = lw.buffer(f"{node.name}.xs{d}", T * B * self.it)
            self.hs = lw.buffer(f"{node.name}.hs{d}", (T + 1) * B * self.ht)
        else:  # XH rows (k, b), k = 0..T in processing order: [x_t, h_prev]; rows T hold the final h in their h part
            self.xh = lw.buffer(f"{node.name}.xh{d}", (T + 1) * B * self.row)
        src = lw.placement(x)
        slots = src.grid_slots()
        grid = (1, T) if B == 1 else (T, B)  # npu.chain_ir.standard_grid of [T, B, I]
        if slots is None or (src.view.H, src.view.W) != grid or not np.array_equal(slots, np.arange(I)):
            raise LoweringError("RNN input is not one timestep and sequence per pixel")
        self.src = src.view
        h0 = self.state(5)
        #: a split recurrence from a zero initial state skips step 0's recurrent product (R h_{-1} = 0): its gate
        #: chains read the bias where they read Q (q_in), bit for bit what Q = 0 + bias holds
        self.skip_r0 = (self.split or self.fused) and h0.buf is None and h0.space == Space.ZERO
        if not (self.skip_r0 and node.op in ("LSTM", "RNN") and not self.fused):  # h_{-1} read by R only
            lw.chain(ChainSpec(h0, self.ht, self.iters, writes=[self.h_ref(0)]))

    def q_in(self, k: int, q: Ref, bias: np.ndarray, rows: int) -> Ref:
        """Q of step k (the first ``rows`` row tiles) as the gate chains read it: ``q``, or at step 0 of a
        recurrence that skips it (skip_r0) the bias itself, the same for every sequence."""
        if k == 0 and self.skip_r0:
            return Ref(self.lw.const(bias[:rows * self.lw.n], Space.IVRF, 0), 0, 0, 0)
        return q

    def load_input(self, k: int) -> None:
        """The chain copying x of processing step k (each sequence) into XH row k. One per timestep, emitted just
        before the step that needs it (the next step's during this one's MFU work): on the pipelined machine a
        timestep waits for its own input only, and with the input arriving on the network queue
        (compiler/passes/queue_io.py folds these copies into queue reads) the transfer overlaps the recurrence."""
        B, v = self.B, self.src
        t = self.timestep(k)
        at = v.at(0, t) if B == 1 else v.at(t, 0)
        self.lw.chain(ChainSpec(self.per(v.buf, at, v.pitch), self.it, self.iters, writes=[self.x_ref(k)]))

    def x_ref(self, k: int) -> Ref:
        """x of processing step k, each sequence."""
        if self.direct:
            return self.per(self.src.buf, self.src.at(self.timestep(k), 0), self.src.pitch)
        if self.split:
            return self.per(self.xs, k * self.B * self.it, self.it)
        return self.per(self.xh, k * self.B * self.row, self.row)

    @property
    def iters(self) -> tuple[int, int]:
        """A per-timestep chain's iterations: one per sequence of the current group."""
        return (1, self.nb)

    def groups(self) -> list[tuple[int, int]]:
        """The batch as (first sequence, count) groups whose timesteps interleave: on the pipelined machine two
        halves, so one half's MVM runs while the other waits for its gate chains and its next input; else one."""
        if self.B > 1 and self.lw.config.pipelined and self.interleave:
            half = -(-self.B // 2)
            return [(0, half), (half, self.B - half)]
        return [(0, self.B)]

    def use(self, group: tuple[int, int]) -> None:
        """Emit the following chains for the sequences of ``group`` (per() offsets, iters)."""
        self.b0, self.nb = group

    def per(self, buf, offset: int, stride: int) -> Ref:
        """An operand of a per-timestep chain: `offset` in `buf` for sequence 0, `stride` further per sequence
        (from the current group's first sequence on)."""
        return Ref(buf, offset + self.b0 * stride, 0, stride if self.B > 1 else 0)

    def buffer(self, name: str, size: int, space=None, mfu: int = 0):
        """A per-timestep buffer of `size` vectors for each sequence of the batch."""
        return self.lw.buffer(name, size * self.B, space, mfu)

    def timestep(self, k: int) -> int:
        return self.T - 1 - k if self.reverse else k

    def y_ref(self, k: int) -> Ref:
        """Y [T, dirs, B, H] at processing step k, this direction, each sequence."""
        return self.per(self.y, (self.timestep(k) * self.ndir + self.d) * self.B * self.ht, self.ht)

    def h_ref(self, k: int) -> Ref:
        """h entering processing step k (k = T: the final h), each sequence."""
        if self.split:
            return self.per(self.hs, k * self.B * self.ht, self.ht)
        return self.per(self.xh, k * self.B * self.row + self.it, self.row)

    def weights(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        g, node, d = self.lw.g, self.node, self.d
        b = g.value(node.inputs[3])[d] if len(node.inputs) > 3 and node.inputs[3] else None
        return g.value(node.inputs[1])[d], g.value(node.inputs[2])[d], b

    def state(self, index: int) -> Ref:
        """Where this direction's initial state (input `index`: 5 = initial_h, 6 = initial_c) is read
        from: ZERO when absent or all zeros, a constant, or the tensor's placement."""
        lw, n = self.lw, self.lw.n
        name = (self.node.inputs + [""] * 8)[index]
        value = lw.g.value(name) if name else None
        if value is not None:
            value = np.asarray(value, np.float64)[self.d]
        if not name or (value is not None and not np.any(value)):
            return ZERO
        if value is not None:
            vec = np.zeros((self.B, self.ht * n))
            vec[:, :self.H] = value.reshape(self.B, self.H)
            return self.per(lw.const(vec.reshape(-1), Space.ASVRF, 0), 0, self.ht)
        if self.B > 1:
            raise LoweringError("a batch's initial state must be a constant")
        p = lw.placement(name)
        slots = p.grid_slots()
        if slots is None or not np.array_equal(slots, np.arange(self.H)) or p.view.ct != self.ht \
                or (p.view.H, p.view.W) != (1, self.ndir):
            raise LoweringError("initial state is not one vector run of hidden units per direction")
        return p.view.pixel_ref(0, self.d)

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

    def chunks(self, m: np.ndarray, cols: int, tag: str | None = None) -> list[tuple[int, int, WeightChunk]]:
        """The matrix [R*N, cols*N] as (first row tile, rows, chunk) pieces that fit the MRF share, named
        ``node[direction:tag:first row tile]`` (without ``tag:`` for the whole gate matrix [x; h])."""
        lw, n = self.lw, self.lw.n
        R = m.shape[0] // n
        if cols > lw.capacity:
            raise LoweringError(f"a row of {cols} tiles of {self.node.name}'s {tag or '[x; h]'} exceeds the MRF "
                                f"share")
        rc = max(1, min(R, lw.capacity // cols))
        out = []
        for r0 in range(0, R, rc):
            rows = min(rc, R - r0)
            ch = WeightChunk(np.ascontiguousarray(m[r0 * n:(r0 + rows) * n]), rows, cols,
                             f"{self.node.name}[{self.d}:{'' if tag is None else tag + ':'}{r0}]")
            ch.owner = self.node.name
            lw.shared.chunks.append(ch)
            out.append((r0, rows, ch))
        return out

    def split_gates(self, m: np.ndarray, bias: np.ndarray, q: Ref, p: Ref, recur_rows: int | None = None):
        """The gate matrix split into its input part W (x columns) and recurrent part R (h columns), for a
        machine with the MVM bypass (docs/pipeline.md unit 11), as two functions emitting one timestep's chains:

        * ``project(k)``: P_k = W x_k into ``p`` (the half ``k % 2`` of a double buffer, each sequence): an
          MVM-only chain, so it writes through the bypass and takes no part in the MFU order.  Emitted after the
          recurrent chain of step k - 1, it keeps the MVM busy while step k - 1's gate chains run (they wait for
          that MVM, the MVM does not wait for them);
        * ``recur(k)``: Q = R h_{k-1} + bias into ``q`` (the bias added by MFU 0 in fp16, as before; a
          constant input column would quantize it to the weights' block format), over the first
          ``recur_rows`` row tiles (default all: a GRU's n rows have no recurrent part here).

        The caller's first gate chain adds P_k to Q (``p_ref(k)``).  Bits change from the fused ``[x; h]``
        product (W x and R h + b are each rounded to fp16 before their sum), which onnxruntime's comparison
        covers; the simulator and the RTL agree bit for bit either way."""
        lw, n = self.lw, self.lw.n
        it, ht = self.it, self.ht
        R = m.shape[0] // n
        rr = R if recur_rows is None else recur_rows
        # W in two parts: the rows with a recurrent product and the rest (a GRU's n rows)
        w_parts = [[(r0, rows, ch) for r0, rows, ch in self.chunks(np.ascontiguousarray(m[:rr * n, :it * n]), it, "W")]]
        if rr < R:
            w_parts.append([(rr + r0, rows, ch) for r0, rows, ch in
                            self.chunks(np.ascontiguousarray(m[rr * n:, :it * n]), it, "Wn")])
        r_chunks = self.chunks(np.ascontiguousarray(m[:rr * n, it * n:]), ht, "R")
        consts = [lw.const(bias[r0 * n:(r0 + rows) * n], Space.ASVRF, 0) for r0, rows, _ in r_chunks]

        def p_ref(k: int, r0: int = 0) -> Ref:
            return p.shifted((k % 2) * self.B * R + r0)

        def project(k: int, part: int | None = None):
            """P_k's rows (part 0: those with a recurrent product, 1: the others; None: all)."""
            for w_chunks in (w_parts if part is None else w_parts[part:part + 1]):
                for r0, rows, ch in w_chunks:
                    lw.chain(ChainSpec(self.x_ref(k), rows, self.iters, it, weights=ch, writes=[p_ref(k, r0)]))

        def recur(k: int):
            if k == 0 and self.skip_r0:
                return
            for (r0, rows, ch), b in zip(r_chunks, consts):
                lw.chain(ChainSpec(self.h_ref(k), rows, self.iters, ht, weights=ch,
                                   ops=[ChainOp("vv_add", 0, Ref(b))], writes=[q.shifted(r0)]))
        return project, recur, p_ref

    def sequence_steps(self, m: np.ndarray, bias: np.ndarray, ops) -> None:
        """A batch's timesteps sequence by sequence, in the input queue's order u = (k, b), each product split:
        ``P_u = W x_u`` an MVM-only chain (the bypass) reading x straight from the input (so the queue, once
        compiler/passes/queue_io.py folds the input copy into these chains), into slot ``u % 4`` of a small
        ring; then ``R h + bias + P_u`` with ``ops`` (the RNN's tanh) into h and Y.  Emitted skewed by one unit
        (P_{u+1} before R_u): the MVM multiplies the next sequence's projection while the previous one's
        recurrent chain waits for its P, and each chain waits for its own sequence's input only, so the output
        link starts after the first sequence's input instead of after a half batch's.  On N = 400 with hidden
        1024 the MVM needs 4 rounds a unit (40 cycles) against the link's 39 a unit (measured in
        benchmarks/bench_rnn.py; docs/pipeline.md)."""
        lw, n = self.lw, self.lw.n
        it, ht = self.it, self.ht
        ring = 4
        w_chunks = self.chunks(np.ascontiguousarray(m[:, :it * n]), it, "W")
        r_chunks = self.chunks(np.ascontiguousarray(m[:, it * n:]), ht, "R")
        consts = [lw.const(bias[r0 * n:(r0 + rows) * n], Space.ASVRF, 0) for r0, rows, _ in r_chunks]
        P = lw.buffer(f"{self.node.name}.p{self.d}", ring * ht, Space.ASVRF, 1)
        units = [(k, b) for k in range(self.T) for b in range(self.B)]
        v = self.src

        def project(u: int):
            k, b = units[u]
            t = self.timestep(k)
            self.use((b, 1))
            for r0, rows, ch in w_chunks:
                lw.chain(ChainSpec(self.per(v.buf, v.at(t, 0), v.pitch), rows, self.iters, it, weights=ch,
                                   writes=[Ref(P, (u % ring) * ht + r0)]))

        def recur(u: int):
            k, b = units[u]
            self.use((b, 1))
            if k == 0 and self.skip_r0:  # h = tanh(W x + b): P + b, bit for bit (0 + b) + P
                more = [ChainOp(o.mnemonic, o.mfu, o.ref) for o in ops]
                lw.chain(ChainSpec(Ref(P, (u % ring) * ht), ht, self.iters,
                                   ops=[ChainOp("vv_add", 0, Ref(lw.const(bias[:ht * n], Space.ASVRF, 0))), *more],
                                   writes=[self.h_ref(k + 1), self.y_ref(k)]))
                return
            for (r0, rows, ch), c in zip(r_chunks, consts):
                more = [ChainOp(o.mnemonic, o.mfu, o.ref.shifted(r0) if o.ref is not None else None) for o in ops]
                lw.chain(ChainSpec(self.h_ref(k), rows, self.iters, ht, weights=ch,
                                   ops=[ChainOp("vv_add", 0, Ref(c)), ChainOp("vv_add", 1, Ref(P, (u % ring) * ht + r0)),
                                        *more],
                                   writes=[w.shifted(r0) for w in (self.h_ref(k + 1), self.y_ref(k))]))
        project(0)
        for u in range(len(units)):
            if u + 1 < len(units):
                project(u + 1)
            recur(u)
        self.use((0, self.B))

    def fused_sequence_steps(self, m: np.ndarray, bias: np.ndarray) -> None:
        """An RNN batch sequence by sequence (_fused_pays), in the input queue's order u = (k, b): x_u copied into
        its XH row, ``A_u = [W R] [x; h]`` an MVM-only chain (the bypass) into slot ``u % 4`` of a ring, then
        ``tanh(A_u + b)`` (MFU 0) into h (the next XH row) and Y.  Emitted skewed (copy and product u + 1, then u's
        tanh): no product waits in the MFU order, each waits only for its own sequence's x and h.  From a
        zero initial state (skip_r0) step 0 multiplies the W columns only (its h columns meet zeros)."""
        lw, n = self.lw, self.lw.n
        it, ht, C = self.it, self.ht, self.row
        ring = 4
        full = self.chunks(m, C, "XH")
        w_only = self.chunks(np.ascontiguousarray(m[:, :it * n]), it, "W") if self.skip_r0 else None
        A = lw.buffer(f"{self.node.name}.a{self.d}", ring * ht)
        b_ref = Ref(lw.const(bias, Space.ASVRF, 0))
        units = [(k, b) for k in range(self.T) for b in range(self.B)]

        def copy(u: int):
            k, b = units[u]
            self.use((b, 1))
            self.load_input(k)

        def product(u: int):
            k, b = units[u]
            self.use((b, 1))
            chunks, cols = (w_only, it) if k == 0 and self.skip_r0 else (full, C)
            for r0, rows, ch in chunks:
                lw.chain(ChainSpec(self.per(self.xh, k * self.B * C, C), rows, self.iters, cols, weights=ch,
                                   writes=[Ref(A, (u % ring) * ht + r0)]))

        def finish(u: int):
            k, b = units[u]
            self.use((b, 1))
            lw.chain(ChainSpec(Ref(A, (u % ring) * ht), ht, self.iters, ops=[ChainOp("vv_add", 0, b_ref),
                                                                           ChainOp("v_tanh", 0)],
                               writes=[self.h_ref(k + 1), self.y_ref(k)]))
        copy(0)
        product(0)
        for u in range(len(units)):
            if u + 1 < len(units):
                copy(u + 1)
                product(u + 1)
            finish(u)
        self.use((0, self.B))

    def batch_steps(self, m: np.ndarray, bias: np.ndarray, gate, cell, last: int, lead: int) -> None:
        """A batch's split recurrence with every product through the bypass (docs/pipeline.md unit 11), so no MVM
        chain takes part in the MFU order: per step k, over the whole batch, ``Q = R h_{k-1}`` and the next
        step's projection ``P_{k+1} = W x_{k+1}`` (reading x straight from the input: the queue), both MVM-only;
        then ``P'_k = P_k + bias`` (MFU 0), ``gate(k, Q, P')`` and ``cell(k)``.  The MVM multiplies P_{k+1}
        while step k's MFU chains run, and R h_k as soon as they have written h_k.  The last step runs in groups
        of ``last`` sequences, each group's products ``lead`` groups ahead of its MFU chains, so its outputs
        leave on the link while the next group multiplies.  Step 0 from a zero state (skip_r0) has no Q:
        ``gate(0, P', None)``.  Measured in benchmarks/bench_rnn.py (docs/pipeline.md)."""
        lw, n = self.lw, self.lw.n
        it, ht, B = self.it, self.ht, self.B
        R = m.shape[0] // n
        name = f"{self.node.name}.{{}}{self.d}"
        w_chunks = self.chunks(np.ascontiguousarray(m[:, :it * n]), it, "W")
        r_chunks = self.chunks(np.ascontiguousarray(m[:, it * n:]), ht, "R")
        P = lw.buffer(name.format("p"), 2 * B * R)
        Q = lw.buffer(name.format("q"), B * R)
        PB = lw.buffer(name.format("pb"), B * R, Space.ASVRF, 0)
        b_all = Ref(lw.const(bias, Space.ASVRF, 0))

        def project(k: int):
            for r0, rows, ch in w_chunks:
                lw.chain(ChainSpec(self.x_ref(k), rows, self.iters, it, weights=ch,
                                   writes=[self.per(P, (k % 2) * B * R + r0, R)]))

        def recur(k: int):
            if k == 0 and self.skip_r0:
                return
            for r0, rows, ch in r_chunks:
                lw.chain(ChainSpec(self.h_ref(k), rows, self.iters, ht, weights=ch, writes=[self.per(Q, r0, R)]))

        def add_bias(k: int):
            lw.chain(ChainSpec(self.per(P, (k % 2) * B * R, R), R, self.iters, ops=[ChainOp("vv_add", 0, b_all)],
                               writes=[self.per(PB, 0, R)]))

        def finish(k: int):
            if k == 0 and self.skip_r0:
                gate(k, self.per(PB, 0, R), None)
            else:
                gate(k, self.per(Q, 0, R), self.per(PB, 0, R))
            cell(k)
        project(0)
        for k in range(self.T - 1):
            recur(k)
            project(k + 1)
            add_bias(k)
            finish(k)
        k = self.T - 1
        groups = [(b0, min(last, B - b0)) for b0 in range(0, B, last)]
        for g in groups[:lead]:
            self.use(g)
            recur(k)
        self.use((0, B))
        add_bias(k)
        for i, g in enumerate(groups):
            self.use(g)
            finish(k)
            if i + lead < len(groups):
                self.use(groups[i + lead])
                recur(k)
        self.use((0, B))

    def ahead(self, project, step) -> None:
        """x_0, x_1 and ``project(0)`` first, then per timestep k ``step(k)`` (each group), then x_{k+2}."""
        self.each_group(lambda: self.load_input(0))
        self.each_group(lambda: self.load_input(1))
        self.each_group(lambda: project(0))
        for k in range(self.T):
            self.each_group(lambda: step(k))
            if k + 2 < self.T:
                self.each_group(lambda: self.load_input(k + 2))

    def pipelined_steps(self, m: np.ndarray, bias: np.ndarray, q: Ref, p: Ref, gates,
                        recur_rows: int | None = None) -> None:
        """Every timestep with its input projection one step ahead: x_0, x_1 and P_0 before the first step; per
        step k: Q = R h_{k-1} + b, P_{k+1} (the MVM's work while ``gates(k, p_ref(k))`` -- the step's MFU
        chains, the first adding P_k to Q -- runs), then x_{k+2} from the queue. ``gates(k, p, p_at)``: ``p`` is
        P_k, ``p_at(r0)`` its row tile r0 on."""
        project, recur, p_ref = self.split_gates(m, bias, q, p, recur_rows)

        def step(k):
            recur(k)
            if k + 1 < self.T:
                project(k + 1, 1 if late else None)
            gates(k, p_ref(k), lambda r0: p_ref(k, r0))
            if late and k + 1 < self.T:
                project(k + 1, 0)
        # rows without a recurrent product (a GRU's n rows): their projection first, the others' after the step's
        # MFU chains, so the MVM has work both while the gate chains run and while the last ones do
        late = recur_rows is not None
        self.ahead(project, step)

    def gate_chains(self, m: np.ndarray, bias: np.ndarray, dst: list[Ref]) -> list:
        """Chunks of the gate matrix and a function emitting one timestep's mv_mul chains."""
        lw, n = self.lw, self.lw.n
        chunks = [(r0, rows, ch, lw.const(bias[r0 * n:(r0 + rows) * n], Space.ASVRF, 0))
                  for r0, rows, ch in self.chunks(m, self.row)]

        def emit(t: int, writes: list[Ref] | None = None, ops: tuple = ()):
            """Timestep t's chains: + bias, then ``ops`` (operands indexed by gate row, like the bias), into
            ``writes`` (default: ``dst``); x of step t before them (at t = 0) and x of step t + 1 after them."""
            for r0, rows, ch, bconst in chunks:
                more = [ChainOp(o.mnemonic, o.mfu, o.ref.shifted(r0) if o.ref is not None else None) for o in ops]
                lw.chain(ChainSpec(self.per(self.xh, t * self.B * self.row, self.row), rows, self.iters, self.row,
                                   weights=ch,
                                   ops=[ChainOp("vv_add", 0, Ref(bconst)), *more],
                                   writes=[d.shifted(r0) for d in (writes or dst)]))
            if len(self.groups()) == 1 and t + 1 < self.T:  # x of the next step during this one's MFU work
                self.load_input(t + 1)
        return emit

    def each_group(self, fn) -> None:
        """``fn()`` for each group of the batch (groups()), then back to the whole batch."""
        for g in self.groups():
            self.use(g)
            fn()
        self.use((0, self.B))

    def timesteps(self, step) -> None:
        """Every timestep: ``step(k)`` emits step k's chains for the current group; the groups' timesteps
        interleave.  x of step 0 before the first step; x of step k + 1 right after step k's gate product (one
        group: gate_chains' emit) or after step k's chains of every group (the queue's order is (t, b); giving
        each group its x right before its step measured no better: RNN 1024 batch 6 48.5 -> 48.7 %, 1792 61.7 ->
        61.3 %, and worse with 3 or 6 groups)."""
        grouped = len(self.groups()) > 1
        self.each_group(lambda: self.load_input(0))
        for k in range(self.T):
            self.each_group(lambda: step(k))
            if grouped and k + 1 < self.T:
                self.each_group(lambda: self.load_input(k + 1))

def _outputs(lw: Lowering, node: Node, recs: list[_Recurrence]) -> None:
    """Y [T, dirs, 1, H] from the shared Y buffer; Y_h [dirs, 1, H] from each XH's last row."""
    g, n = lw.g, lw.n
    r0 = recs[0]
    T, B, H, ht, ndir = r0.T, r0.B, r0.H, r0.ht, r0.ndir
    outs = node.outputs + ["", "", ""]
    if outs[0]:  # Y [T, dirs, B, H]: vector ((t * dirs + d) * B + b) * ht
        emap = ((np.arange(T * ndir * B)[:, None]) * (ht * n) + np.arange(H)[None, :]).reshape(-1)
        lw.placements[outs[0]] = Placement(View(r0.y, 1, T, ndir * B * ht), tuple(g.shape(outs[0])), n, emap_=emap)
    # Y_h, Y_c [dirs, B, H]: vector (d * B + b) * ht
    emap = (np.arange(ndir * B)[:, None] * (ht * n) + np.arange(H)[None, :]).reshape(-1)
    if outs[1]:
        shape = tuple(g.shape(outs[1]))
        if ndir == 1 and B == 1:
            view = View(r0.hs, 1, 1, ht, offset=T * ht) if r0.split else View(r0.xh, 1, 1, ht, offset=T * r0.row + r0.it)
        else:  # the final h of each direction and sequence sits in its own XH row: gather them
            yh = lw.buffer(f"{node.name}.y_h", ndir * B * ht)
            for rec in recs:
                lw.chain(ChainSpec(rec.h_ref(T), ht, rec.iters, writes=[rec.per(yh, rec.d * B * ht, ht)]))
            view = View(yh, 1, ndir, B * ht)
        lw.placements[outs[1]] = Placement(view, shape, n, emap_=emap)
    if node.op == "LSTM" and outs[2]:  # Y_c: the cell state each direction ends with
        yc = lw.buffer(f"{node.name}.y_c", ndir * B * ht)
        for rec in recs:
            lw.chain(ChainSpec(Ref(rec.c_state), B * ht, writes=[Ref(yc, rec.d * B * ht)]))
        lw.placements[outs[2]] = Placement(View(yc, 1, ndir, B * ht), tuple(g.shape(outs[2])), n, emap_=emap)


def _directions(lw: Lowering, node: Node) -> list[_Recurrence]:
    direction = node.attr("direction", "forward")
    ndir = 2 if direction == "bidirectional" else 1
    T, B, _ = lw.g.shape(node.inputs[0])
    H = int(node.attr("hidden_size") or lw.g.value(node.inputs[2]).shape[-1])
    y = lw.buffer(f"{node.name}.y", T * ndir * B * lw.ct(H))
    return [_Recurrence(lw, node, d, ndir, direction == "reverse" or d == 1, y) for d in range(ndir)]


def lower_rnn(lw: Lowering, node: Node) -> None:
    """An LSTM, GRU or RNN: each direction's timesteps, then the outputs."""
    recs = _directions(lw, node)
    if node.op == "LSTM":
        direction = _lstm_direction
    elif node.op == "RNN":
        direction = _rnn_direction
    else:
        direction = _gru_direction if rnn(node).linear_before_reset else _gru_reset_first_direction
    for rec in recs:
        direction(lw, node, rec)
    _outputs(lw, node, recs)


def _rnn_direction(lw: Lowering, node: Node, rec: _Recurrence) -> None:
    """h = tanh(W x + R h + Wb + Rb): one mv_mul chain per timestep, tanh fused into it."""
    w, r, b = rec.weights()
    ((W, R, Wb, Rb),) = _gate_blocks(w, r, b, rec.H, [0])
    m, bias = rec.matrix([(W, R, Wb + Rb)])
    if rec.fused:  # h = tanh([W R] [x; h] + b), sequence by sequence
        rec.fused_sequence_steps(m, bias)
        return
    if rec.by_sequence:  # h = tanh(R h + b + W x), sequence by sequence
        rec.sequence_steps(m, bias, (ChainOp("v_tanh", 1),))
        return
    if rec.split:  # h = tanh(Q + P): Q = R h + b, P = W x one step ahead (through the bypass)
        ht = rec.ht
        Q = rec.buffer(f"{node.name}.q{rec.d}", ht)
        P = rec.buffer(f"{node.name}.p{rec.d}", 2 * ht, Space.ASVRF, 0)

        def gates(k, p, p_at):
            lw.chain(ChainSpec(rec.q_in(k, rec.per(Q, 0, ht), bias, ht), ht, rec.iters,
                               ops=[ChainOp("vv_add", 0, p), ChainOp("v_tanh", 0)],
                               writes=[rec.h_ref(k + 1), rec.y_ref(k)]))
        rec.pipelined_steps(m, bias, rec.per(Q, 0, ht), rec.per(P, 0, ht), gates)
        return
    step = rec.gate_chains(m, bias, [])
    rec.timesteps(lambda k: step(k, writes=[rec.h_ref(k + 1), rec.y_ref(k)], ops=(ChainOp("v_tanh", 0),)))


def _gru_reset_first_direction(lw: Lowering, node: Node, rec: _Recurrence) -> None:
    """GRU with linear_before_reset = 0 (ONNX's default, and Brainwave's GRU): the reset gate multiplies h
    before R_n does, n = tanh(W_n x + Wb_n + R_n (r * h) + Rb_n), so each timestep has a second mv_mul."""
    n_, ht, d, per = lw.n, rec.ht, rec.d, rec.per
    w, r, b = rec.weights()
    (Wz, Rz, Wbz, Rbz), (Wr, Rr, Wbr, Rbr), (Wn, Rn, Wbn, Rbn) = _gate_blocks(w, r, b, rec.H, [0, 1, 2])
    m, bias = rec.matrix([(Wz, Rz, Wbz + Rbz), (Wr, Rr, Wbr + Rbr), (Wn, None, Wbn + Rbn)])
    ZR = rec.buffer(f"{node.name}.zr{d}", 2 * ht, Space.MULVRF, 0)
    RH = rec.buffer(f"{node.name}.rh{d}", ht)
    N0 = rec.buffer(f"{node.name}.n0{d}", ht, Space.ASVRF, 0)
    N1 = rec.buffer(f"{node.name}.n1{d}", ht, Space.ASVRF, 1)
    rn = np.zeros((ht * n_, ht * n_))
    rn[:rec.H, :rec.H] = Rn
    chunks = [(r0, ch) for r0, _, ch in rec.chunks(rn, ht, "R_n")]
    if rec.split:  # [z, r] = sigm(Q + P), Q = R_zr h + b_zr; n = tanh(R_n (r * h) + P_n + b_n); P = W x one step ahead
        Q = rec.buffer(f"{node.name}.q{d}", 2 * ht)
        P = rec.buffer(f"{node.name}.p{d}", 2 * 3 * ht, Space.ASVRF, 0)
        bn = lw.const(bias[2 * ht * n_:], Space.ASVRF, 1)

        def gates_split(k, p, p_at):
            lw.chain(ChainSpec(rec.q_in(k, per(Q, 0, 2 * ht), bias, 2 * ht), 2 * ht, rec.iters,
                               ops=[ChainOp("vv_add", 0, p), ChainOp("v_sigm", 0)],
                               writes=[per(ZR, 0, 2 * ht)]))
            lw.chain(ChainSpec(rec.h_ref(k), ht, rec.iters, ops=[ChainOp("vv_mul", 0, per(ZR, ht, 2 * ht))],
                               writes=[per(RH, 0, ht)]))
            for r0, ch in chunks:
                lw.chain(ChainSpec(per(RH, 0, ht), ch.rows, rec.iters, ht, weights=ch,
                                   ops=[ChainOp("vv_add", 0, p_at(2 * ht + r0)), ChainOp("vv_add", 1, Ref(bn).shifted(r0)),
                                        ChainOp("v_tanh", 1)],
                                   writes=[per(N0, r0, ht), per(N1, r0, ht)]))
            _gru_update(rec, k, N0, N1, ZR)
        rec.pipelined_steps(m, bias, per(Q, 0, 2 * ht), per(P, 0, 3 * ht), gates_split, recur_rows=2 * ht)
        return
    G = rec.buffer(f"{node.name}.gates{d}", 3 * ht, Space.ASVRF, 0)  # [z, r, W_n x + b]: MFU 0 adds the last
    gates = rec.gate_chains(m, bias, [per(G, 0, 3 * ht)])

    def step(k):
        gates(k)
        lw.chain(ChainSpec(per(G, 0, 3 * ht), 2 * ht, rec.iters, ops=[ChainOp("v_sigm", 0)], writes=[per(ZR, 0, 2 * ht)]))
        lw.chain(ChainSpec(rec.h_ref(k), ht, rec.iters, ops=[ChainOp("vv_mul", 0, per(ZR, ht, 2 * ht))],
                           writes=[per(RH, 0, ht)]))
        # n = tanh(R_n (r * h) + W_n x + b)
        for r0, ch in chunks:
            lw.chain(ChainSpec(per(RH, 0, ht), ch.rows, rec.iters, ht, weights=ch,
                               ops=[ChainOp("vv_add", 0, per(G, 2 * ht + r0, 3 * ht)), ChainOp("v_tanh", 0)],
                               writes=[per(N0, r0, ht), per(N1, r0, ht)]))
        _gru_update(rec, k, N0, N1, ZR)
    rec.timesteps(step)


def _gru_update(rec: _Recurrence, k: int, N0, N1, ZR) -> None:
    """h = n + z * (h_prev - n), into the next XH row and Y."""
    ht, per = rec.ht, rec.per
    rec.lw.chain(ChainSpec(rec.h_ref(k), ht, rec.iters,
                           ops=[ChainOp("vv_a_sub_b", 0, per(N0, 0, ht)), ChainOp("vv_mul", 0, per(ZR, 0, 2 * ht)),
                                ChainOp("vv_add", 1, per(N1, 0, ht))],
                           writes=[rec.h_ref(k + 1), rec.y_ref(k)]))


def _lstm_direction(lw: Lowering, node: Node, rec: _Recurrence) -> None:
    """Every gate's activation rides on the gate mv_mul: sigmoid(a) = (tanh(a / 2) + 1) / 2, so the i, f, o rows
    of the matrix and bias are halved and one chain applies tanh, + [1, 1, 1, 0] and * [1/2, 1/2, 1/2, 1] per gate
    row; then three MFU chains: i * g, c = f * c + i * g, h = o * tanh(c)."""
    n_, ht, d, per = lw.n, rec.ht, rec.d, rec.per
    w, r, b = rec.weights()
    # ONNX order i, o, f, c -> ours i, f, o, g; the sigmoid gates halved (exact: a power of two)
    blocks = [(W * k, R * k, (Wb + Rb) * k) for (W, R, Wb, Rb), k in
              zip(_gate_blocks(w, r, b, rec.H, [0, 2, 1, 3]), (0.5, 0.5, 0.5, 1.0))]
    m, bias = rec.matrix(blocks)
    rows = 4 * ht
    gate = np.repeat(np.arange(4), ht)  # the gate of each row tile
    one = lw.const(np.repeat(np.where(gate < 3, 1.0, 0.0), n_), Space.ASVRF, 1)
    half = lw.const(np.repeat(np.where(gate < 3, 0.5, 1.0), n_), Space.MULVRF, 1)
    G0 = rec.buffer(f"{node.name}.gates{d}", rows, Space.MULVRF, 0)   # i, f for MFU 0's multiplier
    G1 = rec.buffer(f"{node.name}.gates_b{d}", rows, Space.MULVRF, 1)  # o for MFU 1's, g as a chain input
    IG = rec.buffer(f"{node.name}.ig{d}", ht, Space.ASVRF, 1)
    CS = rec.c_state = rec.buffer(f"{node.name}.c{d}", ht)
    lw.chain(ChainSpec(rec.state(6), ht, rec.iters, writes=[per(CS, 0, ht)]))
    act = (ChainOp("v_tanh", 0), ChainOp("vv_add", 1, Ref(one)), ChainOp("vv_mul", 1, Ref(half)))

    def cell(k):
        lw.chain(ChainSpec(per(G1, 3 * ht, rows), ht, rec.iters, ops=[ChainOp("vv_mul", 0, per(G0, 0, rows))],
                           writes=[per(IG, 0, ht)]))
        lw.chain(ChainSpec(per(CS, 0, ht), ht, rec.iters,
                           ops=[ChainOp("vv_mul", 0, per(G0, ht, rows)), ChainOp("vv_add", 1, per(IG, 0, ht))],
                           writes=[per(CS, 0, ht)]))
        lw.chain(ChainSpec(per(CS, 0, ht), ht, rec.iters,
                           ops=[ChainOp("v_tanh", 0), ChainOp("vv_mul", 1, per(G1, 2 * ht, rows))],
                           writes=[rec.h_ref(k + 1), rec.y_ref(k)]))

    if rec.split:  # the gates = act(Q + P): Q = R h + b, P = W x one step ahead (through the bypass)
        Q = rec.buffer(f"{node.name}.q{d}", rows)
        P = rec.buffer(f"{node.name}.p{d}", 2 * rows, Space.ASVRF, 0)

        def gates(k, p, p_at):
            lw.chain(ChainSpec(rec.q_in(k, per(Q, 0, rows), bias, rows), rows, rec.iters,
                               ops=[ChainOp("vv_add", 0, p), *act],
                               writes=[per(G0, 0, rows), per(G1, 0, rows)]))
            cell(k)
        if rec.direct:  # a batch: act(Q + P'), P' = P + bias, every product MVM-only (batch_steps)
            def gate(k, q, pb):
                lw.chain(ChainSpec(q, rows, rec.iters, ops=[*([ChainOp("vv_add", 0, pb)] if pb else []), *act],
                                   writes=[per(G0, 0, rows), per(G1, 0, rows)]))
            rec.batch_steps(m, bias, gate, cell, last=1, lead=3)
            return
        rec.pipelined_steps(m, bias, per(Q, 0, rows), per(P, 0, rows), gates)
        return
    gates = rec.gate_chains(m, bias, [per(G0, 0, rows), per(G1, 0, rows)])

    def step(k):
        gates(k, ops=act)
        cell(k)
    rec.timesteps(step)


def _gru_direction(lw: Lowering, node: Node, rec: _Recurrence) -> None:
    ht, d, per = rec.ht, rec.d, rec.per
    w, r, b = rec.weights()
    (Wz, Rz, Wbz, Rbz), (Wr, Rr, Wbr, Rbr), (Wn, Rn, Wbn, Rbn) = _gate_blocks(w, r, b, rec.H, [0, 1, 2])
    m, bias = rec.matrix([(Wz, Rz, Wbz + Rbz), (Wr, Rr, Wbr + Rbr), (Wn, None, Wbn), (None, Rn, Rbn)])
    G = rec.buffer(f"{node.name}.gates{d}", 4 * ht)
    GA = rec.buffer(f"{node.name}.gates_a{d}", 4 * ht, Space.ASVRF, 1)
    ZR = rec.buffer(f"{node.name}.zr{d}", 2 * ht, Space.MULVRF, 0)
    N0 = rec.buffer(f"{node.name}.n0{d}", ht, Space.ASVRF, 0)
    N1 = rec.buffer(f"{node.name}.n1{d}", ht, Space.ASVRF, 1)
    gates = rec.gate_chains(m, bias, [per(G, 0, 4 * ht), per(GA, 0, 4 * ht)])

    def step(k):
        gates(k)
        lw.chain(ChainSpec(per(G, 0, 4 * ht), 2 * ht, rec.iters, ops=[ChainOp("v_sigm", 0)], writes=[per(ZR, 0, 2 * ht)]))
        # n = tanh(W_n x + b + r * (R_n h + b))
        lw.chain(ChainSpec(per(G, 3 * ht, 4 * ht), ht, rec.iters,
                           ops=[ChainOp("vv_mul", 0, per(ZR, ht, 2 * ht)),
                                ChainOp("vv_add", 1, per(GA, 2 * ht, 4 * ht)), ChainOp("v_tanh", 1)],
                           writes=[per(N0, 0, ht), per(N1, 0, ht)]))
        _gru_update(rec, k, N0, N1, ZR)
    rec.timesteps(step)


# ---------------------------------------------------------------------- records
def rnn_reason(g: Graph, node: Node) -> str | None:
    shape = float_shape(g, node.inputs[0])
    a = rnn(node)
    if a.direction not in ("forward", "reverse", "bidirectional"):
        return f"direction {a.direction!r}"
    ndir = 2 if a.direction == "bidirectional" else 1
    if node.attr("layout", 0):
        return "layout 1 (batch-major sequences)"
    if len(shape) != 3:
        return "the sequence is not [T, B, I]"
    if shape[1] > 1 and shape[0] == 1:
        return "one timestep of a batch (the [1, B, I] layout is read as channels)"
    ins = node.inputs + [""] * 8
    if any(g.value(i) is None for i in ins[1:3]) or (ins[3] and g.value(ins[3]) is None):
        return "weights must be constants"
    if ins[4]:
        lens = g.value(ins[4])
        if lens is None or np.any(np.asarray(lens) != shape[0]):
            return "sequence_lens shorter than the sequence"  # every sequence full length is fine
    for k in (5, 6) if node.op == "LSTM" else (5,):
        if ins[k] and tuple(g.shape(ins[k]) or ()) != (ndir, shape[1], int(node.attr("hidden_size") or 0)):
            return "initial state of an unexpected shape"
        if ins[k] and shape[1] > 1 and g.value(ins[k]) is None:
            return "a batch's initial state must be a constant"
    if node.op == "LSTM" and ins[7]:
        return "peephole connections"
    defaults = {"LSTM": ("sigmoid", "tanh", "tanh"), "GRU": ("sigmoid", "tanh"), "RNN": ("tanh",)}[node.op]
    if a.activations and a.activations not in (defaults, defaults * ndir):  # Keras writes the defaults out
        return "non-default activations"
    if a.clip is not None or a.input_forget:
        return "clip/input_forget"
    return None


def rnn_macs(g: Graph, node: Node) -> int:
    """Every timestep of every sequence multiplies W [dirs, gates*H, I] by x_t and R [dirs, gates*H, H] by h."""
    x = g.shape(node.inputs[0])  # [T, B, I], or [B, T, I] with layout 1: the product is the same
    return x[0] * x[1] * (prod(g.shape(node.inputs[1])) + prod(g.shape(node.inputs[2])))


def rnn_tiles(g: Graph, node: Node, n: int) -> int:
    w = weight_shape(g, node)
    if w is None or len(w) != 3:
        return 0
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[node.op]
    h = w[1] // gates
    blocks = {"LSTM": 4, "GRU": 4, "RNN": 1}[node.op]  # a GRU's matrices make 4 blocks of rows either way
    return blocks * ct(h, n) * (ct(w[2], n) + ct(h, n))


register(
    OpDef("LSTM", npu=rnn_reason, lower=lower_rnn, macs=rnn_macs, tiles=rnn_tiles),
    OpDef("GRU", npu=rnn_reason, lower=lower_rnn, macs=rnn_macs, tiles=rnn_tiles),
    OpDef("RNN", npu=rnn_reason, lower=lower_rnn, macs=rnn_macs, tiles=rnn_tiles),
)
