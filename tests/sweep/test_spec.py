"""Specs: what parses, and errors that name the file, the table and the key."""
import pytest

from sweep.errors import SpecError
from sweep.spec import load_spec

GOOD = """
[sweep]
base = "tiny"
formats = ["bfp-e8m7b8", {weight = "bfp-e8m7b8", act = "bfp-e8m3b8"}]
constraints = ["macs_per_cycle <= 32", "latencies.mvm >= 4"]

[[models]]
zoo = "tiny_cnn"
params = { in_channels = 4 }

[[models]]
zoo = "tiny_rnn"
input_size = 4
label = "rnn4"

[space]
tile_engines = { start = 1, stop = 3 }
dpe_lanes = { start = 2, stop = 8, factor = 2 }
clock_mhz = { start = 100.0, stop = 200.0, step = 50.0 }
latencies.mvm = [4, 6]
"latencies.decode" = 2
"""


def test_a_spec_file_parses(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(GOOD)
    spec = load_spec(path)
    assert spec.source == str(path) and spec.name == "s"  # the file's stem
    assert spec.formats == (("bfp-e8m7b8", "bfp-e8m7b8"), ("bfp-e8m7b8", "bfp-e8m3b8"))
    assert [m.label for m in spec.models] == ["tiny_cnn", "rnn4"]
    assert spec.models[0].params["in_channels"] == 4 and spec.models[1].input_size == 4
    grid = {g.field: g.values for g in spec.grid}
    assert grid == {"tile_engines": (1, 2, 3), "dpe_lanes": (2, 4, 8), "clock_mhz": (100.0, 150.0, 200.0),
                    "latencies.mvm": (4, 6), "latencies.decode": (2,)}
    assert len(spec.constraints) == 2


def test_text_and_dict_specs_are_the_same_spec(tmp_path):
    import tomllib

    a, b = load_spec(GOOD), load_spec(tomllib.loads(GOOD))
    assert a.source == "<string>" and b.source == "<dict>"
    assert (a.grid, a.formats, a.models) == (b.grid, b.formats, b.models)


def test_onnx_models_and_base_files_are_relative_to_the_spec(tmp_path):
    from compiler.zoo import registry

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "cnn.onnx").write_bytes(registry.build("tiny_cnn").SerializeToString())
    (tmp_path / "base.toml").write_text(load_spec(GOOD).base.replace(name="base").to_toml())
    path = tmp_path / "s.toml"
    path.write_text('[sweep]\nbase = "base.toml"\n[[models]]\nonnx = "m/cnn.onnx"\n'
                    'input_shapes = { input = [1, 3, 8, 8] }\n[space]\ntile_engines = [1]\n')
    spec = load_spec(path)
    assert spec.base.name == "base"
    m = spec.models[0]
    assert m.label == "cnn" and len(m.onnx_sha256) == 64 and m.input_shapes == {"input": [1, 3, 8, 8]}


