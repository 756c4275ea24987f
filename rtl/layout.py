"""Bit layouts shared by the generator and the test bench, all derived from npu/.

* :func:`instruction_layout` -- an Amaranth ``data.UnionLayout`` with one
  ``StructLayout`` per instruction, built from :attr:`npu.isa.Encoding.layout`
  (opcode in the low bits, fields in table order): the decoder views a program
  word through it, so encoder and decoder cannot drift.
* :class:`MemoryMap` -- every memory of the RTL that the bench loads or reads
  back through the load port: its id, depth and word width, plus the packing of
  vectors and weight tiles into words, and the signatures of the ports through
  which the NPU's components reach the memories (:meth:`MemoryMap.read_ports`,
  :meth:`MemoryMap.write_ports`).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from amaranth.hdl import unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import Out
from amaranth.utils import ceil_log2

from npu.config import NpuConfig, bits_for
from npu.errors import NpuError
from npu.isa import INSTRUCTIONS, encoding_for
from npu.spaces import ADDRESSED_SPACES, PER_MFU_SPACES, Space

#: Amaranth 0.5 numbers the bits of a netlist value in 16 bits, so no memory word or port may be wider.
MAX_WORD_BITS = 1 << 16


def instruction_layout(config: NpuConfig) -> data.UnionLayout:
    """One view per mnemonic of a ``word_bits`` instruction word."""
    enc = encoding_for(config)
    views = {}
    for d in INSTRUCTIONS:
        fields = {"opcode": enc.opcode_bits}
        offset = enc.opcode_bits
        for name, off, width in enc.layout[d.mnemonic]:
            # Encoding.layout is contiguous from the opcode up; a StructLayout is too.
            assert off == offset, (d.mnemonic, name, off, offset)
            fields[name] = width
            offset += width
        if offset < enc.word_bits:
            fields["_pad"] = enc.word_bits - offset
        views[d.mnemonic] = data.StructLayout(fields)
    return data.UnionLayout(views)


def vector_memory(space: Space, mfu: int = 0) -> str:
    """The name of the vector memory behind an addressed space ("ivrf", "dram", "asvrf1", ..)."""
    space = Space(space)
    if space not in ADDRESSED_SPACES:
        raise NpuError(f"{space.name} is not an addressable vector memory")
    return space.name.lower() + (str(mfu) if space in PER_MFU_SPACES else "")


class CombReadPort(memory.ReadPort.Signature):
    """:class:`amaranth.lib.memory.ReadPort.Signature` of an asynchronous (``"comb"``) read port.

    Its interface objects tie ``en`` to ``Const(1)``, as the memory's own comb read ports do, so a
    component's port member can be joined to ``Memory.read_port(domain="comb")`` by ``wiring.connect``.
    """

    def create(self, *, path=None, src_loc_at=0):
        return memory.ReadPort(self, memory=None, domain="comb", path=path, src_loc_at=1 + src_loc_at)


@dataclass(frozen=True)
class MemInfo:
    name: str
    id: int
    depth: int
    width: int


class MemoryMap:
    """The memories behind the load port, in id order, and how data is packed into their words.

    Vector memories hold one native vector per word (element k in bits
    ``16k..16k+15``).  The MRF is split into ``tile_engines`` banks (tile ``a``
    in bank ``a % T`` at tile index ``a // T``); a tile is ``N / lanes`` words,
    word ``g`` holding columns ``g*L .. g*L+L-1`` of every row: the mantissas
    (two's complement, ``mant_bits + 1`` bits, row-major) then one biased
    exponent (``e - emin``) per row and per lane sub-group of
    ``min(lanes, block)`` columns.  The weight region of DRAM uses the same
    tile words, unbanked.

    A tile word wider than ``max_word_bits`` (default :data:`MAX_WORD_BITS`;
    brainwave-s10's is 66,000 bits) is stored by rows in ``tile_parts``
    memories of equal depth, named
    ``wdram_0``, ``mrf0_1`` ...: part ``p`` holds rows ``p * part_rows ..``
    in the layout above (their mantissas, then their exponents).  With one
    part the names are ``wdram`` and ``mrf0`` ..; :meth:`row_fields` says
    where a row's fields are, for the hardware and the packing alike.
    """

    def __init__(self, config: NpuConfig, program_depth: int, max_word_bits: int = MAX_WORD_BITS):
        c = self.config = config
        n = c.native_dim
        self.n = n
        self.lanes = c.dpe_lanes
        self.cpt = c.cycles_per_tile
        self.sub = min(self.lanes, c.block)
        self.nsub = self.lanes // self.sub
        self.mw = c.weight_fmt.mant_bits
        self.eb = c.weight_fmt.exp_bits
        self.emin = c.weight_fmt.emin
        self.row_mant_bits = self.lanes * (self.mw + 1)  # one row's fields in a tile word
        self.row_exp_bits = self.nsub * self.eb
        self.tile_word_bits = n * (self.row_mant_bits + self.row_exp_bits)
        rows_fit = max_word_bits // (self.row_mant_bits + self.row_exp_bits)
        if rows_fit < 1:
            raise ValueError(f"max_word_bits must hold one row of a tile word "
                             f"({self.row_mant_bits + self.row_exp_bits} bits), not {max_word_bits!r}")
        self.tile_parts = -(-n // rows_fit)
        self.part_rows = -(-n // self.tile_parts)  # balanced parts, each at most rows_fit rows
        self.bank_tiles = -(-c.mrf_tiles // c.tile_engines)
        enc = encoding_for(c)

        def tile_memory(name, depth):
            return [(self.tile_memory(name, p), depth, self._part_bits(p)) for p in range(self.tile_parts)]

        def vectors(space):
            return [(vector_memory(space, k), c.vector_space_depth(space), 16 * n)
                    for k in range(c.n_mfus if space in PER_MFU_SPACES else 1)]

        mems = [("prog", program_depth, enc.word_bits), *vectors(Space.IVRF), *vectors(Space.DRAM),
                *tile_memory("wdram", c.dram_tiles * self.cpt), *vectors(Space.ASVRF), *vectors(Space.MULVRF)]
        for b in range(c.tile_engines):
            mems += tile_memory(f"mrf{b}", self.bank_tiles * self.cpt)
        #: the memories that hold weight tile words (every part of the weight DRAM and the MRF banks)
        self.tile_memories = {name for name, *_ in mems if name.startswith(("wdram", "mrf"))}
        self.memories = [MemInfo(name, i, depth, width) for i, (name, depth, width) in enumerate(mems)]
        self.by_name = {m.name: m for m in self.memories}
        #: per addressed space, its vector memories (one per MFU for the per-MFU spaces, by MFU index)
        self.vector_memories = {s: [name for name, *_ in vectors(s)] for s in sorted(ADDRESSED_SPACES)}

    @cached_property
    def addr_bits(self) -> int:
        return max(bits_for(m.depth) for m in self.memories)

    @cached_property
    def data_bits(self) -> int:
        return max(m.width for m in self.memories)

    # ---------------------------------------------------------------- ports
    def read_port(self, name: str) -> CombReadPort:
        """An asynchronous read port of memory ``name``, as the memory sees it: a component that reads it has
        an ``In`` member of this signature, joined to ``Memory.read_port(domain="comb")``."""
        return CombReadPort(addr_width=ceil_log2(self.by_name[name].depth), shape=unsigned(self.by_name[name].width))

    def read_ports(self, names) -> wiring.Signature:
        """A :meth:`read_port` of each memory of ``names``."""
        return wiring.Signature({name: Out(self.read_port(name)) for name in names})

    def write_ports(self, names) -> wiring.Signature:
        """A write port of each memory of ``names``, as the memories see them (a writer has an ``In`` member)."""
        return wiring.Signature({name: Out(memory.WritePort.Signature(addr_width=ceil_log2(self.by_name[name].depth),
                                                                      shape=unsigned(self.by_name[name].width)))
                                 for name in names})

    # ---------------------------------------------------------------- vectors
    def vector_words(self, vectors: np.ndarray) -> list[int]:
        v = np.ascontiguousarray(np.asarray(vectors, dtype=np.float16).reshape(-1, self.n)).view(np.uint16)
        return [int.from_bytes(row.astype("<u2").tobytes(), "little") for row in v]

    def words_vectors(self, words: list[int]) -> np.ndarray:
        raw = b"".join(int(w).to_bytes(2 * self.n, "little") for w in words)
        return np.frombuffer(raw, dtype="<u2").astype(np.uint16).view(np.float16).reshape(-1, self.n)

    # ---------------------------------------------------------------- weight tiles
    def tile_memory(self, name: str, part: int) -> str:
        """The memory holding part ``part`` of the tile words of ``name`` ("wdram", "mrf0", ..)."""
        return name if self.tile_parts == 1 else f"{name}_{part}"

    def _part_rows(self, part: int) -> range:
        return range(part * self.part_rows, min(self.n, (part + 1) * self.part_rows))

    def _part_bits(self, part: int) -> int:
        return len(self._part_rows(part)) * (self.row_mant_bits + self.row_exp_bits)

    def row_fields(self, row: int) -> tuple[int, int, int]:
        """(part, bit offset of the row's mantissas, of its exponents) in a tile word's part."""
        part = row // self.part_rows
        k = row - part * self.part_rows
        return part, k * self.row_mant_bits, len(self._part_rows(part)) * self.row_mant_bits + k * self.row_exp_bits

    def tile_words(self, mant: np.ndarray, exp: np.ndarray) -> list[list[int]]:
        """Words of one tile, per part: mant int [N, N], exp int [N, N // block] (unbiased)."""
        L, S, mw, eb = self.lanes, self.sub, self.mw, self.eb
        block = self.config.block
        words = [[0] * self.cpt for _ in range(self.tile_parts)]
        mmask = (1 << (mw + 1)) - 1
        for g in range(self.cpt):
            cols = mant[:, g * L:(g + 1) * L].astype(np.int64) & mmask  # [N, L]
            for r, row in enumerate(cols):
                part, mpos, epos = self.row_fields(r)
                w = 0
                for l, v in enumerate(row):
                    w |= int(v) << (mpos + l * (mw + 1))
                for s in range(self.nsub):
                    e = int(exp[r, (g * L + s * S) // block]) - self.emin
                    w |= (e & ((1 << eb) - 1)) << (epos + s * eb)
                words[part][g] |= w
        return words

    def words_tile(self, words: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Inverse of :meth:`tile_words` (exponents of a block read from its first sub-group)."""
        n, L, S, mw, eb = self.n, self.lanes, self.sub, self.mw, self.eb
        block = self.config.block
        mant = np.zeros((n, n), np.int16)
        exp = np.zeros((n, n // block), np.int16)
        for g in range(self.cpt):
            for r in range(n):
                part, mpos, epos = self.row_fields(r)
                w = words[part][g]
                for l in range(L):
                    v = (w >> (mpos + l * (mw + 1))) & ((1 << (mw + 1)) - 1)
                    mant[r, g * L + l] = v - (1 << (mw + 1)) if v >> mw else v
                for s in range(self.nsub):
                    col = g * L + s * S
                    if col % block == 0:
                        exp[r, col // block] = ((w >> (epos + s * eb)) & ((1 << eb) - 1)) + self.emin
        return mant, exp

    def mrf_location(self, tile: int) -> tuple[str, int]:
        """(bank name, first word) of MRF tile ``tile``; the bank's parts are :meth:`tile_memory`."""
        t = self.config.tile_engines
        return f"mrf{tile % t}", (tile // t) * self.cpt
