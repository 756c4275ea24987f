"""Convolutions: Conv on the NPU as mv_mul chains; ConvTranspose and the integer convolutions on the host.

A convolution is one chain per MRF-sized chunk of output tiles:
iter_outer = output rows, iter_inner = output columns; v_rd gathers the
receptive field from the padded, pixel-major input with a window (one run of
``kw * Ct`` vectors per kernel row, ``Wp * Ct`` apart); mv_mul's columns are
``kh * kw * Ct``.  Dilated kernels read one run of ``Ct`` per tap.  A conv
whose input is a segment input is fed from the host as im2col vectors.  A
depthwise conv runs on the MFUs instead, one chain per kernel tap
(:func:`_conv_depthwise`), where that models fewer cycles than the dense one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.attrs import window
from compiler.chain_ir import NETQ, ChainOp, ChainSpec, LoweringError, Ref, channel_vector
from compiler.ir import EpOp, Graph, Node
from compiler.lowering import ColGroup, InputSpec, Lowering, OutGrid, split_columns
from compiler.ops.base import OpDef, ct, float_shape, optional_input, prod, register, weight_shape
from npu.isa import Space


def conv_params(node: Node, in_shape, w_shape) -> dict:
    a = window(node)
    kh, kw = int(w_shape[2]), int(w_shape[3])
    H, W = int(in_shape[2]), int(in_shape[3])
    sh, sw = a.strides
    dh, dw = a.dilations
    pads = list(a.pads)
    auto = a.auto_pad
    ekh, ekw = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        oh, ow = -(-H // sh), -(-W // sw)
        ph = max(0, (oh - 1) * sh + ekh - H)
        pw = max(0, (ow - 1) * sw + ekw - W)
        if auto == "SAME_UPPER":
            pads = [ph // 2, pw // 2, ph - ph // 2, pw - pw // 2]
        else:
            pads = [ph - ph // 2, pw - pw // 2, ph // 2, pw // 2]
    elif auto == "VALID":
        pads = [0, 0, 0, 0]
    oh = (H + pads[0] + pads[2] - ekh) // sh + 1
    ow = (W + pads[1] + pads[3] - ekw) // sw + 1
    return dict(kh=kh, kw=kw, sh=sh, sw=sw, dh=dh, dw=dw, pads=pads, H=H, W=W, oh=oh, ow=ow, group=a.group)


def needed_pad(p: dict) -> tuple[int, int, int, int]:
    """Padding of the input buffer a windowed op needs (bottom/right cover every window)."""
    t, l = p["pads"][0], p["pads"][1]
    b = max(0, (p["oh"] - 1) * p["sh"] + (p["kh"] - 1) * p["dh"] + 1 - p["H"] - t)
    r = max(0, (p["ow"] - 1) * p["sw"] + (p["kw"] - 1) * p["dw"] + 1 - p["W"] - l)
    return t, l, b, r


def dense_weight(w: np.ndarray, group: int) -> np.ndarray:
    """Grouped weights [Cout, Cin/g, kh, kw] expanded to a dense [Cout, Cin, kh, kw] with zeros."""
    if group == 1:
        return w
    cout, cg = w.shape[0], w.shape[1]
    og = cout // group
    out = np.zeros((cout, cg * group) + w.shape[2:], w.dtype)
    for k in range(group):
        out[k * og:(k + 1) * og, k * cg:(k + 1) * cg] = w[k * og:(k + 1) * og]
    return out


def lower_conv(lw: Lowering, node: Node) -> None:
    g, n = lw.g, lw.n
    x = node.inputs[0]
    w0 = lw.g.value(node.inputs[1]).astype(np.float32)
    b = g.value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
    p = conv_params(node, g.shape(x), w0.shape)
    cout, cin, kh, kw = w0.shape[0], w0.shape[1] * p["group"], w0.shape[2], w0.shape[3]
    out = lw.new_grid(node.outputs[0], p["oh"], p["ow"], lw.ct(cout))
    rt = out.view.ct  # a concatenation part may start mid-tile
    im2col = x not in lw.placements and lw.im2col.get(x) is node.name
    if not im2col and is_depthwise(p["group"], w0.shape):
        src = lw.placement(x)
        plan = _depthwise_plan(lw, node, p, src, out)
        if plan is not None and plan.cycles < _dense_cycles(lw, p, cin, rt):
            return _conv_depthwise(lw, node, w0, b, p, src, out, plan)
    w = dense_weight(w0, p["group"])
    epilogue = list(node.epilogue)
    if b is not None and np.any(b):
        epilogue.insert(0, EpOp("add", const=np.asarray(b, np.float64)))
    epilogue += lw.merge_ops(node.outputs[0])
    out_grid = OutGrid(p["oh"], p["ow"], rt, out.slots) if out.group == 1 else None
    dst = out.view.pixel_ref()
    if im2col:
        return _conv_im2col(lw, node, w, p, out, epilogue)
    src = lw.placement(x)
    if src.group > 1 or out.group > 1:
        return _conv_grouped(lw, node, w, p, src, out, epilogue)
    slots = src.grid_slots()
    v = src.view
    if slots is None or (v.H, v.W) != (p["H"], p["W"]):
        raise LoweringError("input is not in the native pixel-major layout")
    t, l, bpad, r = needed_pad(p)
    if v.pad[0] < t or v.pad[1] < l or v.pad[2] < bpad or v.pad[3] < r:
        raise LoweringError(f"input buffer padding {v.pad} is smaller than the {(t, l, bpad, r)} the window needs")
    ct = v.ct
    if v.pitch != ct and (kh > 1 or kw > 1):
        raise LoweringError("windowed read of a strided view")
    # weight columns: tap (ky, kx) occupies ct*N columns, input channel c at its slot
    m = np.zeros((rt * n, kh * kw * ct * n), np.float32)
    cols = ((np.arange(kh)[:, None, None] * kw + np.arange(kw)[None, :, None]) * ct * n
            + slots[None, None, :]).reshape(-1)  # [kh*kw*cin] in (ky, kx, c) order
    m[np.ix_(out.slots, cols)] = w.transpose(0, 2, 3, 1).reshape(cout, -1)
    base = Ref(v.buf, v.at(-p["pads"][0], -p["pads"][1]), p["sh"] * v.Wp * v.pitch, p["sw"] * v.pitch)
    row_step = p["dh"] * v.Wp * ct
    unit = kw * ct
    groups = []
    if p["dw"] == 1 or kw == 1:
        for c0, cols_ in split_columns(kh * unit, unit, lw.capacity):
            ky0, nrows = c0 // unit, cols_ // unit
            win = (unit, row_step) if nrows > 1 else (0, 0)
            groups.append(ColGroup(c0, cols_, ky0 * row_step, win))
    else:
        if unit > lw.capacity:
            raise LoweringError("a dilated kernel row exceeds the MRF share")
        for ky in range(kh):
            groups.append(ColGroup(ky * unit, unit, ky * row_step, (ct, p["dw"] * ct)))
    lw.mvm(read=base, groups=groups, matrix=m, out=out_grid, dst=dst, epilogue=epilogue, name=node.name)


def is_depthwise(group: int, w_shape) -> bool:
    """One input channel per group and one output channel per input channel (MobileNet's 3x3 convolutions)."""
    return group > 1 and int(w_shape[0]) == group and int(w_shape[1]) == 1


@dataclass
class _DepthwisePlan:
    """How a depthwise convolution runs on the MFUs: which MFU multiplies, which adds, and the output bands."""

    mul: int           # index into Lowering.slots_avail of the mul stage (weights from its MULVRF)
    add: int           # index of the add/sub stage after it (accumulator and bias in its ASVRF)
    band: int          # output rows per band (the accumulator holds one band)
    cycles: int        # modeled cycles


def _depthwise_plan(lw: Lowering, node: Node, p: dict, src, out) -> _DepthwisePlan | None:
    """The MFU mapping of a depthwise convolution, or None where it does not apply (then it runs dense)."""
    cfg = lw.config
    v = src.view
    slots = src.grid_slots()
    if src.group > 1 or out.group > 1 or slots is None or (v.H, v.W) != (p["H"], p["W"]):
        return None
    if out.view.ct != v.ct or not np.array_equal(out.slots, slots):
        return None  # MFUs work lane by lane: the output channels must sit in the input's lanes
    t, l, bpad, r = needed_pad(p)
    if v.pad[0] < t or v.pad[1] < l or v.pad[2] < bpad or v.pad[3] < r:
        return None
    req = lw.pads.get(node.inputs[0])
    if req is not None and req.fill not in (None, 0.0):
        return None  # -inf padding (a MaxPool shares the input) times a weight would give NaN
    avail = lw.slots_avail
    mul = next((i for i, (_, s) in enumerate(avail) if s == "mul"), None)
    add = next((i for i, (_, s) in enumerate(avail) if s == "addsub" and mul is not None and i > mul), None)
    if add is None:
        return None
    ct, ow, oh = v.ct, p["ow"], p["oh"]
    budget = cfg.asvrf_depth // 4
    band = min(oh, budget // (ow * ct))
    if band < 1:
        return None
    bands = -(-oh // band)
    if bands > 1 and any(e.tensor is not None for e in list(node.epilogue) + lw.merge_ops(node.outputs[0])):
        return None  # an MFU operand tensor is addressed for the whole grid
    taps = p["kh"] * p["kw"]
    if taps * ct > cfg.mulvrf_depth // 2:
        return None  # the taps' weights would crowd out the MULVRF
    extra = len(_epilogue_after(lw, list(node.epilogue) + lw.merge_ops(node.outputs[0]), add + 1)) - 1
    lat = cfg.latencies
    per_chain = cfg.read_latency(Space.IVRF) + 3 * lat.mfu_stage + lat.vrf_write + lat.chain_setup
    load = taps * ct * cfg.port_cost(Space.DRAM) + cfg.read_latency(Space.DRAM) + per_chain
    cycles = (taps + extra) * (oh * ow * ct) + bands * (taps + extra) * per_chain + load
    return _DepthwisePlan(mul, add, band, cycles)


def _epilogue_after(lw: Lowering, ops: list[EpOp], start: int) -> list[list]:
    """``lw.assign`` of the epilogue behind the accumulation (MFU slots from ``start`` on); the first group is
    empty when even the first op needs an earlier stage (a residual's add), so it starts a chain of its own."""
    groups = lw.assign(ops, start=start)
    if groups[0] and lw.slots_avail.index(groups[0][0][1:]) < start:
        groups.insert(0, [])
    return groups


def _dense_cycles(lw: Lowering, p: dict, cin: int, rt: int) -> int:
    """Modeled cycles of the dense mapping (one mv_mul round of tiles per output tile-row, weights streamed)."""
    cfg = lw.config
    cols = p["kh"] * p["kw"] * lw.ct(cin)
    rounds = -(-cols // cfg.tile_engines) * cfg.cycles_per_tile
    tiles = rt * cols
    return p["oh"] * p["ow"] * rt * rounds + -(-tiles * cfg.tile_bytes // cfg.dram_bytes_per_cycle)


def _conv_depthwise(lw: Lowering, node: Node, w: np.ndarray, b, p: dict, src, out, plan: _DepthwisePlan) -> None:
    """A depthwise convolution on the MFUs, one chain per kernel tap.

    Chain k reads tap k's input pixel for every output pixel (iter_outer = output rows, iter_inner =
    output columns, ``Ct`` vectors each, stride and dilation in the read offsets), multiplies it by tap
    k's per-channel weights (a constant vector in MULVRF) and adds the partial sum of taps 0..k-1 (an
    accumulator in the following MFU's ASVRF; the bias for tap 0); the last tap's chain runs the fused
    epilogue and writes the result.  Numerics: fp16 weights (not BFP), every product and sum rounded to
    fp16, taps in (ky, kx) order.  The accumulator holds a band of output rows at a time.  The weights are
    a constant in the vector DRAM, copied into a MULVRF buffer that lives as long as the layer.
    """
    n = lw.n
    v = src.view
    slots = src.grid_slots()
    ct, oh, ow = v.ct, p["oh"], p["ow"]
    kh, kw = p["kh"], p["kw"]
    m_mul, m_add = lw.slots_avail[plan.mul][0], lw.slots_avail[plan.add][0]
    w = np.asarray(w, np.float64)
    taps = kh * kw
    # the taps' weights wait in the vector DRAM and are copied into the MULVRF for this layer only, so a
    # network's depthwise weights do not hold MULVRF space that the products of two activations need
    stored = lw.const(np.concatenate([channel_vector(w[:, 0, ky, kx], slots, ct, n)
                                      for ky in range(kh) for kx in range(kw)]), Space.DRAM, 0)
    wbuf = lw.buffer(f"{node.name}.taps", taps * ct, Space.MULVRF, m_mul)
    lw.chain(ChainSpec(Ref(stored, 0, 0, 1), 1, (1, taps * ct), writes=[Ref(wbuf, 0, 0, 1)]))
    wvec = [Ref(wbuf, k * ct) for k in range(taps)]
    bias = None
    if b is not None and np.any(b):
        bias = lw.const(channel_vector(np.asarray(b, np.float64), slots, ct, n), Space.ASVRF, m_add)
    epilogue = list(node.epilogue) + lw.merge_ops(node.outputs[0])
    groups = _epilogue_after(lw, epilogue, plan.add + 1)
    acc = lw.buffer(f"{node.name}.acc", plan.band * ow * ct, Space.ASVRF, m_add)
    row = v.Wp * v.pitch
    for y0 in range(0, oh, plan.band):
        band = min(plan.band, oh - y0)
        acc_ref = Ref(acc, 0, ow * ct, ct)
        base = v.at(y0 * p["sh"] - p["pads"][0], -p["pads"][1])
        grid = OutGrid(oh if band == oh else band, ow, ct, out.slots, iters=(band, ow))
        for k in range(kh * kw):
            ky, kx = divmod(k, kw)
            read = Ref(v.buf, base + ky * p["dh"] * row + kx * p["dw"] * v.pitch, p["sh"] * row, p["sw"] * v.pitch)
            ops = [ChainOp("vv_mul", m_mul, wvec[k])]
            if k > 0:
                ops.append(ChainOp("vv_add", m_add, acc_ref))
            elif bias is not None:
                ops.append(ChainOp("vv_add", m_add, Ref(bias)))
            spec = ChainSpec(read, ct, (band, ow))
            dst = [out.view.pixel_ref(y=y0)]
            if k < kh * kw - 1:
                spec.ops, spec.writes = ops, [acc_ref]
                lw.chain(spec)
            elif len(groups) == 1:
                lw.finish(spec, groups, 0, ct, grid, dst, prefix=ops)
            else:
                # epilogue ops that do not fit behind the accumulation (ReLU6's min) run in a further chain
                # over the accumulator, in place (one iteration reads and writes the same vectors)
                spec.ops, spec.alpha = lw.ops_chain(groups[0], 0, ct, grid)
                spec.ops[:0] = ops
                spec.writes = [acc_ref]
                lw.chain(spec)
                lw.finish(ChainSpec(acc_ref, ct, (band, ow)), groups[1:], 0, ct, grid, dst)


def _conv_grouped(lw: Lowering, node: Node, w: np.ndarray, p: dict, src, out, epilogue) -> None:
    """A convolution whose input and/or output holds several pixels per vector (passes/layout.py).

    One iteration computes a block of P output pixels (a multiple of the output's pixels per vector,
    whose input window starts on a whole input vector): v_rd reads R vectors per kernel row, the
    weight matrix places every (pixel, tap, channel) product at its lanes.
    """
    import math

    n = lw.n
    cout, cin, kh, kw = w.shape
    v = src.view
    G_in, G_out = src.group, out.group
    sh, sw = p["sh"], p["sw"]
    pt, pl = p["pads"][0], p["pads"][1]
    if p["dw"] != 1 or p["dh"] != 1:
        raise LoweringError("dilated convolution on grouped pixels")
    P = math.lcm(G_out, G_in // math.gcd(sw, G_in))
    if p["ow"] % P:
        raise LoweringError(f"output width {p['ow']} is not a multiple of the {P}-pixel block")
    if G_in > 1:
        ct_in, L_in = 1, n // G_in
        in_lane = lambda m, c: m * L_in + c  # noqa: E731
    else:
        slots_in = src.grid_slots()
        if slots_in is None or v.pitch != v.ct:
            raise LoweringError("input is not in the native pixel-major layout")
        ct_in = v.ct
        in_lane = lambda m, c: slots_in[c]  # noqa: E731
    u0 = -(-pl // G_in)                 # input units left of the first window
    c0 = u0 * G_in - pl                 # pixel offset of the first window inside its unit
    R = (c0 + (P - 1) * sw + kw - 1) // G_in + 1
    if v.pad[1] < u0 or v.pad[0] < pt:
        raise LoweringError("input padding too small for the grouped window")
    last = (p["ow"] // P - 1) * (P * sw // G_in) - u0 + R - 1
    if last > v.W - 1 + v.pad[3] or (p["oh"] - 1) * sh - pt + kh - 1 > v.H - 1 + v.pad[2]:
        raise LoweringError("input padding too small for the grouped window")
    if G_out > 1:
        ct_unit, L_out = 1, n // G_out
        out_lane = lambda q, o: q * L_out + o  # noqa: E731
    else:
        ct_unit = out.view.ct
        out_lane = lambda q, o: out.slots[o]  # noqa: E731
    if P // G_out > 1 and out.view.pitch != out.view.ct:
        # a block of output pixels is written as one run of vectors: they must be adjacent
        raise LoweringError("a block of output pixels into a strided view (a concatenation part)")
    rows = (P // G_out) * ct_unit
    m = np.zeros((rows * n, kh * R * ct_in * n), np.float32)
    row_slots = []
    for q in range(P):
        r_idx = np.array([(q // G_out) * ct_unit * n + out_lane(q % G_out, o) for o in range(cout)])
        row_slots.append(r_idx)
        for ky in range(kh):
            for kx in range(kw):
                xi = c0 + q * sw + kx
                u, mbr = divmod(xi, G_in)
                c_idx = np.array([(ky * R + u) * ct_in * n + in_lane(mbr, c) for c in range(cin)])
                m[np.ix_(r_idx, c_idx)] = w[:, :, ky, kx]
    out_grid = OutGrid(p["oh"], p["ow"], rows, np.concatenate(row_slots), iters=(p["oh"], p["ow"] // P), step=P,
                       pixel_ct=0 if G_out > 1 else ct_unit)
    dst = out.view.pixel_ref(sx=P // G_out)
    base = Ref(v.buf, v.at(-pt, -u0), sh * v.Wp * v.pitch, (P * sw // G_in) * v.pitch)
    unit = R * ct_in
    row_step = v.Wp * v.pitch
    groups = []
    for c0_, cols_ in split_columns(kh * unit, unit, lw.capacity):
        ky0, nrows = c0_ // unit, cols_ // unit
        groups.append(ColGroup(c0_, cols_, ky0 * row_step, (unit, row_step) if nrows > 1 else (0, 0)))
    lw.mvm(read=base, groups=groups, matrix=m, out=out_grid, dst=dst, epilogue=epilogue, name=node.name)


def _im2col_block(lw: Lowering, p: dict, cin: int, rt: int, group: int = 1) -> int:
    """Output pixels per iteration for a first layer fed from the host.

    P horizontally adjacent output pixels share most of their receptive fields, so the host sends
    their union (kh x ((P-1)*stride + kw) x C values) once: fewer queue bytes per pixel, more
    output rows per mv_mul.  P minimizes the per-pixel time of the slower of the two (the queue's
    bytes, one round of tile engines per output tile-row).  An output holding ``group`` pixels per
    vector (passes/layout.py) takes blocks of whole vectors: P a multiple of it, P / group rows.
    """
    cfg, n = lw.config, lw.n
    best, best_cost = None, None
    for P in ((1, 2, 3, 4) if group == 1 else (group, 2 * group)):
        if p["ow"] % P or (P > 1 and p["dw"] != 1):
            continue
        kt = lw.ct(p["kh"] * ((P - 1) * p["sw"] + (p["kw"] - 1) * p["dw"] + 1) * cin)
        rows = P * rt if group == 1 else P // group
        read = kt * -(-2 * n // cfg.netq_bytes_per_cycle)
        macs = rows * max(1, -(-kt // cfg.tile_engines) * cfg.cycles_per_tile)
        cost = max(read, macs) / P
        if rows * kt <= lw.capacity and (best_cost is None or cost < best_cost):
            best, best_cost = P, cost
    if best is None:
        if group > 1:
            raise LoweringError(f"no block of {group}-pixel output vectors fits the MRF share")
        return 1
    return best


def _conv_im2col(lw: Lowering, node: Node, w: np.ndarray, p: dict, out, epilogue) -> None:
    """First layer: the host sends each block's receptive field, (ky, column, c)-ordered.

    The output may hold G pixels per vector (passes/layout.py): then a block is a whole number of
    output vectors and pixel q of the block writes lanes ``(q % G) * N/G + o`` of vector ``q // G``.
    """
    n = lw.n
    cout, cin, kh, kw = w.shape
    G = out.group
    rt = out.view.ct
    # a block of output pixels is written as one run of vectors: a strided view (a concatenation part)
    # takes one pixel per iteration
    P = _im2col_block(lw, p, cin, rt, G) if out.view.pitch == out.view.ct else 1
    U = (P - 1) * p["sw"] + (kw - 1) * p["dw"] + 1 if P > 1 else kw  # columns of the union window
    k = kh * U * cin
    kt = lw.ct(k)
    rows = P * rt if G == 1 else P // G
    m = np.zeros((rows * n, kt * n), np.float32)
    row_slots = []
    for q in range(P):
        r_idx = q * rt * n + out.slots if G == 1 else (q // G) * n + (q % G) * (n // G) + np.arange(cout)
        row_slots.append(r_idx)
        for ky in range(kh):
            for kx in range(kw):
                u = q * p["sw"] + kx if P > 1 else kx
                m[np.ix_(r_idx, (ky * U + u) * cin + np.arange(cin))] = w[:, :, ky, kx]
    out_grid = OutGrid(p["oh"], p["ow"], rows, np.concatenate(row_slots), iters=(p["oh"], p["ow"] // P),
                       step=P, pixel_ct=rt if G == 1 else 0)
    dst = out.view.pixel_ref(sx=P if G == 1 else P // G)
    spec = dict(kh=kh, kw=kw, sh=p["sh"], sw=p["sw"], dh=p["dh"], dw=p["dw"], pads=p["pads"], oh=p["oh"],
                ow=p["ow"], kt=kt, block=P, union=U)
    vectors = p["oh"] * (p["ow"] // P) * kt
    lw.inputs.append(InputSpec(node.inputs[0], "im2col", vectors, im2col=spec))
    if rows * kt <= lw.capacity:
        lw.mvm(read=NETQ, groups=[ColGroup(0, kt)], matrix=m, out=out_grid, dst=dst, epilogue=epilogue,
               name=node.name)
        return
    # several chunks re-read the patches: land them in a buffer first
    it = p["ow"] // P
    buf = lw.buffer(f"{node.name}.im2col", vectors)
    lw.chain(ChainSpec(NETQ, kt, (p["oh"], it), writes=[Ref(buf, 0, it * kt, kt)]))
    groups = [ColGroup(c0, c) for c0, c in split_columns(kt, 1, lw.capacity)]
    lw.mvm(read=Ref(buf, 0, it * kt, kt), groups=groups, matrix=m, out=out_grid, dst=dst,
           epilogue=epilogue, name=node.name)


# ---------------------------------------------------------------------- records
def conv_reason(g: Graph, node: Node) -> str | None:
    shape = float_shape(g, node.inputs[0])
    if len(shape) != 4 or shape[0] != 1:
        return "only 2-D convolutions with batch 1 run on the NPU"
    b = optional_input(node, 2)
    if g.value(node.inputs[1]) is None or (b is not None and g.value(b) is None):
        return "weights must be constants"
    return None


def conv_window(g: Graph, node: Node):
    return needed_pad(conv_params(node, g.shape(node.inputs[0]), g.value(node.inputs[1]).shape)), 0.0


def conv_tiles(g: Graph, node: Node, n: int) -> int:
    """Native weight tiles of the dense mapping; none for a depthwise convolution, which the MFUs compute (when
    lowering maps one densely after all, the driver lowers again with the real count)."""
    w = weight_shape(g, node)
    if w is None or len(w) != 4 or is_depthwise(int(node.attr("group", 1)), w):
        return 0
    return ct(w[0], n) * w[2] * w[3] * ct(w[1] * int(node.attr("group", 1)), n)


def conv_macs(weight: int):
    """Output elements x (input channels per group x kernel taps), the weight being input `weight`."""
    def macs(g: Graph, node: Node) -> int:
        return prod(g.shape(node.outputs[0])) * prod(g.shape(node.inputs[weight])[1:])
    return macs


def conv_transpose_macs(g: Graph, node: Node) -> int:
    """Every input element times its [Cout / group, kh, kw] slice of the weight."""
    return prod(g.shape(node.inputs[0])) * prod(g.shape(node.inputs[1])[1:])


register(
    OpDef("Conv", npu=conv_reason, lower=lower_conv, macs=conv_macs(1), tiles=conv_tiles, window=conv_window,
          absorbs=True, concat_part=True),
    OpDef("ConvInteger", macs=conv_macs(1)),
    OpDef("QLinearConv", macs=conv_macs(3)),
    OpDef("ConvTranspose", macs=conv_transpose_macs),
)
