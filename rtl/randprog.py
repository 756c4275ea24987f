"""Random legal programs with random data, drawn from the ISA table, for RTL-vs-simulator tests.

:func:`random_case` returns a :class:`Case`: a program of a few chains (and
sometimes DMA transfers) whose operands are drawn from the instruction table
(every MFU op of :data:`npu.isa.STAGE_OPS` in pipeline order, every read space,
one or two writes), register settings for rows/cols/loops/windows, and the
data to load: vectors in every memory, weight tiles quantized by
npu.weights.tile_matrix (so they respect the flush window), and the input
queue's vectors.  Programs the static rules or the simulator reject (an
iteration hazard) are redrawn, so every case is legal.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from npu.config import MFU_STAGES, NpuConfig
from npu.errors import ProgramError
from npu.isa import BY_MNEMONIC, STAGE_OPS, Instruction, Reg, Space
from npu.program import Chain, Program, analyze
from npu.weights import WeightImage, tile_matrix


@dataclass
class Case:
    program: Program
    vectors: list[tuple[Space, int, int, np.ndarray]] = field(default_factory=list)  # space, mfu, addr, data
    mrf: WeightImage | None = None
    wdram: WeightImage | None = None
    inputs: np.ndarray | None = None
    seed: int = 0
    notes: dict = field(default_factory=dict)  # how the data was drawn (rtl/coverage.py's stimulus bins)

    def load(self, machine) -> None:
        """Load this case's data into a sim.Machine or an RtlMachine."""
        for space, mfu, addr, data in self.vectors:
            machine.load_vectors(space, addr, data, mfu)
        if self.mrf is not None:
            machine.load_mrf(self.mrf, 0)
        if self.wdram is not None:
            machine.load_weight_dram(self.wdram, 0)
        if self.inputs is not None and len(self.inputs):
            machine.push_input(self.inputs)


#: value classes of fp16 data (rtl/coverage.py's special-value bins)
SPECIAL_POOL = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 6e-8, -6e-8, -3e-6, 6.1e-5, 65504.0, -65504.0,
                         np.float16(2.0 ** -14) * np.float16(0.5)], np.float16)

#: data profiles: (weight, relative probability)
DATA_MODES = ("normal", "specials", "extreme", "narrow")


#: error programs: kind -> (what the simulator says, what the RTL does)
ERROR_KINDS = {
    "too_many_writes": ("writes at most", "unsupported"),       # more v_wr than write_slots
    "two_output_writes": ("output queue at most once", "unsupported"),
    "empty_input": ("reading an empty queue", "hung"),          # the RTL waits for input forever
    "output_overflow": (None, "overflow"),                      # more outputs than the bench's output FIFO
}


@dataclass
class ErrorCase(Case):
    """A program the simulator refuses (or, ``output_overflow``, one whose output exceeds the RTL's output
    FIFO while nobody drains it) and the RTL flags: rtl.check.Checker.check_error."""

    kind: str = ""
    pc: int = 0                   # the offending chain's first instruction
    max_cycles: int | None = None
    queue_depth: int = 0          # the RTL's output FIFO (rtl.generate.RtlParams.queue_depth)

    def sim_kind(self, message: str | None, outputs: int) -> str:
        if message is None:
            return "output_overflow" if outputs > self.queue_depth else "none"
        return next((k for k, (text, _) in ERROR_KINDS.items() if text and text in message), "other")

    @staticmethod
    def rtl_kind(res: dict) -> str:
        from rtl.executor import ERR_OVERFLOW, ERR_UNSUPPORTED

        if res["hung"]:
            return "hung"
        if res["error"] & ERR_OVERFLOW:
            return "overflow"
        if res["error"] & ERR_UNSUPPORTED:
            return "unsupported"
        return "none"


