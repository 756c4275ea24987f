"""The cocotb test bench of the FPGA shell (rtl/shell.py's ``npu_shell``): runs rtl/bench.py's cases as a host
would, over AXI4-Lite with cocotbext-axi's ``AxiLiteMaster`` and the driver of rtl/axi_host.py.

Started by rtl/cosim.py for a build with ``toplevel="npu_shell"`` (a job file or a session, as rtl/bench.py).
Per case: load every word through the staging window (the program into memory 0), push the inputs, write
``PROG_LEN`` and ``CTRL.START | IRQ_EN``, wait for the interrupt (an error cause is noted, cleared and waited
past; ``max_cycles`` bounds the wait), read ``STATUS``, ``CYCLES_LO/HI`` and ``COMMITS``, clear the interrupt
and check that it fell, pop the output queue while ``STATUS.OUTQ_VALID``, read back the ``reads``.  Cases may
carry ``widths`` (memory id -> word bits) so that only the staging words a memory uses move, ``ident``
(read ID, CONFIG and GEOMETRY) and ``dma``: ``{"latency": L, "beat_cycles": B, "faulty": (lo, hi)}`` to load and read back every
block with the bulk loader instead, through external memory: cocotbext-axi's ``AxiRam`` on the shell's AXI4
master behind :class:`DramModel` (each block written into the RAM by the host, then ``DMA_CTRL.IN``; read back
by ``DMA_CTRL.OUT`` into a region first filled with a junk pattern; the n-th transfer of a case uses the n-th
slot of :data:`DRAM_SLOT` bytes).  Cases that stream (``stream``: more inputs or outputs than the queue FIFOs
hold) are refused: a PUSH waiting for room would hold the bus.

The result has rtl/bench.py's keys (the commit trace from the shell's debug port) and ``status``,
``irq_causes`` (the IRQ_STATUS values seen at each interrupt), ``irq_cleared``, ``commit_count``, ``ident``,
``dma_errors`` (STATUS.DMA_ERROR after each bulk transfer) and ``protocol``: every AXI4-Lite and AXI4 rule
violation (rtl/axi_check.py) seen since the previous case.
"""
from __future__ import annotations

import itertools
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, First, RisingEdge, Timer

from npu.hostregs import BY_NAME
from rtl.axi_check import AxiLiteChecker, monitor
from npu.hostregs import word_stride
from rtl.axi_host import NpuHost, external_image, external_words
from rtl.bench import _commits, serve
from rtl.shell import AXI_PREFIX, AXIL_PREFIX

#: Bytes of the external memory model, and the slot each bulk transfer of a case uses in turn.
DRAM_BYTES = 1 << 21
DRAM_SLOT = 1 << 16


class DramModel:
    """A simple DRAM timing model around cocotbext-axi's ``AxiRam`` on the AXI4 port ``prefix``: each burst's
    data waits ``latency`` cycles after its address is taken (a row access), read data comes at most one beat
    every ``beat_cycles`` cycles (the bandwidth), a write's response ``latency`` cycles after its last beat.
    Accesses to the ``faulty`` byte range [lo, hi) fail: SLVERR on their beat (read) or burst (write)."""

    def __init__(self, dut, prefix: str, size: int = DRAM_BYTES):
        from cocotbext.axi import AxiBus, AxiRam

        self.clk = dut.clk
        self.ram = AxiRam(AxiBus.from_prefix(dut, prefix), dut.clk, dut.rst, size=size)
        self.latency = 0
        self.faulty: tuple[int, int] | None = None
        rd, wr = self.ram.read_if, self.ram.write_if
        read, write = rd._read, wr._write

        def check(address):
            if self.faulty is not None and self.faulty[0] <= address < self.faulty[1]:
                raise OSError(f"DRAM model: address {address:#x} is faulty")

        async def faulty_read(address, length):
            check(address)
            return await read(address, length)

        async def faulty_write(address, data):
            check(address)
            await write(address, data)

        rd._read, wr._write = faulty_read, faulty_write
        ar, b = self.ram.read_if.ar_channel, self.ram.write_if.b_channel
        recv, send_b = ar.recv, b.send

        async def ar_recv():
            a = await recv()
            await self._wait()
            return a

        async def b_send(resp):
            await self._wait()
            await send_b(resp)

        ar.recv, b.send = ar_recv, b_send

    async def _wait(self):
        if self.latency:
            await ClockCycles(self.clk, self.latency)

    def set_timing(self, latency: int = 0, beat_cycles: int = 1, faulty: tuple[int, int] | None = None) -> None:
        self.latency, self.faulty = latency, faulty
        r = self.ram.read_if.r_channel
        if beat_cycles > 1:
            r.set_pause_generator(itertools.cycle([False] + [True] * (beat_cycles - 1)))
        else:
            r.clear_pause_generator()
            r.pause = False  # cocotbext-axi 0.1.28 leaves the last value the generator gave


async def _reset(dut, host: NpuHost) -> None:
    dut.rst.value = 1
    for _ in range(2):
        await FallingEdge(dut.clk)
    dut.rst.value = 0
    await FallingEdge(dut.clk)
    host.forget_stage()


