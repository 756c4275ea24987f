"""Lowering machinery shared by every operator: buffers, constants, MFU stage assignment, the MVM chain builder.

:class:`Lowering` holds the state of one NPU segment (steps, buffers,
placements); each operator's ``lower`` (compiler/ops/) appends the chains of
one node.  :func:`split_columns` and :func:`row_chunk` cut a weight matrix of
native tiles into column groups and row chunks that fit the MRF share (the
whole MRF when weights are pinned, half of it when they stream); several
column groups accumulate fp16 partial sums.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from compiler.chain_ir import (ZERO, Buffer, ChainOp, ChainSpec, LoweringError, Placement, Ref, View, WeightChunk,
                               channel_vector, standard_grid)
from compiler.ir import EpOp, Graph, Node
from npu.config import MFU_STAGES, NpuConfig
from npu.isa import Space

NEG_INF = float("-inf")


def split_columns(total: int, unit: int, capacity: int) -> list[tuple[int, int]]:
    """Split `total` column tiles into runs of whole `unit`s, each at most `capacity` (as (c0, cols)).

    A unit is what one read must keep together: a conv's kernel row of ``kw * Ct`` tiles, a padded
    feature map's pixel row."""
    if total <= capacity:
        return [(0, total)]
    per = (capacity // unit) * unit
    if per == 0:
        raise LoweringError(f"{unit} column tiles that must stay together exceed the MRF share of {capacity}")
    return [(c0, min(per, total - c0)) for c0 in range(0, total, per)]


def row_chunk(rows: int, cols: int, capacity: int) -> int:
    """Output tiles per chain when each row of tiles has `cols` tiles and the MRF share is `capacity`."""
    return max(1, min(rows, capacity // cols))


@dataclass
class PadReq:
    """Padding a tensor's buffer needs for its windowed consumers, and the value it must hold."""

    pad: tuple[int, int, int, int] = (0, 0, 0, 0)
    fill: float | None = None  # None until a padded consumer states what it needs

    def merge(self, pad, fill) -> None:
        self.pad = tuple(max(a, b) for a, b in zip(self.pad, pad))
        if any(pad):
            # -inf only when every padded reader is a MaxPool that needs it; a conflicting
            # MaxPool then finds zeros and is moved to the host by its lowering
            self.fill = fill if self.fill in (None, fill) else 0.0


@dataclass
class Shared:
    """State shared by every NPU segment of a model: constants and weight chunks."""

    consts: dict = field(default_factory=dict)      # (space, mfu, bytes) -> Buffer
    chunks: list[WeightChunk] = field(default_factory=list)


@dataclass
class InputSpec:
    """How the host turns one segment input into vectors (pushed in order)."""

    tensor: str
    kind: str                 # "stream" (emap) or "im2col"
    vectors: int
    emap: np.ndarray | None = None
    im2col: dict | None = None


@dataclass
class OutputSpec:
    tensor: str
    shape: tuple[int, ...]
    vectors: int
    emap: np.ndarray


class Lowering:
    """Lowering state of one NPU segment."""

    def __init__(self, g: Graph, config: NpuConfig, shared: Shared, pads: dict[str, PadReq], capacity: int):
        self.g = g
        self.config = config
        self.n = config.native_dim
        self.shared = shared
        self.pads = pads
        self.capacity = capacity
        self.steps: list = []
        self.buffers: list[Buffer] = []
        self.placements: dict[str, Placement] = {}
        self.inputs: list[InputSpec] = []
        self.outputs: list[OutputSpec] = []
        self.region = ""
        self.node: Node | None = None
        self.slots_avail = [(m, s) for m in range(config.n_mfus) for s in MFU_STAGES if config.mfu_has(m, s)]
        self.concat_plan: dict = {"parts": {}, "concats": {}, "groups": {}}
        self.pixel_groups: dict[str, int] = {}
        self.group_buffers: dict[str, View] = {}

    # ------------------------------------------------------------ buffers
    def buffer(self, name: str, size: int, space: Space | None = None, mfu: int = 0) -> Buffer:
        b = Buffer(name, max(1, int(size)), owner=self.node.name if self.node is not None else "")
        if space is not None:
            b.require(space, mfu)
        self.buffers.append(b)
        return b

    def const(self, values: np.ndarray, space: Space, mfu: int) -> Buffer:
        v = np.asarray(values, np.float64).reshape(-1, self.n).astype(np.float16)
        key = (int(space), mfu, v.tobytes())
        b = self.shared.consts.get(key)
        if b is None:
            b = Buffer(f"const{len(self.shared.consts)}", len(v), const=v,
                       owner=self.node.name if self.node is not None else "")
            b.require(space, mfu)
            self.shared.consts[key] = b
        return b

    def ct(self, channels: int) -> int:
        return -(-channels // self.n)

    def group_view(self, gid: str) -> View:
        """The shared, zero-cleared buffer of a concatenation group (created by its first writer)."""
        v = self.group_buffers.get(gid)
        if v is None:
            H, W, C = self.concat_plan["groups"][gid]
            members = [t for t, (g, _) in self.concat_plan["parts"].items() if g == gid]
            members += [c.outputs[0] for c in self.g.nodes.values() if self.concat_plan["concats"].get(c.name) == gid]
            req = PadReq()
            for t in members:
                r = self.pads.get(t)
                if r is not None:
                    if r.fill not in (None, 0.0):
                        raise LoweringError("a concatenation group read with -inf padding")
                    req.merge(r.pad, 0.0)
            ct = self.ct(C)
            v = View(self.buffer(f"concat {gid}", (H + req.pad[0] + req.pad[2]) * (W + req.pad[1] + req.pad[3]) * ct,
                                 Space.ASVRF, self.config.n_mfus - 1), H, W, ct, req.pad)
            self.chain(ChainSpec(ZERO, 1, (1, v.buf.size), writes=[Ref(v.buf, 0, 0, 1)]))
            self.group_buffers[gid] = v
        return v

    def merge_ops(self, tensor: str) -> list[EpOp]:
        """The final ``vv_add`` that merges a concatenation part into its shared buffer."""
        return [EpOp("merge", tensor=tensor)] if tensor in self.concat_plan["parts"] else []

    def new_grid(self, tensor: str, H: int, W: int, ct: int, shape=None, slots=None) -> Placement:
        """A fresh buffer for a grid tensor, padded as its consumers need; border filled first."""
        part = self.concat_plan["parts"].get(tensor)
        if part is not None and self.node is not None and self.node.outputs[0] == tensor:
            gid, c_off = part
            g = self.group_view(gid)
            C = self._channels(shape if shape is not None else self.g.shape(tensor))
            t0, t1 = c_off // self.n, -(-(c_off + C) // self.n)
            part_slots = np.arange(C) + (c_off - t0 * self.n)
            if slots is not None and not np.array_equal(np.asarray(slots)[:C], part_slots):
                raise LoweringError("a concatenation part whose lanes would have to move")
            view = View(g.buf, H, W, t1 - t0, g.pad, g.pitch, t0)
            p = Placement(view, tuple(shape if shape is not None else self.g.shape(tensor)), self.n, slots=part_slots)
            self.placements[tensor] = p
            return p
        G = self.pixel_groups.get(tensor, 1)
        if G > 1:
            return self._new_grouped(tensor, H, W, G, shape)
        req = self.pads.get(tensor, PadReq())
        view = View(self.buffer(tensor, (H + req.pad[0] + req.pad[2]) * (W + req.pad[1] + req.pad[3]) * ct),
                    H, W, ct, req.pad)
        if view.padded:
            self.fill_border(view, req.fill or 0.0)
        shape = shape if shape is not None else self.g.shape(tensor)
        if slots is None:
            slots = np.arange(ct * self.n)[: self._channels(shape)]
        p = Placement(view, tuple(shape), self.n, slots=np.asarray(slots, np.int64))
        self.placements[tensor] = p
        return p

    def _new_grouped(self, tensor: str, H: int, W: int, G: int, shape) -> Placement:
        """G pixels per native vector: pixel x of row y sits in unit x // G, lanes (x % G) * N/G + c."""
        req = self.pads.get(tensor, PadReq())
        t, l, b, r = req.pad
        pad = (t, -(-l // G), b, -(-r // G))
        Wu = W // G
        view = View(self.buffer(tensor, (H + t + b) * (Wu + pad[1] + pad[3])), H, Wu, 1, pad)
        if view.padded:
            self.fill_border(view, 0.0)
        shape = tuple(shape if shape is not None else self.g.shape(tensor))
        C = shape[1]
        L = self.n // G
        c, y, x = np.meshgrid(np.arange(C), np.arange(H), np.arange(W), indexing="ij")
        emap = ((y * Wu + x // G) * self.n + (x % G) * L + c).reshape(-1)
        p = Placement(view, shape, self.n, emap_=emap, group=G)
        self.placements[tensor] = p
        return p

    @staticmethod
    def _channels(shape) -> int:
        return standard_grid(tuple(shape))[2]

    def fill_border(self, v: View, value: float) -> None:
        """Clear (or fill with -inf) the padding ring of a view's buffer."""
        src = ZERO if value == 0.0 else Ref(self.const(np.full(self.n, value), Space.ASVRF, 0))
        pt, pl, pb, pr = v.pad
        pitch = v.pitch
        top = (pt * v.Wp + pl) * pitch             # top rows and the first row's left pad
        if top:
            self.chain(ChainSpec(src, 1, (1, top), writes=[Ref(v.buf, v.offset, 0, 1)]))
        side = (pr + pl) * pitch                   # right pad of row y + left pad of row y + 1
        if side and v.H > 1:
            self.chain(ChainSpec(src, 1, (v.H - 1, side),
                                 writes=[Ref(v.buf, v.at(0, v.W), v.Wp * pitch, 1)]))
        bottom = (pr + pb * v.Wp) * pitch          # last row's right pad and the bottom rows
        if bottom:
            self.chain(ChainSpec(src, 1, (1, bottom), writes=[Ref(v.buf, v.at(v.H - 1, v.W), 0, 1)]))

    # ------------------------------------------------------------ steps
    def chain(self, spec: ChainSpec) -> ChainSpec:
        spec.region = spec.region or self.region
        self.steps.append(spec)
        return spec

    def placement(self, tensor: str) -> Placement:
        try:
            return self.placements[tensor]
        except KeyError:
            raise LoweringError(f"tensor {tensor!r} has no NPU placement") from None

    # ------------------------------------------------------------ MFU stages
    def assign(self, ops: list[EpOp], start: int = 0) -> list[list[tuple[EpOp, int, str]]]:
        """Split ops into groups that fit one chain's MFU pipeline (MFU index, then the MFU_STAGES in order)."""
        groups: list[list[tuple[EpOp, int, str]]] = [[]]
        pos = start
        alpha = None
        last_mfu = self.config.n_mfus - 1
        for op in ops:
            for attempt in range(2):
                k = next((i for i in range(pos, len(self.slots_avail)) if self.slots_avail[i][1] == op.stage
                          and (op.kind != "merge" or self.slots_avail[i][0] == last_mfu)), None)
                clash = op.kind == "lrelu" and alpha is not None and alpha != op.alpha
                if k is not None and not clash:
                    m, s = self.slots_avail[k]
                    groups[-1].append((op, m, s))
                    pos = k + 1
                    if op.kind == "lrelu":
                        alpha = op.alpha
                    break
                if attempt == 1:
                    raise LoweringError(f"the configuration has no MFU stage for {op.kind}")
                groups.append([])
                pos, alpha = 0, None
        return [g for g in groups if g] or [[]]

    def operand(self, op: EpOp, mfu: int, r0: int, rows: int, out: "OutGrid") -> ChainOp:
        """The ChainOp of one epilogue op on output tiles r0..r0+rows of a chain walking `out`."""
        space = op.vrf
        if space is None:
            return ChainOp(op.mnemonic, mfu)
        if op.kind == "merge":
            p = self.placement(op.tensor)
            p.view.buf.require(space, mfu)
            return ChainOp(op.mnemonic, mfu, p.view.pixel_ref().shifted(r0))
        if op.tensor is not None:
            p = self.placement(op.tensor)
            slots = p.grid_slots()
            pixel_ct = out.pixel_ct if out.step > 1 else out.ct
            if out.step > 1 and not pixel_ct:
                raise LoweringError("an MFU operand for a grouped result")
            if slots is None or (p.view.H, p.view.W) != (out.H, out.W) or p.view.ct != pixel_ct or \
                    not np.array_equal(slots, out.slots[:len(slots)]) or \
                    (out.step > 1 and p.view.pitch != p.view.ct):
                raise LoweringError(f"operand {op.tensor} is not laid out like the result")
            p.view.buf.require(space, mfu)
            return ChainOp(op.mnemonic, mfu, p.view.pixel_ref(sx=out.step).shifted(r0))
        c = np.asarray(op.const, np.float64)
        if c.size == 1:
            # only the channel lanes: idle lanes stay 0 (concatenation groups add them into neighbours)
            vec = channel_vector(np.full(len(out.slots), float(c.reshape(-1)[0])), out.slots, out.ct,
                                 self.n)[r0:r0 + rows]
        else:
            vals = np.tile(c.reshape(-1), out.step)  # one copy per pixel of the iteration
            vec = channel_vector(vals, out.slots, out.ct, self.n)[r0:r0 + rows]
        return ChainOp(op.mnemonic, mfu, Ref(self.const(vec, space, mfu), 0, 0, 0))

    def ops_chain(self, group, r0: int, rows: int, out: "OutGrid") -> tuple[list[ChainOp], float]:
        ops, alpha = [], 0.0
        for op, m, _ in group:
            ops.append(self.operand(op, m, r0, rows, out))
            if op.kind == "lrelu":
                alpha = op.alpha
        return ops, alpha

    def finish(self, spec: ChainSpec, groups, r0: int, rows: int, out: "OutGrid", dst: list[Ref],
               prefix: list[ChainOp] = ()) -> None:
        """Complete `spec` with `prefix` ops and the first op group; extra groups run as further chains
        through a scratch buffer."""
        it_o, it_i = spec.iters
        spec.ops, spec.alpha = self.ops_chain(groups[0], r0, rows, out)
        spec.ops[:0] = prefix
        for k, group in enumerate(groups[1:]):
            tmp = self.buffer(f"{self.region}.ep{k}", it_o * it_i * rows)
            walk = Ref(tmp, 0, it_i * rows, rows)
            spec.writes = [walk]
            self.chain(spec)
            spec = ChainSpec(walk, rows, spec.iters)
            spec.ops, spec.alpha = self.ops_chain(group, r0, rows, out)
        spec.writes = dst
        self.chain(spec)

    # ------------------------------------------------------------ MVM
    def mvm(self, *, read: Ref, groups: list["ColGroup"], matrix: np.ndarray, out: "OutGrid",
            dst: Ref, epilogue: list[EpOp], name: str, extra_dst: list[Ref] = ()) -> None:
        """Chains computing ``out = epilogue(matrix @ gathered input)`` per output pixel.

        Rows are cut into chunks whose tiles fit the MRF share; with several
        column groups each chunk accumulates fp16 partial sums in ASVRF 0.
        """
        n = self.n
        R = matrix.shape[0] // n
        maxc = max(g.cols for g in groups)
        if maxc > self.capacity:
            raise LoweringError(f"a column group of {maxc} tiles exceeds the MRF share of {self.capacity}")
        rc = row_chunk(R, maxc, self.capacity)
        it_o, it_i = out.iters
        for r0 in range(0, R, rc):
            rows = min(rc, R - r0)
            chunks = [WeightChunk(np.ascontiguousarray(matrix[r0 * n:(r0 + rows) * n, g.c0 * n:(g.c0 + g.cols) * n]),
                                  rows, g.cols, f"{name}[{r0}:{r0 + rows},{g.c0}:{g.c0 + g.cols}]") for g in groups]
            for c in chunks:
                c.owner = self.region
            self.shared.chunks.extend(chunks)
            w = [dst.shifted(r0)] + [d.shifted(r0) for d in extra_dst]
            if len(groups) == 1:
                g = groups[0]
                spec = ChainSpec(read.shifted(g.offset), rows, (it_o, it_i), g.cols, g.win, chunks[0])
                self.finish(spec, self.assign(epilogue), r0, rows, out, w)
                continue
            part = self.buffer(f"{name}.psum", it_o * it_i * rows, Space.ASVRF, 0)
            pref = Ref(part, 0, it_i * rows, rows)
            ep = list(epilogue)
            first_ops: list[EpOp] = []
            if ep and ep[0].kind == "add" and ep[0].const is not None:
                first_ops = [ep.pop(0)]
            for k, (g, chunk) in enumerate(zip(groups, chunks)):
                spec = ChainSpec(read.shifted(g.offset), rows, (it_o, it_i), g.cols, g.win, chunk)
                if k == 0:
                    groups0 = self.assign(first_ops)
                    assert len(groups0) == 1
                    spec.ops, spec.alpha = self.ops_chain(groups0[0], r0, rows, out)
                    spec.writes = [pref]
                    self.chain(spec)
                    continue
                psum = ChainOp("vv_add", 0, pref)
                if k < len(groups) - 1:
                    spec.ops = [psum]
                    spec.writes = [pref]
                    self.chain(spec)
                    continue
                # the partial sum takes MFU 0's add stage; the epilogue follows it
                self.finish(spec, self.assign(ep, start=1), r0, rows, out, w, prefix=[psum])


@dataclass
class ColGroup:
    """A run of weight-column tiles [c0, c0+cols) and how one iteration reads its input."""

    c0: int
    cols: int
    offset: int = 0              # read offset from the chain's base
    win: tuple[int, int] = (0, 0)


@dataclass
class OutGrid:
    """The output walk of a chain: pixel grid, loop counts, tiles per pixel and channel slots."""

    H: int
    W: int
    ct: int
    slots: np.ndarray
    iters: tuple[int, int] = None
    step: int = 1          # output pixels per iteration (rows hold `step` pixels' vectors or groups)
    pixel_ct: int = 0      # tiles of one pixel when step > 1 and pixels are not grouped (0: grouped)

    def __post_init__(self):
        if self.iters is None:
            self.iters = (self.H, self.W)