def random_error_case(config: NpuConfig, seed: int, kind: str | None = None, queue_depth: int = 512) -> ErrorCase:
    """A few legal steps, then a chain with one of :data:`ERROR_KINDS`' faults, then maybe more steps."""
    rng = np.random.default_rng(seed)
    kind = kind or str(rng.choice(sorted(ERROR_KINDS)))
    before = random_program(rng, config, int(rng.integers(0, 3)))
    # keep the legal prefix away from the input queue: its inputs are the fault's business
    before = [i for i in before] if not any(i.mnemonic == "v_rd" and i["space"] == Space.NETQ for i in before) else []
    rows = int(rng.integers(1, 4))
    bad = _regs(rows, 1, 1, 1)
    pc = len(before) + len(bad)
    inputs = np.zeros((0, config.native_dim), np.float16)
    max_cycles = None
    if kind == "too_many_writes":
        bad += [Instruction.make("v_rd", space=int(Space.IVRF), mfu=0, addr=0, so=0, si=0)]
        bad += [Instruction.make("v_wr", space=int(Space.ASVRF), mfu=0, addr=8 * k, so=0, si=0)
                for k in range(config.write_slots + 1)]
    elif kind == "two_output_writes":
        bad += [Instruction.make("v_rd", space=int(Space.IVRF), mfu=0, addr=0, so=0, si=0),
                Instruction.make("v_wr", space=int(Space.NETQ), mfu=0, addr=0, so=0, si=0),
                Instruction.make("v_wr", space=int(Space.NETQ), mfu=0, addr=0, so=0, si=0)]
    elif kind == "empty_input":
        have = int(rng.integers(0, rows))
        inputs = random_fp16(rng, (have, config.native_dim))
        bad += [Instruction.make("v_rd", space=int(Space.NETQ), mfu=0, addr=0, so=0, si=0),
                Instruction.make("v_wr", space=int(Space.IVRF), mfu=0, addr=0, so=0, si=0)]
        max_cycles = 2000
    else:  # output_overflow: one chain writes more vectors than the output FIFO holds
        n = queue_depth + int(rng.integers(1, 40))
        bad = _regs(1, 1, n, 1) + [Instruction.make("v_rd", space=int(Space.ZERO), mfu=0, addr=0, so=0, si=0),
                                   Instruction.make("v_wr", space=int(Space.NETQ), mfu=0, addr=0, so=0, si=0)]
        pc = len(before) + 6
    bad.append(Instruction.make("end_chain"))
    program = Program(config, before + bad)
    return ErrorCase(program, inputs=inputs, seed=seed, kind=kind, pc=pc, max_cycles=max_cycles,
                     queue_depth=queue_depth)


def random_fp16(rng: np.random.Generator, shape, specials: bool = True, mode: str = "normal") -> np.ndarray:
    """fp16 data.  ``normal``: mostly normal values of mixed scale, with zeros, subnormals, infinities and NaN
    sprinkled in (3 %); ``specials``: a third special values; ``extreme``: exponents at both ends of fp16
    (near 65504 and subnormal), so sums overflow and products underflow; ``narrow``: values of one scale."""
    if mode == "extreme":
        e = rng.choice(np.array([-24, -20, -16, -14, -13, 10, 13, 14, 15]), shape)
        x = rng.uniform(1.0, 2.0, shape) * np.exp2(e) * rng.choice([-1.0, 1.0], shape)
    elif mode == "narrow":
        x = rng.uniform(-1.0, 1.0, shape) * 2.0 ** int(rng.integers(-8, 8))
    else:
        x = rng.standard_normal(shape) * np.exp2(rng.integers(-6, 6, shape))
    with np.errstate(over="ignore"):
        v = x.astype(np.float16)
    if specials:
        mask = rng.random(shape) < (0.33 if mode == "specials" else 0.03)
        v[mask] = rng.choice(SPECIAL_POOL, int(mask.sum()))
    return v


