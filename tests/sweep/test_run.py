"""Serial sweeps end to end: the table, failures recorded, the cache (resume, only new points computed)."""
import json

import pandas as pd
import pytest

import sweep
from sweep.runner import execute
from sweep.facts import NAMES
from sweep.space import FIELDS
from sweep_fixtures import tiny_spec, tiny_result  # noqa: F401 - fixtures


def test_one_row_per_point_and_model_with_every_field(tiny_result):
    result, _ = tiny_result
    df = result.results
    assert len(df) == 6 * 2 and list(df["model"][:2]) == ["tiny_cnn", "tiny_rnn"]
    assert set(FIELDS) | set(NAMES) <= set(df.columns)
    assert {"latency_us", "throughput_ips", "utilization", "npu_mac_share", "weight_mode", "compile_time_s",
            "node_id", "hostname", "point_key", "cached"} <= set(df.columns)
    ok = df[df["status"] == "ok"]
    assert len(ok) == 8 and (ok["latency_us"] > 0).all() and (ok["node_id"] == "local").all()
    assert (ok["macs_per_cycle"] == ok["tile_engines"] * ok["native_dim"] * ok["dpe_lanes"]).all()
    assert (ok["onchip_bits"] == ok["mrf_bits"] + ok["vrf_bits"]).all()
    bad = df[df["status"] == "invalid"]
    assert len(bad) == 4 and set(bad["error"]) == {"dpe_lanes: must divide native_dim (8), not 3"}
    assert json.loads(df["mfus"][0]) == [["addsub", "mul", "act"], ["addsub", "mul", "act"]]
    layers = result.layers
    assert set(layers["point"]) == set(ok["point"]) and (layers["cycles"] >= 0).all()
    assert result.stats["computed"] == 8 and result.stats["invalid_points"] == 2


def test_the_tables_are_saved_as_parquet_and_csv(tiny_result):
    result, out = tiny_result
    back = pd.read_parquet(out / "results.parquet")
    pd.testing.assert_frame_equal(back, result.results, check_dtype=False)
    csv = pd.read_csv(out / "results.csv")
    assert list(csv.columns) == list(result.results.columns) and len(csv) == len(back)
    assert len(pd.read_parquet(out / "layers.parquet")) == len(result.layers)
    assert json.loads((out / "sweep.json").read_text())["points"] == 6


def test_a_failing_point_records_its_error_and_the_sweep_goes_on(tiny_spec, tmp_path, monkeypatch):
    """A compile that raises (the compiler falls back to the host on every capacity problem it meets, so the
    failure is injected: tiny_cnn on an 8-vector ASVRF) is one row with a one-line error; the others run."""
    import compiler
    from npu.errors import CompileError

    real = compiler.compile_report

    def compile_report(model, config=None, **kw):
        if getattr(config, "asvrf_depth", None) == 8 and model.graph.name == "tiny_cnn":
            raise CompileError("out of vector memory: injected\nsecond line")
        return real(model, config=config, **kw)

    monkeypatch.setattr(compiler, "compile_report", compile_report)
    tiny_spec["space"] = {"asvrf_depth": [512, 8]}
    df = sweep.run(tiny_spec, cache_dir=tmp_path, local=True)
    failed = df[df["status"] == "failed"]
    assert list(zip(failed["point"], failed["model"])) == [(1, "tiny_cnn")]
    error = failed["error"].iloc[0]
    assert error.startswith("CompileError: out of vector memory") and "\n" not in error
    assert (df[df["status"] == "ok"]["latency_us"] > 0).sum() == 3


def test_a_rerun_computes_only_new_points_and_an_interrupted_sweep_resumes(tiny_spec, tmp_path):
    tiny_spec["space"] = {"tile_engines": [1, 2]}
    seen = []

    def stop_after_three(done, total, running, failed):
        seen.append(done)
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        execute(tiny_spec, cache_dir=tmp_path, local=True, progress=stop_after_three)
    resumed = execute(tiny_spec, cache_dir=tmp_path, local=True)
    assert (resumed.stats["cached"], resumed.stats["computed"]) == (3, 1)
    tiny_spec["space"] = {"tile_engines": [1, 2, 3]}
    grown = execute(tiny_spec, cache_dir=tmp_path, local=True)
    assert (grown.stats["cached"], grown.stats["computed"]) == (4, 2)
    df = grown.results
    assert df[df["tile_engines"] < 3]["cached"].all() and not df[df["tile_engines"] == 3]["cached"].any()
    first = resumed.results.set_index(["point", "model"])["latency_us"]
    assert (df.set_index(["point", "model"])["latency_us"].loc[first.index] == first).all()
    assert execute(tiny_spec, cache_dir=False, local=True).stats["computed"] == 6


