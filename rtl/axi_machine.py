"""ShellMachine: rtl.backend.RtlMachine whose instance is the FPGA shell (rtl/shell.py's ``npu_shell``) driven
over AXI4-Lite by cocotbext-axi (rtl/axi_bench.py), so rtl.check.compare and rtl.check.Checker check the
whole host path against the simulator: every load, start, interrupt, counter and read-back through the bus.

Its runs read back the ranges a program may write (not every memory: each word read back is an AXI4-Lite
command and a read of its staging words); cases that stream the queues are refused (rtl/axi_bench.py).
``last_result`` carries the shell's extras: ``status``, ``irq_causes``, ``irq_cleared``, ``commit_count``,
``protocol`` (AXI4-Lite rule violations, rtl/axi_check.py).
"""
from __future__ import annotations

from npu.config import NpuConfig
from npu.errors import NpuError
from rtl.backend import RtlMachine
from rtl.generate import RtlParams
from rtl.shell import SHELL_TOPLEVEL


class ShellMachine(RtlMachine):
    """One NPU behind its host interface (npu.backend.MachineLike), checked by the same comparisons as
    RtlMachine."""

    streams = False   # the shell's bench loads the queues before a run and drains them after it

    def __init__(self, config: NpuConfig | str, params: RtlParams = RtlParams(), *, progress=None,
                 read_all: bool = False, max_cycles: int | None = None, dma: dict | None = None):
        super().__init__(config, params, progress=progress, read_all=read_all, max_cycles=max_cycles,
                         toplevel=SHELL_TOPLEVEL)
        #: None: load and read back through the staging window; {"latency": L, "beat_cycles": B}: through the
        #: bulk loader and external memory with that DRAM timing (rtl/axi_bench.py)
        self.dma = dma

    def _case(self, case: dict) -> dict:
        if case.get("stream"):
            raise NpuError("the shell's bench does not stream the network queues: the program moves more vectors "
                           f"than the {self.params.queue_depth}-vector queue FIFOs hold")
        return {**case, "widths": {m.id: m.width for m in self.memmap.memories},
                "queue_bits": 16 * self.config.native_dim, "dma": self.dma}

    def _job(self, case: dict) -> dict:
        return super()._job(self._case(case))
