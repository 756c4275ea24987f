"""The execution plan of a model file, host side: segment inputs into NPU vectors and outputs back.

The compiler (compiler/driver.py ``package``) writes a plan into the manifest: NPU and host
segments in order; every NPU segment input is either a *stream* (a tensor scattered into the
program's pixel-major vectors by its element map, ``emap[k]`` = stream index of flat element
``k``) or an *im2col* feed of a first convolution (:func:`im2col`); every output is gathered back
by its element map.  The runtime's executor applies these functions; nothing else does.
"""
from __future__ import annotations

import numpy as np


def stream_vectors(x: np.ndarray, emap: np.ndarray, vectors: int, n: int) -> np.ndarray:
    """A tensor scattered into ``vectors`` native vectors [vectors, N] by its element map (other lanes 0)."""
    stream = np.zeros(vectors * n, np.float32)
    stream[emap] = np.asarray(x, np.float32).ravel()
    return stream.reshape(-1, n)


def unstream(vectors: np.ndarray, emap: np.ndarray, shape) -> np.ndarray:
    """The tensor of ``shape`` gathered from output vectors by its element map, as float32."""
    return vectors.reshape(-1)[emap].astype(np.float32).reshape(shape)


def im2col(x: np.ndarray, spec: dict, n: int) -> np.ndarray:
    """Host side of the first layer: [1, C, H, W] -> fp16 [oh * ow/P * kt, N] vectors, one block of P output
    pixels after another, each the (ky, column, c)-ordered union of the block's receptive fields.

    The input is rounded to fp16 first (as the NPU's input queue would round it): im2col only moves values,
    and moving half as many bytes is what makes it cheap."""
    with np.errstate(over="ignore"):  # overflow to +-inf is fp16's defined result
        x = np.asarray(x, np.float32)[0].astype(np.float16)
    c, H, W = x.shape
    t, l, b, r = spec["pads"]
    kh, kw, sh, sw, dh, dw = (spec[k] for k in ("kh", "kw", "sh", "sw", "dh", "dw"))
    oh, ow, kt = spec["oh"], spec["ow"], spec["kt"]
    P, U = spec.get("block", 1), spec.get("union", kw)
    blocks = ow // P
    step = P * sw  # input columns between blocks
    col_off = [kx * dw for kx in range(kw)] if P == 1 else list(range(U))
    extra_b = max(0, (oh - 1) * sh + (kh - 1) * dh + 1 - H - t)
    extra_r = max(0, (blocks - 1) * step + col_off[-1] + 1 - W - l)
    # pad in (row, column, channel) order, then every patch element is one strided view of it
    xp = np.zeros((H + t + extra_b, W + l + extra_r, c), np.float16)
    xp[t:t + H, l:l + W] = x.transpose(1, 2, 0)
    r_, c_, e_ = xp.strides
    u_step = dw if P == 1 else 1
    patches = np.lib.stride_tricks.as_strided(
        xp, shape=(oh, blocks, kh, len(col_off), c),
        strides=(sh * r_, step * c_, dh * r_, u_step * c_, e_), writeable=False)
    out = np.zeros((oh * blocks, kt * n), np.float16)
    out[:, :kh * len(col_off) * c].reshape(oh, blocks, kh, len(col_off), c)[...] = patches
    return out.reshape(-1, n)