def test_the_cache_key_follows_content_not_names(tiny_spec, tmp_path):
    tiny_spec["space"] = {"tile_engines": [1]}
    execute(tiny_spec, cache_dir=tmp_path, local=True)
    tiny_spec["sweep"]["name"] = "renamed"
    tiny_spec["models"][0]["label"] = "cnn"
    assert execute(tiny_spec, cache_dir=tmp_path, local=True).stats["computed"] == 0
    tiny_spec["models"][0]["seed"] = 1  # other weights: another model
    assert execute(tiny_spec, cache_dir=tmp_path, local=True).stats["computed"] == 1


def test_an_onnx_model_and_fidelity(tmp_path):
    from compiler.zoo import registry

    (tmp_path / "cnn.onnx").write_bytes(registry.build("tiny_cnn").SerializeToString())
    spec = tmp_path / "s.toml"
    spec.write_text('[sweep]\nbase = "tiny"\nfidelity = 2\nformats = ["bfp-e8m7b8", "bfp-e8m3b8"]\n'
                    '[[models]]\nonnx = "cnn.onnx"\n')
    df = sweep.run(spec, cache_dir=tmp_path / "cache", local=True)
    assert list(df["model"]) == ["cnn", "cnn"] and (df["status"] == "ok").all()
    assert (df["fidelity_status"] == "ok").all() and (df["cosine_min"] > 0.9).all()
    assert df["max_rel_err"].iloc[1] > df["max_rel_err"].iloc[0]  # 3 mantissa bits err more than 7


def test_the_api_names_stay_functions_once_the_modules_are_imported():
    import types

    import sweep.figures  # noqa: F401 - a module named like an API function would replace it
    import sweep.fronts  # noqa: F401
    import sweep.runner  # noqa: F401

    assert all(callable(getattr(sweep, n)) and not isinstance(getattr(sweep, n), types.ModuleType)
               for n in sweep.__all__)


def test_rtl_checks_are_planned_for_the_points_rtl_when_admits(tiny_spec):
    from sweep.runner import plan
    from sweep.spec import load_spec

    tiny_spec["sweep"].update(rtl_check=3, fidelity=2, rtl_when="tile_engines == 1")
    tiny_spec["space"] = {"tile_engines": [1, 2]}
    spec = load_spec(tiny_spec)
    units = plan(spec, spec.points())
    kinds = [(u.kind, u.point, u.model.label if u.model else None) for u in units]
    assert kinds == [("timing", 0, "tiny_cnn"), ("fidelity", 0, "tiny_cnn"), ("timing", 0, "tiny_rnn"),
                     ("fidelity", 0, "tiny_rnn"), ("rtl", 0, None), ("timing", 1, "tiny_cnn"),
                     ("fidelity", 1, "tiny_cnn"), ("timing", 1, "tiny_rnn"), ("fidelity", 1, "tiny_rnn")]
    assert units[4].options == {"programs": 3, "seed": 0} and len({u.key for u in units}) == len(units)


@pytest.mark.slow
@pytest.mark.rtl
def test_rtl_check_runs_random_programs_on_small_points(tiny_spec, tmp_path):
    tiny_spec["sweep"].update(rtl_check=2, rtl_when="tile_engines == 1")
    tiny_spec["models"] = [{"zoo": "tiny_cnn"}]
    tiny_spec["space"] = {"tile_engines": [1, 2]}
    df = sweep.run(tiny_spec, cache_dir=tmp_path, local=True)
    assert list(df["rtl_status"]) == ["ok", "skipped"]
    assert bool(df["rtl_bit_exact"][0]) and df["rtl_programs"][0] == 2 and df["rtl_max_cycle_error"][0] < 0.05


def test_the_progress_bar_shows_done_running_failed_and_cached(capsys):
    import io

    from sweep.runner import progress_bar

    out = io.StringIO()
    bar = progress_bar(file=out)
    bar(3, 10, 0, 0)
    bar(5, 10, 2, 1)
    bar.close()
    text = out.getvalue()
    assert "5/10" in text and "running 2, failed 1, cached 3" in text
