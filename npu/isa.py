"""The instruction set, as one table.

:data:`INSTRUCTIONS` is the single definition of every instruction: mnemonic,
opcode (its position in the table), operand fields, the unit that executes it
and one sentence of semantics.  The binary encoding and decoding
(:class:`Encoding`), the assembler and disassembler (npu/asm.py), validation
(npu/program.py), the RTL decoder and docs/isa.md are all derived from it.

Field *kinds* are declared here; their bit widths are computed from the
:class:`npu.config.NpuConfig`, so a larger machine gets wider addresses and
the word grows (in multiples of 32 bits) only when it must.

Execution model (Brainwave's): a single-threaded stream of *chains*.  A chain
is ``v_rd`` -> optional ``mv_mul`` -> MFU operations -> one or more ``v_wr`` ->
``end_chain``, and repeats as a two-level hardware loop of
``iter_outer x iter_inner`` iterations; every memory operand auto-increments by
its ``so`` (outer) and ``si`` (inner) strides.  Scalar registers written by
``s_wr`` between chains set the loop counts, the MVM shape and the read window.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum
from functools import cached_property, lru_cache

import numpy as np

from npu.config import MFU_STAGES, NpuConfig, bits_for
from npu.errors import EncodingError
from npu.spaces import Space

WORD_ALIGN = 32  # instruction words are a multiple of this many bits


class Reg(IntEnum):
    """Scalar control registers, set by ``s_wr``; reset values in :data:`REG_RESET`."""

    ROWS = 0        # output native vectors per iteration (mv_mul output tiles)
    COLS = 1        # mv_mul input native vectors per iteration (input tiles)
    ITER_OUTER = 2  # outer hardware-loop count of the next chains
    ITER_INNER = 3  # inner hardware-loop count
    WIN_RUN = 4     # v_rd window: contiguous vectors per run (0: one contiguous run)
    WIN_PITCH = 5   # v_rd window: address step between runs
    ALPHA = 6       # v_lrelu slope, as fp16 bits


REG_RESET = {Reg.ROWS: 1, Reg.COLS: 1, Reg.ITER_OUTER: 1, Reg.ITER_INNER: 1,
             Reg.WIN_RUN: 0, Reg.WIN_PITCH: 0, Reg.ALPHA: 0}


class Unit(str, Enum):
    """Which part of the machine executes an instruction."""

    CONTROL = "control"  # scalar registers, sequencing
    READ = "read"        # chain head: vector read port
    MVM = "mvm"          # matrix-vector multiplier
    MFU = "mfu"          # multifunction unit (stage given by `stage`)
    WRITE = "write"      # chain tail: vector write port
    DMA = "dma"          # weight tile transfers DRAM <-> MRF


class Kind(str, Enum):
    """Operand field kinds; widths come from :meth:`Encoding.kind_bits`."""

    SPACE = "space"    # a Space
    MFU = "mfu"        # MFU index
    VADDR = "vaddr"    # vector address (any vector memory)
    STRIDE = "stride"  # per-iteration address increment
    MRF = "mrf"        # MRF tile address
    TILE = "tile"      # weight-image tile address in DRAM
    COUNT = "count"    # number of tiles
    REG = "reg"        # a Reg
    IMM = "imm"        # scalar register value


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind
    default: int | None = None  # None: required in assembly
    doc: str = ""


@dataclass(frozen=True)
class InstrDef:
    mnemonic: str
    unit: Unit
    fields: tuple[Field, ...]
    semantics: str
    stage: str | None = None  # MFU stage (npu.config.MfuUnit value) for MFU ops
    opcode: int = -1          # filled in from the table position
    vrf: Space | None = None  # the vector memory a binary MFU op reads its second operand from

    @cached_property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


# Shared operand groups.
_MFU = Field("mfu", Kind.MFU, 0, "MFU index")
_ADDR = Field("addr", Kind.VADDR, None, "base address, native vectors")
_SO = Field("so", Kind.STRIDE, 0, "address increment per outer iteration")
_SI = Field("si", Kind.STRIDE, 0, "address increment per inner iteration")
_VRF_OPERAND = (_ADDR, _MFU, _SO, _SI)
_VEC_OPERAND = (Field("space", Kind.SPACE, None, "memory space"), _ADDR, _MFU, _SO, _SI)


def _mfu_binary(mnemonic: str, expr: str, stage: str = "addsub", vrf: Space = Space.ASVRF) -> InstrDef:
    return InstrDef(mnemonic, Unit.MFU, _VRF_OPERAND,
                    f"x = {expr} elementwise in fp16, b read from {vrf.name}[mfu] at addr + i*so + j*si "
                    f"(rows vectors).", stage=stage, vrf=vrf)


def _mfu_unary(mnemonic: str, semantics: str) -> InstrDef:
    return InstrDef(mnemonic, Unit.MFU, (_MFU,), semantics, stage="act")


#: THE instruction table.  Opcodes are table positions: append, never reorder.
INSTRUCTIONS: tuple[InstrDef, ...] = (
    InstrDef("nop", Unit.CONTROL, (), "Does nothing for one issue slot."),
    InstrDef("s_wr", Unit.CONTROL,
             (Field("reg", Kind.REG, None, "scalar register"), Field("imm", Kind.IMM, None, "value")),
             "Sets scalar register reg to imm for the chains that follow."),
    InstrDef("v_rd", Unit.READ, _VEC_OPERAND,
             "Starts a chain: reads cols (with mv_mul) or rows native vectors per iteration from space at "
             "addr + i*so + j*si, gathered in runs of win_run vectors win_pitch apart when win_run > 0."),
    InstrDef("mv_mul", Unit.MVM, (Field("mrf", Kind.MRF, None, "first tile; tile (r, c) at mrf + r*cols + c"),),
             "x = W x: converts x to the activation BFP format and multiplies it by the rows x cols MRF tiles "
             "at mrf, accumulating exactly and rounding once to fp16."),
    _mfu_binary("vv_add", "x + b"),
    _mfu_binary("vv_a_sub_b", "x - b"),
    _mfu_binary("vv_b_sub_a", "b - x"),
    _mfu_binary("vv_max", "max(x, b)"),
    _mfu_binary("vv_min", "min(x, b)"),
    _mfu_binary("vv_mul", "x * b", stage="mul", vrf=Space.MULVRF),
    _mfu_unary("v_relu", "x = x if x > 0 else +0, in MFU mfu's activation stage."),
    _mfu_unary("v_lrelu", "x = x if x > 0 else fp16(x * alpha), alpha the fp16 in scalar register alpha."),
    _mfu_unary("v_sigm", "x = sigmoid(x), piecewise-linear in fp16 as npu.numerics defines it."),
    _mfu_unary("v_tanh", "x = tanh(x), piecewise-linear in fp16 as npu.numerics defines it."),
    InstrDef("v_wr", Unit.WRITE, _VEC_OPERAND,
             "Writes the chain's rows vectors of each iteration to space at addr + i*so + j*si; a chain may "
             "end in several v_wr."),
    InstrDef("end_chain", Unit.CONTROL, (),
             "Ends a chain; the chain then runs iter_outer x iter_inner iterations (i outer, j inner)."),
    InstrDef("m_rd", Unit.DMA,
             (Field("tile", Kind.TILE, None, "weight-image tile in DRAM"), Field("mrf", Kind.MRF, None, "MRF tile"),
              Field("count", Kind.COUNT, None, "tiles")),
             "Copies count weight tiles from DRAM tile address tile to the MRF at mrf."),
    InstrDef("m_wr", Unit.DMA,
             (Field("mrf", Kind.MRF, None, "MRF tile"), Field("tile", Kind.TILE, None, "weight-image tile in DRAM"),
              Field("count", Kind.COUNT, None, "tiles")),
             "Copies count tiles from the MRF at mrf to DRAM tile address tile."),
    _mfu_unary("v_exp", "x = exp(x), piecewise-linear in fp16 as npu.numerics defines it."),
    _mfu_unary("v_recip", "x = 1/x: a piecewise-linear table over the mantissa, scaled by a power of two "
                          "(npu.numerics)."),
    _mfu_unary("v_rsqrt", "x = 1/sqrt(x): a piecewise-linear table over the mantissa, scaled by a power of two "
                          "(npu.numerics)."),
    _mfu_unary("v_gelu", "x = x * Phi(x) (GELU, erf form), piecewise-linear in fp16 (npu.numerics)."),
    _mfu_unary("v_gelut", "x = GELU in its tanh form, piecewise-linear in fp16 (npu.numerics)."),
    _mfu_unary("v_hswish", "x = x * clip(x + 3, 0, 6) / 6 (hardswish), piecewise-linear in fp16 (npu.numerics)."),
    _mfu_unary("v_hsigm", "x = clip(x / 6 + 1/2, 0, 1) (hardsigmoid), piecewise-linear in fp16 (npu.numerics)."),
    _mfu_unary("v_swish", "x = x * sigmoid(x) (swish, SiLU), piecewise-linear in fp16 (npu.numerics)."),
    _mfu_unary("vr_sum", "Every lane of x = the fp16 sum of x's N lanes, added as a fixed pairwise tree "
                         "(npu.numerics.fp16_reduce); within the activation stage's mfu_stage cycles."),
    _mfu_unary("vr_max", "Every lane of x = the largest of x's N lanes (a pairwise tree of vv_max's rule); within "
                         "the activation stage's mfu_stage cycles."),
)
INSTRUCTIONS = tuple(InstrDef(d.mnemonic, d.unit, d.fields, d.semantics, d.stage, i, d.vrf)
                     for i, d in enumerate(INSTRUCTIONS))
BY_MNEMONIC: dict[str, InstrDef] = {d.mnemonic: d for d in INSTRUCTIONS}
OPCODES: dict[str, int] = {d.mnemonic: d.opcode for d in INSTRUCTIONS}

#: Every field name used by some instruction, in first-appearance order (decoded column order).
FIELD_NAMES: tuple[str, ...] = tuple(dict.fromkeys(f.name for d in INSTRUCTIONS for f in d.fields))
MFU_OPS = tuple(d.mnemonic for d in INSTRUCTIONS if d.unit is Unit.MFU)
STAGE_ORDER = {stage: i for i, stage in enumerate(MFU_STAGES)}
#: The MFU operations of each stage, in table order.
STAGE_OPS: dict[str, tuple[str, ...]] = {s: tuple(d.mnemonic for d in INSTRUCTIONS if d.stage == s) for s in MFU_STAGES}
#: An MFU operation's code within its stage (its position in STAGE_OPS + 1): what the RTL's step descriptor
#: holds per stage, 0 meaning the chain bypasses the stage.
STAGE_CODES: dict[str, int] = {m: i + 1 for ops in STAGE_OPS.values() for i, m in enumerate(ops)}
#: The activation-unit instructions that evaluate a table function of npu.numerics, by the function's name
#: (``v_<name>``; npu.numerics.ALL_ACTIVATIONS lists them).
ACT_TABLE_OPS: dict[str, str] = {d.mnemonic: d.mnemonic[2:] for d in INSTRUCTIONS
                                 if d.stage == "act" and d.mnemonic.startswith("v_")
                                 and d.mnemonic not in ("v_relu", "v_lrelu")}
#: The reductions across a native vector's lanes (activation stage), by the npu.numerics.fp16_reduce kind.
REDUCTION_OPS: dict[str, str] = {"vr_sum": "sum", "vr_max": "max"}


def enum_for(kind: Kind):
    return {Kind.SPACE: Space, Kind.REG: Reg}.get(kind)


@dataclass(frozen=True)
class Instruction:
    """One instruction: a mnemonic and its field values (all fields present)."""

    mnemonic: str
    fields: tuple[tuple[str, int], ...] = ()

    @classmethod
    def make(cls, mnemonic: str, **values) -> "Instruction":
        """Build with defaults filled in; raises EncodingError for unknown or missing fields."""
        try:
            d = BY_MNEMONIC[mnemonic]
        except KeyError:
            raise EncodingError(f"unknown instruction {mnemonic!r}") from None
        out = []
        for f in d.fields:
            if f.name in values:
                v = values.pop(f.name)
            elif f.default is not None:
                v = f.default
            else:
                raise EncodingError(f"{mnemonic}: missing operand {f.name!r}")
            out.append((f.name, int(v)))
        if values:
            raise EncodingError(f"{mnemonic}: unknown operand(s) {sorted(values)}; operands: {list(d.field_names)}")
        return cls(mnemonic, tuple(out))

    @property
    def definition(self) -> InstrDef:
        return BY_MNEMONIC[self.mnemonic]

    def __getitem__(self, name: str) -> int:
        for k, v in self.fields:
            if k == name:
                return v
        raise KeyError(name)

    def get(self, name: str, default: int = 0) -> int:
        for k, v in self.fields:
            if k == name:
                return v
        return default

    def __str__(self) -> str:
        return format_instruction(self)


def format_instruction(ins: Instruction) -> str:
    """Canonical text: required operands positionally, optional ones as name=value when not default."""
    d = ins.definition
    parts = [d.mnemonic]
    for f, (name, value) in zip(d.fields, ins.fields):
        enum = enum_for(f.kind)
        text = enum(value).name.lower() if enum is not None and value in enum._value2member_map_ else str(value)
        if f.default is None:
            parts.append(text)
        elif value != f.default:
            parts.append(f"{name}={text}")
    return " ".join(parts)



class Encoding:
    """Bit layout of instruction words for one configuration.

    The opcode sits in the low bits; each instruction's fields follow in table
    order.  ``word_bits`` is the longest instruction rounded up to a multiple
    of :data:`WORD_ALIGN`.
    """

    def __init__(self, config: NpuConfig):
        self.config = config
        self.opcode_bits = bits_for(len(INSTRUCTIONS))
        self.layout: dict[str, tuple[tuple[str, int, int], ...]] = {}
        longest = 0
        for d in INSTRUCTIONS:
            off = self.opcode_bits
            fields = []
            for f in d.fields:
                w = self.kind_bits[f.kind]
                fields.append((f.name, off, w))
                off += w
            self.layout[d.mnemonic] = tuple(fields)
            longest = max(longest, off)
        self.word_bits = -(-longest // WORD_ALIGN) * WORD_ALIGN
        self.word_bytes = self.word_bits // 8

    @cached_property
    def kind_bits(self) -> dict[Kind, int]:
        c = self.config
        vaddr = bits_for(max(c.ivrf_depth, c.asvrf_depth, c.mulvrf_depth, c.dram_vectors))
        return {
            Kind.SPACE: bits_for(len(Space)),
            Kind.MFU: bits_for(c.n_mfus),
            Kind.VADDR: vaddr,
            Kind.STRIDE: vaddr,
            Kind.MRF: bits_for(c.mrf_tiles),
            Kind.TILE: bits_for(c.dram_tiles),
            Kind.COUNT: bits_for(c.mrf_tiles + 1),
            Kind.REG: bits_for(len(Reg)),
            # Holds any address or loop count, and the 16 bits of an fp16 alpha.
            Kind.IMM: max(vaddr + 1, 16),
        }

    # ------------------------------------------------------------ one word
    def encode(self, ins: Instruction) -> int:
        d = ins.definition
        word = d.opcode
        for (name, off, width), (fname, value) in zip(self.layout[d.mnemonic], ins.fields):
            assert name == fname
            if not 0 <= value < (1 << width):
                raise EncodingError(f"{d.mnemonic}: field {name!r}: value {value} doesn't fit in {width} bits "
                                    f"(0..{(1 << width) - 1} for config {self.config.name!r})")
            word |= value << off
        return word

    def decode(self, word: int) -> Instruction:
        op = word & ((1 << self.opcode_bits) - 1)
        if op >= len(INSTRUCTIONS):
            raise EncodingError(f"unknown opcode {op} in word {word:#x}")
        d = INSTRUCTIONS[op]
        fields = tuple((name, (word >> off) & ((1 << w) - 1)) for name, off, w in self.layout[d.mnemonic])
        return Instruction(d.mnemonic, fields)

    # ------------------------------------------------------------ many words
    def to_bytes(self, instructions) -> bytes:
        n = self.word_bytes
        return b"".join(self.encode(i).to_bytes(n, "little") for i in instructions)

    def from_bytes(self, data: bytes) -> list[Instruction]:
        n = self.word_bytes
        if len(data) % n:
            raise EncodingError(f"program length {len(data)} bytes is not a multiple of the {n}-byte word")
        return [self.decode(int.from_bytes(data[i:i + n], "little")) for i in range(0, len(data), n)]

    def decode_columns(self, data: bytes) -> dict[str, np.ndarray]:
        """Vectorized decode into columns: ``op`` and one int64 array per field name (0 where absent)."""
        n = self.word_bytes
        if len(data) % n:
            raise EncodingError(f"program length {len(data)} bytes is not a multiple of the {n}-byte word")
        count = len(data) // n
        raw = np.frombuffer(data, dtype=np.uint8).reshape(count, n)
        limbs = np.zeros((count, -(-n // 8) * 8), dtype=np.uint8)
        limbs[:, :n] = raw
        limbs = limbs.view("<u8")  # [count, L] little-endian 64-bit limbs

        def extract(off: int, width: int) -> np.ndarray:
            li, sh = divmod(off, 64)
            v = limbs[:, li] >> np.uint64(sh)
            if sh + width > 64:
                v = v | (limbs[:, li + 1] << np.uint64(64 - sh))
            return (v & np.uint64((1 << width) - 1)).astype(np.int64)

        op = extract(0, self.opcode_bits)
        bad = np.nonzero(op >= len(INSTRUCTIONS))[0]
        if len(bad):
            raise EncodingError(f"word {bad[0]}: unknown opcode {op[bad[0]]}")
        cols = {"op": op}
        for name in FIELD_NAMES:
            cols[name] = np.zeros(count, dtype=np.int64)
        for d in INSTRUCTIONS:
            sel = op == d.opcode
            if not sel.any():
                continue
            for name, off, width in self.layout[d.mnemonic]:
                cols[name][sel] = extract(off, width)[sel]
        return cols


@lru_cache(maxsize=64)
def encoding_for(config: NpuConfig) -> Encoding:
    return Encoding(config)
