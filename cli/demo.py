"""`npu demo`: the seed's path end to end on the simulator.

Builds ResNet-50 from the model zoo, compiles it for brainslice-128, scores a
sample image (scikit-learn's bundled ``china.jpg``, used from the installed
package) and prints the top-5 ImageNet labels with the modeled device latency
and utilization.  Also runs the hand-written assembly examples.
"""
from __future__ import annotations

import argparse
import runpy
import tempfile
import time
from pathlib import Path

from npu.errors import NpuError


def add_commands(sub) -> None:
    p = sub.add_parser("demo", help="the seed's path: zoo ResNet-50 -> compile -> score an image on the simulator",
                       description="Build a zoo model, compile it, score a sample JPEG on the simulator and print "
                                   "the top-5 labels with modeled latency and utilization.",
                       epilog="examples:\n  npu demo\n  npu demo --input-size 64       # quicker, smaller images\n"
                              "  npu demo --config brainwave-s10 --keep out/",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet50", help="zoo model (default: resnet50)")
    p.add_argument("--config", default="brainslice-128", help="NPU configuration (default: brainslice-128)")
    p.add_argument("--input-size", type=int, help="image size H=W (default: the model's, 224)")
    p.add_argument("--keep", metavar="DIR", help="keep the .onnx and .npu files in DIR")
    p.add_argument("--no-examples", action="store_true", help="skip the hand-written assembly examples")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    if not args.no_examples:
        run_examples()
    print(f"--- {args.model} on {args.config}")
    run_demo(args.model, args.config, args.input_size, workdir=args.keep)
    return 0


def sample_image() -> Path:
    import sklearn.datasets

    path = Path(sklearn.datasets.__file__).parent / "images" / "china.jpg"
    if not path.exists():
        raise NpuError(f"sample image not found at {path}")
    return path


def run_demo(model: str = "resnet50", config: str = "brainslice-128", input_size: int | None = None,
             seed: int = 0, workdir: str | None = None) -> dict:
    """Run the seed's path; the .onnx and .npu files go to ``workdir`` (kept) or a temporary folder."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="npu-demo-") as tmp:
            return _run_demo(model, config, input_size, seed, Path(tmp))
    return _run_demo(model, config, input_size, seed, Path(workdir))


def _run_demo(model: str, config: str, input_size: int | None, seed: int, out: Path) -> dict:
    from compiler import compile_model
    from compiler.zoo import build
    from npu.modelfile import read_model
    from runtime.executor import Executor
    from runtime.labels import top_k
    from runtime.preprocess import ImageConfig, preprocess_image

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    onnx_model = build(model, seed=seed, input_size=input_size)
    onnx_path = out / f"{model}.onnx"
    import onnx

    onnx.save(onnx_model, onnx_path)
    print(f"[1/3] zoo: built {model} -> {onnx_path} ({time.perf_counter() - t0:.1f} s)")
    t0 = time.perf_counter()
    npu_path = out / f"{model}.npu"
    npu_path.write_bytes(compile_model(str(onnx_path), config=config))
    print(f"[2/3] compile: {config} -> {npu_path} ({time.perf_counter() - t0:.1f} s)")
    t0 = time.perf_counter()
    executor = Executor(read_model(npu_path), backend="sim")
    spec = executor.inputs[0]
    image_config = ImageConfig.from_manifest(executor.manifest, spec)
    x = preprocess_image(sample_image().read_bytes(), image_config)[None]
    outputs, stats = executor.run({spec.name: x})
    print(f"[3/3] run: {sample_image().name} on the simulator ({time.perf_counter() - t0:.1f} s wall)")
    logits = next(iter(outputs.values()))
    top = top_k(logits, 5, labels=executor.manifest.get("preprocessing", {}).get("labels"))
    print("top-5 (the zoo's weights are seeded, not trained: the labels show the path works, not a prediction):")
    for index, label, p in top:
        print(f"  {p:7.2%}  {index:4d} {label}")
    print(f"modeled device latency {stats.latency_us / 1000:.3f} ms at {executor.manifest['config']['clock_mhz']:g} MHz, "
          f"{stats.npu_cycles:,} cycles, utilization {100 * stats.utilization:.1f} % of {stats.macs / 1e9:.2f} G MACs")
    return {"top5": top, "latency_us": stats.latency_us, "utilization": stats.utilization}


def run_examples() -> None:
    root = Path(__file__).resolve().parents[1] / "examples"
    for name in ("matvec_bias_relu.py", "gru_cell.py"):
        if (root / name).exists():
            print(f"--- examples/{name}")
            runpy.run_path(str(root / name), run_name="__main__")
