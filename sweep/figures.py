"""Pictures of a sweep: PNGs drawn with matplotlib's Agg renderer (no display needed) and one self-contained
HTML page that embeds them beside a sortable table of the results.

    pareto_<cost>.png   latency (or throughput) against each cost axis, one panel per model, front marked
    formats.png         each format's Pareto front against the first cost axis (when several formats ran)
    fidelity.png        latency against the largest relative error vs onnxruntime (when fidelity was measured)
    layers_p<N>.png     utilization of every NPU layer of one point, one panel per model
    index.html          all of the above and the table
"""
from __future__ import annotations

import base64
import html
import numbers
from pathlib import Path

from sweep.facts import COST_AXES
from sweep.fronts import HIGHER_IS_BETTER, pareto

LABELS = {"latency_us": "modeled latency (µs, batch 1)", "throughput_ips": "throughput (inferences/s, batch 1)",
          "max_rel_err": "largest relative error vs onnxruntime", **COST_AXES}
TABLE_METRICS = ("macs_per_cycle", "onchip_bits", "latency_us", "throughput_ips", "utilization", "npu_mac_share",
                 "weight_mode", "compile_time_s", "cosine_min", "max_rel_err", "top1_agreement", "rtl_bit_exact",
                 "rtl_max_cycle_error")
DPI = 110
FRACTIONS = {"max_rel_err", "utilization", "npu_mac_share"}  # drawn as percentages


def varying_fields(results) -> list[str]:
    """The configuration fields that take more than one value in the sweep (formats aside)."""
    from sweep.space import FIELDS

    skip = {"name", "source", "weight_format", "act_format"}
    return [f for f in FIELDS if f in results and f not in skip and results[f].nunique(dropna=False) > 1]


def choose_point(ok) -> int | None:
    """The point with the lowest latency, as the geometric mean over the models that every point ran."""
    import numpy as np

    if not len(ok):
        return None
    wide = ok.pivot_table(index="point", columns="model", values="latency_us").dropna()
    if not len(wide):
        return int(ok.sort_values("latency_us")["point"].iloc[0])
    return int(np.exp(np.log(wide).mean(axis=1)).idxmin())


def plot(source, output_dir: str | Path | None = None, *, y: str = "latency_us", costs=None,
         point: int | None = None) -> dict:
    """Draw the pictures of a sweep (a results folder or file, or a :class:`~sweep.runner.SweepResult`)
    into ``output_dir`` (default: the results folder).  Returns {"pngs": [...], "html": path, "point": N}."""
    from sweep import table
    from sweep.errors import SweepError

    if hasattr(source, "results"):
        results, layers, meta = source.results, source.layers, source.stats
        if output_dir is None:
            raise SweepError("give an output folder to plot a sweep that was not saved")
    else:
        results, layers, meta = table.load(source)
        if output_dir is None:
            output_dir = Path(source) if Path(source).is_dir() else Path(source).parent
    if y not in ("latency_us", "throughput_ips"):
        raise SweepError(f"--y must be latency_us or throughput_ips, not {y!r}")
    costs = [c for c in (costs or COST_AXES) if c in results.columns]
    if not costs:
        raise SweepError(f"no cost column in the results; cost axes: {', '.join(COST_AXES)}")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ok = results[results["status"] == "ok"]
    if not len(ok):
        raise SweepError("no point of the sweep compiled; nothing to plot (see the error column)")
    if point is None:
        point = choose_point(ok)
    elif point not in set(results["point"]):
        raise SweepError(f"--point {point}: no such point; points are 0 .. {results['point'].max()}")
    models = list(dict.fromkeys(ok["model"]))
    pngs = [_pareto_png(ok, models, c, y, out / f"pareto_{c}.png") for c in costs]
    if ok["format"].nunique() > 1:
        pngs.append(_formats_png(ok, models, costs[0], y, out / "formats.png"))
    if "max_rel_err" in ok and ok["max_rel_err"].notna().any():
        pngs.append(_fidelity_png(ok, models, y, out / "fidelity.png"))
    if layers is not None and len(layers):
        pngs.append(_layers_png(layers[layers["point"] == point], results, point, out / f"layers_p{point}.png"))
    page = out / "index.html"
    page.write_text(_html(results, pngs, costs[0], y, meta, point))
    return {"pngs": [str(p) for p in pngs], "html": str(page), "point": point}


