"""`npu sweep` and `npu sweep plot` from the command line."""
import json
import subprocess
import sys
from pathlib import Path

from cli.main import main

ROOT = Path(__file__).resolve().parents[2]
SPEC = """[sweep]
base = "tiny"
[[models]]
zoo = "tiny_cnn"
[space]
tile_engines = [1, 2]
dpe_lanes = [2, 4]
"""


def test_sweep_then_plot_with_json(tmp_path, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC)
    out = tmp_path / "out"
    assert main(["sweep", str(spec), "--local", "--cache", str(tmp_path / "c"), "-o", str(out), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["stats"]["points"] == 4 and d["stats"]["computed"] == 4 and len(d["rows"]) == 4
    assert Path(d["outputs"]["results"]).exists() and Path(d["outputs"]["csv"]).exists()
    assert d["pareto"]["points"] and all(p["model"] == "tiny_cnn" for p in d["pareto"]["points"])
    assert main(["sweep", str(spec), "--local", "--cache", str(tmp_path / "c"), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "0 computed, 4 cached" in text and "Pareto front of latency" in text and "npu sweep plot" in text
    assert main(["sweep", "plot", str(out), "--json"]) == 0
    assert Path(json.loads(capsys.readouterr().out)["html"]).exists()


def test_bad_input_is_one_line_naming_the_file_table_and_key(tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text(SPEC.replace("dpe_lanes", "dpe_lane"))
    for argv, message in (([str(spec), "--local"], f"{spec}: [space] dpe_lane: not a configuration field"),
                          (["plot"], "give the results folder"),
                          (["plot", str(tmp_path)], "no sweep results here")):
        r = subprocess.run([sys.executable, "-m", "cli.main", "sweep", *argv], capture_output=True, text=True,
                           cwd=ROOT)
        assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_help_starts_without_ray_pandas_or_matplotlib():
    code = ("import sys, cli.main; cli.main.build_parser().format_help(); "
            "print([m for m in ('ray', 'pandas', 'matplotlib', 'pyarrow') if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "cli.main", "sweep", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert "npu sweep plot RESULTS" in r.stdout and "examples:" in r.stdout
