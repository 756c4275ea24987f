"""The area model (sweep/area.py): its fit, its error on held-out synthesis, and its columns in a sweep."""
import numpy as np
import pytest

from npu.config import PRESETS
from sweep import area


@pytest.fixture(scope="module")
def model():
    return area.load_model()


def test_the_stored_points_are_every_train_and_heldout_configuration(model):
    names = [p["config"] for p in model["points"]]
    assert sorted(names) == sorted([*area.TRAIN, *area.HELDOUT])
    assert not set(area.TRAIN) & set(area.HELDOUT)
    # a point's groups add up to the totals Yosys reported
    for p in model["points"]:
        for metric in area.METRICS:
            assert sum(g[metric] for g in p["groups"].values()) == p["totals"][metric], p["config"]


def test_the_model_is_within_ten_percent_of_yosys_on_configurations_it_was_not_fitted_on(model):
    rows = area.errors(model, area.HELDOUT)
    assert len(rows) == len(area.HELDOUT) >= 4
    for row in rows:
        assert abs(row["luts_error"]) <= 0.10, row
        assert abs(row["ffs_error"]) <= 0.10, row


def test_refitting_the_stored_points_gives_the_stored_coefficients(model):
    train = [p for p in model["points"] if p["config"] in area.TRAIN]
    again = area.fit(train)
    for group, per in model["coefficients"].items():
        for metric, coefs in per.items():
            for term, value in coefs.items():
                assert again[group][metric][term] == pytest.approx(value, rel=1e-6, abs=1e-9), (group, metric, term)


def test_the_fit_recovers_known_coefficients_from_exact_points():
    """Points made from known coefficients (every term of every group) are fitted back exactly."""
    configs = {**area.TRAIN, **area.HELDOUT}
    rng = np.random.default_rng(0)
    truth = {g: {m: {k: float(rng.uniform(0.5, 3.0)) for k in t} for m in area.METRICS}
             for g, t in area.terms(PRESETS["tiny"]).items()}
    points = []
    for name, cfg in configs.items():
        t = area.terms(cfg)
        groups = {g: {m: sum(truth[g][m][k] * t[g][k] for k in t[g]) for m in area.METRICS} for g in t}
        points.append({"config": name, "groups": groups})
    got = area.fit(points)
    for name, cfg in configs.items():
        want = area.estimate(cfg, {"coefficients": truth})
        est = area.estimate(cfg, {"coefficients": got})
        for m in area.METRICS:
            assert est[m] == pytest.approx(want[m], rel=1e-3), (name, m)


def test_memory_bits_are_those_yosys_counted(model):
    configs = {**area.TRAIN, **area.HELDOUT}
    for p in model["points"]:
        est = area.memory_bits(configs[p["config"]])
        # the front end's step queue (about a thousand bits) is left out
        assert 0 <= p["totals"]["memory_bits"] - est <= 2000, p["config"]


def test_area_grows_with_the_datapath():
    base = PRESETS["small"]
    est = area.estimate(base)
    for change in ({"native_dim": 64}, {"tile_engines": 4}, {"dpe_lanes": 16}):
        bigger = area.estimate(base.replace(name="bigger", **change))
        assert bigger["luts"] > est["luts"] and bigger["ffs"] >= est["ffs"], change
    assert area.estimate(PRESETS["brainwave-s10"])["luts"] > area.estimate(PRESETS["brainslice-128"])["luts"]
    # multipliers: tile_engines x lanes per MVM row, one per MFU multiply and activation element
    assert area.estimate(PRESETS["tiny"])["dsps"] == 8 * 1 * 4 + 8 * (2 + 2)


def test_a_sweep_has_area_columns_and_constrains_on_them(tmp_path):
    import sweep

    spec = {"sweep": {"name": "a", "base": "tiny", "constraints": ["area_luts <= 80000"]},
            "models": [{"zoo": "tiny_cnn"}],
            "space": {"tile_engines": [1, 2], "dpe_lanes": [2, 4]}}
    luts = {(t, l): area.estimate(PRESETS["tiny"].replace(name="x", tile_engines=t, dpe_lanes=l))["luts"]
            for t in (1, 2) for l in (2, 4)}
    kept = {k for k, v in luts.items() if v <= 80000}
    assert 0 < len(kept) < len(luts)   # the constraint decides something
    df = sweep.run(spec, cache_dir=tmp_path, local=True)
    assert set(zip(df["tile_engines"], df["dpe_lanes"])) == kept
    for _, row in df.iterrows():
        want = area.estimate(PRESETS["tiny"].replace(name="x", tile_engines=row["tile_engines"],
                                                     dpe_lanes=row["dpe_lanes"]))
        assert (row["area_luts"], row["area_ffs"], row["area_dsps"], row["area_memory_bits"]) == \
            (want["luts"], want["ffs"], want["dsps"], want["memory_bits"])
    assert (df["area_bram36"] * 36864 >= df["area_memory_bits"]).all()
