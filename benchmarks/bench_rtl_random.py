"""Random RTL-vs-simulator checking at scale: programs, simulated cycles, wall time, cycles per wall second,
mismatches and functional coverage, against the old one-process-per-program path measured in the same run.

    python benchmarks/bench_rtl_random.py                         # 10,000 on tiny, 2,000 on small, pipelined
    python benchmarks/bench_rtl_random.py --tiny 500 --small 100 --pipelined 100 --small-pipelined 0
    python benchmarks/bench_rtl_random.py --json > rtl_random.json

Each configuration runs on one Verilator build and ONE simulator process (rtl.cosim.Session): per program,
reset the registers, load what changed, run, read back every word of every data memory, compare with the
simulator (rtl.check.Checker: the output queue, every memory word, every step's completion cycle, the total),
and sample the coverage bins (rtl/coverage.py).  Memories carry over from program to program on both machines,
so a program loads only the regions it brings (``random_case(data="partial")``).  Programs are drawn by
rtl.randprog.random_case (random lengths up to hundreds of steps; the pipelined designs get
random_pipelined_program's), one in ``--error-every`` is an error program (rtl.randprog.random_error_case).

The baseline is the path every check took before: a new cocotb/Verilator process per program
(``RtlMachine(persistent=False)``) on the old generator's programs (4 steps), the ones the issue's 60
simulated cycles per wall second were measured on, and on this run's program distribution.  Wall time counts
everything: drawing programs, the simulator, the RTL, comparing, coverage.  The simulator's MVM runs on its
float64 path (NPU_SIM_MVM=float64, exact like the digit GEMMs and cheaper for one small program).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NPU_SIM_MVM", "float64")
os.environ.setdefault("NPU_SIM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from npu.config import PRESETS  # noqa: E402

#: The figure of issue 14 ("about 60 simulated cycles per wall second" with a process per program).
ISSUE_BASELINE = 60.0


def baseline(config, programs: int, seed: int, chains) -> dict:
    """The old path: one simulator process per program (rtl.check.compare on a non-persistent machine)."""
    from rtl.backend import RtlMachine
    from rtl.check import compare
    from rtl.randprog import random_case

    m = RtlMachine(config, persistent=False, read_all=False)
    cycles, exact = 0, 0
    t0 = time.perf_counter()
    for s in range(seed, seed + programs):
        c = compare(random_case(config, s, chains), m)
        cycles += c.rtl_cycles
        exact += c.exact
    wall = time.perf_counter() - t0
    return {"config": config.name, "path": f"process per program ({'4 steps' if chains else 'random lengths'})",
            "programs": programs, "cycles": cycles, "wall_s": round(wall, 1),
            "cycles_per_s": round(cycles / wall, 1), "exact": exact}


def run(config, programs: int, seed: int, pipelined: bool, error_every: int, progress: bool,
        minutes: float | None = None) -> tuple[dict, dict]:
    """``programs`` random programs (every ``error_every``-th an error program) on one simulator process; stop
    early after ``minutes`` (the row says how many ran)."""
    from rtl.backend import RtlMachine
    from rtl.check import Checker
    from rtl.coverage import Coverage
    from rtl.randprog import ERROR_KINDS, random_case, random_error_case

    m = RtlMachine(config)
    cov = Coverage(config, m.params.queue_depth)
    ck = Checker(m, coverage=cov)
    kinds = sorted(ERROR_KINDS)
    mismatches, errors = [], 0
    t0 = time.perf_counter()
    t_rtl = 0.0
    ran = 0
    for k, s in enumerate(range(seed, seed + programs)):
        if minutes is not None and time.perf_counter() - t0 > 60 * minutes:
            print(f"  {config.name}: stopped after {minutes} minutes (--minutes)", file=sys.stderr, flush=True)
            break
        ran += 1
        if error_every and k % error_every == error_every - 1:
            c = ck.check_error(random_error_case(config, s, kinds[errors % len(kinds)], m.params.queue_depth))
            errors += 1
        else:
            case = random_case(config, s, None, pipelined, data="full" if ck.sim is None else "partial",
                               verify=False)
            c = ck.check(case)
        if m.last_result is not None:
            t_rtl += m.last_result["wall_s"]
        if c is not None and not c.exact:
            mismatches.append({"seed": s, "error_kind": c.error, "first": c.first_mismatch})
            print(f"  MISMATCH {config.name} seed {s}: {c.first_mismatch}", file=sys.stderr, flush=True)
        if progress and (k + 1) % 200 == 0:
            w = time.perf_counter() - t0
            print(f"  {config.name}: {k + 1}/{programs} programs, {ck.cycles:,} cycles, {w:.0f} s, "
                  f"{ck.cycles / w:,.0f} cycles/s, {len(mismatches)} mismatches", file=sys.stderr, flush=True)
    wall = time.perf_counter() - t0
    m.close()
    rep = cov.report()
    return ({"config": config.name, "path": "one process (Session)", "programs": ran - ck.skipped,
             "errors": errors, "skipped": ck.skipped, "cycles": ck.cycles, "wall_s": round(wall, 1),
             "rtl_bench_s": round(t_rtl, 1), "cycles_per_s": round(ck.cycles / wall, 1),
             "mismatches": len(mismatches), "coverage_pct": rep["percent"], "mismatch_list": mismatches[:20]},
            rep)


def table(rows: list[dict], head: list[str]) -> None:
    print(" | ".join(f"{h:>14}" for h in head))
    for r in rows:
        print(" | ".join(f"{r.get(h, '')!s:>14}" for h in head))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", type=int, default=10_000, help="random programs on tiny (default 10,000)")
    ap.add_argument("--small", type=int, default=2_000, help="random programs on small (default 2,000)")
    ap.add_argument("--pipelined", type=int, default=1_000,
                    help="random pipelined programs on tiny with 8 scoreboard entries (default 1,000)")
    ap.add_argument("--small-pipelined", type=int, default=200, help="... on small with 8 entries (default 200)")
    ap.add_argument("--baseline", type=int, default=6, help="programs on the old path, per kind (default 6)")
    ap.add_argument("--error-every", type=int, default=25, help="one error program in N (default 25)")
    ap.add_argument("--seed", type=int, default=100_000, help="first seed (default 100,000: not the tests')")
    ap.add_argument("--minutes", type=float, default=None,
                    help="stop each configuration after this many minutes (the table says how many programs ran)")
    ap.add_argument("--json", action="store_true", help="print JSON (the table and coverage go to stderr)")
    args = ap.parse_args()
    tiny, small = PRESETS["tiny"], PRESETS["small"]
    t0 = time.perf_counter()
    base = []
    if args.baseline:
        base = [baseline(tiny, args.baseline, args.seed, 4), baseline(tiny, args.baseline, args.seed, None)]
    rows, reports = [], []
    for config, n, pipelined in ((tiny, args.tiny, False), (small, args.small, False),
                                 (tiny.with_scoreboard(8), args.pipelined, True),
                                 (small.with_scoreboard(8), args.small_pipelined, True)):
        if n:
            row, rep = run(config, n, args.seed, pipelined, args.error_every, progress=True, minutes=args.minutes)
            rows.append(row)
            reports.append(rep)
    ref = base[0]["cycles_per_s"] if base else None
    for r in rows:
        r["x_measured_baseline"] = round(r["cycles_per_s"] / ref, 1) if ref else None
        r["x_issue_60"] = round(r["cycles_per_s"] / ISSUE_BASELINE, 1)
    out = sys.stderr if args.json else sys.stdout
    stdout, sys.stdout = sys.stdout, out
    try:
        table(base + rows, ["config", "path", "programs", "cycles", "wall_s", "cycles_per_s", "mismatches",
                            "coverage_pct", "x_measured_baseline", "x_issue_60"])
        from rtl.coverage import report_table

        for rep in reports:
            print()
            print(report_table(rep))
        print(f"\ntotal wall time {time.perf_counter() - t0:.0f} s")
    finally:
        sys.stdout = stdout
    if args.json:
        print(json.dumps({"baseline": base, "runs": rows, "coverage": reports}, indent=2))
    return 0 if all(r["mismatches"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
