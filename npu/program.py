"""Programs: instructions for one configuration, their file format and static analysis.

File format (``.bin``): ``b"NPUPROG1"``, a little-endian u32 header length, a
JSON header (``config``: the full NpuConfig dict, ``word_bits``, ``count``,
``fingerprint``), then ``count`` little-endian words of ``word_bits``.  A
program file is self-describing: ``npu disasm prog.bin`` needs no --config.

:func:`analyze` walks a program once, tracking the scalar registers (there is
no data-dependent control flow, so every register value is known statically),
checks every rule and returns the list of :class:`Chain` and :class:`Dma` steps
the simulator executes.  A broken rule raises :class:`npu.errors.ProgramError`
naming the pc, the instruction and the rule.  It is the one program checker:
the compiler runs it on what it emits, and the simulator and the RTL backend
on what they are given.  Its rules are the ISA's (chain form, address ranges,
the exact-accumulation limit), the configuration's (MRF size, MFU stages, the
write slots and the MVM input buffer of ``config``) and the pipeline's (no
iteration of a chain reads what an earlier iteration of it wrote).
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from npu.config import NpuConfig
from npu.errors import EncodingError, ProgramError
from npu.isa import REG_RESET, STAGE_ORDER, Instruction, Reg, Unit, encoding_for
from npu.numerics import MAX_DOT_LENGTH
from npu.spaces import ADDRESSED_SPACES, PER_MFU_SPACES, READ_SPACES, WRITE_SPACES, Space

MAGIC = b"NPUPROG1"


@dataclass
class Program:
    """A sequence of instructions for one configuration."""

    config: NpuConfig
    instructions: list[Instruction]

    def __len__(self) -> int:
        return len(self.instructions)

    def to_bytes(self) -> bytes:
        enc = encoding_for(self.config)
        header = json.dumps({"config": self.config.to_dict(), "word_bits": enc.word_bits,
                             "count": len(self.instructions), "fingerprint": self.config.fingerprint()}).encode()
        return MAGIC + struct.pack("<I", len(header)) + header + enc.to_bytes(self.instructions)

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<program>") -> "Program":
        config, words = _split(data, source)
        try:
            return cls(config, encoding_for(config).from_bytes(words))
        except EncodingError as exc:
            raise EncodingError(f"{source}: {exc}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> "Program":
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise EncodingError(f"{path}: cannot read: {exc.strerror or exc}") from None
        return cls.from_bytes(data, str(path))


def _split(data: bytes, source: str) -> tuple[NpuConfig, bytes]:
    if data[:8] != MAGIC or len(data) < 12:
        raise EncodingError(f"{source}: not an NPU program (missing the {MAGIC!r} header)")
    (hlen,) = struct.unpack("<I", data[8:12])
    try:
        header = json.loads(data[12:12 + hlen])
        config = NpuConfig.from_dict(header["config"])
    except (ValueError, KeyError) as exc:
        raise EncodingError(f"{source}: corrupt program header: {exc}") from None
    words = data[12 + hlen:]
    enc = encoding_for(config)
    if header.get("word_bits") != enc.word_bits or len(words) != header.get("count", -1) * enc.word_bytes:
        raise EncodingError(f"{source}: program is truncated or its header does not match its words "
                            f"(expected {header.get('count')} words of {enc.word_bits} bits, got {len(words)} bytes)")
    return config, words


# ---------------------------------------------------------------- static analysis
@dataclass(frozen=True)
class Operand:
    """A vector memory operand: space (+ MFU for ASVRF/MULVRF), base address and strides."""

    space: Space
    mfu: int
    addr: int
    so: int
    si: int


@dataclass(frozen=True)
class MfuOp:
    mnemonic: str
    mfu: int
    stage: str
    operand: Operand | None  # the VRF operand of binary ops


def window_offsets(width: int, run: int, pitch: int) -> np.ndarray:
    """Offsets of one iteration's ``width`` vectors read through the window: runs of ``run`` contiguous vectors
    ``pitch`` apart (``run <= 0``: one contiguous run). The v_rd addressing rule, for programs and compilers."""
    if run <= 0:
        return np.arange(width, dtype=np.int64)
    return (np.arange(width // run, dtype=np.int64)[:, None] * pitch + np.arange(run, dtype=np.int64)[None, :]).ravel()


def iteration_bases(addr: int, outer: int, inner: int, so: int, si: int) -> np.ndarray:
    """Base address of each iteration of a two-level loop (outer i, inner j, in order): addr + i*so + j*si."""
    i = np.arange(outer, dtype=np.int64)[:, None] * so
    j = np.arange(inner, dtype=np.int64)[None, :] * si
    return (addr + i + j).ravel()


@dataclass
class Chain:
    """One chain with the register values in force when it ran."""

    pc: int                 # pc of its v_rd
    end_pc: int             # pc of its end_chain
    rows: int
    cols: int
    iter_outer: int
    iter_inner: int
    win_run: int
    win_pitch: int
    alpha: int              # fp16 bits
    read: Operand
    mrf: int | None         # mv_mul tile address, None without mv_mul
    ops: list[MfuOp] = field(default_factory=list)
    writes: list[Operand] = field(default_factory=list)

    @property
    def iterations(self) -> int:
        return self.iter_outer * self.iter_inner

    @property
    def read_width(self) -> int:
        """Native vectors read per iteration."""
        return self.cols if self.mrf is not None else self.rows

    def read_offsets(self) -> np.ndarray:
        """Address offsets of one iteration's read, relative to its base."""
        return window_offsets(self.read_width, self.win_run, self.win_pitch)

    def mvm_macs(self, native_dim: int) -> int:
        return 0 if self.mrf is None else self.iterations * self.rows * self.cols * native_dim * native_dim

    def span(self, op: Operand, width: int) -> tuple[int, int]:
        """The lowest and highest address an operand touches over all iterations, ``width`` vectors from each
        iteration's base (strides are unsigned fields)."""
        return op.addr, op.addr + (self.iter_outer - 1) * op.so + (self.iter_inner - 1) * op.si + width - 1

    def bases(self, op: Operand) -> np.ndarray:
        """Base address of each iteration (outer index i, inner j, in order): addr + i*so + j*si."""
        return iteration_bases(op.addr, self.iter_outer, self.iter_inner, op.so, op.si)

    def operands_read(self) -> list[tuple[Operand, np.ndarray]]:
        """Every memory operand the chain reads with its offsets per iteration (the read, then MFU operands)."""
        rows = np.arange(self.rows, dtype=np.int64)
        return [(self.read, self.read_offsets())] + [(op.operand, rows) for op in self.ops if op.operand is not None]


