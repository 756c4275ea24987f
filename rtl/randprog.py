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


def random_fp16(rng: np.random.Generator, shape, specials: bool = True) -> np.ndarray:
    """Mostly normal values of mixed scale, with zeros, subnormals, infinities and NaN sprinkled in."""
    x = rng.standard_normal(shape) * np.exp2(rng.integers(-6, 6, shape))
    v = x.astype(np.float16)
    if specials:
        mask = rng.random(shape) < 0.03
        pool = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 6e-8, -3e-6, 65504.0], np.float16)
        v[mask] = rng.choice(pool, int(mask.sum()))
    return v


def _weights(rng, config: NpuConfig, tiles: int) -> WeightImage:
    n = config.native_dim
    w = rng.standard_normal((n, tiles * n)) * np.exp2(rng.integers(-3, 3, (n, 1)))
    image, _, _ = tile_matrix(w, config)
    # tile_matrix orders tiles row-major over [1, tiles]; any order will do here
    return image


def random_program(rng: np.random.Generator, config: NpuConfig, chains: int = 4) -> list[Instruction]:
    n_mfus = config.n_mfus
    out: list[Instruction] = []
    depths = {Space.IVRF: config.ivrf_depth, Space.DRAM: config.dram_vectors, Space.ASVRF: config.asvrf_depth,
              Space.MULVRF: config.mulvrf_depth}

    def operand(space, width, io, ii, lo=0):
        depth = depths[space]
        so = int(rng.integers(0, 3)) * width if io > 1 else 0
        si = int(rng.integers(1, 3)) * width if ii > 1 else 0
        span = (io - 1) * so + (ii - 1) * si + width
        hi = depth - span
        if hi < lo:
            return None
        return dict(addr=int(rng.integers(lo, hi + 1)), so=so, si=si)

    for _ in range(chains):
        if rng.random() < 0.15:
            tiles = int(rng.integers(1, 3))
            mn = "m_rd" if rng.random() < 0.7 else "m_wr"
            mrf = int(rng.integers(0, config.mrf_tiles - tiles))
            tile = int(rng.integers(0, 8))
            out.append(Instruction.make(mn, tile=tile, mrf=mrf, count=tiles))
            continue
        rows = int(rng.integers(1, 4))
        cols = int(rng.integers(1, 4))
        io = int(rng.integers(1, 3))
        ii = int(rng.integers(1, 4))
        mvm = rng.random() < 0.5
        width = cols if mvm else rows
        run = 0
        pitch = 0
        if rng.random() < 0.25 and width > 1:
            run = 1 if width % 2 else int(rng.choice([1, 2]))
            pitch = run + int(rng.integers(0, 3))
        out += [Instruction.make("s_wr", reg=int(Reg.ROWS), imm=rows), Instruction.make("s_wr", reg=int(Reg.COLS), imm=cols),
                Instruction.make("s_wr", reg=int(Reg.ITER_OUTER), imm=io),
                Instruction.make("s_wr", reg=int(Reg.ITER_INNER), imm=ii),
                Instruction.make("s_wr", reg=int(Reg.WIN_RUN), imm=run),
                Instruction.make("s_wr", reg=int(Reg.WIN_PITCH), imm=pitch)]
        if rng.random() < 0.3:
            out.append(Instruction.make("s_wr", reg=int(Reg.ALPHA),
                                        imm=int(np.float16(rng.uniform(-1, 1)).view(np.uint16))))
        span_w = ((width // run - 1) * pitch + run) if run else width
        space = Space(int(rng.choice([Space.NETQ, Space.DRAM, Space.IVRF, Space.ASVRF, Space.MULVRF, Space.ZERO])))
        mfu = int(rng.integers(0, n_mfus))
        if space in depths:
            op = operand(space, span_w, io, ii)
            if op is None:
                space, op = Space.IVRF, operand(Space.IVRF, span_w, io, ii)
        else:
            op = dict(addr=0, so=0, si=0)
        out.append(Instruction.make("v_rd", space=int(space), mfu=mfu, **op))
        if mvm:
            out.append(Instruction.make("mv_mul", mrf=int(rng.integers(0, config.mrf_tiles - rows * cols + 1))))
        # MFU ops in pipeline order: (mfu, stage) strictly increasing
        slots = [(k, s) for k in range(n_mfus) for s in MFU_STAGES if s in config.mfus[k]]
        chosen = [sl for sl in slots if rng.random() < 0.3]
        for k, stage in chosen:
            mn = str(rng.choice(STAGE_OPS[stage]))
            vrf = BY_MNEMONIC[mn].vrf
            if vrf is not None:
                o = operand(vrf, rows, io, ii)
                if o is None:
                    continue
                out.append(Instruction.make(mn, mfu=k, **o))
            else:
                out.append(Instruction.make(mn, mfu=k))
        # one or two writes to distinct destinations, in the upper half of each memory
        dests = [Space.NETQ, Space.IVRF, Space.DRAM, Space.ASVRF, Space.MULVRF]
        picks = rng.choice(len(dests), size=int(rng.integers(1, 3)), replace=False)
        for p in picks:
            d = dests[int(p)]
            wm = int(rng.integers(0, n_mfus))
            if d == Space.NETQ:
                out.append(Instruction.make("v_wr", space=int(d), addr=0, mfu=0))
                continue
            o = operand(d, rows, io, ii, lo=depths[d] // 2)
            if o is None:
                continue
            out.append(Instruction.make("v_wr", space=int(d), mfu=wm, **o))
        if out[-1].mnemonic != "v_wr":
            out.append(Instruction.make("v_wr", space=int(Space.NETQ), addr=0, mfu=0))
        out.append(Instruction.make("end_chain"))
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
    a long transfer (a full scoreboard, a full step queue)."""
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


def random_case(config: NpuConfig, seed: int, chains: int = 4, pipelined: bool = False) -> Case:
    """A legal random program and its data (redrawn until the simulator accepts it); ``pipelined``: one of
    :func:`random_pipelined_program` with ``2 * chains + 2`` steps."""
    from sim.machine import Machine

    rng = np.random.default_rng(seed)
    for _ in range(100):
        instructions = (random_pipelined_program(rng, config, 2 * chains + 2) if pipelined
                        else random_program(rng, config, chains))
        program = Program(config, instructions)
        try:
            steps = analyze(program)
        except ProgramError:
            continue
        need = sum(s.iterations * len(s.read_offsets()) for s in steps
                   if isinstance(s, Chain) and s.read.space == Space.NETQ)
        case = Case(program, seed=seed)
        for space, depth in ((Space.IVRF, config.ivrf_depth), (Space.DRAM, config.dram_vectors)):
            case.vectors.append((space, 0, 0, random_fp16(rng, (depth, config.native_dim))))
        for k in range(config.n_mfus):
            case.vectors.append((Space.ASVRF, k, 0, random_fp16(rng, (config.asvrf_depth, config.native_dim))))
            case.vectors.append((Space.MULVRF, k, 0, random_fp16(rng, (config.mulvrf_depth, config.native_dim))))
        case.mrf = _weights(rng, config, min(config.mrf_tiles, 16))
        case.wdram = _weights(rng, config, 8)
        case.inputs = random_fp16(rng, (need, config.native_dim))
        try:
            m = Machine(config)
            case.load(m)
            m.run(program)
        except ProgramError:
            continue
        return case
    raise RuntimeError(f"no legal random program found for seed {seed}")
