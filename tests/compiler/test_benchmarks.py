"""The compiler's benchmarks run end to end on tiny settings (their full runs are in benchmarks/)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the script defines them
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name,argv,expect", [
    ("bench_compile", ["--models", "tiny_cnn", "digits", "--config", "tiny", "--chain", "200"], "chain200"),
    ("bench_latency", ["--models", "tiny_cnn", "--configs", "tiny"], "speedup"),
    ("bench_fidelity", ["--models", "tiny_cnn", "--formats", "bfp-e8m7b8", "--config", "tiny", "--inputs", "2"],
     "err ratio"),
    ("bench_sim_vs_ort", ["--model", "tiny_cnn", "--input-size", "8", "--config", "tiny", "--repeat", "1"], "ratio"),
    ("bench_rnn", ["--config", "tiny", "--shapes", "lstm-8-2-1", "gru0-8-2-1", "rnn-8-2-1", "gemv-16-1-6"], "target"),
    ("bench_models", ["--reduced", "--models", "bert_base", "--inputs", "2", "--repeat", "1"], "input-sens."),
])
def test_benchmark_runs(name, argv, expect, capsys):
    load(name).main(argv)
    out = capsys.readouterr().out
    assert expect in out and "error" not in out.lower()
