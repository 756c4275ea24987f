"""Running a sweep: plan the units of work, take what the cache has, compute the rest serially or on Ray,
and assemble the tables.

Ray is local by default: ``ray.init`` starts an in-process cluster on this machine's cores with no set-up.
``address`` ("auto", "ray://host:port" or a GCS address) runs the same units on an existing cluster; its
nodes need this toolkit importable (installed, or at the same path: the workers get this checkout on their
PYTHONPATH).  Ray starts only when something is left to compute, so a fully cached re-run takes seconds.
"""
from __future__ import annotations

import collections
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sweep import cache as cache_mod
from sweep import table
from sweep.errors import SpecError, SweepError
from sweep.evaluate import Unit, evaluate, has_model, one_line, record_of
from sweep.expr import ExpressionError
from sweep.facts import facts
from sweep.spec import Spec, load_spec

#: ``progress(done, total, running, failed)``, called as units finish (cached units count as done at once).
Progress = Callable[[int, int, int, int], None]


@dataclass
class SweepResult:
    """The tables of a sweep and the facts of its run."""

    results: object  # pandas.DataFrame, one row per (point, model)
    layers: object   # pandas.DataFrame, one row per (point, model, layer)
    stats: dict = field(default_factory=dict)

    def save(self, directory: str | Path) -> dict[str, Path]:
        return table.save(self.results, self.layers, directory, self.stats)


def plan(spec: Spec, points) -> list[Unit]:
    """The units of work of the valid points: timing per model, fidelity per model when asked for, and the
    RTL check per point when asked for and the point satisfies rtl_when."""
    units = []
    for p in points:
        if p.config is None:
            continue
        config = p.config.to_dict()

        def unit(kind, model, options):
            key = cache_mod.unit_key(kind, config, model.identity() if model else None, options)
            units.append(Unit(kind, p.index, config, model, options, key))

        for m in spec.models:
            unit("timing", m, {})
            if spec.fidelity:
                unit("fidelity", m, {"inputs": spec.fidelity, "seed": spec.seed})
        if spec.rtl_check:
            try:
                small = spec.rtl_when(dict(p.fields, **facts(p.config)))
            except ExpressionError as exc:
                raise SpecError(spec.source, "sweep", "rtl_when", str(exc)) from None
            if small:
                unit("rtl", None, {"programs": spec.rtl_check, "seed": spec.seed})
    return units


def execute(spec, *, cache_dir: str | Path | None = None, address: str | None = None, local: bool = False,
            num_cpus: int | None = None, progress: Progress | None = None) -> SweepResult:
    """Run a sweep (a spec path, TOML text, a dict or a :class:`~sweep.spec.Spec`).

    ``cache_dir`` defaults to ~/.cache/npu-sweep ($NPU_SWEEP_CACHE); False keeps nothing.  ``local`` runs
    serially in this process without Ray; otherwise Ray runs the units (``address`` None: a local Ray on
    ``num_cpus`` cores, default all of them)."""
    t0 = time.perf_counter()
    spec = load_spec(spec)
    points = spec.points()
    units = plan(spec, points)
    store = cache_mod.Cache(cache_mod.default_dir() if cache_dir is None else cache_dir or None)
    records: dict[str, dict] = {}
    todo: dict[str, Unit] = {}
    for u in units:
        hit = store.get(u.key)
        if hit is not None:
            records[u.key] = dict(hit, cached=True)
        else:
            todo.setdefault(u.key, u)  # two units with one key (one model under two labels) run once
    cached, total = len(records), len(records) + len(todo)
    state = {"done": cached, "failed": 0}
    report = progress or (lambda *a: None)

    def finished(unit: Unit, record: dict) -> None:
        if record.pop("cacheable", True):
            store.put(unit.key, record)
        records[unit.key] = dict(record, cached=False)
        state["done"] += 1
        state["failed"] += record["status"] != "ok"

    report(cached, total, 0, 0)
    mode = "cached" if not todo else "serial" if local else "ray"
    if todo and local:
        for u in todo.values():
            report(state["done"], total, 1, state["failed"])
            finished(u, evaluate(u))
            report(state["done"], total, 0, state["failed"])
    elif todo:
        mode = _run_on_ray(list(todo.values()), spec, address, num_cpus, finished,
                           lambda running: report(state["done"], total, running, state["failed"]))
    by_unit = {(u.kind, u.point, u.model.label if u.model else None): records[u.key] for u in units}
    results, layers = table.build(spec, points, by_unit)
    ok = results[results["status"] == "ok"] if len(results) else results
    stats = {"spec": spec.source, "name": spec.name, "tool_version": cache_mod.tool_version(), "mode": mode,
             "address": address, "points": len(points), "invalid_points": sum(p.config is None for p in points),
             "units": total, "cached": cached, "computed": len(todo),
             "failed": sum(r["status"] != "ok" for r in records.values()),
             "nodes": sorted(set(ok["node_id"].dropna())) if len(ok) else [],
             "time_s": round(time.perf_counter() - t0, 3)}
    return SweepResult(results, layers, stats)


