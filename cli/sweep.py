"""``npu sweep SPEC`` and ``npu sweep plot RESULTS``: design-space exploration on Ray, and its pictures."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from cli import progress
from npu.errors import NpuError

EPILOG = """\
usage:
  npu sweep SPEC [-o DIR] [--local | --address ADDR] [--json]   run a sweep; tables to DIR
  npu sweep plot RESULTS [-o DIR] [--y throughput_ips] [--point N]   PNGs and index.html

examples:
  npu sweep examples/sweep.toml -o sweep-out              # local Ray on every core
  npu sweep examples/sweep.toml --local                   # serially in this process, no Ray
  npu sweep examples/sweep.toml --address auto            # an existing cluster (ray start --head)
  npu sweep plot sweep-out                                # sweep-out/index.html, pareto_*.png, ...

SPEC is TOML: [sweep] base, formats, constraints, fidelity, rtl_check; [[models]] zoo or onnx;
[space] fields as lists, {start, stop, step} ranges or {low, high} samples; [sample] method and count.
See docs/sweep.md.  Results are cached by content (~/.cache/npu-sweep or $NPU_SWEEP_CACHE): an
interrupted sweep resumes, and a re-run computes only new points.  Output: DIR/results.parquet,
results.csv (one row per point and model), layers.parquet (per layer) and sweep.json.
The cost axes are a resource proxy (MACs per cycle, on-chip memory bits), not an area estimate.
"""


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("sweep", help="explore NPU configurations for a set of models (Ray), and plot them",
                              description="Compile and time every model on every design point of a spec; "
                                          "`npu sweep plot RESULTS` draws Pareto fronts and writes an HTML page.",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", metavar="SPEC", help="sweep spec (.toml), or the word plot")
    p.add_argument("results", metavar="RESULTS", nargs="?", help="(plot) a results folder or results.parquet")
    p.add_argument("-o", "--output", type=Path,
                   help="folder to write (sweep: default SPEC-results; plot: default the results folder)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    run = p.add_argument_group("running a sweep")
    run.add_argument("--local", action="store_true", help="run serially in this process, without Ray")
    run.add_argument("--address", help="Ray cluster to use: auto, ray://host:port or host:port (default: a local Ray)")
    run.add_argument("--cpus", type=int, help="CPUs of the local Ray (default: all of this machine's)")
    run.add_argument("--cache", type=Path, help="cache folder (default ~/.cache/npu-sweep or $NPU_SWEEP_CACHE)")
    run.add_argument("--no-cache", action="store_true", help="compute everything and keep nothing")
    draw = p.add_argument_group("plotting (npu sweep plot RESULTS)")
    draw.add_argument("--y", default="latency_us", choices=("latency_us", "throughput_ips"),
                      help="performance axis (default latency_us)")
    draw.add_argument("--cost", action="append", help="cost axis; repeatable (default: macs_per_cycle and onchip_bits)")
    draw.add_argument("--point", type=int, help="point whose per-layer utilization to draw (default: the fastest)")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args) -> int:
    if args.spec == "plot":
        return cmd_plot(args)
    if args.results is not None:
        raise NpuError(f"unexpected argument {args.results!r} (did you mean `npu sweep plot {args.results}`?)")
    if args.local and args.address:
        raise NpuError("--local runs without Ray; give --local or --address, not both")
    from sweep.runner import execute, progress_bar

    bar = progress_bar() if progress.wanted(args) else None
    try:
        result = execute(args.spec, cache_dir=False if args.no_cache else args.cache, address=args.address,
                         local=args.local, num_cpus=args.cpus, progress=bar)
    finally:
        progress.close(bar)
    out = args.output or Path(f"{Path(args.spec).stem}-results")
    paths = result.save(out)
    df, s = result.results, result.stats
    fronts = _fronts(df)
    if args.json:
        print(json.dumps({"outputs": {k: str(v) for k, v in paths.items()}, "stats": s,
                          "pareto": {"x": "macs_per_cycle", "y": "latency_us",
                                     "points": json.loads(fronts.to_json(orient="records"))},
                          "rows": json.loads(df.to_json(orient="records"))}, indent=1))
        return 0
    print(f"sweep {s['name']}: {s['points']} points ({s['invalid_points']} invalid), {s['units']} runs: "
          f"{s['computed']} computed, {s['cached']} cached, {s['failed']} failed; {s['time_s']:.1f} s ({s['mode']})")
    failed = df[df["status"] != "ok"]
    for _, r in failed.drop_duplicates("error").head(5).iterrows():
        print(f"  point {r['point']} {r['model']}: {r['status']}: {r['error']}")
    if len(fronts):
        print("Pareto front of latency against MACs per cycle:")
        print(_table(fronts, df))
    print(f"wrote {paths['results']}, {paths['csv'].name}, {paths['layers'].name} ({len(df)} rows); "
          f"next: npu sweep plot {out}")
    return 0


def _fronts(df):
    from sweep.fronts import pareto

    return pareto(df[df["status"] == "ok"], "macs_per_cycle", "latency_us", by="model")


def _table(fronts, df) -> str:
    from sweep.figures import varying_fields

    cols = ["model", "point", "format", *varying_fields(df), "macs_per_cycle", "onchip_bits", "latency_us",
            "utilization"]
    heads = {"macs_per_cycle": "MACs/cycle", "onchip_bits": "on-chip Mbit", "latency_us": "latency us",
             "utilization": "util"}
    shown = {"onchip_bits": lambda v: f"{v / 1e6:,.1f}", "utilization": lambda v: f"{v:.1%}",
             "latency_us": lambda v: f"{v:,.1f}"}
    text = {c: [shown[c](v) if c in shown else f"{v:,}" if isinstance(v, int) else str(v)
                for v in fronts[c].tolist()] for c in cols}
    widths = {c: max([len(heads.get(c, c))] + [len(t) for t in text[c]]) for c in cols}
    lines = ["  ".join(f"{heads.get(c, c):<{widths[c]}}" for c in cols)]
    for i in range(len(fronts)):
        lines.append("  ".join(f"{text[c][i]:<{widths[c]}}" if c in ("model", "format") else
                               f"{text[c][i]:>{widths[c]}}" for c in cols))
    return "\n".join(lines)


def cmd_plot(args) -> int:
    from sweep.figures import plot

    if args.results is None:
        raise NpuError("npu sweep plot RESULTS: give the results folder (or results.parquet) that `npu sweep` wrote")
    out = plot(args.results, args.output, y=args.y, costs=args.cost, point=args.point)
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        for path in out["pngs"]:
            print(f"wrote {path}")
        print(f"wrote {out['html']} (open it in a browser)")
    return 0
