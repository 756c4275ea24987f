"""The lowering IR: buffers, tensor placements and chain/DMA steps with symbolic addresses.

Lowering (compiler/lowering.py and each operator's ``lower`` in
compiler/ops/) turns NPU nodes into :class:`ChainSpec` steps that name
:class:`Buffer` s rather than addresses; allocation
(compiler/passes/allocate.py) gives every buffer a memory space and address
and every :class:`WeightChunk` an MRF (and DRAM) tile address; emission
(compiler/passes/emit.py) writes the instructions.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from npu.errors import CompileError
from npu.isa import Space


class LoweringError(CompileError):
    """A supported-looking node that cannot be mapped after all; the driver moves it to the host."""


class CapacityError(LoweringError):
    """Weights or activations of a node do not fit the configuration's memories (host fallback)."""


@dataclass(eq=False)
class Buffer:
    """A run of native vectors in one vector memory.

    ``space``/``mfu`` is None until something requires a particular memory
    (an MFU operand must sit in that MFU's ASVRF or MULVRF); constants carry
    their contents in ``const``.
    """

    name: str
    size: int
    space: Space | None = None
    mfu: int = 0
    const: np.ndarray | None = None   # [size, N] fp16 contents of a constant
    addr: int = -1
    first: int = 1 << 60
    last: int = -1
    owner: str = ""                   # the node whose lowering made it

    def require(self, space: Space, mfu: int = 0) -> None:
        if self.space is None:
            self.space, self.mfu = Space(space), mfu
        elif (self.space, self.mfu if self.space in (Space.ASVRF, Space.MULVRF) else 0) != \
                (Space(space), mfu if space in (Space.ASVRF, Space.MULVRF) else 0):
            raise LoweringError(f"buffer {self.name} is needed in both {self.space.name}[{self.mfu}] and "
                                f"{Space(space).name}[{mfu}]")


@dataclass
class Ref:
    """A memory operand: a buffer (or NETQ/ZERO when buf is None), offset and loop strides."""

    buf: Buffer | None
    offset: int = 0
    so: int = 0
    si: int = 0
    space: Space = Space.NETQ  # for buf None

    def shifted(self, delta: int) -> "Ref":
        return Ref(self.buf, self.offset + delta, self.so, self.si, self.space)


NETQ = Ref(None, space=Space.NETQ)
ZERO = Ref(None, space=Space.ZERO)


@dataclass(eq=False)
class WeightChunk:
    """``rows x cols`` tiles of one mv_mul: the float matrix [rows*N, cols*N] and its placement."""

    matrix: np.ndarray
    rows: int
    cols: int
    name: str = ""
    mrf: int = -1
    tile: int = -1
    owner: str = ""

    @property
    def tiles(self) -> int:
        return self.rows * self.cols


@dataclass
class ChainOp:
    mnemonic: str
    mfu: int
    ref: Ref | None = None


@dataclass
class ChainSpec:
    """One chain before allocation."""

    read: Ref
    rows: int
    iters: tuple[int, int] = (1, 1)
    cols: int = 1
    win: tuple[int, int] = (0, 0)
    weights: WeightChunk | None = None
    ops: list[ChainOp] = field(default_factory=list)
    writes: list[Ref] = field(default_factory=list)
    alpha: float = 0.0
    region: str = ""


@dataclass
class DmaSpec:
    chunk: WeightChunk
    mrf: int
    region: str = ""


@dataclass(eq=False)
class View:
    """Where a pixel grid lives in a buffer: pixel (y, x), tile t is at
    ``offset + ((y + pad_top) * Wp + x + pad_left) * pitch + t``."""

    buf: Buffer
    H: int
    W: int
    ct: int
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    pitch: int = 0
    offset: int = 0

    def __post_init__(self):
        if not self.pitch:
            self.pitch = self.ct

    @property
    def Wp(self) -> int:
        return self.W + self.pad[1] + self.pad[3]

    @property
    def padded(self) -> bool:
        return any(self.pad)

    @property
    def contiguous(self) -> bool:
        return not self.padded and self.pitch == self.ct

    def at(self, y: int, x: int) -> int:
        """Offset of pixel (y, x) in logical coordinates (negative reaches into the padding)."""
        return self.offset + ((y + self.pad[0]) * self.Wp + x + self.pad[1]) * self.pitch

    def pixel_ref(self, y: int = 0, x: int = 0, sy: int = 1, sx: int = 1) -> Ref:
        """Operand walking output pixels: outer loop rows (step sy), inner loop columns (step sx)."""
        return Ref(self.buf, self.at(y, x), sy * self.Wp * self.pitch, sx * self.pitch)