# ---------------------------------------------------------------------- figures
def _figure(panels: int, height: float = 3.6):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(4.8, 4.6 * panels), height), layout="constrained")
    return fig, fig.subplots(1, panels, squeeze=False)[0]


def _axes(ax, d, x: str, y: str, title: str) -> None:
    """Labels, a grid, and per axis a log scale for values spanning more than 20x, with engineering labels
    (16k, 120M) either way."""
    from matplotlib.ticker import EngFormatter, PercentFormatter

    for c, axis, set_scale in ((x, ax.xaxis, ax.set_xscale), (y, ax.yaxis, ax.set_yscale)):
        v = d[c][d[c] > 0]
        if len(v) and v.max() / v.min() > 20:
            set_scale("log")
        axis.set_major_formatter(PercentFormatter(1.0) if c in FRACTIONS else EngFormatter(sep=""))
    ax.set(title=title, xlabel=LABELS.get(x, x), ylabel=LABELS.get(y, y))
    ax.grid(alpha=0.3)


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    return path


def _pareto_png(ok, models, cost: str, y: str, path: Path) -> Path:
    fig, axes = _figure(len(models))
    for ax, model in zip(axes, models):
        d = ok[ok["model"] == model]
        front = pareto(d, cost, y)
        ax.scatter(d[cost], d[y], s=12, color="0.75", label="design points")
        ax.plot(front[cost], front[y], "o-", color="C0", ms=4, label="Pareto front")
        for _, r in front.iterrows():
            ax.annotate(str(int(r["point"])), (r[cost], r[y]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        _axes(ax, d, cost, y, model)
        ax.legend(fontsize=7)
    fig.suptitle(f"{'latency' if y == 'latency_us' else 'throughput'} against {cost} (numbers: point)")
    return _save(fig, path)


def _formats_png(ok, models, cost: str, y: str, path: Path) -> Path:
    fig, axes = _figure(len(models))
    for ax, model in zip(axes, models):
        d = ok[ok["model"] == model]
        for k, (fmt, g) in enumerate(d.groupby("format", sort=True)):
            front = pareto(g, cost, y)
            ax.scatter(g[cost], g[y], s=8, color=f"C{k}", alpha=0.25)
            ax.plot(front[cost], front[y], "o-", color=f"C{k}", ms=3, label=fmt)
        _axes(ax, d, cost, y, model)
        ax.legend(fontsize=7, title="format", title_fontsize=7)
    fig.suptitle("formats compared: each format's Pareto front")
    return _save(fig, path)


def _fidelity_png(ok, models, y: str, path: Path) -> Path:
    fig, axes = _figure(len(models))
    for ax, model in zip(axes, models):
        d = ok[(ok["model"] == model) & ok["max_rel_err"].notna()]
        for k, (fmt, g) in enumerate(d.groupby("format", sort=True)):
            ax.scatter(g["max_rel_err"], g[y], s=12, color=f"C{k}", label=fmt)
        front = pareto(d, "max_rel_err", y)
        ax.plot(front["max_rel_err"], front[y], "o-", color="0.2", lw=1, ms=9, mfc="none", label="Pareto front")
        _axes(ax, d, "max_rel_err", y, model)
        ax.legend(fontsize=7)
    fig.suptitle("latency against fidelity (simulator vs onnxruntime)")
    return _save(fig, path)


def _layers_png(layers, results, point: int, path: Path) -> Path:
    npu = layers[(layers["target"] == "npu") & (layers["cycles"] > 0)]
    models = list(dict.fromkeys(npu["model"])) or ["(no NPU layers)"]
    tallest = max([len(npu[npu["model"] == m]) for m in models] + [4])
    fig, axes = _figure(len(models), height=min(40.0, 1.2 + 0.16 * tallest))
    for ax, model in zip(axes, models):
        d = npu[npu["model"] == model]
        ops = list(dict.fromkeys(d["op"]))
        colors = [f"C{ops.index(op) % 10}" for op in d["op"]]
        pos = range(len(d))
        ax.barh(list(pos), d["utilization"], color=colors)
        ax.set_yticks(list(pos), [n[-28:] for n in d["layer"]], fontsize=5)
        ax.set_ylim(tallest - 0.5, -0.5)  # one bar height in every panel, the first layer on top
        row = results[(results["point"] == point) & (results["model"] == model)]
        total = f", total {row['utilization'].iloc[0]:.1%}" if len(row) and row["utilization"].notna().all() else ""
        ax.set(title=f"{model}{total}", xlabel="utilization (graph MACs / peak MACs in the layer's cycles)")
        ax.set_xlim(0, 1)
        ax.grid(axis="x", alpha=0.3)
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(color=f"C{k % 10}", label=op) for k, op in enumerate(ops)], fontsize=6,
                  loc="lower right")
    fig.suptitle(f"utilization by layer, point {point}")
    return _save(fig, path)


