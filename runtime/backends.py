"""The NPU backends a model file runs on, by name: the simulator and the RTL."""
from __future__ import annotations

from npu.backend import MachineLike
from npu.config import NpuConfig, get_config
from npu.errors import NpuError

BACKENDS = ("sim", "rtl")


def make_machine(config: NpuConfig | str, backend: str = "sim") -> MachineLike:
    """A fresh machine of the given backend ("sim" or "rtl")."""
    config = get_config(config)
    if backend == "sim":
        from sim.machine import Machine

        return Machine(config)
    if backend == "rtl":
        try:
            from rtl.backend import RtlMachine
        except ImportError as exc:  # amaranth or cocotb missing from this install
            raise NpuError(f"the rtl backend is unavailable: {exc}") from None
        return RtlMachine(config)
    raise NpuError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def make_machines(config: NpuConfig | str, devices: int, backend: str = "sim") -> list[MachineLike]:
    """One fresh machine per NPU of a fabric (a model compiled for several NPUs)."""
    from sim.fabric import FabricMachines

    return list(FabricMachines(get_config(config), devices, lambda c: make_machine(c, backend)).machines)
