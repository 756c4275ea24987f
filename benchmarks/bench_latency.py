"""Modeled latency, throughput and utilization of every zoo model on brainslice-128 and brainwave-s10.

    python benchmarks/bench_latency.py
    python benchmarks/bench_latency.py --configs brainslice-128 --models resnet50 lstm

Numbers come from the timing model (data-independent, so one timing-only run per model), for the machine the RTL
implements (one step at a time) and, in the "pipelined" columns, for the design of docs/pipeline.md
(npu.config.PIPELINED_DESIGN, or --entries/--row-slots; the RTL builds all of it: the scoreboard, DMA beside compute, queue FIFOs and row slots); the peer is onnxruntime CPU measured in
the same run on the same ONNX (best of 3); speedup = ORT time / NPU time (pipelined).
Layers that fall back to the host (weights or activations larger than the configuration) are listed.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    import onnxruntime as ort

    from compiler import compile_report, zoo
    from compiler.check import random_feeds
    from npu.config import PIPELINED_DESIGN, get_config


    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="*", default=["brainslice-128", "brainwave-s10"])
    ap.add_argument("--models", nargs="*", default=[m.name for m in zoo.list_models()])
    ap.add_argument("--entries", type=int, default=PIPELINED_DESIGN["scoreboard_entries"],
                    help="scoreboard_entries of the pipelined design (default: npu.config.PIPELINED_DESIGN's)")
    ap.add_argument("--row-slots", type=int, default=PIPELINED_DESIGN["mvm_row_slots"],
                    help="mvm_row_slots of the pipelined design (default: npu.config.PIPELINED_DESIGN's)")
    args = ap.parse_args(argv)
    PIPELINED = {"scoreboard_entries": args.entries, "mvm_row_slots": args.row_slots}  # docs/pipeline.md
    print(f"pipelined design: {PIPELINED}")
    print(f"modeled batch-1 latency; peer: onnxruntime CPU ({os.cpu_count()} cores), best of 3, same ONNX")
    print(f"{'model':<12} {'config':<15} {'latency us':>11} {'util':>6} {'pipelined us':>12} {'inf/s':>9} {'util':>6} "
          f"{'TOPS':>7} {'NPU MACs':>8} {'ORT us':>9} {'speedup':>8}  host layers")
    for name in args.models:
        model = zoo.build(name, seed=0)
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        feed = random_feeds(model, 1)[0]
        sess.run(None, feed)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            sess.run(None, feed)
            times.append(time.perf_counter() - t0)
        t_ort = min(times) * 1e6
        for cfg in args.configs:
            try:
                today = compile_report(model, config=cfg)
                r = compile_report(model, config=get_config(cfg).as_pipelined(**PIPELINED))
            except Exception as exc:
                print(f"{name:<12} {cfg:<15} error: {exc}")
                continue
            host = [L.name for L in r.layers if L.target == "host" and L.macs]
            tops = 2 * r.macs_npu / (r.latency_us * 1e-6) / 1e12 if r.latency_us else 0.0
            print(f"{name:<12} {cfg:<15} {today.latency_us:>11,.1f} {today.utilization:>6.1%} {r.latency_us:>12,.1f} "
                  f"{1e6 / r.latency_us if r.latency_us else 0:>9,.0f} "
                  f"{r.utilization:>6.1%} {tops:>7.2f} {r.npu_mac_share:>8.1%} {t_ort:>9,.0f} "
                  f"{t_ort / r.latency_us if r.latency_us else 0:>7.1f}x  {(', '.join(host[:3]) + (f' (+{len(host) - 3} more)' if len(host) > 3 else '')) if host else '-'}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