@dataclass
class Dma:
    """An m_rd (to_mrf=True) or m_wr transfer of `count` tiles."""

    pc: int
    to_mrf: bool
    tile: int
    mrf: int
    count: int


def _fail(pc: int, ins: Instruction, rule: str):
    raise ProgramError(pc, str(ins), rule)


def _memory(op: Operand) -> tuple[Space, int]:
    """Which memory an operand names (the MFU index matters only for per-MFU spaces)."""
    return op.space, op.mfu if op.space in PER_MFU_SPACES else 0


#: The largest chain (iterations x vectors per iteration) whose iteration hazards are checked vector by vector;
#: beyond it only chains whose read and write address ranges are disjoint are accepted.
MAX_CHECKED_VECTORS = 1 << 22


def iteration_hazard(chain: Chain) -> str | None:
    """The rule a chain breaks when it reads a vector that it wrote itself earlier: in an earlier iteration, or
    in an earlier row of the same iteration.

    A chain's beats flow in order, iteration by iteration and row by row, and the hardware does not forward
    results between them: reads run ahead of writes by a pipeline depth that depends on the machine, so such a
    read would see the old or the new value depending on the distance (the simulator reads every row of an
    iteration before writing any).  An ``mv_mul`` chain's ``v_rd`` reads all of an iteration's columns before
    the iteration's first row comes out, so only earlier iterations matter for it; an MFU operand (and the
    ``v_rd`` of a chain without ``mv_mul``, whose k-th vector is row k) is read when its row passes.  Returns
    None when the chain is free of such hazards."""
    rows = np.arange(chain.rows, dtype=np.int64)
    if chain.iterations == 1 and chain.rows == 1:
        return write_overlap(chain)
    # (operand, offsets per iteration, the row before whose write each offset is read)
    reads = [(chain.read, chain.read_offsets(),
              np.zeros(len(chain.read_offsets()), np.int64) if chain.mrf is not None
              else np.arange(len(chain.read_offsets()), dtype=np.int64))]
    reads += [(op.operand, rows, rows) for op in chain.ops if op.operand is not None]
    for w in chain.writes:
        if w.space not in ADDRESSED_SPACES:
            continue
        wlo, whi = chain.span(w, chain.rows)
        touching = [(r, offs, at) for r, offs, at in reads if _memory(r) == _memory(w)
                    and r.space in ADDRESSED_SPACES
                    and chain.span(r, int(offs.max()) + 1)[1] >= wlo and r.addr <= whi]
        if not touching:
            continue
        if chain.iterations * max(chain.rows, len(chain.read_offsets())) > MAX_CHECKED_VECTORS:
            return (f"a chain of {chain.iterations:,} iterations that reads the {w.space.name.lower()} addresses it "
                    f"writes is too large to check for iteration hazards (at most {MAX_CHECKED_VECTORS:,} vectors); "
                    f"split it into several chains")
        waddr = chain.bases(w)[:, None] + rows
        first_write = None
        for r, offs, at in touching:
            raddr = chain.bases(r)[:, None] + offs
            if int(raddr.max()) < wlo or int(raddr.min()) > whi:
                continue
            if first_write is None:
                # beats are written in (iteration, row) order: an address's first occurrence is its first write
                first_write = np.full(whi - wlo + 1, np.iinfo(np.int64).max, dtype=np.int64)
                beat = np.arange(waddr.size, dtype=np.int64).reshape(waddr.shape)
                flat, pos = np.unique(waddr.ravel() - wlo, return_index=True)
                first_write[flat] = beat.ravel()[pos]
            inside = (raddr >= wlo) & (raddr <= whi)
            # the beat a read happens at: reads at row j come before row j's write, after row j - 1's
            read_beat = np.arange(chain.iterations, dtype=np.int64)[:, None] * chain.rows + at[None, :]
            written = first_write[np.clip(raddr - wlo, 0, whi - wlo)]
            bad = inside & (written < read_beat) & (written != np.iinfo(np.int64).max)
            if bad.any():
                k = tuple(np.argwhere(bad)[0])
                it, addr = int(k[0]), int(raddr[k])
                w_it, w_row = divmod(int(written[k]), chain.rows)
                space = r.space.name.lower()
                if w_it < it:
                    return (f"iteration hazard: iteration {it} reads {space} address {addr}, which an earlier "
                            f"iteration of the same chain wrote")
                return (f"row hazard: row {int(at[k[1]])} of iteration {it} reads {space} address {addr}, which "
                        f"row {w_row} of the same iteration wrote (a chain does not forward its own results "
                        f"between rows)")
    return write_overlap(chain)


