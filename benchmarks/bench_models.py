"""Today's models on the NPU: where their MACs run, how long they take, and how faithfully.

    python benchmarks/bench_models.py                      # full sizes on brainslice-128 (several minutes)
    python benchmarks/bench_models.py --reduced            # 2-layer hidden-128 Transformers, 64x64 CNNs
    python benchmarks/bench_models.py --models bert_base vit_b16 --inputs 3 --format msfp16
    python benchmarks/bench_models.py --onnx exported/*.onnx            # models exported elsewhere
    python benchmarks/bench_models.py --torch-python ~/torchenv/bin/python   # export torchvision/HF, then run

--torch-python runs benchmarks/torch_export.py with an interpreter that has torch, torchvision and transformers
(this project does not depend on them) and benchmarks what torch.onnx.export wrote, as a user's model would be;
a model whose export or compilation fails is a row saying why, and the run goes on.

Per zoo model: the NPU's share of the graph's MACs (issue 10's target for bert_base, gpt2 and vit_b16:
>= 95 %), segments (NPU + host steps of the plan), the modeled latency of one inference (NPU cycles at
the configuration's clock; host segments not counted) beside the peer, onnxruntime's CPU time for the
same model on this machine (median of --repeat runs), their ratio, the output cosine and the
input-sensitive cosine (out(x1) - out(x2) on the simulator against onnxruntime's; target >= 0.99 with
msfp16 for the Transformers).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DEFAULT = ["bert_base", "gpt2", "vit_b16", "mobilenet_v2", "efficientnet_b0", "resnet50"]
TINY_TRANSFORMER = {"layers": 2, "hidden": 128, "heads": 2, "intermediate": 512}
REDUCED = {"bert_base": (16, TINY_TRANSFORMER), "gpt2": (16, TINY_TRANSFORMER), "vit_b16": (32, TINY_TRANSFORMER)}
REDUCED_CNN_SIZE = 64


def build(name: str, reduced: bool):
    from compiler import zoo

    if not reduced:
        return zoo.build(name), "full"
    if name in REDUCED:
        size, params = REDUCED[name]
        return zoo.build(name, input_size=size, **params), f"{size}, 2x128"
    entry = zoo.get(name)
    if entry.kind in ("classifier", "detector") and entry.min_input_size <= REDUCED_CNN_SIZE:
        return zoo.build(name, input_size=REDUCED_CNN_SIZE), str(REDUCED_CNN_SIZE)
    return zoo.build(name), "full"


def load_onnx(path: str):
    from compiler.frontend import load_model

    return load_model(path), "file"


def torch_exports(python: str, out_dir: str, models: list[str] | None) -> list[tuple[str, str | None, str]]:
    """(name, path or None, error) per model torch_export.py exported with ``python``."""
    import json
    import subprocess

    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_export.py")
    cmd = [python, script, "--out", out_dir] + (["--models", *models] if models else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=out_dir)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if not rows:
        raise SystemExit(f"{script} with {python} exported nothing: {proc.stderr.strip()[-2000:]}")
    return [(r["name"], r.get("file"), r.get("error", "")) for r in rows]


def ort_time(model, feed: dict, repeat: int) -> float:
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    sess.run(None, feed)  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def row(name: str, make, error: str, args) -> str:
    """One line of the table: compile, check against onnxruntime, time onnxruntime."""
    from compiler import compile_model
    from compiler.check import check_model, random_feeds
    from npu.modelfile import read_model

    if make is None:
        raise RuntimeError(f"export failed: {error}")
    model, size = make()
    t = time.perf_counter()
    data = compile_model(model, config=args.config, fmt=args.fmt)
    compile_s = time.perf_counter() - t
    manifest = read_model(data).manifest
    report = manifest["compiler"]["report"]
    macs = report["macs_npu"] + report["macs_host"]
    plan = [s["kind"] for s in manifest["plan"]]
    segs = f"{plan.count('npu')} npu/{plan.count('host')} host"
    res = check_model(model, args.config, args.fmt, inputs=args.inputs, seed=0, compiled=data)
    feed = random_feeds(model, 1, seed=0)[0]
    cpu_ms = ort_time(model, feed, args.repeat) * 1e3
    modeled_ms = res.latency_us / 1e3
    diff = f"{res.diff_cosine_min:.4f}" if res.diff_cosine_min is not None else "-"
    cos = f"{res.cosine_min:.4f}" + ("" if res.ok else " NaN/inf!")
    return (f"{name:<16} {size:>9} {macs / 1e9:>7.2f} {report['macs_npu'] / max(macs, 1):>9.1%} {segs:>12} "
            f"{modeled_ms:>10.2f} {cpu_ms:>10.2f} {modeled_ms / cpu_ms:>7.2f} {cos:>8} {diff:>11} {compile_s:>9.1f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=None, help=f"zoo models (default: {' '.join(DEFAULT)}), or with "
                    "--torch-python the names torch_export.py knows (default: all of them)")
    ap.add_argument("--onnx", nargs="*", default=[], help="ONNX files to benchmark instead of zoo models")
    ap.add_argument("--torch-python", default=None, help="a Python with torch/torchvision/transformers: export "
                    "with benchmarks/torch_export.py and benchmark the exports")
    ap.add_argument("--export-dir", default=None, help="where --torch-python writes (default: a temporary directory)")
    ap.add_argument("--config", default="brainslice-128")
    ap.add_argument("--format", dest="fmt", default=None, help="BFP format (default: the configuration's)")
    ap.add_argument("--inputs", type=int, default=2, help="random inputs per check (>= 2 for the input-sensitive cosine)")
    ap.add_argument("--repeat", type=int, default=5, help="onnxruntime runs timed per model")
    ap.add_argument("--reduced", action="store_true", help="small variants (2-layer hidden-128 Transformers, 64x64 CNNs)")
    args = ap.parse_args(argv)

    header = (f"{'model':<16} {'size':>9} {'GMACs':>7} {'NPU share':>9} {'segments':>12} {'modeled ms':>10} "
              f"{'ORT CPU ms':>10} {'ratio':>7} {'cosine':>8} {'input-sens.':>11} {'compile s':>9}")
    print(f"config {args.config}, format {args.fmt or 'default'}, {args.inputs} inputs; ratio = modeled NPU "
          f"latency / onnxruntime CPU time (the peer, measured in this run)")
    print(header)
    print("-" * len(header))
    if args.torch_python:
        import tempfile

        out_dir = args.export_dir or tempfile.mkdtemp(prefix="npu-torch-")
        os.makedirs(out_dir, exist_ok=True)
        jobs = [(n, (lambda p=p: load_onnx(p)) if p else None, err)
                for n, p, err in torch_exports(args.torch_python, os.path.abspath(out_dir), args.models)]
    elif args.onnx:
        jobs = [(os.path.splitext(os.path.basename(p))[0], lambda p=p: load_onnx(p), "") for p in args.onnx]
    else:
        jobs = [(n, lambda n=n: build(n, args.reduced), "") for n in (args.models or DEFAULT)]
    for name, make, error in jobs:
        try:
            print(row(name, make, error, args), flush=True)
        except Exception as exc:  # one model's failure is a row of the table, not the end of the run
            print(f"{name:<16} FAILED {type(exc).__name__}: {str(exc).splitlines()[0][:200]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
