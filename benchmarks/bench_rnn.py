"""Brainwave's workloads on the modeled NPU: GEMV, RNN, GRU, LSTM and MLP at batch 1 and 6, against published figures.

    python benchmarks/bench_rnn.py                       # the full table on brainwave-s10
    python benchmarks/bench_rnn.py --quick               # a few shapes
    python benchmarks/bench_rnn.py --shapes lstm-2000-25-1 gru0-2800-25-1 --json

Each workload is built here as the ONNX a framework exports (Gemm for GEMV/MLP, the ONNX RNN, GRU and LSTM
operators with input width = hidden width, as DeepBench's inference kernels), compiled for the
configuration and timed by the cycle model (the schedule depends only on the program), twice: on the presets'
machine (one step at a time) and on the pipelined design of docs/pipeline.md (npu.config.PIPELINED_DESIGN:
scoreboard_entries 8, mvm_row_slots 4, the MVM bypass write port, the network queues as FIFOs beside compute that
the link fills and drains at its rate), whose scoreboard, DMA engine, queue FIFOs, row slots and bypass the RTL
builds cycle for cycle; "no bypass" is the same design without the bypass (and so the compiler's fused [x; h]
recurrences), the figure before the bypass.
Utilization is the project's one definition: graph MACs / (cycles x the configuration's MACs per cycle). A
recurrence from a zero initial state skips step 0's recurrent product R h = 0 (compiler/ops/rnn.py), whose MACs the
graph still counts, so a short sequence can show more than the work it ran would (LSTM 2000, 8 steps, batch 6).
"link cap" is the most the network link allows: the output link sends each output vector in port_cost(NETQ) cycles
(13 on brainwave-s10: 800 bytes at 64 a cycle), from the arrival, read (its latency) and first MAC round of the first
sequence's input on, and the run ends `drain` later: every batch-6 GEMV's cap is under its FPT'20 figure, and each
runs within 12 cycles (the MVM's and the write's latencies) of it (docs/pipeline.md).

Peers, each cited where it is printed:
- the FPT'20 NPU's RTL simulation baselines (intel/fpga-npu, scripts/rtl_baseline, TOPS at 300 MHz for
  GEMV, RNN, GRU, LSTM at 8 steps and batch 6, and three-layer MLPs). The repository states no peak; the
  utilization beside it is TOPS / 40.32, our derivation of its peak (2 cores x 7 tiles x 40 DPEs x 40 lanes
  x 3 MACs per tensor block x 2 ops x 300 MHz).
- Brainwave on Stratix 10 (Fowers et al., ISCA 2018): up to 35.9 effective TFLOPS of about 48 peak
  (~75 %) on large RNNs at batch 1, as issue 16 quotes it.
Targets (issue 16, brainwave-s10; judged on the pipelined design): LSTM hidden 2000, 25 steps, batch 1 >= 78 %; hidden 2048 >= 70 %;
GRU (linear_before_reset=0) hidden 2800, 25 steps >= 65 %; at batch 6 every shape >= the FPT'20 RTL figure.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: intel/fpga-npu scripts/rtl_baseline (TOPS, 300 MHz), by (kind, size, steps, batch); see the module docstring.
FPT20_RTL_TOPS = {
    ("gemv", 512, 1, 6): 3.55, ("gemv", 1024, 1, 6): 9.7, ("gemv", 1152, 1, 6): 10.39,
    ("gemv", 1536, 1, 6): 15.06, ("gemv", 1792, 1, 6): 16.9,
    ("rnn", 512, 8, 6): 7.47, ("rnn", 1024, 8, 6): 19.84, ("rnn", 1152, 8, 6): 21.1, ("rnn", 1536, 8, 6): 29.91,
    ("rnn", 1792, 8, 6): 33.12,
    ("gru0", 512, 8, 6): 8.41, ("gru0", 1024, 8, 6): 21.02, ("gru0", 1152, 8, 6): 22.97,
    ("lstm", 512, 8, 6): 13.29, ("lstm", 1024, 8, 6): 30.0,
    ("mlp", 512, 1, 6): 4.32, ("mlp", 1024, 1, 6): 12.03,
}
FPT20_PEAK_TOPS = 40.32  # our derivation (module docstring); the repository states none

#: issue 16's targets: minimum utilization by (kind, size, steps, batch)
TARGETS = {("lstm", 2000, 25, 1): 0.78, ("lstm", 2048, 25, 1): 0.70, ("gru0", 2800, 25, 1): 0.65}

KINDS = ("gemv", "mlp", "rnn", "gru0", "gru1", "lstm")


@dataclass(frozen=True)
class Shape:
    kind: str    # gemv, mlp (three Gemm layers of `size`), rnn (ONNX RNN, tanh), gru0/gru1 (linear_before_reset), lstm
    size: int    # hidden (= input) width
    steps: int
    batch: int

    @property
    def key(self) -> tuple:
        return (self.kind, self.size, self.steps, self.batch)

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.size}-{self.steps}-{self.batch}"

    @classmethod
    def parse(cls, text: str) -> "Shape":
        kind, size, steps, batch = text.split("-")
        if kind not in KINDS:
            raise SystemExit(f"unknown kind {kind!r} in {text!r}; one of {', '.join(KINDS)}")
        return cls(kind, int(size), int(steps), int(batch))


def default_shapes(quick: bool) -> list[Shape]:
    if quick:
        return [Shape("gemv", 1792, 1, 1), Shape("lstm", 1024, 8, 1), Shape("lstm", 2000, 25, 1),
                Shape("gru0", 2800, 25, 1), Shape("rnn", 1024, 8, 6), Shape("lstm", 1024, 8, 6)]
    shapes = []
    for batch in (1, 6):
        shapes += [Shape("gemv", h, 1, batch) for h in (512, 1024, 1152, 1536, 1792)]
        shapes += [Shape("mlp", h, 1, batch) for h in (512, 1024)]
        for steps in (8, 25):
            shapes += [Shape("rnn", h, steps, batch) for h in (512, 1024, 1152, 1536, 1792, 2560)]
            shapes += [Shape("gru0", h, steps, batch) for h in (512, 1024, 1152, 1536, 2560, 2800)]
            shapes += [Shape("gru1", h, steps, batch) for h in (512, 1024, 2560)]
            shapes += [Shape("lstm", h, steps, batch) for h in (512, 1024, 1536, 2000, 2048, 2560)]
    return shapes


def build(shape: Shape, seed: int = 0):
    """The workload as ONNX (opset 17), seeded U(-1/sqrt(H), 1/sqrt(H)) weights as PyTorch initializes them."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    h, b = shape.size, shape.batch
    bound = 1.0 / np.sqrt(h)

    def u(*dims):
        return numpy_helper.from_array(rng.uniform(-bound, bound, dims).astype(np.float32))

    nodes, inits = [], []
    if shape.kind in ("gemv", "mlp"):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [b, h])
        prev = "x"
        for k in range(1 if shape.kind == "gemv" else 3):
            w, out = f"W{k}", ("y" if (shape.kind == "gemv" or k == 2) else f"h{k}")
            init = u(h, h)
            init.name = w
            inits.append(init)
            nodes.append(helper.make_node("Gemm", [prev, w], [out], transB=1))
            if shape.kind == "mlp" and k < 2:
                nodes.append(helper.make_node("Relu", [out], [f"r{k}"]))
                out = f"r{k}"
            prev = out
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [b, h])
    else:
        op, gates = {"rnn": ("RNN", 1), "gru0": ("GRU", 3), "gru1": ("GRU", 3), "lstm": ("LSTM", 4)}[shape.kind]
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [shape.steps, b, h])
        for name, dims in (("W", (1, gates * h, h)), ("R", (1, gates * h, h)), ("B", (1, 2 * gates * h))):
            init = u(*dims)
            init.name = name
            inits.append(init)
        attrs = {"hidden_size": h}
        if shape.kind.startswith("gru"):
            attrs["linear_before_reset"] = int(shape.kind[-1])
        nodes.append(helper.make_node(op, ["x", "W", "R", "B"], ["Y"], **attrs))
        y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [shape.steps, 1, b, h])
    graph = helper.make_graph(nodes, shape.name, [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def graph_macs(shape: Shape) -> int:
    h, b, t = shape.size, shape.batch, shape.steps
    per_step = {"gemv": h * h, "mlp": 3 * h * h, "rnn": 2 * h * h, "gru0": 6 * h * h, "gru1": 6 * h * h,
                "lstm": 8 * h * h}[shape.kind]
    return per_step * b * t


def measure(shape: Shape, config: str) -> dict:
    from compiler import compile_report
    from npu.config import get_config

    t0 = time.perf_counter()
    model = build(shape)
    today = compile_report(model, config=config)
    report = compile_report(model, config=get_config(config).as_pipelined())
    plain = compile_report(model, config=get_config(config).as_pipelined(mvm_bypass=False))
    row = {"shape": shape.name, "kind": shape.kind, "size": shape.size, "steps": shape.steps,
           "batch": shape.batch, "config": config, "cycles_today": today.total_cycles,
           "utilization_today": round(today.utilization, 4),
           "cycles_no_bypass": plain.total_cycles, "utilization_no_bypass": round(plain.utilization, 4),
           "cycles": report.total_cycles,
           "latency_us": round(report.latency_us, 3), "utilization": round(report.utilization, 4),
           "npu_mac_share": round(report.npu_mac_share, 4), "compile_s": round(time.perf_counter() - t0, 2)}
    row["graph_macs"] = graph_macs(shape)
    # the network link's floor: every output vector leaves one per port_cost(NETQ) cycles, after the first
    # sequence's input has arrived (its first output needs all of it), been read (the queue's read latency) and
    # multiplied (a MAC round); the run ends `drain` cycles after the last has left
    from npu.isa import Space

    cfg = get_config(config).as_pipelined()
    vectors = -(-shape.size // cfg.native_dim)
    floor = cfg.port_cost(Space.NETQ) * (vectors + vectors * shape.batch * shape.steps) \
        + cfg.read_latency(Space.NETQ) + cfg.cycles_per_tile + cfg.latencies.drain
    row["link_floor_cycles"] = floor
    row["link_cap"] = round(row["graph_macs"] / (floor * cfg.macs_per_cycle), 4)
    tops = FPT20_RTL_TOPS.get(shape.key)
    if tops is not None:
        row["fpt20_rtl_tops"] = tops
        row["fpt20_rtl_utilization"] = round(tops / FPT20_PEAK_TOPS, 4)
    if shape.key in TARGETS:
        row["target"] = TARGETS[shape.key]
    return row


def main(argv=None) -> int:
    from npu.config import PIPELINED_DESIGN

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="brainwave-s10")
    ap.add_argument("--shapes", nargs="*", help="KIND-SIZE-STEPS-BATCH, e.g. lstm-2048-25-1 (kinds: "
                                                + ", ".join(KINDS) + ")")
    ap.add_argument("--quick", action="store_true", help="a few representative shapes")
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    args = ap.parse_args(argv)
    shapes = [Shape.parse(s) for s in args.shapes] if args.shapes else default_shapes(args.quick)
    if not args.json:
        print(f"modeled on {args.config}; utilization = graph MACs / (cycles x MACs per cycle); today = one step "
              f"at a time (the RTL); pipelined = docs/pipeline.md {PIPELINED_DESIGN} (the RTL builds it bit- and cycle-exact; "
              f"'no bypass': the same without mvm_bypass, the compiler's fused [x; h] recurrences); "
              f"FPT'20 = intel/fpga-npu RTL baseline / {FPT20_PEAK_TOPS} TOPS (derived peak)")
        print(f"{'workload':<18} {'util today':>10} {'no bypass':>9} {'cycles':>10} {'latency us':>11} {'util':>7} {'on NPU':>7} "
              f"{'link cap':>8} {'FPT20 RTL':>9} {'ratio':>6} {'target':>7}  verdict")
    failed = 0
    for shape in shapes:
        row = measure(shape, args.config)
        ref = row.get("fpt20_rtl_utilization")
        target = row.get("target", ref if shape.batch == 6 else None)
        verdict = "" if target is None else ("met" if row["utilization"] >= target else "MISSED")
        failed += verdict == "MISSED"
        if args.json:
            print(json.dumps(dict(row, verdict=verdict or None)), flush=True)
            continue
        ref_text = "" if ref is None else f"{ref:.1%}"
        cap_text = f"{row['link_cap']:.1%}" if row["link_cap"] < 1 else ""  # blank: the link does not bound it
        ratio = "" if ref is None else f"{row['utilization'] / ref:.2f}x"
        target_text = "" if target is None else f"{target:.0%}"
        print(f"{shape.name:<18} {row['utilization_today']:>10.1%} {row['utilization_no_bypass']:>9.1%} "
              f"{row['cycles']:>10,} {row['latency_us']:>11,.1f} "
              f"{row['utilization']:>7.1%} "
              f"{row['npu_mac_share']:>7.0%} {cap_text:>8} {ref_text:>9} {ratio:>6} {target_text:>7}  {verdict}",
              flush=True)
    if not args.json:
        print(f"{failed} target(s) missed" if failed else "every target met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