def standard_grid(shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    """(H, W, C) of a tensor in the native layout: NCHW with N=1 -> pixels HxW of C channels;
    [B, K] -> 1 x B pixels of K; [T, 1, K] -> 1 x T pixels of K; [T, B, K] -> T x B pixels of K; [K] -> one
    pixel."""
    if len(shape) == 4 and shape[0] == 1:
        return shape[2], shape[3], shape[1]
    if len(shape) == 3 and shape[1] == 1:
        return 1, shape[0], shape[2]   # [T, 1, K]: a sequence, T pixels of K
    if len(shape) == 3 and shape[0] == 1:
        return 1, shape[2], shape[1]   # [1, C, L]: L pixels of C channels
    if len(shape) == 3:
        return shape[0], shape[1], shape[2]   # [T, B, K]: a batch of sequences, T x B pixels of K
    if len(shape) == 2:
        return 1, shape[0], shape[1]
    if len(shape) == 1:
        return 1, 1, shape[0]
    return None


def _standard_pixel_major(shape: tuple[int, ...]) -> np.ndarray | None:
    """Logical flat indices arranged [pixels, channels] for the standard grid of shape."""
    grid = standard_grid(shape)
    if grid is None:
        return None
    H, W, C = grid
    idx = np.arange(int(np.prod(shape)), dtype=np.int64)
    if len(shape) == 4 or (len(shape) == 3 and shape[0] == 1 and shape[1] != 1):
        return idx.reshape(C, H * W).T
    return idx.reshape(H * W, C)


@dataclass(eq=False)
class Placement:
    """An NPU tensor: its view and how its logical elements map into the view's pixel stream.

    The *stream* is the view's interior read pixel by pixel, ``ct * N``
    elements each; ``emap[k]`` is the stream index of logical flat element k.
    Grid-form placements (the common case) store ``slots`` (physical channel
    of each logical channel) and compute ``emap`` on demand.
    """

    view: View
    shape: tuple[int, ...]
    native_dim: int
    slots: np.ndarray | None = None
    emap_: np.ndarray | None = None
    nonneg: bool = False
    group: int = 1   # pixels per native vector (grouped layout of narrow tensors, see passes/layout.py)

    @property
    def emap(self) -> np.ndarray:
        if self.emap_ is None:
            pm = _standard_pixel_major(self.shape)
            n = self.native_dim
            stream = (np.arange(pm.shape[0])[:, None] * (self.view.ct * n) + self.slots[None, :])
            out = np.empty(pm.size, np.int64)
            out[pm.ravel()] = stream.ravel()
            self.emap_ = out
        return self.emap_

    def grid_slots(self) -> np.ndarray | None:
        """Slots if this placement is in grid form for its own shape and view, else None."""
        if self.group > 1:
            return None
        if self.slots is not None:
            return self.slots
        grid = standard_grid(self.shape)
        if grid is None:
            return None
        H, W, C = grid
        v = self.view
        if (v.H, v.W) != (H, W):
            return None
        pm = _standard_pixel_major(self.shape)
        e = self.emap[pm]  # [pixels, C]
        slots = e[0].copy()
        expect = np.arange(H * W)[:, None] * (v.ct * self.native_dim) + slots[None, :]
        if not np.array_equal(e, expect) or slots.min() < 0 or slots.max() >= v.ct * self.native_dim:
            return None
        self.slots = slots
        return slots


def channel_vector(values: np.ndarray, slots: np.ndarray, ct: int, n: int, fill: float = 0.0) -> np.ndarray:
    """Per-channel values scattered to their slots: [ct, N] (other lanes ``fill``)."""
    out = np.full(ct * n, fill, np.float64)
    out[slots] = values
    return out.reshape(ct, n)
