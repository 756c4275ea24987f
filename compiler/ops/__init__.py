"""The operators the compiler knows, one :class:`~compiler.ops.base.OpDef` each, keyed by ONNX op type.

Each module holds one family: its NPU checks, lowering, MAC and weight-tile
counts, fusion as MFU operations and padding windows, and registers its
records; importing this package imports every family, so :data:`OPS` is
complete.  Passes ask the registry (``OPS[node.op]``) instead of keeping lists
of operators.  docs/compiler.md walks through adding an operator.
"""
from __future__ import annotations

from compiler.ops import concat, control, conv, eltwise, linear, pool, rnn, views  # noqa: F401  (they register)
from compiler.ops.base import OPS, OpDef, node_macs, nonnegative

__all__ = ["OPS", "OpDef", "node_macs", "nonnegative"]
