"""Simulation wall time of ResNet-50 (batch 1, functional + timing) against onnxruntime CPU on the same ONNX.

    python benchmarks/bench_sim_vs_ort.py                       # resnet50 at 224 on brainslice-128
    python benchmarks/bench_sim_vs_ort.py --model resnet152 --input-size 224 --repeat 3

Target: the simulator within 3x of onnxruntime, warm (a second inference on the same session) and cold
(reading the .npu file, making the executor and its first inference, against creating onnxruntime's session
from the ONNX bytes and its first run; both after one such round in this process, so neither pays
one-time imports or library loading).  The simulator's MVM engine is the fused AMX kernel where the
CPU has AMX-INT8, else onnxruntime's 8-bit GEMMs (sim/intgemm.py); where AMX is present the table shows the
other engine too, as a CPU without AMX would run it.  Prints where the simulator's time goes by stage.
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
    from sim import intgemm

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--config", default="brainslice-128")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    load = os.getloadavg()[0]  # before this script's own work
    model = zoo.build(args.model, seed=0, input_size=args.input_size)
    x = np.random.default_rng(0).standard_normal((1, 3, args.input_size, args.input_size)).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    sess.run(None, {"input": x})
    blob = compile_model(model, config=args.config)
    ex = Executor(read_model(blob))
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
    onnx_bytes = model.SerializeToString()
    t_ort_cold = best(lambda: ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"]).run(
        None, {"input": x}))
    t_sim_cold = best(lambda: Executor(read_model(blob)).run({"input": x}))
    # where the simulator spends it: functional only vs timing only
    m = ex.machine
    step = next(s for s in ex.manifest["plan"] if s["kind"] == "npu")
    program = ex._programs[step["program"]]
    t_timing = best(lambda: m.run(program, functional=False))
    _, stats = ex.run({"input": x})
    ratio = t_sim / t_ort
    print(f"{args.model} {args.input_size}x{args.input_size} batch 1 on {args.config}, best of {args.repeat}, "
          f"{os.cpu_count()} cores; peer: onnxruntime CPUExecutionProvider")
    if load > 0.5:  # both sides slow down under load, onnxruntime's two threads the most: the ratio flatters
        print(f"note: load average {load:.1f} from other work; the ratio is only meaningful on an idle machine")
    print(f"{'':<50} {'wall s':>9}")
    print(f"{'onnxruntime CPU':<50} {t_ort:>9.3f}")
    print(f"{'simulator (func + timing), ' + engine_name():<50} {t_sim:>9.3f}   ratio {ratio:.2f}x "
          f"(target <= 3x: {'ok' if ratio <= 3 else 'MISSED'})")
    print(f"{'  of which timing model':<50} {t_timing:>9.3f}")
    cold = t_sim_cold / t_ort_cold
    print(f"{'cold: onnxruntime session + first run':<50} {t_ort_cold:>9.3f}")
    print(f"{'cold: read .npu + executor + first inference':<50} {t_sim_cold:>9.3f}   ratio {cold:.2f}x "
          f"(target <= 3x: {'ok' if cold <= 3 else 'MISSED'})")
    if intgemm.amx_available():  # the same on the engine CPUs without AMX use
        intgemm._amx = False
        try:
            other = Executor(read_model(blob))
            other.run({"input": x})
            t_other = best(lambda: other.run({"input": x}))
            print(f"{'simulator, ' + engine_name():<50} {t_other:>9.3f}   ratio {t_other / t_ort:.2f}x")
        finally:
            intgemm._amx = True
    print(f"modeled: {stats.npu_cycles:,} cycles = {stats.latency_us:,.0f} us, utilization {stats.utilization:.1%}")
    print(f"MVM work: {stats.tile_macs / 1e9:.2f} G MACs simulated (padded to native tiles) for "
          f"{zoo.count_macs(model) / 1e9:.2f} G MACs in the ONNX graph")
    profile(ex, {"input": x})
    return 0


def engine_name() -> str:
    from sim import intgemm

    if not intgemm.available():
        return "float64 GEMMs"
    if intgemm.amx_available():
        return f"AMX digit GEMMs, {intgemm.THREADS} threads"
    return "onnxruntime 8-bit GEMMs"


def profile(ex, feeds) -> None:
    """Where one simulated inference spends its time: the MVM engine's stages, then the rest."""
    import sim.functional as functional
    import sim.intgemm as intgemm
    from sim import _kernels

    stages = [("quantize activations (C)", functional, "quantize_fp16"),
              ("gather digits (C)", _kernels, "gather_digits"),
              ("digit products -> fp16 + fused MFU ops (C)", _kernels, "digit_products_to_fp16"),
              ("digit engine, with the 8-bit GEMMs", intgemm, "mvm_fp16"),
              ("MVM total", functional.Executor, "_mvm"),
              ("all chains", functional.Executor, "chain")]
    spent = {}
    originals = [(owner, name, getattr(owner, name)) for _, owner, name in stages]

    def timed(label, fn):
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - t0
        return run

    for (label, owner, name), (_, _, fn) in zip(stages, originals):
        setattr(owner, name, timed(label, fn))
    try:
        t0 = time.perf_counter()
        ex.run(feeds)
        total = time.perf_counter() - t0
    finally:
        for owner, name, fn in originals:
            setattr(owner, name, fn)
    kernels = "vector" if _kernels.simd() else "scalar"
    print(f"one inference, timed by stage ({engine_name()}; {kernels} C kernels): {total:.3f} s")
    gemms = ("digit GEMMs + output pass (AMX, fused)" if intgemm.amx_available()
             else "8-bit GEMMs (onnxruntime MatMulInteger)")
    if stages[3][0] in spent:
        spent[gemms] = spent[stages[3][0]] - spent.get(stages[1][0], 0.0) - spent.get(stages[2][0], 0.0)
    for label in [stages[0][0], stages[1][0], gemms, stages[2][0], stages[4][0], stages[5][0]]:
        if label in spent:
            print(f"  {label:<46} {spent[label]:7.3f} s  {spent[label] / total:6.1%}")


if __name__ == "__main__":
    sys.exit(main())
