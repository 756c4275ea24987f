"""The cocotb test bench of the RTL fabric (rtl/fabric.py): runs one job of requests through ``fabric_top``.

Started by rtl/fabric_check.py with a pickled job in ``NPU_RTL_JOB``; the pickled result goes to
``NPU_RTL_OUT``.  A job (built by :func:`rtl.fabric_check.fabric_job`):

* ``loads``: per NPU ``[(memory id, first word, [words])]`` through the shared load port;
* ``tables``: per NPU ``{"recv": [...], "route": [...], "port": [...], "scalars": {address: value}}``;
* ``hop_cycles``, ``link_bpc``: the link (npu.fabric.Fabric);
* ``host_inputs``: per NPU the native-vector words the host sends it, every request's in order;
* ``max_cycles``: give up after that many fabric cycles.

The bench loads everything, raises ``arm`` and fills the host FIFOs (the sequencers move what they may into
the input queues: the host's tensors are there at cycle 0, as the model has them), waits until nothing moves,
pulses ``go`` and records every event with its cycle until ``done``; then it drains the host output FIFOs.
Everything is driven and sampled at falling clock edges.
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


async def _watch(dut, n, log):
    """Every event (cycle, kind, NPU, destination): start (the cycle start is asserted), end (the first cycle
    busy is low), send (a transfer's first cycle on its port), arrive (a transfer's arrival)."""
    while True:
        await RisingEdge(dut.event)
        await FallingEdge(dut.clk)
        while dut.event.value == 1:
            now = _u(dut.now)
            bits = {k: _u(getattr(dut, f"ev_{k}")) for k in ("start", "end", "send", "arrive")}
            sd, ad = _u(dut.send_dest), _u(dut.arrive_dest)
            for d in range(n):
                if bits["end"] >> d & 1:
                    log.append((now, "end", d, -1))
                if bits["start"] >> d & 1:
                    log.append((now, "start", d, -1))
                if bits["send"] >> d & 1:
                    log.append((now, "send", d, sd >> (4 * d) & 15))
                if bits["arrive"] >> d & 1:
                    log.append((now, "arrive", d, ad >> (4 * d) & 15))
            await FallingEdge(dut.clk)


async def run_fabric(dut, job) -> dict:
    t0 = time.perf_counter()
    n = job["devices"]
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    for name in ("arm", "go", "ld_we", "tab_we"):
        getattr(dut, name).value = 0
    for d in range(n):
        getattr(dut, f"hin{d}__valid").value = 0
        getattr(dut, f"hout{d}__ready").value = 0
    for _ in range(2):
        await FallingEdge(dut.clk)
    dut.rst.value = 0
    # memories
    for d, loads in enumerate(job["loads"]):
        dut.ld_dev.value = d
        for mem, addr, words in loads:
            dut.ld_sel.value = mem
            for k, w in enumerate(words):
                dut.ld_addr.value = addr + k
                dut.ld_data.value = w
                dut.ld_we.value = 1
                await FallingEdge(dut.clk)
        dut.ld_we.value = 0
    # tables and scalars
    for d, tables in enumerate(job["tables"]):
        dut.tab_dev.value = d
        writes = [(0, a, v) for a, v in enumerate(tables["recv"])] + \
                 [(1, a, v) for a, v in enumerate(tables["route"])] + \
                 [(2, a, v) for a, v in enumerate(tables["port"])] + \
                 [(3, a, v) for a, v in tables["scalars"].items()]
        for kind, addr, value in writes:
            dut.tab_kind.value = kind
            dut.tab_addr.value = addr
            dut.tab_data.value = value
            dut.tab_we.value = 1
            await FallingEdge(dut.clk)
        dut.tab_we.value = 0
    dut.hop_cycles.value = job["hop_cycles"]
    dut.link_bpc.value = job["link_bpc"]
    dut.arm.value = 1
    # the host's tensors
    for d, words in enumerate(job["host_inputs"]):
        valid, payload, ready = (getattr(dut, f"hin{d}__{x}") for x in ("valid", "payload", "ready"))
        for w in words:
            while ready.value != 1:
                valid.value = 0
                await FallingEdge(dut.clk)
            payload.value = w
            valid.value = 1
            await FallingEdge(dut.clk)
        valid.value = 0
    quiet = 0
    for _ in range(1 << 20):
        await FallingEdge(dut.clk)
        quiet = quiet + 1 if dut.settled.value == 1 else 0
        if quiet >= 3:
            break
    log: list = []
    watcher = cocotb.start_soon(_watch(dut, n, log))
    dut.go.value = 1
    await FallingEdge(dut.clk)
    dut.go.value = 0
    t1 = time.perf_counter()
    hung = False
    if dut.done.value != 1:
        await First(RisingEdge(dut.done), ClockCycles(dut.clk, job["max_cycles"]))
        hung = dut.done.value != 1
    await FallingEdge(dut.clk)
    sim_s = time.perf_counter() - t1
    watcher.cancel()
    res = {"events": log, "cycles": _u(dut.now), "error": _u(dut.error), "late": _u(dut.late),
           "hop_overflow": _u(dut.hop_overflow), "hung": hung, "outputs": []}
    for d in range(n):
        valid, payload, ready = (getattr(dut, f"hout{d}__{x}") for x in ("valid", "payload", "ready"))
        ready.value = 1
        words = []
        while valid.value == 1:
            words.append(_u(payload))
            await FallingEdge(dut.clk)
        ready.value = 0
        res["outputs"].append(words)
    res["sim_s"] = sim_s
    res["wall_s"] = time.perf_counter() - t0
    return res


@cocotb.test()
async def run_job(dut):
    with open(os.environ["NPU_RTL_JOB"], "rb") as f:
        job = pickle.load(f)
    res = await run_fabric(dut, job)
    with open(os.environ["NPU_RTL_OUT"], "wb") as f:
        pickle.dump(res, f)