def write_overlap(chain: Chain) -> str | None:
    """The rule a chain breaks when two of its ``v_wr`` reach one address of one memory (which one wins would
    depend on the order the hardware's write ports retire rows, which no program may rely on)."""
    writes = [(k, w) for k, w in enumerate(chain.writes) if w.space in ADDRESSED_SPACES]
    rows = np.arange(chain.rows, dtype=np.int64)
    for a, (j, u) in enumerate(writes):
        for k, w in writes[a + 1:]:
            (ulo, uhi), (wlo, whi) = chain.span(u, chain.rows), chain.span(w, chain.rows)
            if _memory(u) != _memory(w) or uhi < wlo or whi < ulo:
                continue
            if chain.iterations * chain.rows > MAX_CHECKED_VECTORS:
                return (f"a chain of {chain.iterations:,} iterations whose v_wr {j + 1} and v_wr {k + 1} write "
                        f"overlapping {w.space.name.lower()} ranges is too large to check (at most "
                        f"{MAX_CHECKED_VECTORS:,} vectors); split it into several chains")
            both = np.intersect1d(chain.bases(u)[:, None] + rows, chain.bases(w)[:, None] + rows)
            if both.size:
                return (f"write overlap: v_wr {j + 1} and v_wr {k + 1} of this chain both write "
                        f"{w.space.name.lower()} address {int(both[0])}; a chain's destinations must be disjoint")
    return None


