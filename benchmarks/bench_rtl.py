"""RTL benchmark: Verilator build time, simulated cycles per second, timing-model error.

    python benchmarks/bench_rtl.py                 # tiny
    python benchmarks/bench_rtl.py --small         # also build and time `small` (up to 10 random programs)
    NPU_RTL_RANDOM=100 python benchmarks/bench_rtl.py

Prints a table.  Cycles/s counts only the program's simulation (from start to
busy falling), not loading memories through the load port.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from npu.asm import assemble  # noqa: E402
from npu.config import PRESETS  # noqa: E402
from npu.program import Program  # noqa: E402


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
    cases = [directed(src) for src in DIRECTED.values()] if name == "tiny" else []  # directed ones are tiny's
    cases += [random_case(config, s) for s in range(random_n)]
    for case in cases:
        c = compare(case, m)
        exact += c.bit_exact
        errs.append(abs(c.cycle_error))
    return {"config": name, "build_s": round(build_s, 1), "cycles": res.cycles, "sim_s": round(res.sim_time_s, 4),
            "cycles_per_s": round(cps), "cases": len(cases), "bit_exact": exact,
            "mean_err": float(np.mean(errs)) if errs else float("nan"),
            "max_err": float(np.max(errs)) if errs else float("nan"), "wall_s": round(time.perf_counter() - t0, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="also build and time the small preset")
    args = ap.parse_args()
    random_n = int(os.environ.get("NPU_RTL_RANDOM", 20))
    rows = [bench("tiny", random_n)] + ([bench("small", min(random_n, 10))] if args.small else [])
    head = ["config", "build_s", "cycles", "sim_s", "cycles_per_s", "cases", "bit_exact", "mean_err", "max_err"]
    print(" | ".join(f"{h:>12}" for h in head))
    for r in rows:
        print(" | ".join(f"{(f'{r[h]:.2%}' if h.endswith('err') else r[h])!s:>12}" for h in head))
    return 0


if __name__ == "__main__":
    sys.exit(main())
