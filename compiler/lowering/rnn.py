"""LSTM and GRU (forward, batch 1) as per-timestep chains; see lower_lstm / lower_gru."""
from __future__ import annotations

from compiler.ir import Node
from compiler.kernels import LoweringError
from compiler.lowering.core import Lowering


def lower_lstm(lw: Lowering, node: Node) -> None:
    raise LoweringError("LSTM lowering is not implemented yet")


def lower_gru(lw: Lowering, node: Node) -> None:
    raise LoweringError("GRU lowering is not implemented yet")
