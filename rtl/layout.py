"""Bit layouts shared by the generator and the test bench, all derived from npu/.

* :func:`instruction_layout` -- an Amaranth ``data.UnionLayout`` with one
  ``StructLayout`` per instruction, built from :attr:`npu.isa.Encoding.layout`
  (opcode in the low bits, fields in table order): the decoder views a program
  word through it, so encoder and decoder cannot drift.
* :class:`MemoryMap` -- every memory of the RTL that the bench loads or reads
  back through the load port: its id, depth and word width, plus the packing of
  vectors and weight tiles into words.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from amaranth.lib import data

from npu.config import NpuConfig, bits_for
from npu.isa import INSTRUCTIONS, encoding_for


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
    """

    def __init__(self, config: NpuConfig, program_depth: int):
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
        self.tile_word_bits = n * self.lanes * (self.mw + 1) + n * self.nsub * self.eb
        self.bank_tiles = -(-c.mrf_tiles // c.tile_engines)
        enc = encoding_for(c)
        mems = [("prog", program_depth, enc.word_bits), ("ivrf", c.ivrf_depth, 16 * n),
                ("dram", c.dram_vectors, 16 * n), ("wdram", c.dram_tiles * self.cpt, self.tile_word_bits)]
        mems += [(f"asvrf{k}", c.asvrf_depth, 16 * n) for k in range(c.n_mfus)]
        mems += [(f"mulvrf{k}", c.mulvrf_depth, 16 * n) for k in range(c.n_mfus)]
        mems += [(f"mrf{b}", self.bank_tiles * self.cpt, self.tile_word_bits) for b in range(c.tile_engines)]
        self.memories = [MemInfo(name, i, depth, width) for i, (name, depth, width) in enumerate(mems)]
        self.by_name = {m.name: m for m in self.memories}

    @cached_property
    def addr_bits(self) -> int:
        return max(bits_for(m.depth) for m in self.memories)

    @cached_property
    def data_bits(self) -> int:
        return max(m.width for m in self.memories)

    # ---------------------------------------------------------------- vectors
    def vector_words(self, vectors: np.ndarray) -> list[int]:
        v = np.ascontiguousarray(np.asarray(vectors, dtype=np.float16).reshape(-1, self.n)).view(np.uint16)
        return [int.from_bytes(row.astype("<u2").tobytes(), "little") for row in v]

    def words_vectors(self, words: list[int]) -> np.ndarray:
        raw = b"".join(int(w).to_bytes(2 * self.n, "little") for w in words)
        return np.frombuffer(raw, dtype="<u2").astype(np.uint16).view(np.float16).reshape(-1, self.n)

    # ---------------------------------------------------------------- weight tiles
    def tile_words(self, mant: np.ndarray, exp: np.ndarray) -> list[int]:
        """Words of one tile: mant int [N, N], exp int [N, N // block] (unbiased)."""
        n, L, S, mw, eb = self.n, self.lanes, self.sub, self.mw, self.eb
        block = self.config.block
        words = []
        mmask = (1 << (mw + 1)) - 1
        for g in range(self.cpt):
            w = 0
            pos = 0
            cols = mant[:, g * L:(g + 1) * L].astype(np.int64) & mmask  # [N, L]
            for row in cols:
                for v in row:
                    w |= int(v) << pos
                    pos += mw + 1
            for r in range(n):
                for s in range(self.nsub):
                    e = int(exp[r, (g * L + s * S) // block]) - self.emin
                    w |= (e & ((1 << eb) - 1)) << pos
                    pos += eb
            words.append(w)
        return words

    def words_tile(self, words: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Inverse of :meth:`tile_words` (exponents of a block read from its first sub-group)."""
        n, L, S, mw, eb = self.n, self.lanes, self.sub, self.mw, self.eb
        block = self.config.block
        mant = np.zeros((n, n), np.int16)
        exp = np.zeros((n, n // block), np.int16)
        for g, w in enumerate(words):
            pos = 0
            for r in range(n):
                for l in range(L):
                    v = (w >> pos) & ((1 << (mw + 1)) - 1)
                    mant[r, g * L + l] = v - (1 << (mw + 1)) if v >> mw else v
                    pos += mw + 1
            for r in range(n):
                for s in range(self.nsub):
                    col = g * L + s * S
                    if col % block == 0:
                        exp[r, col // block] = ((w >> pos) & ((1 << eb) - 1)) + self.emin
                    pos += eb
        return mant, exp

    def mrf_location(self, tile: int) -> tuple[str, int]:
        """(memory name, first word) of MRF tile ``tile``."""
        t = self.config.tile_engines
        return f"mrf{tile % t}", (tile // t) * self.cpt
