"""sim/fabric.py: request latency and pipelined stream timing through several NPUs, against hand-computed schedules."""
import json

from npu.config import get_config
from npu.fabric import START_CYCLES, Fabric
from sim.fabric import FabricStep, schedule
from sim.trace import fabric_trace_events

CFG = get_config("tiny")                     # native_dim 8: a vector is 16 bytes in fp16
VB = CFG.native_dim * 2
ST = START_CYCLES                            # a fabric NPU's program starts the cycle after its controller starts it


def two_stages():
    return [FabricStep("host in", None, reads=["x"], writes=[("x1", 0)]),
            FabricStep("a", 0, 100, macs=1000, reads=["x1"], writes=[("t", 10)]),
            FabricStep("b", 1, 50, macs=500, reads=["t"], writes=[("y", 1)])]


def test_one_request_is_stages_in_sequence_with_the_hop():
    f = Fabric(2, hop_cycles=7, link_bytes_per_cycle=16)
    s = schedule(two_stages(), f, CFG, 1)
    send = -(-10 * VB // 16)                      # 10 vectors over the link
    assert s.latency_cycles == ST + 100 + send + 7 + ST + 50
    assert s.link_busy == [send, 0] and s.device_busy == [100, 50]
    npu = [(e.where, e.start, e.end) for e in s.events if e.kind == "npu"]
    assert npu == [(0, ST, ST + 100), (1, ST + 100 + send + 7 + ST, s.latency_cycles)]


def test_one_npu_starts_at_once():
    # a model on one NPU is started by its host: its figures count from the program's first cycle
    steps = [FabricStep("a", 0, 100, reads=["x"], writes=[("y", 1)])]
    assert schedule(steps, Fabric(1), CFG, 1).latency_cycles == 100


def test_stream_pipelines_the_stages():
    f = Fabric(2, hop_cycles=7, link_bytes_per_cycle=16)
    send = -(-10 * VB // 16)
    s = schedule(two_stages(), f, CFG, 4)
    # NPU 0 is the bottleneck: it ends request r at (ST + 100) (r + 1); the last one then crosses and runs on NPU 1
    assert s.makespan == 4 * (ST + 100) + send + 7 + ST + 50
    assert s.interval_cycles == ST + 100
    assert abs(s.steady_per_s - CFG.clock_mhz * 1e6 / (ST + 100)) < 1e-6
    assert s.device_utilization()[0] == CFG.utilization(4 * 1000, s.makespan)
    assert s.latency_cycles == ST + 100 + send + 7 + ST + 50   # request 0 is not slowed by the ones behind it


def test_slow_link_is_the_bottleneck():
    f = Fabric(2, hop_cycles=0, link_bytes_per_cycle=1)  # 160 cycles a transfer, more than either NPU
    s = schedule(two_stages(), f, CFG, 8)
    assert s.interval_cycles == 10 * VB
    assert s.makespan == ST + 100 + 8 * 10 * VB + ST + 50


def test_trace_has_a_process_per_npu_and_one_for_the_links():
    s = schedule(two_stages(), Fabric(2, 7, 16), CFG, 2)
    events = fabric_trace_events(s)
    names = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert names == {1: "npu 0", 2: "npu 1", 3: "links"}
    stages = [e for e in events if e.get("cat") == "stage"]
    assert sorted((e["pid"], e["args"]["request"]) for e in stages) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    links = [e for e in events if e.get("cat") == "link"]
    assert len(links) == 2 and all(e["pid"] == 3 and e["args"]["to"] == 1 for e in links)
    json.dumps(events)
