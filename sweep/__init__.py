"""Design-space exploration: which NPU configuration serves these models best?

    import sweep
    df = sweep.run("sweep.toml")                     # one row per (point, model); Ray runs the points
    df = sweep.run(spec_text_or_dict, local=True)    # serially in this process, no Ray
    front = sweep.pareto(df[df.model == "resnet50"], "macs_per_cycle", "latency_us")
    sweep.plot("results/")                           # PNGs and index.html

A spec (sweep/spec.py, docs/sweep.md) names the models, the formats, a base configuration and the space
over configuration fields; each point is compiled and timed per model (optionally checked against
onnxruntime and on the RTL), results are cached by content, and the tables go to Parquet and CSV.
"""
from __future__ import annotations


def run(spec, *, output=None, cache_dir=None, address=None, local=False, num_cpus=None, progress=None):
    """Run a sweep and return its results as a pandas DataFrame, one row per (point, model).

    ``spec`` is a path, TOML text or a dict.  ``output`` (a folder) also writes results.parquet,
    results.csv, layers.parquet and sweep.json there.  See :func:`sweep.runner.execute` for the rest."""
    from sweep.runner import execute

    result = execute(spec, cache_dir=cache_dir, address=address, local=local, num_cpus=num_cpus,
                     progress=progress)
    if output is not None:
        result.save(output)
    return result.results


def execute(spec, **options):
    """Like :func:`run`, returning the :class:`~sweep.runner.SweepResult` (results, per-layer table, stats)."""
    from sweep.runner import execute as _execute

    return _execute(spec, **options)


def pareto(df, x, y, **options):
    """The Pareto front of ``df`` in columns ``x`` and ``y`` (see :func:`sweep.fronts.pareto`)."""
    from sweep.fronts import pareto as _pareto

    return _pareto(df, x, y, **options)


def plot(results, output_dir=None, **options):
    """PNGs and an HTML page of a sweep's results (see :func:`sweep.figures.plot`)."""
    from sweep.figures import plot as _plot

    return _plot(results, output_dir, **options)


def load_spec(spec):
    """Parse and check a spec without running it (see :func:`sweep.spec.load_spec`)."""
    from sweep.spec import load_spec as _load_spec

    return _load_spec(spec)


__all__ = ["run", "execute", "pareto", "plot", "load_spec"]