def _weights(rng, config: NpuConfig, tiles: int, scale: np.ndarray | None = None) -> WeightImage:
    """``tiles`` weight tiles quantized as one matrix whose row ``r`` is scaled by ``scale[r]``: every
    combination of them respects the weight flush window (npu.numerics.flush_windows), so DMA may mix tiles
    of two images drawn with the same ``scale``."""
    n = config.native_dim
    if scale is None:
        scale = np.exp2(rng.integers(-3, 3, (n, 1)))
    w = rng.standard_normal((n, tiles * n)) * scale
    if rng.random() < 0.3:  # whole zero blocks and blocks far below their row's largest (flushed)
        block = config.block
        mask = rng.random((n, tiles * n // block)) < 0.2
        w = w.reshape(n, -1, block)
        w[mask] = 0.0
        small = rng.random((n, tiles * n // block)) < 0.1
        w[small] *= 2.0 ** -12
        w = w.reshape(n, tiles * n)
    image, _, _ = tile_matrix(w, config)
    # tile_matrix orders tiles row-major over [1, tiles]; any order will do here
    return image


#: weight-scale profiles of :func:`weight_scale`
WEIGHT_MODES = ("mixed", "wide", "tiny", "huge")


def weight_scale(rng, config: NpuConfig) -> tuple[str, np.ndarray]:
    """Per-row scales of a case's weights and their profile: mixed, rows 2^-20..2^12 apart, or all at an
    extreme of the exponent (products that underflow fp16, or overflow it)."""
    n = config.native_dim
    u = rng.random()
    if u < 0.1:
        return "tiny", np.full((n, 1), 2.0 ** int(rng.choice([-30, -24])))
    if u < 0.2:
        return "huge", np.full((n, 1), 2.0 ** int(rng.choice([12, 14])))
    if u < 0.35:
        return "wide", np.exp2(rng.integers(-20, 12, (n, 1)).astype(float))
    return "mixed", np.exp2(rng.integers(-3, 3, (n, 1)).astype(float))


def _depths(config: NpuConfig) -> dict[Space, int]:
    return {Space.IVRF: config.ivrf_depth, Space.DRAM: config.dram_vectors, Space.ASVRF: config.asvrf_depth,
            Space.MULVRF: config.mulvrf_depth}


def _length(rng) -> int:
    """Steps of a program: mostly short (1-6), one in six tens of steps, one in twenty-five long (up to
    hundreds): long programs are where queues fill and far dependencies appear, short ones are cheap."""
    u = rng.random()
    if u < 0.8:
        return int(rng.integers(1, 7))
    if u < 0.96:
        return int(rng.integers(7, 41))
    return int(rng.integers(41, 201))


def random_program(rng: np.random.Generator, config: NpuConfig, chains: int | None = 4) -> list[Instruction]:
    """A legal one-step-machine program of ``chains`` steps (None: a random length, up to hundreds).

    Each step is a chain or a transfer.  Registers are drawn to reach their limits (rows, cols up to the MVM
    buffer, loop counts; an operand's last iteration often ends on the last word of its memory), strides of
    every class (0, overlapping, contiguous, gapped), windowed reads; operands often reuse an earlier step's
    interval at any distance (RAW, WAR, WAW between chains); bursts of short chains behind long ones, and
    long runs of register writes, fill the step queue or stall decoding.  Each chain is checked on its own
    (npu.program.analyze) and redrawn when illegal."""
    from npu.isa import encoding_for

    n_mfus = config.n_mfus
    if chains is None:
        chains = _length(rng)
    out: list[Instruction] = []
    depths = _depths(config)
    stride_max = (1 << dict((f, w) for f, _, w in encoding_for(config).layout["v_rd"])["so"]) - 1
    used: list[tuple[Space, int, int, int]] = []  # (space, mfu, lo, hi) of earlier operands, in order
    regs = {Reg.ROWS: 1, Reg.COLS: 1, Reg.ITER_OUTER: 1, Reg.ITER_INNER: 1, Reg.WIN_RUN: 0, Reg.WIN_PITCH: 0}
    # a case leans towards some behaviour
    dep_rate = float(rng.choice([0.1, 0.4, 0.8]))
    big = rng.random() < 0.3  # large rows / loops

    def stride(width, n):
        if n <= 1:
            return 0
        k = int(rng.integers(0, 5))
        if k == 0:
            return 0
        if k == 1 and width > 1:
            return int(rng.integers(1, width))  # iterations overlap
        if k == 2:
            return int(rng.integers(width + 1, 3 * width + 2))  # gaps
        return width

    def operand(space, width, io, ii, mfu, lo=0):
        depth = depths[space]
        so, si = stride(width, io), stride(width, ii)
        span = (io - 1) * so + (ii - 1) * si + width
        if span > depth - lo or so > stride_max or si > stride_max:
            so, si = 0, 0
            span = width
            if span > depth - lo:
                return None
        hi = depth - span
        same = [u for u in used if u[0] == space and (u[1] == mfu or space in (Space.IVRF, Space.DRAM))]
        r = rng.random()
        if same and r < dep_rate:  # near an earlier step's interval: overlap, touch, or just miss
            back = min(len(same), int(rng.geometric(0.25)))
            _, _, ulo, uhi = same[-back]
            addr = int(rng.choice([ulo, uhi, ulo - span + 1, uhi + 1, ulo - span, (ulo + uhi) // 2]))
        elif r < dep_rate + 0.15:
            addr = hi  # the last iteration ends on the memory's last word
        else:
            addr = int(rng.integers(lo, hi + 1))
        addr = max(lo, min(addr, hi))
        return dict(addr=addr, so=so, si=si), (space, mfu, addr, addr + span - 1)

    def setregs(values):
        code = []
        for r, v in values.items():
            if regs[r] != v or rng.random() < 0.2:
                code.append(Instruction.make("s_wr", reg=int(r), imm=int(v)))
        return code

    def one_chain(short=False):
        if short:
            rows, cols, io, ii = 1, 1, 1, 1
        else:
            rmax = 32 if big else 4
            rows = int(rng.integers(1, rmax + 1)) if rng.random() < 0.8 else 1
            cols = int(rng.integers(1, 5)) if rng.random() < 0.8 else int(rng.integers(1, min(config.max_cols, 16) + 1))
            lmax = 12 if big else 3
            io = int(rng.integers(1, lmax + 1))
            ii = int(rng.integers(1, lmax + 1))
        mvm = not short and rng.random() < 0.45
        if mvm and rows * cols > config.mrf_tiles:
            rows = max(1, config.mrf_tiles // cols)
        width = cols if mvm else rows
        run, pitch = 0, 0
        if not short and rng.random() < 0.25 and width > 1:
            divs = [d for d in range(1, width) if width % d == 0]
            run = int(rng.choice(divs))
            pitch = run + int(rng.integers(0, 3))
        values = {Reg.ROWS: rows, Reg.COLS: cols, Reg.ITER_OUTER: io, Reg.ITER_INNER: ii, Reg.WIN_RUN: run,
                  Reg.WIN_PITCH: pitch}
        code = setregs(values)
        if rng.random() < 0.2:
            code.append(Instruction.make("s_wr", reg=int(Reg.ALPHA),
                                         imm=int(np.float16(rng.uniform(-1, 1)).view(np.uint16))))
        span_w = ((width // run - 1) * pitch + run) if run else width
        notes = []
        space = Space(int(rng.choice([Space.NETQ, Space.DRAM, Space.IVRF, Space.IVRF, Space.ASVRF, Space.MULVRF,
                                      Space.ZERO])))
        mfu = int(rng.integers(0, n_mfus))
        op = None
        if space in depths:
            got = operand(space, span_w, io, ii, mfu)
            if got is None:
                space = Space.ZERO
            else:
                op, note = got
                notes.append(("r", note))
        if op is None:
            op = dict(addr=0, so=0, si=0)
        code.append(Instruction.make("v_rd", space=int(space), mfu=mfu, **op))
        if mvm:
            code.append(Instruction.make("mv_mul", mrf=int(rng.integers(0, config.mrf_tiles - rows * cols + 1))))
        slots = [(k, st) for k in range(n_mfus) for st in MFU_STAGES if st in config.mfus[k]]
        for k, stage in [sl for sl in slots if rng.random() < 0.3]:
            mn = str(rng.choice(STAGE_OPS[stage]))
            vrf = BY_MNEMONIC[mn].vrf
            if vrf is not None:
                got = operand(vrf, rows, io, ii, k)
                if got is None:
                    continue
                code.append(Instruction.make(mn, mfu=k, **got[0]))
                notes.append(("r", got[1]))
            else:
                code.append(Instruction.make(mn, mfu=k))
        dests = [Space.NETQ, Space.IVRF, Space.DRAM, Space.ASVRF, Space.MULVRF]
        nw = int(rng.integers(1, config.write_slots + 1))
        for p in rng.choice(len(dests), size=min(nw, len(dests)), replace=False):
            d = dests[int(p)]
            if d == Space.NETQ:
                code.append(Instruction.make("v_wr", space=int(d), addr=0, mfu=0))
                continue
            wm = int(rng.integers(0, n_mfus))
            got = operand(d, rows, io, ii, wm)
            if got is None:
                continue
            code.append(Instruction.make("v_wr", space=int(d), mfu=wm, **got[0]))
            notes.append(("w", got[1]))
        if code[-1].mnemonic != "v_wr":
            code.append(Instruction.make("v_wr", space=int(Space.NETQ), addr=0, mfu=0))
        code.append(Instruction.make("end_chain"))
        # legal on its own? (registers as they will be)
        probe = [Instruction.make("s_wr", reg=int(r), imm=int(v)) for r, v in values.items()]
        try:
            (probed,) = analyze(Program(config, probe + [i for i in code if i.mnemonic != "s_wr"]))
        except ProgramError:
            return None
        regs.update(values)
        used.extend(n for _, n in notes)
        return code

    def transfer():
        count = int(rng.integers(1, 5)) if rng.random() < 0.8 else int(rng.integers(1, min(config.mrf_tiles, 32) + 1))
        mrf = int(rng.integers(0, config.mrf_tiles - count + 1))
        tile = int(rng.integers(0, min(config.dram_tiles, 64) - count + 1))
        return [Instruction.make("m_rd" if rng.random() < 0.7 else "m_wr", tile=tile, mrf=mrf, count=count)]

    steps = 0
    while steps < chains:
        u = rng.random()
        if u < 0.12:
            out += transfer()
            steps += 1
        elif u < 0.2:  # a burst of short steps behind whatever runs: the step queue fills
            for _ in range(int(rng.integers(config.step_queue, 2 * config.step_queue + 2))):
                code = one_chain(short=True) if rng.random() < 0.8 else transfer()
                if code:
                    out += code
                    steps += 1
        elif u < 0.25:  # a run of register writes: decoding, not the previous step, decides the start
            out += [Instruction.make("s_wr", reg=int(Reg.ALPHA), imm=int(rng.integers(0, 1 << 15)))
                    for _ in range(int(rng.integers(8, 40)))]
        else:
            code = one_chain()
            if code:
                out += code
                steps += 1
    return out


def _regs(rows, cols, io, ii, run=0, pitch=0) -> list[Instruction]:
    return [Instruction.make("s_wr", reg=int(r), imm=v) for r, v in
            ((Reg.ROWS, rows), (Reg.COLS, cols), (Reg.ITER_OUTER, io), (Reg.ITER_INNER, ii), (Reg.WIN_RUN, run),
             (Reg.WIN_PITCH, pitch))]


def random_pipelined_program(rng: np.random.Generator, config: NpuConfig, steps: int = 10) -> list[Instruction]:
    """A program where the pipelined machine's rules bite (docs/pipeline.md): chains whose operands sit on
    few addresses, so that later chains depend on earlier ones at every distance through intervals that
    touch or just miss (RAW, WAR, WAW), or overlap without a write (independent); DMA transfers racing
    chains on the MRF tiles they multiply with; MVM chains back to back with different ``cols`` (buffer
    credit); reads from DRAM and the queue (long latencies) beside VRF reads; bursts of short chains behind
    a long transfer (a full scoreboard, a full step queue); with ``mvm_bypass``, MVM-only chains (the bypass write
    port) racing the short MFU chains behind them, which complete first (chains out of program order)."""
    n_mfus = config.n_mfus
    out: list[Instruction] = []
    depths = {Space.IVRF: config.ivrf_depth, Space.DRAM: config.dram_vectors, Space.ASVRF: config.asvrf_depth,
              Space.MULVRF: config.mulvrf_depth}
    last: dict[Space, list[tuple[int, int]]] = {sp: [] for sp in depths}  # intervals used so far

    def operand(space, width, io, ii):
        so = int(rng.integers(0, 2)) * width if io > 1 else 0
        si = int(rng.integers(1, 3)) * width if ii > 1 else 0
        span = (io - 1) * so + (ii - 1) * si + width
        near = last[space]
        if near and rng.random() < 0.7:  # touch, just miss, or overlap an interval used before
            lo, hi = near[int(rng.integers(0, len(near)))]
            addr = int(rng.choice([hi + 1, hi, lo - span, lo - span + 1, lo]))
        else:
            addr = int(rng.integers(0, 48))
        addr = max(0, min(addr, depths[space] - span))
        near.append((addr, addr + span - 1))
        return dict(addr=addr, so=so, si=si)

    mrf_used: list[tuple[int, int]] = []
    for _ in range(steps):
        u = rng.random()
        if u < 0.2:  # a transfer, often onto tiles a chain multiplies with
            count = int(rng.integers(1, 5))
            if mrf_used and rng.random() < 0.6:
                lo, hi = mrf_used[int(rng.integers(0, len(mrf_used)))]
                mrf = int(rng.choice([hi + 1, hi, max(0, lo - count), lo]))
            else:
                mrf = int(rng.integers(0, 32))
            mrf = max(0, min(mrf, config.mrf_tiles - count))
            mrf_used.append((mrf, mrf + count - 1))
            mn = "m_rd" if rng.random() < 0.75 else "m_wr"
            out.append(Instruction.make(mn, tile=int(rng.integers(0, 6)), mrf=mrf, count=count))
            continue
        if u < 0.3:  # a burst of one-row chains on their own addresses: the scoreboard and the step queue fill
            base = int(rng.integers(0, 16)) * 8
            out += _regs(1, 1, 1, 1)
            for k in range(int(rng.integers(3, 8))):
                out += [Instruction.make("v_rd", space=int(Space.IVRF), mfu=0, addr=base + k, so=0, si=0),
                        Instruction.make("v_wr", space=int(Space.ASVRF), mfu=k % n_mfus, addr=200 + base + k,
                                         so=0, si=0),
                        Instruction.make("end_chain")]
            continue
        if config.mvm_bypass and u < 0.55:
            # an MVM-only chain (the bypass write port, docs/pipeline.md unit 11), long enough that MFU chains
            # behind it complete first, on operands near those used before (RAW, WAR, WAW through the bypass),
            # then a few short MFU chains on intervals near its own that race it
            out += _bypass_chain(rng, config, operand, mrf_used)
            for _ in range(int(rng.integers(0, 4))):
                rows = int(rng.integers(1, 3))
                out += _regs(rows, 1, 1, 1)
                space = Space(int(rng.choice([Space.IVRF, Space.ASVRF, Space.MULVRF])))
                mfu = int(rng.integers(0, n_mfus))
                out.append(Instruction.make("v_rd", space=int(space), mfu=mfu, **operand(space, rows, 1, 1)))
                if rng.random() < 0.5:
                    out.append(Instruction.make("v_tanh", mfu=int(rng.integers(0, n_mfus))))
                d = Space(int(rng.choice([Space.IVRF, Space.ASVRF, Space.MULVRF])))
                out.append(Instruction.make("v_wr", space=int(d), mfu=int(rng.integers(0, n_mfus)),
                                            **operand(d, rows, 1, 1)))
                out.append(Instruction.make("end_chain"))
            continue
        rows, cols = int(rng.integers(1, 4)), int(rng.integers(1, 5))
        io, ii = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        mvm = rng.random() < 0.5
        width = cols if mvm else rows
        out += _regs(rows, cols, io, ii)
        space = Space(int(rng.choice([Space.IVRF, Space.IVRF, Space.DRAM, Space.NETQ, Space.ASVRF, Space.MULVRF,
                                      Space.ZERO])))
        mfu = int(rng.integers(0, n_mfus))
        op = operand(space, width, io, ii) if space in depths else dict(addr=0, so=0, si=0)
        out.append(Instruction.make("v_rd", space=int(space), mfu=mfu, **op))
        if mvm:
            if mrf_used and rng.random() < 0.5:
                lo, hi = mrf_used[int(rng.integers(0, len(mrf_used)))]
                mrf = int(rng.choice([lo, hi, hi + 1, max(0, lo - rows * cols)]))
            else:
                mrf = int(rng.integers(0, 32))
            mrf = max(0, min(mrf, config.mrf_tiles - rows * cols))
            mrf_used.append((mrf, mrf + rows * cols - 1))
            out.append(Instruction.make("mv_mul", mrf=mrf))
        slots = [(k, st) for k in range(n_mfus) for st in MFU_STAGES if st in config.mfus[k]]
        for k, stage in [sl for sl in slots if rng.random() < 0.3]:
            mn = str(rng.choice(STAGE_OPS[stage]))
            vrf = BY_MNEMONIC[mn].vrf
            out.append(Instruction.make(mn, mfu=k, **operand(vrf, rows, io, ii)) if vrf is not None
                       else Instruction.make(mn, mfu=k))
        dests = [Space.IVRF, Space.IVRF, Space.DRAM, Space.ASVRF, Space.MULVRF, Space.NETQ]
        for p in rng.choice(len(dests), size=int(rng.integers(1, 3)), replace=False):
            d = dests[int(p)]
            if d == Space.NETQ:
                out.append(Instruction.make("v_wr", space=int(d), addr=0, mfu=0))
            else:
                out.append(Instruction.make("v_wr", space=int(d), mfu=int(rng.integers(0, n_mfus)),
                                            **operand(d, rows, io, ii)))
        out.append(Instruction.make("end_chain"))
    return out


def _bypass_chain(rng, config: NpuConfig, operand, mrf_used) -> list[Instruction]:
    """An MVM-only chain: ``mv_mul``, no MFU operation, one or two VRF destinations (it takes the bypass)."""
    rows, cols = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    io, ii = int(rng.integers(1, 3)), int(rng.integers(1, 4))
    out = _regs(rows, cols, io, ii)
    space = Space(int(rng.choice([Space.IVRF, Space.IVRF, Space.DRAM, Space.NETQ, Space.ASVRF, Space.MULVRF])))
    depths = (Space.IVRF, Space.DRAM, Space.ASVRF, Space.MULVRF)
    op = operand(space, cols, io, ii) if space in depths else dict(addr=0, so=0, si=0)
    out.append(Instruction.make("v_rd", space=int(space), mfu=int(rng.integers(0, config.n_mfus)), **op))
    mrf = int(rng.integers(0, max(1, config.mrf_tiles - rows * cols + 1)))
    mrf_used.append((mrf, mrf + rows * cols - 1))
    out.append(Instruction.make("mv_mul", mrf=mrf))
    dests = [Space.IVRF, Space.ASVRF, Space.MULVRF]
    for p in rng.choice(len(dests), size=int(rng.integers(1, 3)), replace=False):
        d = dests[int(p)]
        out.append(Instruction.make("v_wr", space=int(d), mfu=int(rng.integers(0, config.n_mfus)),
                                    **operand(d, rows, io, ii)))
    out.append(Instruction.make("end_chain"))
    return out


def random_case(config: NpuConfig, seed: int, chains: int | None = 4, pipelined: bool = False, *,
                data: str = "full", verify: bool = True) -> Case:
    """A legal random program and its data (redrawn until the simulator accepts it); ``pipelined``: one of
    :func:`random_pipelined_program` with ``2 * chains + 2`` steps; ``chains=None``: a random length (up to
    hundreds of steps; with ``pipelined``, half of them :func:`random_program`'s).  ``data="full"`` fills
    every memory; ``"partial"`` a few regions of each (for a machine that keeps what earlier cases left,
    rtl.check.Checker).  ``verify=False`` skips the simulator run that
    proves the case legal (the static rules are checked all the same; rtl.check.Checker skips a case the
    simulator then refuses)."""
    from sim.machine import Machine

    rng = np.random.default_rng(seed)
    for _ in range(100):
        if pipelined and chains is None and rng.random() < 0.5:
            # random lengths on the pipelined machine: half its own programs, half the one-step machine's
            # (register limits, stride classes, windows, streamed queues)
            instructions = random_program(rng, config, None)
        elif pipelined:
            n = chains if chains is not None else max(1, _length(rng) // 2)
            instructions = random_pipelined_program(rng, config, 2 * n + 2)
        else:
            instructions = random_program(rng, config, chains)
        program = Program(config, instructions)
        try:
            steps = analyze(program)
        except ProgramError:
            continue
        need = sum(s.iterations * len(s.read_offsets()) for s in steps
                   if isinstance(s, Chain) and s.read.space == Space.NETQ)
        case = Case(program, seed=seed)
        mode = str(rng.choice(DATA_MODES, p=[0.55, 0.15, 0.15, 0.15]))
        memories = [(Space.IVRF, 0, config.ivrf_depth), (Space.DRAM, 0, config.dram_vectors)]
        for k in range(config.n_mfus):
            memories += [(Space.ASVRF, k, config.asvrf_depth), (Space.MULVRF, k, config.mulvrf_depth)]
        for space, k, depth in memories:
            if data == "full":
                case.vectors.append((space, k, 0, random_fp16(rng, (depth, config.native_dim), mode=mode)))
                continue
            for _ in range(int(rng.integers(0, 3))):
                count = int(rng.integers(1, min(depth, 32) + 1))
                at = int(rng.integers(0, depth - count + 1))
                case.vectors.append((space, k, at, random_fp16(rng, (count, config.native_dim), mode=mode)))
        if data == "full" or rng.random() < 0.25:
            # both images at once: every MRF tile and every weight-DRAM tile a transfer reaches share the scale
            wmode, scale = weight_scale(rng, config)
            case.mrf = _weights(rng, config, config.mrf_tiles, scale)
            case.wdram = _weights(rng, config, min(config.dram_tiles, 64), scale)
        else:
            wmode = "kept"  # the weights earlier cases left
        case.notes = {"data": mode, "weights": wmode}
        case.inputs = random_fp16(rng, (need, config.native_dim), mode=mode)
        if not verify:
            return case
        try:
            m = Machine(config)
            case.load(m)
            m.run(program)
        except ProgramError:
            continue
        return case
    raise RuntimeError(f"no legal random program found for seed {seed}")
