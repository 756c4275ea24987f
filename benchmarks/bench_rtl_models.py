"""The compiled zoo models on the RTL against the simulator (issue 14: "the compiled zoo models that fit stay bit-
and cycle-exact on tiny, small and brainslice-128").

    python benchmarks/bench_rtl_models.py                        # tiny and small
    python benchmarks/bench_rtl_models.py --configs brainslice-128  # builds brainslice-128's RTL (minutes, GBs)
    python benchmarks/bench_rtl_models.py --models mlp lstm --configs small --json
    python benchmarks/bench_rtl_models.py --pipelined            # the pipelined machine: chains in flight

For each configuration and each zoo model whose weights fit that configuration's DRAM (the NPU part compiles; the
large CNNs and Transformers stream gigabytes of weights and take hours of RTL time, so they are left out), it
compiles the model (``compiler.compile_to_file``, seed 3), runs it with seeded random inputs on the simulator and
twice on the RTL (`npu rtl check`: a second run catches state a first run leaves behind) and prints the cycles of
both, whether every output bit matched, and the wall time.  The peer is the simulator: the cycle column's ratio
must be exactly 1.000.  Exit status 1 when any model differs.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: zoo models small enough for the RTL of every configuration named here
MODELS = ("tiny_cnn", "tiny_rnn", "digits", "digits_cnn", "digits_rnn", "mlp", "lstm", "gru", "lstm2")
#: the largest model per configuration the benchmark runs by default (RTL time grows with the model's cycles)
DEFAULT_MODELS = {"tiny": MODELS[:5], "small": MODELS[:6], "brainslice-128": MODELS}


def pipelined_config(name: str, tmp: Path) -> str:
    """The preset ``name`` as the pipelined machine (:data:`npu.config.PIPELINED_DESIGN`: chains in flight on
    the scoreboard, the DMA engine beside them, row slots, the MVM bypass), saved as ``<name>-pipelined.toml``
    so its programs and RTL build are its own; the file's path."""
    from npu.config import get_config

    config = get_config(name).as_pipelined()
    path = tmp / f"{config.name}.toml"
    config.save(path)
    return str(path)


def check(name: str, config: str, tmp: Path) -> dict:
    """Compile ``name`` for ``config`` (a preset or a configuration file) and run `npu rtl check` on it; the
    check's JSON with the model and wall."""
    from cli.main import main
    from compiler import compile_to_file
    from compiler.zoo import build

    path = tmp / f"{name}-{Path(config).stem}.npu"
    t0 = time.perf_counter()
    try:
        compile_to_file(build(name, seed=3), path, config=config)
    except Exception as exc:   # a model that does not compile for this configuration is reported, not fatal
        return {"model": name, "config": config, "error": f"{type(exc).__name__}: {exc}"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["rtl", "check", str(path), "--seed", "1", "--json"])
    result = json.loads(out.getvalue()) if out.getvalue().strip() else {}
    result.update(model=name, config=config, status=status, wall_s=round(time.perf_counter() - t0, 1))
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="*", default=["tiny", "small"])
    ap.add_argument("--models", nargs="*", default=None, help=f"zoo models (default per configuration; any of "
                                                             f"{', '.join(MODELS)})")
    ap.add_argument("--pipelined", action="store_true",
                    help="each configuration as the pipelined machine (npu.config.PIPELINED_DESIGN): chains in "
                         "flight, DMA beside compute, row slots, the MVM bypass")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as d:
        for preset in args.configs:
            config = pipelined_config(preset, Path(d)) if args.pipelined else preset
            for name in args.models or DEFAULT_MODELS.get(preset, MODELS[:5]):
                r = check(name, config, Path(d))
                r["config"] = preset + ("-pipelined" if args.pipelined else "")
                results.append(r)
                if not args.json:
                    if "error" in r:
                        print(f"{r['config']:<15} {name:<11} did not compile: {r['error'][:120]}", flush=True)
                        continue
                    ratio = r["rtl_cycles"] / r["sim_cycles"] if r.get("sim_cycles") else float("nan")
                    same = r["rtl_cycles"] == r["sim_cycles"] == r["rtl_cycles_second_run"]
                    print(f"{r['config']:<15} {name:<11} sim {r['sim_cycles']:>9,} cycles  RTL {r['rtl_cycles']:>9,} "
                          f"(x{ratio:.3f}, second run {r['rtl_cycles_second_run']:,})  "
                          f"bits {'exact' if r['bit_exact'] else 'DIFFER'}  cycles {'exact' if same else 'DIFFER'}"
                          f"  {r['wall_s']:.0f} s", flush=True)
                    if r.get("first_mismatch"):
                        print(f"    {r['first_mismatch']}")
    bad = [r for r in results if "error" not in r and not (r["bit_exact"] and r["rtl_cycles"] == r["sim_cycles"]
                                                          == r["rtl_cycles_second_run"])]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        ran = sum("error" not in r for r in results)
        print(f"{ran} model runs, {len(bad)} differ from the simulator")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