def _check_operand(pc, ins, config: NpuConfig, chain: Chain, op: Operand, width: int, writing: bool):
    spaces = WRITE_SPACES if writing else READ_SPACES
    if op.space not in spaces:
        _fail(pc, ins, f"space {op.space.name.lower()} cannot be {'written' if writing else 'read'}")
    if op.space in (Space.ASVRF, Space.MULVRF) and not 0 <= op.mfu < config.n_mfus:
        _fail(pc, ins, f"mfu {op.mfu} does not exist (config has {config.n_mfus} MFUs)")
    if op.space in (Space.NETQ, Space.ZERO):
        return
    depth = config.vector_space_depth(op.space)
    last = chain.span(op, width)[1]
    if last >= depth:
        _fail(pc, ins, f"address out of range: iterations reach {op.space.name.lower()} address {last} "
                       f"but its depth is {depth}")


def analyze(program: Program) -> list[Chain | Dma]:
    """Check every rule and return the program's steps in order."""
    config = program.config
    regs = dict(REG_RESET)
    steps: list[Chain | Dma] = []
    chain: Chain | None = None
    last_stage = (-1, -1)
    for pc, ins in enumerate(program.instructions):
        d = ins.definition
        m = d.mnemonic
        if m == "v_rd":
            if chain is not None:
                _fail(pc, ins, "malformed chain: v_rd inside a chain (missing end_chain)")
            chain = Chain(pc=pc, end_pc=-1, rows=regs[Reg.ROWS], cols=regs[Reg.COLS],
                          iter_outer=regs[Reg.ITER_OUTER], iter_inner=regs[Reg.ITER_INNER],
                          win_run=regs[Reg.WIN_RUN], win_pitch=regs[Reg.WIN_PITCH], alpha=regs[Reg.ALPHA],
                          read=Operand(Space(ins["space"]) if ins["space"] in Space._value2member_map_ else ins["space"],
                                       ins["mfu"], ins["addr"], ins["so"], ins["si"]), mrf=None)
            if not isinstance(chain.read.space, Space):
                _fail(pc, ins, f"unknown memory space {ins['space']}")
            last_stage = (-1, -1)
            continue
        if chain is None:
            if d.unit in (Unit.MVM, Unit.MFU, Unit.WRITE) or m == "end_chain":
                _fail(pc, ins, f"malformed chain: {m} outside a chain (chains start with v_rd)")
            if m == "s_wr":
                if ins["reg"] not in Reg._value2member_map_:
                    _fail(pc, ins, f"unknown scalar register {ins['reg']}")
                reg = Reg(ins["reg"])
                value = ins["imm"]
                if reg in (Reg.ROWS, Reg.COLS, Reg.ITER_OUTER, Reg.ITER_INNER) and value < 1:
                    _fail(pc, ins, f"scalar register {reg.name.lower()} must be at least 1")
                regs[reg] = value
            elif m in ("m_rd", "m_wr"):
                dma = Dma(pc, m == "m_rd", ins["tile"], ins["mrf"], ins["count"])
                if dma.mrf + dma.count > config.mrf_tiles:
                    _fail(pc, ins, f"MRF overflow: tiles {dma.mrf}..{dma.mrf + dma.count - 1} exceed the "
                                   f"{config.mrf_tiles}-tile MRF")
                if dma.tile + dma.count > config.dram_tiles:
                    _fail(pc, ins, f"weight DRAM overflow: tiles {dma.tile}..{dma.tile + dma.count - 1} exceed "
                                   f"{config.dram_tiles} tiles")
                steps.append(dma)
            continue
        # inside a chain
        if m == "mv_mul":
            if chain.mrf is not None or chain.ops or chain.writes:
                _fail(pc, ins, "malformed chain: mv_mul must directly follow v_rd, once")
            tiles = chain.rows * chain.cols
            if ins["mrf"] + tiles > config.mrf_tiles:
                _fail(pc, ins, f"MRF overflow: {chain.rows} x {chain.cols} tiles at {ins['mrf']} exceed the "
                               f"{config.mrf_tiles}-tile MRF")
            if chain.cols > config.max_cols:
                _fail(pc, ins, f"cols {chain.cols} exceeds the MVM input buffer's limit of {config.max_cols} "
                               f"input vectors per iteration (mvm_buffer {config.mvm_buffer} / 2)")
            if chain.cols * config.native_dim > MAX_DOT_LENGTH:
                _fail(pc, ins, f"dot product of {chain.cols * config.native_dim} elements exceeds "
                               f"{MAX_DOT_LENGTH} (the exact-accumulation limit)")
            chain.mrf = ins["mrf"]
        elif d.unit is Unit.MFU:
            if chain.writes:
                _fail(pc, ins, "malformed chain: MFU operation after v_wr")
            mfu = ins["mfu"]
            if not config.mfu_has(mfu, d.stage):
                _fail(pc, ins, f"MFU {mfu} has no {d.stage} unit (config: {list(config.mfus)})")
            key = (mfu, STAGE_ORDER[d.stage])
            if key <= last_stage:
                _fail(pc, ins, f"malformed chain: MFU stages must be used in pipeline order "
                               f"(MFU index, then addsub -> mul -> act), each once; {m} on MFU {mfu} comes too late")
            last_stage = key
            operand = None
            if d.vrf is not None:
                operand = Operand(d.vrf, mfu, ins["addr"], ins["so"], ins["si"])
            chain.ops.append(MfuOp(m, mfu, d.stage, operand))
        elif m == "v_wr":
            if ins["space"] not in Space._value2member_map_:
                _fail(pc, ins, f"unknown memory space {ins['space']}")
            if len(chain.writes) == config.write_slots:
                _fail(pc, ins, f"a chain writes at most {config.write_slots} destinations (write_slots)")
            if ins["space"] == Space.NETQ and any(w.space == Space.NETQ for w in chain.writes):
                _fail(pc, ins, "a chain writes the output queue at most once")
            chain.writes.append(Operand(Space(ins["space"]), ins["mfu"], ins["addr"], ins["so"], ins["si"]))
        elif m == "end_chain":
            if not chain.writes:
                _fail(pc, ins, "malformed chain: a chain must end in at least one v_wr")
            chain.end_pc = pc
            if chain.win_run > 0 and chain.read_width % chain.win_run:
                _fail(chain.pc, program.instructions[chain.pc],
                      f"read width {chain.read_width} is not a multiple of win_run {chain.win_run}")
            head = program.instructions[chain.pc]
            _check_operand(chain.pc, head, config, chain, chain.read, int(chain.read_offsets().max()) + 1,
                           writing=False)
            for op in chain.ops:
                if op.operand is not None:
                    _check_operand(chain.pc, head, config, chain, op.operand, chain.rows, writing=False)
            for w in chain.writes:
                _check_operand(chain.pc, head, config, chain, w, chain.rows, writing=True)
            hazard = iteration_hazard(chain)
            if hazard:
                _fail(chain.pc, program.instructions[chain.pc], hazard)
            steps.append(chain)
            chain = None
        else:
            _fail(pc, ins, f"{m} is not allowed inside a chain")
    if chain is not None:
        _fail(chain.pc, program.instructions[chain.pc], "malformed chain: program ends before end_chain")
    return steps


__all__ = ["Program", "Chain", "Dma", "Operand", "MfuOp", "analyze", "iteration_hazard", "write_overlap"]
