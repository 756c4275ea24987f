"""The compiler's benchmarks run end to end on tiny settings (their full runs are in benchmarks/)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name,argv,expect", [
    ("bench_compile", ["--models", "tiny_cnn", "digits", "--config", "tiny", "--chain", "200"], "chain200"),
    ("bench_latency", ["--models", "tiny_cnn", "--configs", "tiny"], "speedup"),
    ("bench_fidelity", ["--models", "tiny_cnn", "--formats", "bfp-e8m7b8", "--config", "tiny", "--inputs", "2"],
     "err ratio"),
    ("bench_sim_vs_ort", ["--model", "tiny_cnn", "--input-size", "8", "--config", "tiny", "--repeat", "1"], "ratio"),
])
def test_benchmark_runs(name, argv, expect, capsys):
    load(name).main(argv)
    out = capsys.readouterr().out
    assert expect in out and "error" not in out.lower()
