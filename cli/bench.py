"""`npu bench`: run one of the benchmark scripts of benchmarks/ (they ship with the source tree)."""
from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

from npu.errors import NpuError

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def add_commands(sub) -> None:
    p = sub.add_parser("bench", help="run a benchmark script from benchmarks/",
                       description="Run benchmarks/bench_NAME.py (each prints a table and its ratio against a "
                                   "named peer, measured in the same run). Without NAME, lists them.",
                       epilog="examples:\n  npu bench\n  npu bench sim --repeat 3\n  npu bench serving",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", help="benchmark name (bench_NAME.py)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    p.set_defaults(func=run_bench)


def run_bench(args) -> int:
    scripts = {p.stem[len("bench_"):]: p for p in sorted(BENCHMARKS.glob("bench_*.py"))}
    if not scripts:
        raise NpuError(f"no benchmarks found in {BENCHMARKS} (they ship with the source tree, not the wheel)")
    if not args.name:
        for name, path in scripts.items():
            doc = (path.read_text().split('"""')[1].strip().splitlines() or [""])[0]
            print(f"{name:12} {doc}")
        return 0
    if args.name not in scripts:
        raise NpuError(f"unknown benchmark {args.name!r}; one of {', '.join(scripts)}")
    sys.argv = [str(scripts[args.name])] + list(args.args)
    runpy.run_path(str(scripts[args.name]), run_name="__main__")
    return 0