@pytest.mark.parametrize("text,where", [
    ("[sweep\n", "s.toml: not valid TOML"),
    ("[sweeps]\n", "s.toml: sweeps: unknown table"),
    ("[sweep]\nbsae = 'tiny'\n", "s.toml: [sweep] bsae: unknown key"),
    ("[sweep]\nbase = 'huge'\n", "s.toml: [sweep] base: config: unknown preset 'huge'"),
    ("[sweep]\nfidelity = -1\n[[models]]\nzoo='mlp'\n", "s.toml: [sweep] fidelity: must be 0 (off)"),
    ("[sweep]\nfidelity = 'yes'\n", "s.toml: [sweep] fidelity: must be an integer"),
    ("[sweep]\nformats = ['msfp99']\n[[models]]\nzoo='mlp'\n", "s.toml: [sweep] formats[0]: "),
    ("[sweep]\nconstraints = ['macs <= 3']\n[[models]]\nzoo='mlp'\n",
     "s.toml: [sweep] constraints[0]: 'macs <= 3': unknown name 'macs'"),
    ("[sweep]\nconstraints = ['import os']\n[[models]]\nzoo='mlp'\n", "s.toml: [sweep] constraints[0]: 'import os': not an"),
    ("[sweep]\nbase = 'tiny'\n", "s.toml: [models]: give at least one"),
    ("[[models]]\nzoo = 'resnet51'\n", "s.toml: [models #1] zoo: unknown model 'resnet51'"),
    ("[[models]]\nzoo = 'mlp'\nparams = {depth = 3}\n", "s.toml: [models #1] params: mlp: unknown parameter"),
    ("[[models]]\nzoo = 'digits'\ninput_size = 9\n", "s.toml: [models #1] input_size: digits"),
    ("[[models]]\nzoo = 'mlp'\nonnx = 'x.onnx'\n", "s.toml: [models #1]: needs exactly one of zoo"),
    ("[[models]]\nonnx = 'missing.onnx'\n", "s.toml: [models #1] onnx: cannot read"),
    ("[[models]]\nonnx = 3\n", "s.toml: [models #1] onnx: must be a string, not 3"),
    ("[[models]]\nzoo = 'mlp'\nlabel = 1\n", "s.toml: [models #1] label: must be a string"),
    ("[[models]]\nzoo = 'mlp'\nseeds = 1\n", "s.toml: [models #1] seeds: unknown key for a zoo model"),
    ("[[models]]\nzoo = 'mlp'\n[[models]]\nzoo = 'mlp'\n", "s.toml: [models #2] label: 'mlp' names two models"),
    ("[[models]]\nzoo = 'mlp'\n[space]\nnative_dimm = [8]\n", "s.toml: [space] native_dimm: not a configuration field"),
    ("[[models]]\nzoo = 'mlp'\n[space]\nname = ['a']\n", "s.toml: [space] name: not a configuration field"),
    ("[[models]]\nzoo = 'mlp'\n[space]\nnative_dim = ['64']\n", "s.toml: [space] native_dim: values must be integers"),
    ("[[models]]\nzoo = 'mlp'\n[space]\nnative_dim = []\n", "s.toml: [space] native_dim: a grid is a non-empty list"),
    ("[[models]]\nzoo = 'mlp'\n[space]\nnative_dim = {start = 64, stop = 32}\n", "[space] native_dim: stop (32) is below"),
    ("[[models]]\nzoo = 'mlp'\n[space]\nnative_dim = {start = 64, stop = 128, step = 0}\n", "step must be positive"),
    ("[[models]]\nzoo = 'mlp'\n[space]\nnative_dim = {from = 64}\n", "[space] native_dim: a table here is a range"),
    ("[[models]]\nzoo = 'mlp'\n[space]\nweight_format = ['msfp12']\n", "[space] weight_format: formats are swept by"),
    ("[[models]]\nzoo = 'mlp'\n[space]\nmrf_tiles = {low = 8, high = 64}\n", "s.toml: [sample]: [space] mrf_tiles is sampled"),
    ("[[models]]\nzoo = 'mlp'\n[space]\nmrf_tiles = [8]\n[sample]\ncount = 3\n", "s.toml: [sample]: no [space] field is sampled"),
    ("[[models]]\nzoo = 'mlp'\n[space]\nmrf_tiles = {low = 8, high = 64}\n[sample]\nmethod = 'sobol'\ncount = 3\n",
     "s.toml: [sample] method: must be"),
    ("[[models]]\nzoo = 'mlp'\n[space]\nmrf_tiles = {low = 8, high = 64}\n[sample]\n", "s.toml: [sample] count: must be a positive"),
    ("[[models]]\nzoo = 'mlp'\n[space]\nmrf_tiles = {low = 0, high = 64, log = true}\n[sample]\ncount = 2\n",
     "[space] mrf_tiles: needs low <= high and low > 0 for log"),
    ("[[models]]\nzoo = 'mlp'\n[space]\nnative_dim = {start = 1, stop = 5000}\nmrf_tiles = {start = 1, stop = 100}\n",
     "[space]: 500,000 points"),
    ("[[models]]\nzoo = 'mlp'\n[space]\nnative_dim = {start = 1, stop = 100000}\n", "[space] native_dim: 100,000 values"),
])
def test_errors_name_the_file_table_and_key(tmp_path, text, where):
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path).points()
    message = str(info.value)
    assert message.startswith(str(tmp_path)) and where in message, message
    assert "\n" not in message


def test_a_missing_spec_file_is_named():
    with pytest.raises(SpecError, match="nowhere.toml: cannot read the spec"):
        load_spec("nowhere.toml")


def test_a_constraint_that_cannot_be_computed_is_named():
    spec = load_spec({"sweep": {"base": "tiny", "constraints": ["native_dim / (tile_engines - 1) > 1"]},
                      "models": [{"zoo": "tiny_cnn"}], "space": {"tile_engines": [1, 2]}})
    with pytest.raises(SpecError, match=r"<dict>: \[sweep\] constraints: .*division by zero"):
        spec.points()
