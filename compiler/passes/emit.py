"""Code generation: steps with allocated buffers -> instructions, plus per-layer regions.

Scalar registers are written only when a chain needs a value different from
the one in force (registers start at their reset values in every program).
"""
from __future__ import annotations

import numpy as np

from compiler.chain_ir import ChainSpec, DmaSpec, Ref
from npu.config import NpuConfig
from npu.isa import REG_RESET, Instruction, Reg, Space


def _operand(r: Ref) -> dict:
    if r.buf is None:
        return dict(space=int(r.space), addr=0, mfu=0, so=0, si=0)
    b = r.buf
    return dict(space=int(b.space), addr=b.addr + r.offset, mfu=b.mfu if b.space in (Space.ASVRF, Space.MULVRF) else 0,
                so=r.so, si=r.si)


def _fp16_bits(x: float) -> int:
    return int(np.array(x, np.float16).view(np.uint16))


def emit(steps: list, config: NpuConfig) -> tuple[list[Instruction], list[tuple[int, int, str]]]:
    regs = dict(REG_RESET)
    out: list[Instruction] = []
    regions: list[tuple[int, int, str]] = []

    def mark(start: int, name: str):
        if regions and regions[-1][2] == name and regions[-1][1] == start - 1:
            regions[-1] = (regions[-1][0], len(out) - 1, name)
        else:
            regions.append((start, len(out) - 1, name))

    def s_wr(reg: Reg, value: int):
        if regs[reg] != value:
            out.append(Instruction.make("s_wr", reg=int(reg), imm=int(value)))
            regs[reg] = value

    for s in steps:
        start = len(out)
        if isinstance(s, DmaSpec):
            out.append(Instruction.make("m_rd", tile=s.chunk.tile, mrf=s.mrf, count=s.chunk.tiles))
            mark(start, s.region)
            continue
        assert isinstance(s, ChainSpec)
        s_wr(Reg.ROWS, s.rows)
        if s.weights is not None:
            s_wr(Reg.COLS, s.cols)
        s_wr(Reg.ITER_OUTER, s.iters[0])
        s_wr(Reg.ITER_INNER, s.iters[1])
        s_wr(Reg.WIN_RUN, s.win[0])
        if s.win[0]:
            s_wr(Reg.WIN_PITCH, s.win[1])
        if any(o.mnemonic == "v_lrelu" for o in s.ops):
            s_wr(Reg.ALPHA, _fp16_bits(s.alpha))
        out.append(Instruction.make("v_rd", **_operand(s.read)))
        if s.weights is not None:
            mrf = getattr(s, "mrf_override", None)
            out.append(Instruction.make("mv_mul", mrf=s.weights.mrf if mrf is None else mrf))
        for o in s.ops:
            if o.ref is None:
                out.append(Instruction.make(o.mnemonic, mfu=o.mfu))
            else:
                opnd = _operand(o.ref)
                out.append(Instruction.make(o.mnemonic, addr=opnd["addr"], mfu=o.mfu, so=opnd["so"], si=opnd["si"]))
        for w in s.writes:
            out.append(Instruction.make("v_wr", **_operand(w)))
        out.append(Instruction.make("end_chain"))
        mark(start, s.region)
    return out, regions
