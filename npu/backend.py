"""What an NPU backend offers: the simulator (sim.Machine) and the RTL (rtl.backend.RtlMachine).

The runtime's executor talks to either through this protocol, so a model file
runs unchanged on both (runtime/backends.py makes one by name).
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from npu.config import NpuConfig
from npu.isa import Space
from npu.program import Program
from npu.weights import WeightImage

class CycleFigures:
    """Latency and tile utilization of a program run, from its ``config``, ``cycles`` and ``tile_macs``.

    Mixed into the result classes of both backends (sim.machine.RunResult, rtl.backend.RtlRunResult)
    so the two derive these figures the same way.  A program knows only the MACs its ``mv_mul``
    instructions perform on whole native tiles (``tile_macs``, padding included); a model's
    utilization counts its graph's MACs instead (runtime/executor.py).
    """

    config: NpuConfig
    cycles: int
    tile_macs: int

    @property
    def latency_us(self) -> float:
        return self.cycles / self.config.clock_mhz

    @property
    def tile_utilization(self) -> float:
        """Tile MACs over the peak the MVM could do in the same cycles (NpuConfig.utilization)."""
        return self.config.utilization(self.tile_macs, self.cycles)


class MachineLike(Protocol):
    config: NpuConfig

    def load_mrf(self, image: WeightImage, at: int = 0) -> None: ...
    def load_weight_dram(self, image: WeightImage, at: int = 0) -> None: ...
    def load_vectors(self, space: Space, addr: int, vectors: np.ndarray, mfu: int = 0) -> None: ...
    def push_input(self, vectors: np.ndarray) -> None: ...
    def run(self, program: Program, *, regions=None):  # -> a result with .cycles, .latency_us, .tile_macs
        ...
    def pop_output(self) -> np.ndarray: ...
