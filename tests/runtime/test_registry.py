"""The model registry: versions, listing, deletion, atomicity, refusal of bad files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

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
    for bad in ["a/b", "a b", "a:b", "", "-x", ".hidden", "x\ny", "tab\there", "\x1b[31mred", "rtl\u202egnp",
                "é", "x" * 65, "y" * 120_000, None, 7]:
        with pytest.raises(RegistryError, match="model name .*must be 1 to 64 letters"):
            registry.register(tiny_model, bad)
    assert registry.register(tiny_model, "Res-Net_50.v2").version == 1
    assert registry.list("a b") == [] and len(registry.list()) == 2


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
    assert registry.gc() == [] and stray.exists()  # young: maybe a writer's that has not locked it yet
    old = time.time() - 3600
    os.utime(stray, (old, old))
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


def test_versions_are_never_reused(registry, tiny_model):
    registry.register(tiny_model, "alpha")
    registry.register(tiny_model, "alpha")
    registry.delete("alpha:2")
    assert registry.register(tiny_model, "alpha").version == 3  # a client holding alpha:2 never gets another model


# -- other processes ----------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
WORKER = textwrap.dedent("""
    import random, sys, time
    from runtime.registry import Registry
    from runtime.errors import ModelNotFound
    store, model, seed, ops = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    registry = Registry(store)
    for i in range(ops):
        op = rng.choice(["register", "register", "delete", "gc", "open"])
        name = rng.choice(["alpha", "beta"])
        try:
            if op == "register":
                registry.register(model, name)
            elif op == "delete":
                registry.delete(name)
            elif op == "gc":
                registry.gc()
            else:
                registry.open(registry.resolve(name)).inputs
        except ModelNotFound:
            pass
    print("done")
""")


def _invariants(store: Path) -> list:
    """Every row's blob exists and is the model it names; nothing but blobs and live temporaries on disk."""
    from npu.modelfile import read_model

    registry = Registry(store)
    records = registry.list()
    for record in records:
        assert registry.path(record).exists(), f"{record.ref}: row without a blob"
        read_model(registry.path(record))
    assert len({(r.name, r.version) for r in records}) == len(records)
    return records


def test_concurrent_processes_register_delete_and_collect(tmp_path, tiny_model):
    store = tmp_path / "store"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(store), str(tiny_model), str(seed), "12"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in range(3)]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.strip() == "done", err[-2000:]
    _invariants(store)
    assert not [p for p in (store / "blobs").glob("*/*.tmp")]


PAUSED_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from runtime.registry import Registry
    store, model, flag = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    registry = Registry(store)
    real = registry._write_tmp
    def slow(path, data):
        out = real(path, data)
        flag.write_text("written")   # the blob is in its temporary file: let the other process delete and gc now
        time.sleep(1.5)
        return out
    registry._write_tmp = slow
    print(registry.register(model, "slow").ref)
""")


def test_delete_and_gc_leave_another_writers_temporary_blob_alone(tmp_path, tiny_model):
    store, flag = tmp_path / "store", tmp_path / "flag"
    other = write_tiny_model(tmp_path / "other.npu", seed=5)
    registry = Registry(store)
    registry.register(other, "victim")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", PAUSED_WRITER, str(store), str(tiny_model), str(flag)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not flag.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.02)
    for tmp in (store / "blobs").glob("*/*.tmp"):  # even a minute old, a live writer's file is its own
        os.utime(tmp, (time.time() - 3600,) * 2)
    registry.delete("victim")
    assert registry.gc() == []
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.strip() == "slow:1", err[-2000:]
    assert [r.ref for r in _invariants(store)] == ["slow:1"]
