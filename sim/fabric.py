"""Several NPUs serving one model: the machines, and the timing of requests through them (issue 12).

The functional side is the per-NPU simulator: :class:`FabricMachines` holds one
:class:`sim.machine.Machine` (or RTL machine) per device, each loaded with its own
weights and constants; a plan step runs on the machine of its ``device``.

The timing side, :func:`schedule`, replays the plan's steps for ``requests``
requests, all queued at cycle 0, on these resources:

* each NPU runs one step at a time, requests in arrival order (its input queue
  buffers the requests waiting for it); a step starts ``fabric.start_cycles`` after
  the NPU is free and every tensor it reads has arrived (its controller registers the
  start: 1 cycle on a fabric of several NPUs, as rtl/fabric.py does), and takes the
  cycles its program's run took (the cycle model is data-independent, so one run
  gives every request's);
* a tensor written on NPU a and read on NPU b crosses the link: it leaves through
  a's network port (one per NPU, one transfer at a time) once its step has ended,
  occupies the port for ``ceil(bytes / link_bytes_per_cycle)`` cycles, and arrives
  ``hop_cycles`` later (:class:`npu.fabric.Fabric`); the bytes are the sending
  program's output vectors in fp16 (what leaves its output queue);
* host steps (onnxruntime) take no modeled time, as in one-NPU runs.

So the latency of one request is its stages in sequence with the link hops between
them; the throughput of a stream is what the pipeline of stages sustains.  Per NPU
it reports busy cycles and utilization (the graph MACs it ran over its peak for the
whole stream); per link the cycles its port was sending.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from npu.config import NpuConfig
from npu.fabric import Fabric


@dataclass
class FabricStep:
    """One plan step as the fabric schedule sees it."""

    name: str
    device: int | None                 # None: a host step
    cycles: int = 0
    macs: int = 0
    reads: list[str] = field(default_factory=list)
    writes: list[tuple[str, int]] = field(default_factory=list)   # (tensor, vectors)


@dataclass
class Event:
    request: int
    kind: str            # "npu" | "link"
    where: int           # device (npu) or sending device (link)
    name: str
    start: int
    end: int
    step: int = -1       # plan step index (npu events)
    to: int = -1         # receiving device (link events)
    nbytes: int = 0


@dataclass
class FabricSchedule:
    fabric: Fabric
    config: NpuConfig
    requests: int
    events: list[Event]
    latency_cycles: int                 # of request 0, alone in the fabric
    makespan: int                       # cycles until the last request completes
    device_busy: list[int]              # cycles per device over the whole stream
    device_macs: list[int]              # graph MACs per device, one request
    link_busy: list[int]                # cycles each device's port was sending, whole stream
    device_starts: list[int] = field(default_factory=list)   # steps each device started, whole stream

    @property
    def latency_us(self) -> float:
        return self.latency_cycles / self.config.clock_mhz

    @property
    def throughput_per_s(self) -> float:
        """Requests per second over the stream (``requests`` queued at cycle 0)."""
        return self.requests * self.config.clock_mhz * 1e6 / self.makespan if self.makespan else 0.0

    @property
    def interval_cycles(self) -> int:
        """The steady-state interval between requests: the busiest NPU's or port's cycles per request (an NPU's
        include the cycle its controller takes to start each step, ``fabric.start_cycles``)."""
        starts = self.device_starts or [0] * len(self.device_busy)
        occupied = [b + self.fabric.start_cycles * k for b, k in zip(self.device_busy, starts)]
        per = [b // max(1, self.requests) for b in occupied + self.link_busy]
        return max(per, default=0)

    @property
    def steady_per_s(self) -> float:
        return self.config.clock_mhz * 1e6 / self.interval_cycles if self.interval_cycles else 0.0

    def device_utilization(self) -> list[float]:
        return [self.config.utilization(m * self.requests, self.makespan) for m in self.device_macs]

    def device_busy_share(self) -> list[float]:
        return [b / self.makespan if self.makespan else 0.0 for b in self.device_busy]

    def link_utilization(self) -> list[float]:
        return [b / self.makespan if self.makespan else 0.0 for b in self.link_busy]

    def summary(self) -> dict:
        return {
            "devices": self.fabric.devices, "requests": self.requests,
            "latency_cycles": int(self.latency_cycles), "latency_us": round(self.latency_us, 3),
            "makespan_cycles": int(self.makespan), "throughput_per_s": round(self.throughput_per_s, 3),
            "interval_cycles": int(self.interval_cycles), "steady_per_s": round(self.steady_per_s, 3),
            "device_busy": [int(b) for b in self.device_busy],
            "device_utilization": [round(u, 6) for u in self.device_utilization()],
            "device_busy_share": [round(u, 6) for u in self.device_busy_share()],
            "link_busy": [int(b) for b in self.link_busy],
            "link_utilization": [round(u, 6) for u in self.link_utilization()],
            "link": {"hop_cycles": self.fabric.hop_cycles, "bytes_per_cycle": self.fabric.link_bytes_per_cycle},
        }


def schedule(steps: list[FabricStep], fabric: Fabric, config: NpuConfig, requests: int = 1) -> FabricSchedule:
    """The timing of ``requests`` requests through the plan's steps (see the module doc)."""
    if requests < 1:
        raise ValueError(f"requests must be at least 1, not {requests}")
    n_dev = fabric.devices
    vector_bytes = config.native_dim * 2          # fp16 activations on the queues
    dev_free = [0] * n_dev
    port_free = [0] * n_dev
    dev_busy = [0] * n_dev
    dev_starts = [0] * n_dev
    link_busy = [0] * n_dev
    dev_macs = [0] * n_dev
    for s in steps:
        if s.device is not None:
            dev_macs[s.device] += s.macs
    events: list[Event] = []
    latency = makespan = 0
    for r in range(requests):
        made: dict[str, tuple[int | None, int, int]] = {}     # tensor -> (device, ready cycle, vectors)
        arrived: dict[tuple[str, int], int] = {}              # (tensor, device) -> arrival cycle
        end_of_request = 0

        def ready(tensor: str, device: int | None) -> int:
            src = made.get(tensor)
            if src is None:
                return 0                                       # a model input (or constant), there at cycle 0
            where, t, vectors = src
            if where is None or device is None or where == device:
                return t
            key = (tensor, device)
            if key not in arrived:
                nbytes = vectors * vector_bytes
                start = max(t, port_free[where])
                send = fabric.transfer_cycles(nbytes)
                port_free[where] = start + send
                link_busy[where] += send
                arrived[key] = start + send + fabric.hop_cycles
                events.append(Event(r, "link", where, tensor, start, arrived[key], to=device, nbytes=nbytes))
            return arrived[key]

        for k, s in enumerate(steps):
            t = max((ready(x, s.device) for x in s.reads), default=0)
            if s.device is None:
                end = t
            else:
                start = max(t, dev_free[s.device]) + fabric.start_cycles
                end = start + s.cycles
                dev_free[s.device] = end
                dev_busy[s.device] += s.cycles
                dev_starts[s.device] += 1
                events.append(Event(r, "npu", s.device, s.name, start, end, step=k))
            for tensor, vectors in s.writes:
                made[tensor] = (s.device, end, vectors)
            end_of_request = max(end_of_request, end)
        if r == 0:
            latency = end_of_request
        makespan = max(makespan, end_of_request)
    return FabricSchedule(fabric, config, requests, events, latency, makespan, dev_busy, dev_macs, link_busy,
                          dev_starts)


def plan_steps(plan: list[dict], cycles: dict[int, int]) -> list[FabricStep]:
    """FabricSteps of a manifest's plan; ``cycles`` maps each NPU step's index to its modeled cycles."""
    out = []
    for k, step in enumerate(plan):
        if step["kind"] == "host":
            out.append(FabricStep(step["model"], None, reads=list(step["inputs"]),
                                  writes=[(t, 0) for t in step["outputs"]]))
        else:
            out.append(FabricStep(step["program"], int(step.get("device", 0)), int(cycles.get(k, 0)),
                                  int(step.get("macs", 0)), [s["tensor"] for s in step["inputs"]],
                                  [(s["tensor"], s["vectors"]) for s in step["outputs"]]))
    return out


class FabricMachines:
    """One machine per device of a fabric (the simulator, or the RTL through ``make``)."""

    def __init__(self, config: NpuConfig, devices: int, make=None):
        if make is None:
            from sim.machine import Machine

            make = Machine
        self.config = config
        self.machines = [make(config) for _ in range(devices)]

    def __getitem__(self, device: int):
        return self.machines[device]

    def __len__(self) -> int:
        return len(self.machines)
