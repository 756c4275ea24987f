"""Tiling to the native dimension: how matrices are cut into N x N tiles and MRF-sized chunks.

Every mv_mul multiplies ``rows x cols`` native tiles.  A layer's weight matrix
(output channels x receptive field, both padded to whole tiles) is cut into
column groups that keep whole units together (a conv's kernel row of
``kw * Ct`` tiles, a padded feature map's pixel row) and at most the MRF share
(the whole MRF when weights are pinned, half of it when they stream), and
into row chunks so that ``rows x cols`` fits the share.  Several column groups
accumulate fp16 partial sums.
"""
from __future__ import annotations

from compiler.ir import Graph
from compiler.kernels import LoweringError
from npu.config import NpuConfig


def split_columns(total: int, unit: int, capacity: int) -> list[tuple[int, int]]:
    """Split `total` column tiles into runs of whole `unit`s, each at most `capacity` (as (c0, cols))."""
    if total <= capacity:
        return [(0, total)]
    per = (capacity // unit) * unit
    if per == 0:
        raise LoweringError(f"{unit} column tiles that must stay together exceed the MRF share of {capacity}")
    return [(c0, min(per, total - c0)) for c0 in range(0, total, per)]


def row_chunk(rows: int, cols: int, capacity: int) -> int:
    """Output tiles per chain when each row of tiles has `cols` tiles and the MRF share is `capacity`."""
    return max(1, min(rows, capacity // cols))


def estimate_tiles(g: Graph, cfg: NpuConfig) -> int:
    """Weight tiles of the graph's convolutions, linear layers and RNNs, from their shapes."""
    n = cfg.native_dim
    ct = lambda c: -(-int(c) // n)  # noqa: E731
    total = 0
    for node in g.nodes.values():
        w = g.shape(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] else None
        if w is None or g.value(node.inputs[1]) is None:
            continue
        if node.op == "Conv" and len(w) == 4:
            total += ct(w[0]) * w[2] * w[3] * ct(w[1] * int(node.attr("group", 1)))
        elif node.op == "Gemm" and len(w) == 2:
            total += ct(w[0]) * ct(w[1])
        elif node.op in ("LSTM", "GRU") and len(w) == 3:
            h = w[1] // (4 if node.op == "LSTM" else 3)
            total += 4 * ct(h) * (ct(w[2]) + ct(h))
    return total
