"""Chrome trace-event output (opens in Perfetto and chrome://tracing).

One process per run, one thread (track) per unit; every step appears as a
complete ("X") event on each unit it occupies, with times in microseconds at
the configured clock.
"""
from __future__ import annotations

import json
from pathlib import Path

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
