"""Compile time per zoo model, against onnxruntime's session creation (graph optimization) on the same ONNX.

    python benchmarks/bench_compile.py                    # every zoo model, default sizes, brainslice-128
    python benchmarks/bench_compile.py --models resnet50 resnet152 --config brainwave-s10

Targets: resnet50 < 10 s and resnet152 < 20 s on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TARGETS = {"resnet50": 10.0, "resnet152": 20.0}


def main(argv=None) -> int:
    import onnxruntime as ort

    from compiler import compile_model, zoo

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=[m.name for m in zoo.list_models()])
    ap.add_argument("--config", default="brainslice-128")
    ap.add_argument("--input-size", type=int, default=None, help="override every CNN's input size")
    args = ap.parse_args(argv)
    print(f"compile time, config {args.config}, {os.cpu_count()} cores; peer: onnxruntime InferenceSession "
          f"creation (ORT_ENABLE_ALL) on the same model")
    print(f"{'model':<13} {'npu compile s':>13} {'ort session s':>13} {'ratio':>7} {'target':>8}  result")
    failed = False
    for name in args.models:
        kw = {}
        if args.input_size and zoo.get(name).kind != "rnn" and name not in ("digits", "mlp"):
            kw["input_size"] = args.input_size
        model = zoo.build(name, seed=0, **kw)
        data = model.SerializeToString()
        t0 = time.perf_counter()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        t_ort = time.perf_counter() - t0
        t0 = time.perf_counter()
        try:
            compile_model(model, config=args.config)
            t_npu = time.perf_counter() - t0
            target = TARGETS.get(name)
            ok = target is None or t_npu < target
            failed |= not ok
            print(f"{name:<13} {t_npu:>13.2f} {t_ort:>13.2f} {t_npu / t_ort:>6.1f}x "
                  f"{(f'<{target:g}s' if target else '-'):>8}  {'ok' if ok else 'MISSED'}", flush=True)
        except Exception as exc:  # report and go on
            failed = True
            print(f"{name:<13} {'error':>13} {t_ort:>13.2f} {'':>7} {'':>8}  {type(exc).__name__}: {exc}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
