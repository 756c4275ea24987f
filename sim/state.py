"""Machine state: every memory of an NPU instance as numpy arrays.

Vector memories are ``[depth, N]`` fp16 arrays; the MRF and the weight region
of DRAM hold BFP tiles (int16 mantissas and exponents, see npu/weights.py).
The network queues are FIFOs of native vectors.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from npu.config import NpuConfig
from npu.isa import Space
from npu.weights import WeightImage


class VectorQueue:
    """A FIFO of native vectors, pushed and popped in whole arrays."""

    def __init__(self, native_dim: int):
        self.native_dim = native_dim
        self._chunks: deque[np.ndarray] = deque()
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def push(self, vectors: np.ndarray) -> None:
        v = np.ascontiguousarray(vectors, dtype=np.float16).reshape(-1, self.native_dim)
        if len(v):
            self._chunks.append(v)
            self._len += len(v)

    def pop(self, count: int) -> np.ndarray:
        """Pop ``count`` vectors (the caller checks there are enough)."""
        assert count <= self._len
        out, need = [], count
        while need:
            head = self._chunks[0]
            if len(head) <= need:
                out.append(self._chunks.popleft())
                need -= len(head)
            else:
                out.append(head[:need])
                self._chunks[0] = head[need:]
                need = 0
        self._len -= count
        if not out:
            return np.zeros((0, self.native_dim), np.float16)
        return out[0] if len(out) == 1 else np.concatenate(out)

    def pop_all(self) -> np.ndarray:
        return self.pop(self._len)

    def clear(self) -> None:
        self._chunks.clear()
        self._len = 0


class MachineState:
    """The memories of one NPU instance; all zero at reset."""

    def __init__(self, config: NpuConfig):
        self.config = config
        n, nb = config.native_dim, config.native_dim // config.block
        self.ivrf = np.zeros((config.ivrf_depth, n), np.float16)
        self.dram = np.zeros((config.dram_vectors, n), np.float16)
        self.asvrf = [np.zeros((config.asvrf_depth, n), np.float16) for _ in range(config.n_mfus)]
        self.mulvrf = [np.zeros((config.mulvrf_depth, n), np.float16) for _ in range(config.n_mfus)]
        self._mrf = WeightImage(np.zeros((config.mrf_tiles, n, n), np.int16), np.zeros((config.mrf_tiles, n, nb), np.int16))
        self._wdram = WeightImage(np.zeros((config.dram_tiles, n, n), np.int16),
                                  np.zeros((config.dram_tiles, n, nb), np.int16))
        # m_rd copies are lazy: MRF tile i holds weight-DRAM tile _mrf_src[i] (-1: its own contents) until
        # someone looks.  The MVM only needs the contents on a weight-cache miss (tokens say what a tile
        # holds), and ResNet-50 streams about 48 MB of tiles per inference.
        self._mrf_src = np.full(config.mrf_tiles, -1, np.int64)
        self.inq = VectorQueue(n)
        self.outq = VectorQueue(n)
        # Content tokens: equal tokens mean equal tile contents.  Loads mint fresh tokens and DMA copies
        # them, so weights streamed from DRAM keep their identity and the simulator's weight cache hits
        # across layers and runs.
        self._next_token = 1
        self.mrf_tokens = np.zeros(config.mrf_tiles, np.int64)
        self.wdram_tokens = np.zeros(config.dram_tiles, np.int64)

    @property
    def mrf(self) -> WeightImage:
        """The matrix register file's tiles (mantissas [tiles, N, N], exponents [tiles, N, N / block])."""
        pending = np.flatnonzero(self._mrf_src >= 0)
        if len(pending):
            src = self._mrf_src[pending]
            self._mrf.mant[pending] = self._wdram.mant[src]
            self._mrf.exp[pending] = self._wdram.exp[src]
            self._mrf_src[pending] = -1
        return self._mrf

    @property
    def wdram(self) -> WeightImage:
        """The weight region of DRAM; writing into it settles pending MRF copies first (see :attr:`mrf`)."""
        self.mrf  # noqa: B018 - materialises lazy copies before the caller may change their sources
        return self._wdram

    def copy_dram_to_mrf(self, tile: int, mrf: int, count: int) -> None:
        """m_rd: MRF tiles mrf.. receive weight-DRAM tiles tile.. (lazily, with their tokens)."""
        self._mrf_src[mrf:mrf + count] = np.arange(tile, tile + count)
        self.mrf_tokens[mrf:mrf + count] = self.wdram_tokens[tile:tile + count]

    def copy_mrf_to_dram(self, mrf: int, tile: int, count: int) -> None:
        """m_wr: weight-DRAM tiles tile.. receive MRF tiles mrf.. with their tokens."""
        src, dst = self.mrf, self.wdram
        dst.mant[tile:tile + count] = src.mant[mrf:mrf + count]
        dst.exp[tile:tile + count] = src.exp[mrf:mrf + count]
        self.wdram_tokens[tile:tile + count] = self.mrf_tokens[mrf:mrf + count]

    def memory(self, space: Space, mfu: int = 0) -> np.ndarray:
        """The array behind a vector memory space (not the queues or ZERO)."""
        if space == Space.IVRF:
            return self.ivrf
        if space == Space.DRAM:
            return self.dram
        if space == Space.ASVRF:
            return self.asvrf[mfu]
        if space == Space.MULVRF:
            return self.mulvrf[mfu]
        raise ValueError(f"{Space(space).name} is not an addressable vector memory")

    def load_mrf(self, image: WeightImage, at: int = 0) -> None:
        """Pin tiles in the MRF directly (weights resident before the program runs)."""
        self._copy_tiles(self.mrf, image, at, "MRF")  # settles lazy copies, then overwrites
        self.mrf_tokens[at:at + image.tiles] = self.fresh_tokens(image.tiles)

    def load_weight_dram(self, image: WeightImage, at: int = 0) -> None:
        """Place tiles in the weight region of DRAM, for m_rd."""
        self._copy_tiles(self.wdram, image, at, "weight DRAM")
        self.wdram_tokens[at:at + image.tiles] = self.fresh_tokens(image.tiles)

    def fresh_tokens(self, count: int) -> np.ndarray:
        """New content tokens, for tiles whose contents were just written from outside."""
        t = np.arange(self._next_token, self._next_token + count, dtype=np.int64)
        self._next_token += count
        return t

    @staticmethod
    def _copy_tiles(dst: WeightImage, src: WeightImage, at: int, what: str) -> None:
        from npu.errors import SimulationError

        if at < 0 or at + src.tiles > dst.tiles:
            raise SimulationError(-1, "load", f"{src.tiles} tiles at {at} do not fit the {dst.tiles}-tile {what}")
        if src.mant.shape[1:] != dst.mant.shape[1:] or src.exp.shape[1:] != dst.exp.shape[1:]:
            raise SimulationError(-1, "load", f"tile shape {src.mant.shape[1:]}/{src.exp.shape[1:]} does not match "
                                              f"this configuration's {dst.mant.shape[1:]}/{dst.exp.shape[1:]}")
        dst.mant[at:at + src.tiles] = src.mant
        dst.exp[at:at + src.tiles] = src.exp

    def load_vectors(self, space: Space, addr: int, vectors: np.ndarray, mfu: int = 0) -> None:
        mem = self.memory(space, mfu)
        v = np.asarray(vectors, dtype=np.float16).reshape(-1, self.config.native_dim)
        if addr < 0 or addr + len(v) > len(mem):
            from npu.errors import SimulationError

            raise SimulationError(-1, "load", f"{len(v)} vectors at {addr} do not fit {Space(space).name} "
                                              f"(depth {len(mem)})")
        mem[addr:addr + len(v)] = v