# ---------------------------------------------------------------------- Ray
def _worker_pythonpath() -> str:
    """This checkout first, so workers import the same toolkit as the driver."""
    root = str(cache_mod.ROOT)
    rest = os.environ.get("PYTHONPATH", "")
    return root + (os.pathsep + rest if rest else "")


def _run_unit(unit: Unit, onnx_refs: dict) -> dict:
    """A Ray task: fetch an ONNX file's bytes from the object store unless this worker has the model."""
    data = None
    if unit.model is not None and unit.model.onnx is not None and not has_model(unit.model):
        import ray

        data = ray.get(onnx_refs[unit.model.onnx_sha256])
    return evaluate(unit, data)


def _run_on_ray(units: list[Unit], spec: Spec, address, num_cpus, finished, running) -> str:
    """Keep as many units in flight as the cluster has CPUs; record each as it finishes."""
    import ray

    started = not ray.is_initialized()
    if started:
        options = {"runtime_env": {"env_vars": {"PYTHONPATH": _worker_pythonpath()}}, "log_to_driver": False,
                   "logging_level": logging.WARNING}
        try:
            if address in (None, "local"):
                ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, **options)
            else:
                ray.init(address=address, **options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SweepError(f"cannot start or reach Ray at {address or 'local'}: {one_line(exc)}") from None
    inflight: dict = {}
    try:
        capacity = max(1, int(ray.cluster_resources().get("CPU", 1)))
        refs = {m.onnx_sha256: ray.put(Path(m.onnx).read_bytes()) for m in spec.models if m.onnx is not None}
        task = ray.remote(_run_unit).options(num_cpus=1, max_retries=1, scheduling_strategy="SPREAD")
        pending = collections.deque(units)
        while pending or inflight:
            while pending and len(inflight) < capacity:
                u = pending.popleft()
                inflight[task.remote(u, refs)] = u
            running(len(inflight))
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            for ref in ready:
                unit = inflight.pop(ref)
                try:
                    record = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the worker died (out of memory, killed): not cached
                    record = record_of(unit, status="failed", error=one_line(exc), cacheable=False)
                finished(unit, record)
        running(0)
    except KeyboardInterrupt:
        for ref in inflight:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started:
            ray.shutdown()
    return "ray" if address in (None, "local") else f"ray ({address})"


def progress_bar(file=None) -> Progress:
    """A tqdm bar for :func:`execute`: units done of total, with those running, failed and cached.
    Call ``.close()`` on it after the sweep."""
    from tqdm import tqdm

    bar: dict = {}

    def update(done: int, total: int, running: int, failed: int) -> None:
        if "b" not in bar:
            bar["b"] = tqdm(total=total, desc="sweep", unit="run", file=file or sys.stderr, leave=False)
            bar["cached"] = done
        bar["b"].n = done
        bar["b"].set_postfix_str(f"running {running}, failed {failed}, cached {bar['cached']}", refresh=False)
        bar["b"].refresh()

    update.close = lambda: bar["b"].close() if "b" in bar else None
    return update
