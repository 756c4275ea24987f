"""RTL benchmark: Verilator build time, simulated cycles per second, timing-model error; Verilog generation of
the large presets.

    python benchmarks/bench_rtl.py                 # tiny
    python benchmarks/bench_rtl.py --small         # also build and time `small` (directed + random programs)
    python benchmarks/bench_rtl.py --large         # also generate brainslice-128 and brainwave-s10 (no build)
    NPU_RTL_RANDOM=100 python benchmarks/bench_rtl.py

Prints a table per part.  Cycles/s counts only the program's simulation (from
start to busy falling), not loading memories through the load port.  Build
seconds are those of the build that filled the cache (``build.json``), so a
cached build reports its original time.  The large presets are only generated
(`npu rtl generate` in a child process: wall time, its peak resident memory,
the Verilog's size); they are far too large to Verilate on a laptop.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from npu.asm import assemble  # noqa: E402
from npu.config import PRESETS  # noqa: E402
from npu.program import Program  # noqa: E402

LARGE = ("brainslice-128", "brainwave-s10")


def long_program(config):
    """A loop-heavy program: a windowed MVM with MFU ops over many iterations."""
    return Program(config, assemble(
        "s_wr rows 2\ns_wr cols 2\ns_wr iter_outer 8\ns_wr iter_inner 32\n"
        "v_rd zero 0\nmv_mul 0\nvv_add 0\nv_sigm\nv_wr ivrf 0 so=0 si=0\nend_chain\n"
        "s_wr rows 1\ns_wr cols 1\nv_rd ivrf 0\nv_relu\nv_wr dram 0\nend_chain\n"))


def bench(name: str, random_n: int) -> dict:
    from rtl.backend import RtlMachine
    from rtl.check import compare
    from rtl.randprog import random_case
    from tests.rtl.test_rtl import DIRECTED, directed

    config = PRESETS[name]
    t0 = time.perf_counter()
    m = RtlMachine(config)
    build_s = m.build.build_seconds or json.loads((m.build.directory / "build.json").read_text())["seconds"]
    res = m.run(long_program(config))
    cps = res.cycles / res.sim_time_s if res.sim_time_s else float("nan")
    errs, exact = [], 0
    cases = [directed(src, config=config) for src in DIRECTED.values()]
    cases += [random_case(config, s) for s in range(random_n)]
    for case in cases:
        c = compare(case, m)
        exact += c.bit_exact and c.commits_rtl == c.commits_sim
        errs.append(abs(c.cycle_error))
    return {"config": name, "build_s": round(build_s, 1), "cycles": res.cycles, "sim_s": round(res.sim_time_s, 4),
            "cycles_per_s": round(cps), "cases": len(cases), "exact": exact,
            "mean_err": float(np.mean(errs)) if errs else float("nan"),
            "max_err": float(np.max(errs)) if errs else float("nan"), "wall_s": round(time.perf_counter() - t0, 1)}


def generate(name: str) -> dict:
    """`npu rtl generate` of one preset in a child process: wall seconds, peak RSS, Verilog size."""
    with tempfile.TemporaryDirectory(prefix=f"npu-gen-{name}-") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "rtl", "generate", "--config", name, "-o", out],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        err = proc.stderr.read()
        proc.stderr.close()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            raise RuntimeError(f"npu rtl generate --config {name} failed:\n{err[-2000:]}")
        rep = json.loads((Path(out) / "report.json").read_text())
    return {"config": name, "generate_s": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024),
            "verilog_kib": round(rep["verilog_bytes"] / 1024), "top_convert_s": rep["convert_seconds"]["npu_top"],
            "macs_per_cycle": rep["macs_per_cycle"], "memory_mb": round(rep["memory_bits"] / 8e6, 1)}


def table(rows: list[dict], head: list[str]) -> None:
    print(" | ".join(f"{h:>14}" for h in head))
    for r in rows:
        print(" | ".join(f"{(f'{r[h]:.2%}' if h.endswith('err') else r[h])!s:>14}" for h in head))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="also build and time the small preset")
    ap.add_argument("--large", action="store_true", help=f"also generate (not build) {', '.join(LARGE)}")
    args = ap.parse_args()
    random_n = int(os.environ.get("NPU_RTL_RANDOM", 20))
    rows = [bench("tiny", random_n)] + ([bench("small", random_n)] if args.small else [])
    table(rows, ["config", "build_s", "cycles", "sim_s", "cycles_per_s", "cases", "exact", "mean_err", "max_err"])
    if args.large:
        print()
        table([generate(name) for name in LARGE],
              ["config", "generate_s", "top_convert_s", "peak_rss_mb", "verilog_kib", "macs_per_cycle", "memory_mb"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
