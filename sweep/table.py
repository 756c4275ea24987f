"""The results tables: one row per (point, model), and one per (point, model, layer); saving and loading."""
from __future__ import annotations

import json
from pathlib import Path

from sweep import space
from sweep.facts import facts

TIMING = ("latency_us", "throughput_ips", "utilization", "npu_mac_share", "weight_mode", "total_cycles",
          "compile_time_s", "macs_npu", "macs_host", "instructions", "weight_tiles")
FIDELITY = ("cosine_min", "max_abs_err", "max_rel_err", "top1_agreement", "top5_agreement")
RTL = ("rtl_programs", "rtl_bit_exact", "rtl_max_cycle_error", "rtl_mean_cycle_error")
RUN = ("node_id", "hostname", "cached", "eval_time_s")
LAYER_COLUMNS = ("point", "model", "format", "layer", "op", "target", "macs", "tiles", "cycles", "utilization")
RESULTS, LAYERS, CSV, META = "results.parquet", "layers.parquet", "results.csv", "sweep.json"


def format_label(weight: str, act: str) -> str:
    return weight if weight == act else f"{weight}/{act}"


def build(spec, points, records: dict) -> tuple:
    """(results, layers) DataFrames from the points and the records by (kind, point, model label)."""
    import pandas as pd

    rows, layer_rows = [], []
    for p in points:
        fmt = format_label(p.fields["weight_format"], p.fields["act_format"])
        config = {f: json.dumps(p.fields[f]) if f == "mfus" else p.fields[f] for f in space.FIELDS}
        derived = facts(p.config) if p.config is not None else {}
        rtl = records.get(("rtl", p.index, None))
        for m in spec.models:
            row = {"point": p.index, "model": m.label, "format": fmt}
            t = records.get(("timing", p.index, m.label))
            if p.config is None:
                row.update(status="invalid", error=p.error)
            else:
                row.update(status=t["status"], error=t["error"])
                row.update({k: t.get(k) for k in TIMING})
            if spec.fidelity:
                f = records.get(("fidelity", p.index, m.label)) or {}
                row.update({k: f.get(k) for k in FIDELITY}, fidelity_status=f.get("status", "skipped"),
                           fidelity_error=f.get("error"))
            if spec.rtl_check:
                r = rtl or {}
                row.update({k: r.get(k) for k in RTL}, rtl_status=r.get("status", "skipped"), rtl_error=r.get("error"))
            row.update(derived)
            row.update(config)
            row["point_key"] = p.key
            row.update({k: (t or {}).get(k) for k in RUN})
            rows.append(row)
            for L in (t or {}).get("layers") or []:
                layer_rows.append({"point": p.index, "model": m.label, "format": fmt, **L})
    results = pd.DataFrame(rows)
    for c in results.columns:  # integers and flags keep their type where invalid points leave gaps
        values = [r[c] for r in rows if r.get(c) is not None]
        if values and len(values) < len(rows):
            if all(isinstance(v, bool) for v in values):
                results[c] = results[c].astype("boolean")
            elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                results[c] = results[c].astype("Int64")
    layers = pd.DataFrame(layer_rows, columns=list(LAYER_COLUMNS))
    return results, layers


def save(results, layers, directory: str | Path, meta: dict) -> dict[str, Path]:
    """Write results.parquet, results.csv, layers.parquet and sweep.json (the run's facts) into ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths = {"results": d / RESULTS, "csv": d / CSV, "layers": d / LAYERS, "meta": d / META}
    results.to_parquet(paths["results"], index=False)
    results.to_csv(paths["csv"], index=False)
    layers.to_parquet(paths["layers"], index=False)
    paths["meta"].write_text(json.dumps(meta, indent=1) + "\n")
    return paths


def load(path: str | Path) -> tuple:
    """(results, layers or None, meta) from a results folder or its results.parquet / results.csv."""
    import pandas as pd

    from sweep.errors import SweepError

    p = Path(path)
    folder = p if p.is_dir() else p.parent
    main = folder / RESULTS if p.is_dir() else p
    if not main.exists() and p.is_dir() and (folder / CSV).exists():
        main = folder / CSV
    if not main.exists():
        raise SweepError(f"{p}: no sweep results here (expected {RESULTS} or {CSV} from `npu sweep`)")
    try:
        results = pd.read_csv(main) if main.suffix == ".csv" else pd.read_parquet(main)
    except Exception as exc:  # noqa: BLE001 - pyarrow and pandas raise many kinds for a bad file
        raise SweepError(f"{main}: cannot read the results: {exc}") from None
    if "point" not in results or "model" not in results:
        raise SweepError(f"{main}: not a sweep results table (no point and model columns)")
    layers = pd.read_parquet(folder / LAYERS) if (folder / LAYERS).exists() else None
    meta = json.loads((folder / META).read_text()) if (folder / META).exists() else {}
    return results, layers, meta
