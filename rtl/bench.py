"""The cocotb test bench: runs a job of cases on the Verilated NPU.

It is a cocotb test module (``COCOTB_TEST_MODULES=rtl.bench``) started by
rtl/cosim.py, which hands it a pickled job in ``NPU_RTL_JOB`` and reads the
pickled results from ``NPU_RTL_OUT``.  A job is a list of cases run back to
back on one instance, without reset between them (memories persist, as on
hardware).  Each case:

* ``loads``: ``[(memory id, first word, [words])]`` written through the load port;
* ``program``: instruction words, or None to run nothing;
* ``inputs``: native-vector words for the input queue;
* ``stream``: True when inputs or outputs may exceed the queue FIFOs, so the
  bench must feed and drain them every cycle while the program runs (slow
  path); otherwise it preloads the inputs, starts, waits for ``busy`` to fall
  and drains the outputs (fast path: no Python per cycle);
* ``reads``: ``[(memory id, first word, count)]`` read back after the run;
* ``reset``: reset every register first (the queues empty, errors cleared; memories keep their words);
* ``max_cycles``: stop waiting after that many cycles (``hung`` in the result: a program that waits forever,
  e.g. on an empty input queue).

A session (rtl/cosim.py's :class:`~rtl.cosim.Session`) keeps one simulator process for many jobs: the bench
connects to the host's socket (``NPU_RTL_SOCKET``) and runs each job it receives until told to stop.

Everything is driven and sampled at falling clock edges, half a cycle away
from the rising edge where the design samples its inputs.
"""
from __future__ import annotations

import os
import pickle
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, First, RisingEdge


def _u(handle) -> int:
    return int(handle.value)


async def _load(dut, loads):
    for mem, addr, words in loads:
        dut.ld_sel.value = mem
        for k, w in enumerate(words):
            dut.ld_addr.value = addr + k
            dut.ld_data.value = w
            dut.ld_we.value = 1
            await FallingEdge(dut.clk)
    dut.ld_we.value = 0


async def _read(dut, reads):
    out = []
    for mem, addr, count in reads:
        dut.ld_sel.value = mem
        words = []
        for k in range(count):
            dut.ld_addr.value = addr + k
            await FallingEdge(dut.clk)  # the read port registers at the rising edge in between
            words.append(_u(dut.ld_rdata))
        out.append(words)
    return out


class _Feeder:
    """Offers input words whenever the queue is ready (called at falling edges)."""

    def __init__(self, dut, words):
        self.dut, self.words, self.i = dut, words, 0

    def step(self):
        dut = self.dut
        if self.i < len(self.words) and dut.inq__ready.value == 1:
            dut.inq__payload.value = self.words[self.i]
            dut.inq__valid.value = 1
            self.i += 1
        else:
            dut.inq__valid.value = 0


async def _commits(dut, log):
    """Every completed step's (pc, cycle).  The pipelined machine completes steps in consecutive cycles and a
    transfer in the cycle a chain completes (its ``dma_commit`` port), so after a rising edge every cycle is
    sampled until no commit is seen."""
    ports = [(dut.commit, dut.commit_pc)]
    if hasattr(dut, "dma_commit"):
        ports.append((dut.dma_commit, dut.dma_commit_pc))
    if hasattr(dut, "byp_commit"):  # the MVM bypass: a bypass chain completes beside the others
        ports.append((dut.byp_commit, dut.byp_commit_pc))
    while True:
        await First(*(RisingEdge(flag) for flag, _ in ports))
        await FallingEdge(dut.clk)
        while True:
            seen = False
            for flag, pc in ports:
                if flag.value == 1:
                    log.append((_u(pc), _u(dut.cycles)))
                    seen = True
            if not seen:
                break
            await FallingEdge(dut.clk)


