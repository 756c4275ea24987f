"""Simulation wall time of ResNet-50 (batch 1, functional + timing) against onnxruntime CPU on the same ONNX.

    python benchmarks/bench_sim_vs_ort.py                       # resnet50 at 224 on brainslice-128
    python benchmarks/bench_sim_vs_ort.py --model resnet152 --input-size 224 --repeat 3

Target: the simulator within 3x of onnxruntime.  Prints where the simulator's time goes
(functional steps by kind vs the timing model).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    import numpy as np
    import onnxruntime as ort

    from compiler import compile_model, zoo
    from npu.modelfile import read_model
    from runtime.executor import Executor

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--config", default="brainslice-128")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    model = zoo.build(args.model, seed=0, input_size=args.input_size)
    x = np.random.default_rng(0).standard_normal((1, 3, args.input_size, args.input_size)).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    sess.run(None, {"input": x})
    ex = Executor(read_model(compile_model(model, config=args.config)))
    ex.run({"input": x})

    def best(fn):
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    t_ort = best(lambda: sess.run(None, {"input": x}))
    t_sim = best(lambda: ex.run({"input": x}))
    # where the simulator spends it: functional only vs timing only
    m = ex.machine
    step = next(s for s in ex.manifest["plan"] if s["kind"] == "npu")
    program = ex._programs[step["program"]]
    t_timing = best(lambda: m.run(program, functional=False))
    _, stats = ex.run({"input": x})
    ratio = t_sim / t_ort
    print(f"{args.model} {args.input_size}x{args.input_size} batch 1 on {args.config}, best of {args.repeat}, "
          f"{os.cpu_count()} cores; peer: onnxruntime CPUExecutionProvider")
    print(f"{'':<28} {'wall s':>9}")
    print(f"{'onnxruntime CPU':<28} {t_ort:>9.3f}")
    print(f"{'simulator (func + timing)':<28} {t_sim:>9.3f}   ratio {ratio:.2f}x (target <= 3x: "
          f"{'ok' if ratio <= 3 else 'MISSED'})")
    print(f"{'  of which timing model':<28} {t_timing:>9.3f}")
    print(f"modeled: {stats.npu_cycles:,} cycles = {stats.latency_us:,.0f} us, utilization {stats.utilization:.1%}")
    print(f"MVM work: {stats.macs / 1e9:.2f} G MACs simulated (padded to native tiles) for "
          f"{zoo.count_macs(model) / 1e9:.2f} G MACs in the ONNX graph")
    profile(ex, {"input": x})
    return 0


def profile(ex, feeds) -> None:
    """Where one simulated inference spends its time, by function (cProfile, internal time)."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    ex.run(feeds)
    prof.disable()
    st = pstats.Stats(prof)
    total = sum(v[2] for v in st.stats.values())
    rows = sorted(((v[2], f"{k[0].split('/')[-1]}:{k[2]}") for k, v in st.stats.items()), reverse=True)[:6]
    print("simulator time by function (internal time; numpy calls count in their caller):")
    for t, name in rows:
        print(f"  {name:<40} {t:7.3f} s  {t / total:6.1%}")


if __name__ == "__main__":
    sys.exit(main())