# ---------------------------------------------------------------------- page
_SORT_JS = """
document.querySelectorAll('th').forEach((th, col) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0];
  const up = th.dataset.dir !== 'up'; th.dataset.dir = up ? 'up' : 'down';
  const key = r => { const t = r.cells[col].dataset.v ?? r.cells[col].textContent;
                     const n = parseFloat(t); return isNaN(n) ? t : n; };
  [...body.rows].sort((a, b) => { const x = key(a), y = key(b);
    const c = (typeof x === typeof y) ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === 'number' ? -1 : 1);
    return up ? c : -c; }).forEach(r => body.appendChild(r));
}));
"""
_CSS = """body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}img{max-width:100%;border:1px solid #ddd;
margin:.5em 0}table{border-collapse:collapse;font-size:12px}th,td{border:1px solid #ccc;padding:2px 6px;
text-align:right}th{background:#eee;cursor:pointer;position:sticky;top:0}td.t{text-align:left}
tr.front{background:#eef6ff}.note{color:#555}"""


def _cell(value) -> str:
    import pandas as pd

    if pd.isna(value):
        return "<td data-v=''></td>"
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return f"<td data-v='{value}'>{value:,}</td>"
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        shown = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
        return f"<td data-v='{float(value)!r}'>{shown}</td>"
    return f"<td class=t>{html.escape(str(value))}</td>"


def _html(results, pngs, cost: str, y: str, meta: dict, point) -> str:
    fronts = pareto(results[results["status"] == "ok"], cost, y, by="model")
    on_front = set(zip(fronts["point"], fronts["model"]))
    columns = ["point", "model", "format", "status", *varying_fields(results),
               *[c for c in TABLE_METRICS if c in results and results[c].notna().any()], "error", "node_id"]
    columns = [c for c in columns if c in results]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["front", *columns])
    body = []
    for _, r in results.iterrows():
        front = (r["point"], r["model"]) in on_front
        cells = f"<td class=t>{'★' if front else ''}</td>" + "".join(_cell(r[c]) for c in columns)
        body.append(f"<tr{' class=front' if front else ''}>{cells}</tr>")
    images = "".join(f"<h2>{html.escape(p.stem)}</h2><img alt='{html.escape(p.name)}' src='data:image/png;base64,"
                     f"{base64.b64encode(p.read_bytes()).decode()}'>" for p in pngs)
    facts = html.escape(f"spec {meta.get('spec', '?')}: {meta.get('points', '?')} points, {meta.get('units', '?')} "
                        f"runs ({meta.get('cached', '?')} cached, {meta.get('failed', '?')} failed) in "
                        f"{meta.get('time_s', '?')} s; tool {meta.get('tool_version', '?')}")
    better = "higher" if y in HIGHER_IS_BETTER else "lower"
    title = f"npu sweep {html.escape(str(meta.get('name', '')))}"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>{_CSS}</style></head><body>
<h1>{title}</h1>
<p class=note>{facts}</p>
<p class=note>Cost axes are a resource proxy (MACs per cycle; on-chip memory bits = MRF tiles x tile bits +
VRF depths x vector bits), not an area estimate. {html.escape(y)}: {better} is better. ★ marks the Pareto front of
{html.escape(y)} against {html.escape(cost)} per model. The layer figure shows point {point}.</p>
{images}
<h2>results</h2><p class=note>Click a column to sort.</p>
<table><thead><tr>{head}</tr></thead><tbody>
{''.join(body)}
</tbody></table><script>{_SORT_JS}</script></body></html>
"""