async def _reset(dut):
    """Registers to their reset values (memories keep their contents, as on hardware)."""
    dut.rst.value = 1
    dut.start.value = 0
    dut.ld_we.value = 0
    dut.inq__valid.value = 0
    dut.outq__ready.value = 0  # held low except while the bench drains the output queue
    for _ in range(2):
        await FallingEdge(dut.clk)
    dut.rst.value = 0


async def _run_case(dut, case) -> dict:
    """One case (see the module docstring); ``reset``: reset the registers first; ``max_cycles``: give up
    waiting for ``busy`` to fall after that many cycles (the result says ``hung``)."""
    t0 = time.perf_counter()
    if case.get("reset"):
        await _reset(dut)
    await _load(dut, case.get("loads", []))
    res = {"cycles": 0, "error": 0, "outputs": [], "commits": [], "sim_s": 0.0, "hung": False}
    program = case.get("program")
    if program is not None:
        feeder = _Feeder(dut, case.get("inputs", []))
        outputs = res["outputs"]
        # preload what fits (the queue's ready says when it does not)
        while feeder.i < len(feeder.words) and dut.inq__ready.value == 1:
            feeder.step()
            await FallingEdge(dut.clk)
        dut.inq__valid.value = 0
        dut.prog_len.value = len(program)
        commits = []
        watcher = cocotb.start_soon(_commits(dut, commits))
        dut.start.value = 1
        await FallingEdge(dut.clk)
        dut.start.value = 0
        t1 = time.perf_counter()
        limit = case.get("max_cycles")
        if case.get("stream"):
            dut.outq__ready.value = 1
            n = 0
            while True:
                await FallingEdge(dut.clk)
                n += 1
                feeder.step()
                if dut.busy.value == 0:
                    break  # the drain below takes the rest
                if limit is not None and n >= limit:
                    res["hung"] = True
                    break
                if dut.outq__valid.value == 1:
                    outputs.append(_u(dut.outq__payload))
        else:
            if dut.busy.value == 1:
                if limit is None:
                    await FallingEdge(dut.busy)
                else:
                    await First(FallingEdge(dut.busy), ClockCycles(dut.clk, limit))
                    res["hung"] = dut.busy.value == 1
            await FallingEdge(dut.clk)
        res["sim_s"] = time.perf_counter() - t1
        watcher.cancel()
        dut.inq__valid.value = 0
        res["cycles"] = _u(dut.cycles)
        res["error"] = _u(dut.error)
        res["commits"] = commits
        # drain the output queue
        dut.outq__ready.value = 1
        while dut.outq__valid.value == 1:
            outputs.append(_u(dut.outq__payload))
            await FallingEdge(dut.clk)
        dut.outq__ready.value = 0
    res["reads"] = await _read(dut, case.get("reads", []))
    res["wall_s"] = time.perf_counter() - t0
    return res


def _recv(sock) -> object:
    head = _exactly(sock, 8)
    return pickle.loads(_exactly(sock, int.from_bytes(head, "little")))


def _exactly(sock, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("the host closed the session")
        buf += chunk
    return bytes(buf)


def send(sock, obj) -> None:
    """One message of the session protocol: 8-byte little-endian length, then a pickle."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(len(data).to_bytes(8, "little") + data)


@cocotb.test()
async def run_job(dut):
    """A job file (``NPU_RTL_JOB`` -> ``NPU_RTL_OUT``) or, with ``NPU_RTL_SOCKET``, a session: receive a list of
    cases, run them, send their results, until the host sends None (rtl/cosim.py's Session)."""
    Clock(dut.clk, 10, unit="ns").start()
    await _reset(dut)

    async def run(job):
        return [await _run_case(dut, case) for case in job]

    await serve(run)


async def serve(run) -> None:
    """Run jobs (lists of cases) with ``run`` and return their results: a job file (``NPU_RTL_JOB`` ->
    ``NPU_RTL_OUT``) or, with ``NPU_RTL_SOCKET``, a session until the host sends None (rtl/cosim.py's Session).
    Every bench of a Verilog toplevel (this one, rtl/axi_bench.py) serves its jobs this way."""
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
