import json

import pytest

from npu.config import PRESETS, NpuConfig, get_config, load_config
from npu.errors import ConfigError


def test_presets_validate_and_have_sources():
    assert {"brainwave-s10", "brainslice-128", "small", "tiny"} <= set(PRESETS)
    for c in PRESETS.values():
        assert c.source, c.name


def test_brainwave_s10_is_the_isca_2018_build():
    c = get_config("brainwave-s10")
    assert (c.native_dim, c.tile_engines, c.dpe_lanes) == (400, 6, 40)
    assert c.macs_per_cycle == 96_000
    assert c.clock_mhz == 250
    assert c.weight_fmt.exp_bits == 5 and c.block == 400  # exponent shared per native vector


def test_brainslice_has_128_tile_mrf_and_two_mfus():
    c = get_config("brainslice-128")
    assert c.native_dim == 128 and c.mrf_tiles >= 128 and c.n_mfus >= 2


@pytest.mark.parametrize("fmt", ["json", "toml"])
def test_round_trip_through_files(tmp_path, fmt):
    for c in PRESETS.values():
        path = tmp_path / f"{c.name}.{fmt}"
        c.save(path)
        assert load_config(path) == c
        assert get_config(str(path)) == c


@pytest.mark.parametrize("change, field, words", [
    ({"native_dim": 100, "dpe_lanes": 4}, "native_dim", "multiple of the weight_format BFP block (16)"),
    ({"dpe_lanes": 0}, "dpe_lanes", "positive integer"),
    ({"weight_format": "fp7"}, "weight_format", "unknown BFP format"),
    ({"mfu_format": "bf16"}, "mfu_format", "unknown format"),
    ({"mfus": ()}, "mfus", "at least one MFU"),
    ({"mfus": (("addsub", "div"),)}, "mfus[0]", "subset"),
    ({"dpe_lanes": 48}, "dpe_lanes", "must divide native_dim"),
])
def test_bad_values_name_the_field_and_rule(change, field, words):
    base = get_config("brainslice-128").to_dict()
    base.update(change)
    with pytest.raises(ConfigError) as err:
        NpuConfig.from_dict(base)
    assert err.value.field == field
    assert words in str(err.value)


def test_unknown_field_and_preset():
    d = get_config("tiny").to_dict()
    d["lanes"] = 3
    with pytest.raises(ConfigError, match="lanes: unknown configuration field"):
        NpuConfig.from_dict(d)
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        get_config("huge")


def test_cli_config_show_json(capsys):
    from cli.main import main

    assert main(["config", "show", "brainwave-s10", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["native_dim"] == 400 and d["derived"]["macs_per_cycle"] == 96_000


def test_an_edited_preset_gets_its_own_name(tmp_path, capsys):
    from cli.main import main

    path = tmp_path / "mine.toml"
    assert main(["config", "show", "tiny", "--save", str(path)]) == 0
    assert 'name = "mine"' in capsys.readouterr().out
    mine = load_config(path)
    assert mine.name == "mine" and mine.replace(name="tiny") == get_config("tiny")
    # a file that keeps a preset's name but changes its values is refused, naming what differs
    path.write_text(path.read_text().replace('name = "mine"', 'name = "tiny"').replace("mrf_tiles = 64", "mrf_tiles = 32"))
    with pytest.raises(ConfigError, match="named after the preset 'tiny' but changes mrf_tiles"):
        load_config(path)
    path.write_text(path.read_text().replace('name = "tiny"\n', ""))  # no name: the file's stem
    assert load_config(path).name == "mine"


@pytest.mark.parametrize("latencies, words", [("abc", "latencies: must be a table of cycle counts"),
                                               ({"mvm": "x"}, "latencies.mvm: must be a non-negative integer")])
def test_latencies_of_the_wrong_type_are_named(latencies, words):
    d = get_config("tiny").to_dict()
    d["latencies"] = latencies
    with pytest.raises(ConfigError, match=words):
        NpuConfig.from_dict(d)
