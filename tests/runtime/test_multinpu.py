"""A model on several NPUs through the model file, the runtime and the CLI (issue 12)."""
import io
import json
import zipfile

import numpy as np
import pytest

import runtime
from compiler import compile_model, driver, zoo
from compiler.check import random_feeds
from npu.errors import ModelFileError
from npu.modelfile import model_bytes, read_model

MODEL = dict(name="mlp", seed=0, input_size=320, hidden=[256, 128])   # 116 tiles on small (64-tile MRF)


@pytest.fixture(scope="module")
def fabric_model():
    onnx_model = zoo.build(**MODEL)
    c = driver.compile_graph(onnx_model, "small", devices="auto")
    return onnx_model, driver.package(c)


def test_file_round_trip_and_session(fabric_model):
    onnx_model, (manifest, members) = fabric_model
    data = model_bytes(manifest, members)
    m = read_model(data)
    assert m.manifest["format_version"] == 2 and m.manifest["fabric"]["devices"] >= 2
    session = runtime.load(data)
    feed = random_feeds(onnx_model, 1, seed=3)[0]
    got = session.run(feed)
    one = runtime.load(compile_model(onnx_model, "small")).run(feed)
    out = got[0] if isinstance(got, tuple) else got
    ref = one[0] if isinstance(one, tuple) else one
    assert np.array_equal(out["output"], ref["output"])


def restamp(data: bytes, version) -> bytes:
    """The file with its manifest's format_version changed (the checksums cover members, not the manifest)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zin:
        files = {info.filename: zin.read(info) for info in zin.infolist()}
    raw = json.loads(files["manifest.json"])
    raw["format_version"] = version
    files["manifest.json"] = json.dumps(raw).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zout:
        for name, content in files.items():
            zout.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), content)
    return buf.getvalue()


def test_version_1_files_still_load():
    onnx_model = zoo.build("mlp", seed=0, input_size=16, hidden=[8])
    manifest, members = driver.package(driver.compile_graph(onnx_model, "small"))
    assert "fabric" not in manifest
    data = model_bytes(manifest, members)
    assert read_model(data).manifest["format_version"] == 2
    assert read_model(restamp(data, 1)).manifest["format_version"] == 1
    with pytest.raises(ModelFileError, match="version 3 is not supported"):
        read_model(restamp(data, 3))


def _with(manifest, members, edit):
    m = json.loads(json.dumps(manifest))
    edit(m)
    return model_bytes(m, members)


@pytest.mark.parametrize("edit,field", [
    (lambda m: m["routes"].pop(), "manifest.routes"),
    (lambda m: m["routes"][0].update({"vectors": m["routes"][0]["vectors"] + 1}), "manifest.routes[0]"),
    (lambda m: next(s for s in m["plan"] if s["kind"] == "npu").update({"device": 9}), ".device"),
    (lambda m: m["fabric"].update({"devices": m["fabric"]["devices"] + 1}), "manifest.devices"),
    (lambda m: m.pop("routes"), "manifest.routes"),
    (lambda m: m["devices"][0]["weights"].update({"tiles": 1}), "manifest.devices[0]"),
])
def test_validation_names_the_field(fabric_model, edit, field):
    _, (manifest, members) = fabric_model
    with pytest.raises(ModelFileError, match=field.replace("[", r"\[").replace("]", r"\]")):
        read_model(_with(manifest, members, edit))


def test_cli_compile_run_stream_and_trace(tmp_path, capsys):
    from cli.main import main

    onnx_path = tmp_path / "mlp.onnx"
    onnx_path.write_bytes(zoo.build(**MODEL).SerializeToString())
    out = tmp_path / "mlp.npu"
    assert main(["compile", str(onnx_path), "--config", "small", "--devices", "auto", "-o", str(out), "-q",
                 "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["devices"] >= 2 and set(rep["device_modes"]) == {"pinned"}
    assert all(L["device"] is not None for L in rep["layers"] if L["target"] == "npu")
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).standard_normal((1, 320)).astype(np.float32))
    trace = tmp_path / "t.json"
    assert main(["run", str(out), "--input", str(x), "--stream", "8", "--trace", str(trace), "--json", "-q"]) == 0
    res = json.loads(capsys.readouterr().out)
    stream = res["stream"]
    assert stream["requests"] == 8 and stream["devices"] == rep["devices"]
    assert stream["throughput_per_s"] > 1e6 / res["stats"]["latency_us"]      # pipelining beats one at a time
    events = json.loads(trace.read_text())["traceEvents"]
    procs = {e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert procs == {f"npu {d}" for d in range(rep["devices"])} | {"links"}
    assert main(["compile", str(onnx_path), "--devices", "zero", "-o", str(out)]) != 0
    assert "--devices must be a positive integer or 'auto'" in capsys.readouterr().err
