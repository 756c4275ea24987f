"""Tiling estimate: the native weight tiles of the graph's layers, from their shapes, before lowering.

It decides up front whether weights are pinned in the MRF or streamed from
DRAM (lowering cuts chunks for the whole MRF or for half of it), which saves
lowering a big model twice; the driver corrects the choice if lowering's
real count disagrees.  How a matrix is cut into column groups and row
chunks is :func:`compiler.lowering.split_columns` and
:func:`compiler.lowering.row_chunk`.
"""
from __future__ import annotations

from compiler.ir import Graph
from compiler.ops import OPS
from npu.config import NpuConfig


def estimate_tiles(g: Graph, cfg: NpuConfig) -> int:
    """Weight tiles of the graph's convolutions, linear layers and RNNs (each operator's record counts its own)."""
    return sum(OPS[n.op].tiles(g, n, cfg.native_dim) for n in g.nodes.values() if n.op in OPS)
