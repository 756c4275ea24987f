"""What an NPU backend offers: the simulator (sim.Machine) and the RTL (rtl.backend.RtlMachine).

The compiler's executor and the runtime talk to either through this protocol,
so a model file runs unchanged on both.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from npu.config import NpuConfig, get_config
from npu.errors import NpuError
from npu.isa import Space
from npu.program import Program
from npu.weights import WeightImage

BACKENDS = ("sim", "rtl")


class CycleFigures:
    """Latency and MVM utilization of a run, from its ``config``, ``cycles`` and ``macs``.

    Mixed into the result classes of both backends (sim.machine.RunResult, rtl.backend.RtlRunResult)
    so the two derive these figures the same way.
    """

    config: NpuConfig
    cycles: int
    macs: int

    @property
    def latency_us(self) -> float:
        return self.cycles / self.config.clock_mhz

    @property
    def utilization(self) -> float:
        """Achieved MACs over the peak the MVM could do in the same cycles."""
        return self.macs / (self.cycles * self.config.macs_per_cycle) if self.cycles else 0.0


class MachineLike(Protocol):
    config: NpuConfig

    def load_mrf(self, image: WeightImage, at: int = 0) -> None: ...
    def load_weight_dram(self, image: WeightImage, at: int = 0) -> None: ...
    def load_vectors(self, space: Space, addr: int, vectors: np.ndarray, mfu: int = 0) -> None: ...
    def push_input(self, vectors: np.ndarray) -> None: ...
    def run(self, program: Program, *, regions=None):  # -> a result with .cycles, .latency_us, .utilization, .macs
        ...
    def pop_output(self) -> np.ndarray: ...


def make_machine(config: NpuConfig | str, backend: str = "sim") -> MachineLike:
    """A fresh machine of the given backend ("sim" or "rtl")."""
    config = get_config(config)
    if backend == "sim":
        from sim.machine import Machine

        return Machine(config)
    if backend == "rtl":
        try:
            from rtl.backend import RtlMachine
        except ImportError as exc:
            raise NpuError(f"the rtl backend is unavailable: {exc}") from None
        return RtlMachine(config)
    raise NpuError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
