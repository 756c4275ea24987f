"""Weight images: matrices quantized to the weight BFP format and cut into native tiles.

A tile is ``N x N`` weights: int16 mantissas ``[N, N]`` (row = output element,
column = input element) and int16 shared exponents ``[N, N // block]`` (one
per block of ``block`` consecutive columns of a row).  A :class:`WeightImage`
is a stack of tiles; the simulator and the RTL load it into the weight region
of DRAM (for ``m_rd``) or straight into the MRF (pinned weights).

``mv_mul`` with ``rows x cols`` tiles at MRF address ``a`` reads tile ``(r, c)``
at ``a + r * cols + c`` (row-major), which is the order :func:`tile_matrix`
produces.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from npu.config import NpuConfig
from npu.errors import ModelFileError
from npu.numerics import bfp_values, flush_windows, quantize_weights


@dataclass
class WeightImage:
    mant: np.ndarray  # int16 [tiles, N, N]
    exp: np.ndarray   # int16 [tiles, N, N // block]

    @property
    def tiles(self) -> int:
        return int(self.mant.shape[0])

    @classmethod
    def empty(cls, config: NpuConfig, tiles: int = 0) -> "WeightImage":
        n, b = config.native_dim, config.block
        return cls(np.zeros((tiles, n, n), np.int16), np.zeros((tiles, n, n // b), np.int16))

    @classmethod
    def concat(cls, images: list["WeightImage"]) -> "WeightImage":
        return cls(np.concatenate([i.mant for i in images]), np.concatenate([i.exp for i in images]))

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        # int16: mantissas reach +-(2**10 - 1) and exponents -127..128.
        np.savez(buf, mant=self.mant.astype(np.int16), exp=self.exp.astype(np.int16))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "WeightImage":
        try:
            with np.load(io.BytesIO(data)) as z:
                return cls(z["mant"].astype(np.int16), z["exp"].astype(np.int16))
        except (ValueError, KeyError, OSError) as exc:
            raise ModelFileError(f"corrupt weight image: {exc}") from None

    def values(self, config: NpuConfig) -> np.ndarray:
        """Exact float64 weights of every tile, [tiles, N, N]."""
        return bfp_values(self.mant, self.exp, config.weight_fmt, config.block)


def tile_matrix(w: np.ndarray, config: NpuConfig) -> tuple[WeightImage, int, int]:
    """Quantize a float matrix [out, in] and cut it into tiles.

    The matrix is zero-padded to whole tiles, quantized along its rows (the
    dot-product dimension) with each row flushed to the weight window over the
    *whole* row, and returned as ``(image, rows, cols)`` in ``mv_mul`` order.
    """
    n = config.native_dim
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"tile_matrix needs a 2-D matrix, got shape {w.shape}")
    rows, cols = -(-w.shape[0] // n), -(-w.shape[1] // n)
    padded = np.zeros((rows * n, cols * n))
    padded[: w.shape[0], : w.shape[1]] = w
    wwin, _ = flush_windows(config.weight_fmt, config.act_fmt)
    mant, exp = quantize_weights(padded, config.weight_fmt, config.block, wwin)
    nb = n // config.block
    mant = mant.reshape(rows, n, cols, n).transpose(0, 2, 1, 3).reshape(rows * cols, n, n)
    exp = exp.reshape(rows, n, cols, nb).transpose(0, 2, 1, 3).reshape(rows * cols, n, nb)
    return WeightImage(np.ascontiguousarray(mant), np.ascontiguousarray(exp)), rows, cols


def untile(image: WeightImage, rows: int, cols: int, config: NpuConfig, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mantissas [rows*N, cols*N] and exponents [rows*N, cols*N/block] of tiles start.. in mv_mul order."""
    n, nb = config.native_dim, config.native_dim // config.block
    m = image.mant[start:start + rows * cols].reshape(rows, cols, n, n).transpose(0, 2, 1, 3).reshape(rows * n, cols * n)
    e = image.exp[start:start + rows * cols].reshape(rows, cols, n, nb).transpose(0, 2, 1, 3).reshape(rows * n, cols * nb)
    return m, e
