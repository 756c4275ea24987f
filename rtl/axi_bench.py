"""The cocotb test bench of the FPGA shell (rtl/shell.py's ``npu_shell``): runs rtl/bench.py's cases as a host
would, over AXI4-Lite with cocotbext-axi's ``AxiLiteMaster`` and the driver of rtl/axi_host.py.

Started by rtl/cosim.py for a build with ``toplevel="npu_shell"`` (a job file or a session, as rtl/bench.py).
Per case: load every word through the staging window (the program into memory 0), push the inputs, write
``PROG_LEN`` and ``CTRL.START | IRQ_EN``, wait for the interrupt (an error cause is noted, cleared and waited
past; ``max_cycles`` bounds the wait), read ``STATUS``, ``CYCLES_LO/HI`` and ``COMMITS``, clear the interrupt
and check that it fell, pop the output queue while ``STATUS.OUTQ_VALID``, read back the ``reads``.  Cases may
carry ``widths`` (memory id -> word bits) so that only the staging words a memory uses move, and ``ident``
(read ID, CONFIG and GEOMETRY).  Cases that stream (``stream``: more inputs or outputs than the queue FIFOs
hold) are refused: a PUSH waiting for room would hold the bus.

The result has rtl/bench.py's keys (the commit trace from the shell's debug port) and ``status``,
``irq_causes`` (the IRQ_STATUS values seen at each interrupt), ``irq_cleared``, ``commit_count``, ``ident``,
and ``protocol``: every AXI4-Lite rule violation (rtl/axi_check.py) seen since the previous case.
"""
from __future__ import annotations

import os
import pickle
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, First, RisingEdge, Timer

from npu.hostregs import BY_NAME
from rtl.axi_check import AxiLiteChecker, monitor
from rtl.axi_host import NpuHost
from rtl.bench import _commits, _recv, send
from rtl.shell import AXIL_PREFIX


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


async def _run_case(dut, host: NpuHost, checker: AxiLiteChecker, case: dict) -> dict:
    t0 = time.perf_counter()
    if case.get("stream"):
        raise ValueError("the shell's bench does not stream the queues (a PUSH waiting for room holds the bus)")
    if case.get("reset"):
        await _reset(dut, host)
    widths = case.get("widths", {})
    res = {"cycles": 0, "error": 0, "outputs": [], "commits": [], "sim_s": 0.0, "hung": False, "status": None,
           "irq_causes": [], "irq_cleared": None, "commit_count": 0, "ident": None}
    if case.get("ident"):
        res["ident"] = await host.identify()
    for mem, addr, words in case.get("loads", []):
        await host.load(mem, addr, words, widths.get(mem))
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
    res["reads"] = [await host.read(mem, addr, count, widths.get(mem)) for mem, addr, count in case.get("reads", [])]
    await Timer(1, unit="ns")
    res["protocol"] = checker.take()
    res["wall_s"] = time.perf_counter() - t0
    return res


@cocotb.test()
async def run_job(dut):
    """A job file (``NPU_RTL_JOB`` -> ``NPU_RTL_OUT``) or, with ``NPU_RTL_SOCKET``, a session (rtl/bench.py)."""
    from cocotbext.axi import AxiLiteBus, AxiLiteMaster

    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, AXIL_PREFIX), dut.clk, dut.rst)
    checker = AxiLiteChecker()
    cocotb.start_soon(monitor(dut, AXIL_PREFIX, checker, dut.rst))
    host = NpuHost(axil)
    await _reset(dut, host)
    await host.identify()

    async def run(job):
        return [await _run_case(dut, host, checker, case) for case in job]

    if "NPU_RTL_SOCKET" in os.environ:
        import socket

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(os.environ["NPU_RTL_SOCKET"])
            while True:
                try:
                    job = _recv(sock)
                except ConnectionError:
                    return
                if job is None:
                    return
                send(sock, await run(job))
    with open(os.environ["NPU_RTL_JOB"], "rb") as f:
        job = pickle.load(f)
    results = await run(job)
    with open(os.environ["NPU_RTL_OUT"], "wb") as f:
        pickle.dump(results, f)
