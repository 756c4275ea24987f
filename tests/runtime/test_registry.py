"""The model registry: versions, listing, deletion, atomicity, refusal of bad files."""
from __future__ import annotations

import json
import zipfile

import pytest

from npu.errors import ModelFileError
from runtime.errors import ModelNotFound, RegistryError
from runtime.registry import Registry, parse_ref

from conftest import tiny_classifier_onnx, write_tiny_model


@pytest.fixture
def registry(tmp_path):
    return Registry(tmp_path / "store")


def test_versions_increment_per_name(registry, tiny_model):
    a1 = registry.register(tiny_model, "alpha", tags=["t1"], description="first")
    a2 = registry.register(tiny_model, "alpha")
    b1 = registry.register(tiny_model, "beta")
    assert (a1.version, a2.version, b1.version) == (1, 2, 1)
    assert a1.config == "brainslice-128" and a1.tags == ("t1",) and a1.description == "first"
    assert [r.ref for r in registry.list()] == ["alpha:1", "alpha:2", "beta:1"]
    assert registry.resolve("alpha").version == 2
    assert registry.resolve("alpha:1").version == 1
    # identical files share one content-addressed blob
    assert a1.sha256 == b1.sha256 and len(list(registry.blob_dir.glob("*/*.npu"))) == 1
    assert registry.open(a1).inputs[0].name == "images"


def test_unknown_names_and_versions(registry, tiny_model):
    registry.register(tiny_model, "alpha")
    with pytest.raises(ModelNotFound, match="registered: alpha"):
        registry.resolve("gamma")
    with pytest.raises(ModelNotFound, match="versions: 1"):
        registry.resolve("alpha:7")
    with pytest.raises(ModelNotFound, match="NAME:VERSION"):
        parse_ref("alpha:latest")
    with pytest.raises(RegistryError, match="model name"):
        registry.register(tiny_model, "a/b")


def test_delete_version_and_all(registry, tiny_model, tmp_path):
    other = write_tiny_model(tmp_path / "other.npu", seed=3)
    registry.register(tiny_model, "alpha")
    registry.register(other, "alpha")
    deleted = registry.delete("alpha:1")
    assert [r.ref for r in deleted] == ["alpha:1"]
    assert [r.ref for r in registry.list()] == ["alpha:2"]
    assert len(list(registry.blob_dir.glob("*/*.npu"))) == 1  # alpha:1's blob went with it
    registry.delete("alpha")
    assert registry.list() == [] and not list(registry.blob_dir.glob("*/*.npu"))
    with pytest.raises(ModelNotFound):
        registry.delete("alpha")


def test_crash_between_blob_and_commit_leaves_no_model(registry, tiny_model, monkeypatch):
    def crash(digest):
        raise KeyboardInterrupt("simulated crash after the blob write")

    monkeypatch.setattr(registry, "_after_blob_write", crash)
    with pytest.raises(KeyboardInterrupt):
        registry.register(tiny_model, "alpha")
    assert registry.list() == []
    with pytest.raises(ModelNotFound):
        registry.resolve("alpha")
    monkeypatch.undo()
    # the orphaned blob is cleaned up and the next registration is version 1
    assert len(registry.gc()) == 1
    assert registry.register(tiny_model, "alpha").version == 1


def test_crash_inside_transaction_rolls_back(registry, tiny_model, monkeypatch):
    registry.register(tiny_model, "alpha")
    import runtime.registry as mod

    class Boom(Exception):
        pass

    real_connect = Registry._connect

    def connect(self):
        conn = real_connect(self)

        class Wrapper:
            def __getattr__(self, name):
                return getattr(conn, name)

            def execute(self, sql, *args):
                if sql.startswith("INSERT"):
                    conn.execute(sql, *args)  # the row is written inside the transaction ...
                    raise Boom("... and the process dies before COMMIT")
                return conn.execute(sql, *args)
        return Wrapper()

    monkeypatch.setattr(mod.Registry, "_connect", connect)
    with pytest.raises(Boom):
        registry.register(tiny_model, "alpha")
    monkeypatch.undo()
    assert [r.ref for r in registry.list()] == ["alpha:1"]


def test_half_written_blob_is_ignored_and_collected(registry, tiny_model):
    registry.register(tiny_model, "alpha")
    stray = registry.blob_dir / "ab" / ".abcdef.npu.123.tmp"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"PK\x03\x04 half")
    assert [r.ref for r in registry.list()] == ["alpha:1"]
    assert stray in registry.gc() and not stray.exists()


def test_corrupt_and_incompatible_files_are_refused(registry, tiny_model, tmp_path):
    truncated = tmp_path / "truncated.npu"
    truncated.write_bytes(tiny_model.read_bytes()[:500])
    with pytest.raises(ModelFileError, match="truncated.npu.*(truncated or corrupt|not a valid)"):
        registry.register(truncated, "bad")

    future = tmp_path / "future.npu"
    with zipfile.ZipFile(tiny_model) as src, zipfile.ZipFile(future, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            if item == "manifest.json":
                manifest = json.loads(data)
                manifest["format_version"] = 99
                data = json.dumps(manifest).encode()
            dst.writestr(item, data)
    with pytest.raises(ModelFileError, match="format version 99 is not supported"):
        registry.register(future, "bad")

    tampered = tmp_path / "tampered.npu"
    raw = bytearray(tiny_model.read_bytes())
    with zipfile.ZipFile(tiny_model) as z:
        info = z.getinfo("weights.bin")
    at = info.header_offset + 30 + len(info.filename) + info.file_size // 2  # inside the weight image
    raw[at] ^= 0xFF
    tampered.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="checksum mismatch|Bad CRC"):
        registry.register(tampered, "bad")
    assert registry.list() == [] and not list(registry.blob_dir.glob("*/*.npu"))


def test_onnx_is_compiled_on_registration(registry, tmp_path):
    from compiler import compile_model

    onnx_path = tmp_path / "tiny.onnx"
    onnx_path.write_bytes(tiny_classifier_onnx())
    registry.compiler = compile_model
    record = registry.register(onnx_path, "compiled", config="brainslice-128")
    assert record.config == "brainslice-128"
    model = registry.open(record)
    assert model.outputs[0].name == "scores" and model.config.name == "brainslice-128"
    kinds = [s["kind"] for s in model.manifest["plan"]]
    assert "npu" in kinds and kinds[-1] == "host"  # MatMul+Add on the NPU, Softmax on the host


def test_onnx_without_compiler_is_a_clear_error(registry, tmp_path):
    onnx_path = tmp_path / "tiny.onnx"
    onnx_path.write_bytes(tiny_classifier_onnx())
    assert registry.compiler is None  # the runtime never imports the compiler itself
    with pytest.raises(RegistryError, match="compiler is not available.*npu compile"):
        registry.register(onnx_path, "x")
    assert registry.list() == []


def test_store_location_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("NPU_HOME", str(tmp_path / "home"))
    assert Registry().root == tmp_path / "home"
