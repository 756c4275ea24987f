"""The sweep's user-facing errors."""
from __future__ import annotations

from npu.errors import NpuError


class SweepError(NpuError):
    """A sweep cannot run or its results cannot be read; the message says which file and why."""


class SpecError(SweepError, ValueError):
    """A sweep spec is wrong; the message names the file, the table and the key, e.g.
    ``sweep.toml: [space] native_dim: values must be integers, not '64'``."""

    def __init__(self, source: str, table: str | None, key: str | None, message: str):
        self.source, self.table, self.key = source, table, key
        where = " ".join(x for x in (f"[{table}]" if table else None, key) if x)
        super().__init__(f"{source}: {where}: {message}" if where else f"{source}: {message}")
