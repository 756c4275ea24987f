"""Random RTL-vs-simulator checking at scale: programs, simulated cycles, wall time, cycles per wall second,
mismatches and functional coverage, on the C++ bench (rtl/harness.py), against the cocotb bench and the old
one-process-per-program path measured in the same run.

    python benchmarks/bench_rtl_random.py       # 10,000 on tiny, 2,000 on small, 1,000 tiny-sb8, 400 small-sb8
    python benchmarks/bench_rtl_random.py --tiny 500 --small 100 --pipelined 100 --small-pipelined 0
    python benchmarks/bench_rtl_random.py --json > rtl_random.json

Each configuration runs on one Verilator build and ``--jobs`` driver processes of the C++ bench (rtl/harness.py,
through RtlMachine(bench="harness"); each process its own RTL instance and simulator, the seeds dealt round
robin, the coverage merged): per program, reset the registers, load what changed, run, read back every word of
every data memory, compare with the simulator (rtl.check.Checker: the output queue, every memory word, every
step's completion cycle, the total), and sample the coverage bins (rtl/coverage.py).  Memories carry over from
program to program on both machines, so a program loads only the regions it brings
(``random_case(data="partial")``).  Programs are drawn by rtl.randprog.random_case (random lengths up to
hundreds of steps; the pipelined designs get random_pipelined_program's), one in ``--error-every`` is an error
program (rtl.randprog.random_error_case).

Peers measured in the same run, on the same seeds (the first ``--cocotb`` programs of each configuration, a
third of them on small):

* the cocotb bench on one process (rtl.cosim.Session, the reference and the path every check took before the
  C++ bench), and the C++ bench on one process over the same programs; ``x_cocotb`` is a row's cycles per
  second against the cocotb row's;
* the path before that: a new cocotb/Verilator process per program (``RtlMachine(persistent=False)``) on the
  old generator's 4-step programs, the ones the issue's 60 simulated cycles per wall second were measured on
  (``x_measured_baseline``; ``x_issue_60`` against the issue's figure).

``--equivalence N``: N random programs (half streamed) and one error program of each kind as bench cases on a
fresh cocotb process and a fresh C++ process of each build, every result field compared (rtl.harness.
compare_benches).  Wall time counts everything: drawing programs, the simulator, the RTL, comparing, coverage.
The simulator's MVM runs on its float64 path (NPU_SIM_MVM=float64, exact like the digit GEMMs and cheaper for
one small program).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
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
            "cycles_per_s": round(cycles / wall, 1), "exact": exact, "mismatches": programs - exact}


def _check_slice(config, indices: list[tuple[int, int]], pipelined: bool, error_every: int, progress: bool,
                 minutes: float | None, bench: str, label: str) -> dict:
    """The programs ``indices`` ((index in the run, seed) pairs; every ``error_every``-th index an error program)
    on one process of ``bench``, memories carrying over from program to program; stop after ``minutes``."""
    from rtl.backend import RtlMachine
    from rtl.check import Checker
    from rtl.coverage import Coverage
    from rtl.randprog import ERROR_KINDS, random_case, random_error_case

    m = RtlMachine(config, bench=bench)
    cov = Coverage(config, m.params.queue_depth)
    ck = Checker(m, coverage=cov)
    kinds = sorted(ERROR_KINDS)
    mismatches, errors, ran, t_rtl = [], 0, 0, 0.0
    t0 = time.perf_counter()
    for k, s in indices:
        if minutes is not None and time.perf_counter() - t0 > 60 * minutes:
            print(f"  {label}: stopped after {minutes} minutes (--minutes)", file=sys.stderr, flush=True)
            break
        ran += 1
        if error_every and k % error_every == error_every - 1:
            c = ck.check_error(random_error_case(config, s, kinds[(k // error_every) % len(kinds)],
                                                 m.params.queue_depth))
            errors += 1
        else:
            case = random_case(config, s, None, pipelined, data="full" if ck.sim is None else "partial",
                               verify=False)
            c = ck.check(case)
        if m.last_result is not None:
            t_rtl += m.last_result["wall_s"]
        if c is not None and not c.exact:
            mismatches.append({"seed": s, "error_kind": c.error, "first": c.first_mismatch,
                               "mismatches": [asdict(x) for x in c.mismatches[:5]]})
            print(f"  MISMATCH {config.name} seed {s}: {c.first_mismatch}", file=sys.stderr, flush=True)
        if progress and ran % 500 == 0:
            w = time.perf_counter() - t0
            print(f"  {label}: {ran}/{len(indices)} programs, {ck.cycles:,} cycles, {w:.0f} s, "
                  f"{ck.cycles / w:,.0f} cycles/s, {len(mismatches)} mismatches", file=sys.stderr, flush=True)
    m.close()
    return {"ran": ran, "skipped": ck.skipped, "errors": errors, "cycles": ck.cycles, "rtl_s": t_rtl,
            "mismatches": mismatches, "coverage": cov, "wall_s": time.perf_counter() - t0}


def run(config, programs: int, seed: int, pipelined: bool, error_every: int, progress: bool,
        minutes: float | None = None, bench: str = "harness", jobs: int = 1) -> tuple[dict, dict]:
    """``programs`` random programs (every ``error_every``-th an error program) on ``jobs`` processes of
    ``bench`` (each its own RTL instance and simulator, the seeds dealt round robin; the coverage merged); stop
    early after ``minutes`` (the row says how many ran)."""
    indices = list(enumerate(range(seed, seed + programs)))
    jobs = max(1, min(jobs, programs))
    t0 = time.perf_counter()
    if jobs == 1:
        parts = [_check_slice(config, indices, pipelined, error_every, progress, minutes, bench,
                              f"{config.name} ({bench})")]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_check_slice, config, indices[j::jobs], pipelined, error_every, progress,
                                   minutes, bench, f"{config.name} ({bench}, process {j + 1}/{jobs})")
                       for j in range(jobs)]
            parts = [f.result() for f in futures]
    wall = time.perf_counter() - t0
    cov = parts[0]["coverage"]
    for p in parts[1:]:
        cov.merge(p["coverage"])
    rep = cov.report()
    cycles = sum(p["cycles"] for p in parts)
    mismatches = [x for p in parts for x in p["mismatches"]]
    path = ("C++ bench" if bench == "harness" else "cocotb bench") + \
        (", one process" if jobs == 1 else f", {jobs} processes")
    row = {"config": config.name, "path": path, "programs": sum(p["ran"] - p["skipped"] for p in parts),
           "errors": sum(p["errors"] for p in parts), "skipped": sum(p["skipped"] for p in parts),
           "cycles": cycles, "wall_s": round(wall, 1), "rtl_bench_s": round(sum(p["rtl_s"] for p in parts), 1),
           "cycles_per_s": round(cycles / wall, 1), "mismatches": len(mismatches),
           "bins": f"{rep['hit']}/{rep['bins']}", "coverage_pct": rep["percent"], "mismatch_list": mismatches[:20]}
    return row, rep


def equivalence(config, programs: int, seed: int, pipelined: bool) -> dict:
    """``programs`` random programs and the error programs on both benches (rtl.harness.compare_benches)."""
    from rtl.backend import RtlMachine
    from rtl.harness import compare_benches, random_bench_cases

    m = RtlMachine(config, bench="harness")
    cases = random_bench_cases(m, range(seed, seed + programs), pipelined=pipelined)
    t0 = time.perf_counter()
    ref, _, diffs = compare_benches(m.build, cases)
    for d in diffs[:10]:
        print(f"  BENCHES DIFFER {config.name}: {d}", file=sys.stderr, flush=True)
    return {"config": config.name, "cases": len(cases), "streamed": sum(bool(c["stream"]) for c in cases),
            "hung": sum(r["hung"] for r in ref), "flagged": sum(bool(r["error"]) for r in ref),
            "commits": sum(len(r["commits"]) for r in ref), "cycles": sum(r["cycles"] for r in ref),
            "words_read": sum(len(w) for r in ref for w in r["reads"]), "differences": len(diffs),
            "wall_s": round(time.perf_counter() - t0, 1)}


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
    ap.add_argument("--small-pipelined", type=int, default=400, help="... on small with 8 entries (default 400)")
    ap.add_argument("--cocotb", type=int, default=60,
                    help="programs on the cocotb bench per configuration, the same seeds (default 60; small ones "
                         "a third)")
    ap.add_argument("--baseline", type=int, default=6,
                    help="programs on the old process-per-program path (default 6)")
    ap.add_argument("--equivalence", type=int, default=40,
                    help="random programs run on both benches and compared field by field, per configuration "
                         "(default 40; 0 skips)")
    ap.add_argument("--jobs", type=int, default=2,
                    help="processes for the big runs (default 2, the machine's cores; each its own RTL instance "
                         "and simulator, the seeds dealt round robin)")
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
        base = [baseline(tiny, args.baseline, args.seed, 4)]
    rows, reports, equiv = [], [], []
    for config, n, pipelined in ((tiny, args.tiny, False), (small, args.small, False),
                                 (tiny.with_scoreboard(8), args.pipelined, True),
                                 (small.with_scoreboard(8), args.small_pipelined, True)):
        if not n:
            continue
        if args.equivalence:
            k = args.equivalence if config.name.startswith("tiny") else max(1, args.equivalence // 3)
            equiv.append(equivalence(config, k, args.seed + 50_000, pipelined))
        if args.cocotb:
            # the same first programs on the cocotb bench and on the C++ bench, one process each
            m = min(n, args.cocotb if config.name.startswith("tiny") else max(1, args.cocotb // 3))
            peer, _ = run(config, m, args.seed, pipelined, args.error_every, progress=True, bench="cocotb")
            same, _ = run(config, m, args.seed, pipelined, args.error_every, progress=True)
            same["x_cocotb"] = round(same["cycles_per_s"] / peer["cycles_per_s"], 1)
            rows += [peer, same]
        row, rep = run(config, n, args.seed, pipelined, args.error_every, progress=True, minutes=args.minutes,
                       jobs=args.jobs)
        if args.cocotb:
            row["x_cocotb"] = round(row["cycles_per_s"] / peer["cycles_per_s"], 1)
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
                            "bins", "coverage_pct", "x_cocotb", "x_measured_baseline", "x_issue_60"])
        if equiv:
            print("\nthe same bench cases on the cocotb and the C++ bench (every result field compared):")
            table(equiv, ["config", "cases", "streamed", "hung", "flagged", "commits", "cycles", "words_read",
                          "differences", "wall_s"])
        from rtl.coverage import report_table

        for rep in reports:
            print()
            print(report_table(rep))
        print(f"\ntotal wall time {time.perf_counter() - t0:.0f} s")
    finally:
        sys.stdout = stdout
    if args.json:
        print(json.dumps({"baseline": base, "runs": rows, "equivalence": equiv, "coverage": reports}, indent=2))
    ok = all(r["mismatches"] == 0 for r in rows) and all(e["differences"] == 0 for e in equiv)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
