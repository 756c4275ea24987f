"""Chrome trace-event output (opens in Perfetto and chrome://tracing).

One process per run, one thread (track) per unit; every step appears as a
complete ("X") event on each unit it occupies, with times in microseconds at
the configured clock.

A model on several NPUs (:func:`write_fabric_trace`) gets one process per NPU --
a "stage" track with each request's plan steps on that NPU, then a track per unit
with the steps of its program -- and a "links" process with one track per NPU's
network port, each transfer an event from the sender's last cycle to the arrival.
"""
from __future__ import annotations

import json
from pathlib import Path

from sim.fabric import FabricSchedule
from sim.machine import RunResult


def trace_events(result: RunResult, process_name: str = "npu") -> list[dict]:
    mhz = result.config.clock_mhz
    units = ["issue"] + sorted({u for s in result.steps for u in s.units})
    tid = {u: i for i, u in enumerate(units)}
    events: list[dict] = [{"name": "process_name", "ph": "M", "pid": 1, "args": {"name": process_name}}]
    events += [{"name": "thread_name", "ph": "M", "pid": 1, "tid": i, "args": {"name": u}} for u, i in tid.items()]
    for s in result.steps:
        name = s.region or f"{s.kind}@{s.pc}"
        args = {"pc": s.pc, "end_pc": s.end_pc, "kind": s.kind, "iterations": s.iterations, "tile_macs": s.tile_macs,
                "cycles": s.end - s.start}
        for u in ["issue"] + s.units:
            events.append({"name": name, "cat": s.kind, "ph": "X", "pid": 1, "tid": tid[u],
                           "ts": s.start / mhz, "dur": max(s.end - s.start, 1) / mhz, "args": args})
    return events


def write_trace(result: RunResult, path: str | Path, process_name: str = "npu") -> None:
    Path(path).write_text(json.dumps({"traceEvents": trace_events(result, process_name),
                                      "displayTimeUnit": "ns",
                                      "otherData": result.summary()}))


def fabric_trace_events(sched: FabricSchedule, results: dict[int, RunResult] | None = None) -> list[dict]:
    """Chrome trace events: one process per NPU (a track per unit its steps used, or one track when the runs'
    step records are not given), one process for the links (a track per sending port)."""
    mhz = sched.config.clock_mhz
    n = sched.fabric.devices
    events: list[dict] = []
    tids: list[dict[str, int]] = [{} for _ in range(n)]

    def tid(device: int, unit: str) -> int:
        t = tids[device]
        if unit not in t:
            t[unit] = len(t)
            events.append({"name": "thread_name", "ph": "M", "pid": device + 1, "tid": t[unit], "args": {"name": unit}})
        return t[unit]

    for d in range(n):
        events.append({"name": "process_name", "ph": "M", "pid": d + 1, "args": {"name": f"npu {d}"}})
        events.append({"name": "process_sort_index", "ph": "M", "pid": d + 1, "args": {"sort_index": d}})
        tid(d, "stage")
    link_pid = n + 1
    events.append({"name": "process_name", "ph": "M", "pid": link_pid, "args": {"name": "links"}})
    events.append({"name": "process_sort_index", "ph": "M", "pid": link_pid, "args": {"sort_index": n}})
    for d in range(n):
        events.append({"name": "thread_name", "ph": "M", "pid": link_pid, "tid": d, "args": {"name": f"npu {d} port"}})
    for e in sched.events:
        if e.kind == "link":
            events.append({"name": f"{e.name} -> npu {e.to}", "cat": "link", "ph": "X", "pid": link_pid, "tid": e.where,
                           "ts": e.start / mhz, "dur": max(e.end - e.start, 1) / mhz,
                           "args": {"request": e.request, "bytes": e.nbytes, "from": e.where, "to": e.to,
                                    "cycles": e.end - e.start}})
            continue
        events.append({"name": f"request {e.request}: {e.name}", "cat": "stage", "ph": "X", "pid": e.where + 1,
                       "tid": tid(e.where, "stage"), "ts": e.start / mhz, "dur": max(e.end - e.start, 1) / mhz,
                       "args": {"request": e.request, "step": e.step, "cycles": e.end - e.start}})
        result = (results or {}).get(e.step)
        for s in getattr(result, "steps", []):
            name = s.region or f"{s.kind}@{s.pc}"
            for u in s.units:
                events.append({"name": name, "cat": s.kind, "ph": "X", "pid": e.where + 1, "tid": tid(e.where, u),
                               "ts": (e.start + s.start) / mhz, "dur": max(s.end - s.start, 1) / mhz,
                               "args": {"request": e.request, "pc": s.pc, "cycles": s.end - s.start}})
    return events


def write_fabric_trace(sched: FabricSchedule, results: dict[int, RunResult] | None, path: str | Path) -> None:
    """The trace of a multi-NPU schedule (``results``: plan step index -> its RunResult)."""
    Path(path).write_text(json.dumps({"traceEvents": fabric_trace_events(sched, results), "displayTimeUnit": "ns",
                                      "otherData": sched.summary()}))
