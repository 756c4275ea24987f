"""Expanding a space: grids multiply, samples are drawn reproducibly, constraints drop points, invalid
configurations stay with their message."""
import numpy as np
import pytest

from sweep.space import FIELDS, Sampled, Sampling, flatten, unflatten
from sweep.spec import load_spec


def spec(space, **sweep):
    return load_spec({"sweep": {"base": "tiny", **sweep}, "models": [{"zoo": "tiny_cnn"}], "space": space})


def test_fields_are_every_configuration_field_flattened(tiny):
    flat = flatten(tiny.to_dict())
    assert list(flat) != [] and set(flat) == set(FIELDS)
    assert "latencies.mvm" in FIELDS and "latencies" not in FIELDS
    assert unflatten(flat) == tiny.to_dict()


def test_a_grid_is_the_product_with_formats_last():
    points = spec({"tile_engines": [1, 2], "dpe_lanes": [2, 4]},
                  formats=["bfp-e8m7b8", "bfp-e8m3b8"]).points()
    assert len(points) == 8
    first = points[0].changes
    assert points[0].fields["tile_engines"] == 1 and points[0].fields["dpe_lanes"] == 2
    assert points[1].fields["weight_format"] == "bfp-e8m3b8" and points[1].fields["dpe_lanes"] == 2
    assert [p.index for p in points] == list(range(8)) and "name" not in first
    assert len({p.key for p in points}) == 8
    assert all(p.config.name == f"sweep-{p.key}" for p in points)  # named by content: the same point, the same name


def test_constraints_drop_points_and_invalid_configurations_stay():
    points = spec({"tile_engines": [1, 2, 4], "dpe_lanes": [2, 4, 3]},
                  constraints=["macs_per_cycle <= 32", "tile_engines < 4"]).points()
    valid = [p for p in points if p.config is not None]
    assert {(p.fields["tile_engines"], p.fields["dpe_lanes"]) for p in valid} == {(1, 2), (1, 4), (2, 2)}
    invalid = [p for p in points if p.config is None]
    # lanes 3 cannot be a configuration: kept (a fact-based constraint cannot be decided), with the message
    assert {p.fields["tile_engines"] for p in invalid} == {1, 2}
    assert all(p.error == "dpe_lanes: must divide native_dim (8), not 3" for p in invalid)


def test_samples_are_reproducible_and_latin_hypercube_strata_are_each_hit_once():
    lhs = load_spec({"sweep": {"base": "tiny"}, "models": [{"zoo": "tiny_cnn"}],
                     "space": {"clock_mhz": {"low": 100.0, "high": 200.0}, "tile_engines": [1, 2]},
                     "sample": {"method": "lhs", "count": 10, "seed": 3}})
    points = lhs.points()
    assert len(points) == 20 and [p.fields for p in points] == [p.fields for p in lhs.points()]
    clocks = sorted({p.fields["clock_mhz"] for p in points if p.fields["tile_engines"] == 1})
    assert sorted(int((c - 100.0) / 10) for c in clocks) == list(range(10))  # one draw per tenth of the range
    q = Sampling("random", 50, 1).quantiles(3)
    assert q.shape == (50, 3) and (q >= 0).all() and (q < 1).all()


def test_sampled_values_respect_their_kind():
    ints = Sampled("mrf_tiles", 16, 1024, log=True)
    values = [ints.value(u) for u in np.linspace(0, 0.999, 200)]
    assert all(isinstance(v, int) and 16 <= v <= 1024 for v in values) and values[0] == 16 and values[-1] >= 1000
    assert Sampled("clock_mhz", 100.0, 200.0).value(0.5) == pytest.approx(150.0)
    assert Sampled("ivrf_depth", choices=(256, 512, 1024)).value(0.99) == 1024


def test_duplicate_samples_are_kept_once():
    s = load_spec({"sweep": {"base": "tiny"}, "models": [{"zoo": "tiny_cnn"}],
                   "space": {"tile_engines": {"choices": [1, 2]}}, "sample": {"method": "random", "count": 20}})
    assert sorted(p.fields["tile_engines"] for p in s.points()) == [1, 2]