async def _wait_irq(dut, limit: int | None) -> bool:
    """Until the interrupt is high (False: ``limit`` cycles passed first)."""
    if dut.irq.value == 1:
        return True
    if limit is None:
        await RisingEdge(dut.irq)
    else:
        await First(RisingEdge(dut.irq), ClockCycles(dut.clk, limit))
    await FallingEdge(dut.clk)
    return dut.irq.value == 1


async def _run_case(dut, host: NpuHost, checker: AxiLiteChecker, case: dict, dram: DramModel,
                    checker4: AxiLiteChecker) -> dict:
    t0 = time.perf_counter()
    if case.get("stream"):
        raise ValueError("the shell's bench does not stream the queues (a PUSH waiting for room holds the bus)")
    if case.get("reset"):
        await _reset(dut, host)
    widths = case.get("widths", {})
    res = {"cycles": 0, "error": 0, "outputs": [], "commits": [], "sim_s": 0.0, "hung": False, "status": None,
           "irq_causes": [], "irq_cleared": None, "commit_count": 0, "ident": None, "dma_errors": []}
    if case.get("ident"):
        res["ident"] = await host.identify()
    dma = case.get("dma")
    slots = itertools.count()
    if dma is not None:
        dram.set_timing(dma.get("latency", 0), dma.get("beat_cycles", 1), dma.get("faulty"))
    for mem, addr, words in case.get("loads", []):
        if dma is None:
            await host.load(mem, addr, words, widths.get(mem))
            continue
        ext = DRAM_SLOT * (next(slots) % (DRAM_BYTES // DRAM_SLOT))
        for part in range(0, len(words), DRAM_SLOT // word_stride(widths[mem])):  # a slot at a time
            chunk = words[part:part + DRAM_SLOT // word_stride(widths[mem])]
            dram.ram.write(ext, external_image(chunk, widths[mem]))
            res["dma_errors"].append(await host.dma("IN", mem, addr + part, ext, len(chunk)))
    program = case.get("program")
    qbits = case.get("queue_bits")
    if program is not None:
        await host.push(case.get("inputs", []), qbits)
        commits = []
        watcher = cocotb.start_soon(_commits(dut, commits))
        t1 = time.perf_counter()
        await host.start(len(program))
        irq = BY_NAME["IRQ_STATUS"]
        limit = case.get("max_cycles")
        while True:
            if not await _wait_irq(dut, limit):
                res["hung"] = True
                break
            cause = await host.read_reg("IRQ_STATUS")
            res["irq_causes"].append(cause)
            if irq.get(cause, "DONE"):
                break
            await host.write_reg("IRQ_STATUS", cause)  # an error: clear it and wait for the end
        res["sim_s"] = time.perf_counter() - t1
        watcher.cancel()
        res["status"] = await host.status()
        res["cycles"] = await host.cycles()
        res["error"] = res["status"]["error"]
        res["commit_count"] = await host.read_reg("COMMITS")
        res["commits"] = commits
        await host.write_reg("IRQ_STATUS", irq.bits(DONE=1, ERROR=1))
        await FallingEdge(dut.clk)
        res["irq_cleared"] = dut.irq.value == 0
        while (await host.status())["outq_valid"]:
            res["outputs"].append(await host.pop(qbits))
    res["reads"] = []
    for mem, addr, count in case.get("reads", []):
        if dma is None:
            res["reads"].append(await host.read(mem, addr, count, widths.get(mem)))
            continue
        bits, got = widths[mem], []
        per = DRAM_SLOT // word_stride(widths[mem])
        for part in range(0, count, per):
            n = min(per, count - part)
            ext = DRAM_SLOT * (next(slots) % (DRAM_BYTES // DRAM_SLOT))
            dram.ram.write(ext, b"\xa5" * (n * word_stride(bits)))  # what the transfer must overwrite
            res["dma_errors"].append(await host.dma("OUT", mem, addr + part, ext, n))
            got += external_words(dram.ram.read(ext, n * word_stride(bits)), n, bits)
        res["reads"].append(got)
    await Timer(1, unit="ns")
    res["protocol"] = checker.take() + checker4.take()
    res["wall_s"] = time.perf_counter() - t0
    return res


@cocotb.test()
async def run_job(dut):
    """A job file (``NPU_RTL_JOB`` -> ``NPU_RTL_OUT``) or, with ``NPU_RTL_SOCKET``, a session (rtl/bench.py)."""
    from cocotbext.axi import AxiLiteBus, AxiLiteMaster

    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, AXIL_PREFIX), dut.clk, dut.rst)
    checker, checker4 = AxiLiteChecker(), AxiLiteChecker(axi4=True)
    cocotb.start_soon(monitor(dut, AXIL_PREFIX, checker, dut.rst))
    cocotb.start_soon(monitor(dut, AXI_PREFIX, checker4, dut.rst))
    dram = DramModel(dut, AXI_PREFIX)
    host = NpuHost(axil)
    await _reset(dut, host)
    await host.identify()

    async def run(job):
        return [await _run_case(dut, host, checker, case, dram, checker4) for case in job]

    await serve(run)
