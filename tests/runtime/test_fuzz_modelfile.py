"""Hostile model files: crafted manifests, ZIP containers and host ONNX are refused with a ModelFileError
naming the field, member or rule; none gives another exception, reads a file outside the model, or runs
with silently wrong output.

Random mutations are seeded (``NPU_FUZZ_SEED``) and counted (``NPU_FUZZ_CASES``, default 150 here;
the ``slow`` test runs 3,000)."""
from __future__ import annotations

import copy
import io
import json
import os
import random
import struct
import zipfile

import numpy as np
import pytest

from npu.errors import ModelFileError, NpuError
from npu.manifest import Limits
from npu.modelfile import model_bytes, read_model

CASES = int(os.environ.get("NPU_FUZZ_CASES", "150"))
SEED = int(os.environ.get("NPU_FUZZ_SEED", "0"))


@pytest.fixture(scope="module")
def parts(tiny_model):
    model = read_model(tiny_model)
    manifest = {k: v for k, v in model.manifest.items() if k not in ("format", "format_version", "members")}
    return manifest, {name: bytes(view) for name, view in model.members.items()}


def rebuilt(parts, edit) -> bytes:
    """The model file after ``edit(manifest, members)``, with valid checksums (as an attacker would write it)."""
    manifest, members = copy.deepcopy(parts[0]), dict(parts[1])
    edit(manifest, members)
    return model_bytes(manifest, members)


def npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def setter(path, value):
    def edit(manifest, members):
        target = manifest
        for key in path[:-1]:
            target = target[key]
        if value is DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return edit


DELETE = object()
NPU = 1  # the tiny classifier's plan: host Flatten, NPU MatMul+Add, host Softmax


def emap_edit(fn):
    def edit(manifest, members):
        name = manifest["plan"][NPU]["inputs"][0]["emap"]
        members[name] = npy(fn(np.load(io.BytesIO(members[name]))))
    return edit


CRAFTED = [
    (setter(["plan", NPU, "outputs", 0, "vectors"], -3), r"plan\[1\]\.outputs\[0\]\.vectors: must be an integer"),
    (setter(["plan", NPU, "outputs", 0, "vectors"], 2 ** 40), r"outputs\[0\]\.vectors"),
    (setter(["plan", NPU, "inputs", 0, "tensor"], ["x"]), r"inputs\[0\]\.tensor: must be a tensor name"),
    (setter(["plan", NPU, "kind"], "gpu"), r"plan\[1\]\.kind: must be one of 'npu', 'host'"),
    (setter(["plan", NPU, "program"], "npu/9.bin"), r"plan\[1\]\.program: names member 'npu/9.bin'"),
    (setter(["plan", NPU, "program"], "../../etc/passwd"), r"plan\[1\]\.program: must be a member name"),
    (setter(["plan", 0, "model"], "/etc/passwd"), r"plan\[0\]\.model: must be a member name"),
    (setter(["plan", 2, "inputs"], ["nowhere"]), r"plan\[2\]\.inputs\[0\]: reads tensor 'nowhere' before"),
    (setter(["plan", NPU, "regions", 0], [5, 1, "x"]), r"regions\[0\]: first pc 5 is after last pc 1"),
    (setter(["plan", NPU, "regions", 0], [0, 10 ** 6, "x"]), r"regions\[0\]: last pc 1000000 is past"),
    (setter(["plan", NPU, "macs"], "many"), r"plan\[1\]\.macs: must be an integer"),
    (setter(["plan"], {}), r"manifest\.plan: must be a list"),
    (setter(["plan", NPU, "bogus"], 1), r"plan\[1\]\.bogus: unknown field"),
    (setter(["inputs", 0, "shape"], [2 ** 32, 2 ** 32]), r"inputs\[0\]\.shape\[0\]: must be an integer"),
    (setter(["inputs", 0, "shape"], [65536, 65536, 65536]), r"inputs\[0\]\.shape: .* more than"),
    (setter(["inputs", 0, "dtype"], "complex128"), r"inputs\[0\]\.dtype: must be one of"),
    (setter(["inputs", 0, "name"], 7), r"inputs\[0\]\.name: must be a tensor name"),
    (setter(["outputs", 0, "name"], "ghost"), r"outputs\[0\]\.name: output 'ghost' is produced by no step"),
    (setter(["outputs"], []), r"manifest\.outputs: must be a list of 1"),
    (setter(["weights", "mode"], "streaming"), r"weights\.mode: is 'streaming', but the programs never read"),
    (setter(["weights", "mode"], "mapped"), r"weights\.mode: must be one of"),
    (setter(["weights", "tiles"], 47), r"manifest\.weights: the image holds"),
    (setter(["weights", "tiles"], 10 ** 6), r"weights\.tiles: 1000000 tiles do not fit"),
    (setter(["weights"], DELETE), r"manifest\.weights: required field is missing"),
    (setter(["constants", "vectors", 0, "space"], 9), r"vectors\[0\]\.space: 9 is not a memory space"),
    (setter(["constants", "vectors", 0, "space"], 0), r"vectors\[0\]\.space: NETQ holds no constant"),
    (setter(["constants", "vectors", 0, "mfu"], 7), r"vectors\[0\]\.mfu: must be below the 2 MFUs"),
    (setter(["constants", "vectors", 0, "addr"], 32767), r"constants\.vectors\[0\]: .* do not fit"),
    (setter(["constants", "vectors", 0, "key"], "c9"), r"vectors\[0\]\.key: 'c9' is not in"),
    (setter(["config", "native_dim"], 100), r"manifest\.config\.dpe_lanes: must divide native_dim"),
    (setter(["config", "dram_vectors"], 2 ** 40), r"manifest\.config: declares .* bytes of NPU memories"),
    (setter(["config", "clock_mhz"], 1.0), r"plan\[1\]\.program: .* was built for configuration"),
    (setter(["config", "warp"], 1), r"manifest\.config\.warp: unknown field"),
    (setter(["config", "latencies"], "fast"), r"manifest\.config\.latencies: must be an object"),
    (setter(["preprocessing", "size"], [0, 16]), r"preprocessing\.size\[0\]: must be an integer"),
    (setter(["preprocessing", "std"], [0.0, 1.0, 1.0]), r"preprocessing\.std\[0\]: must be a finite number"),
    (setter(["preprocessing", "labels"], "cifar"), r"preprocessing\.labels: must be a list"),
    (setter(["const_outputs"], {"probs": "../x.npy"}), r"const_outputs\['probs'\]: must be a member name"),
    (emap_edit(lambda e: -e - 1), r"inputs\[0\]\.emap: indices must lie in \[0, 768\)"),
    (emap_edit(lambda e: np.zeros_like(e)), r"inputs\[0\]\.emap: two elements map to one lane"),
    (emap_edit(lambda e: e[:-1]), r"inputs\[0\]\.emap: .* must be 768 int64 stream indices"),
    (emap_edit(lambda e: e.astype(np.float64)), r"inputs\[0\]\.emap: .* not float64"),
    (emap_edit(lambda e: np.array([{"pickle": 1}], dtype=object)), r"holds object values"),
    (lambda m, mem: mem.__setitem__("weights.bin", b"PK junk"), r"member 'weights.bin': .*not a valid"),
    (lambda m, mem: mem.__setitem__("npu/1.bin", b"NPUPROG1\xff\xff\xff\xff{"), r"member 'npu/1.bin'"),
    (lambda m, mem: mem.__setitem__("host/2.onnx", b"\x08\x07garbage"), r"plan\[2\]\.model .*not an ONNX model"),
    (lambda m, mem: mem.__setitem__("extra.bin", b"x"), None),  # unlisted member: refused by the member list
]


@pytest.mark.parametrize("edit, message", CRAFTED, ids=[f"crafted{i}" for i in range(len(CRAFTED))])
def test_crafted_manifests_are_refused_naming_the_field(parts, edit, message):
    data = rebuilt(parts, edit)
    if message is None:  # the member list itself was edited: rewrite without the checksum of the extra member
        manifest = json.loads(zipfile.ZipFile(io.BytesIO(data)).read("manifest.json"))
        del manifest["members"]["extra.bin"]
        data = raw_zip([("manifest.json", json.dumps(manifest).encode())]
                       + [(n, zipfile.ZipFile(io.BytesIO(data)).read(n)) for n in zipfile.ZipFile(io.BytesIO(data)).namelist()
                          if n != "manifest.json"])
        message = r"manifest\.members: does not match"
    with pytest.raises(ModelFileError, match=message):
        read_model(data)


def test_the_unchanged_model_is_accepted(parts):
    assert read_model(rebuilt(parts, lambda m, mem: None)).inputs[0].name == "images"


# -- host ONNX that names files -------------------------------------------------------------

def external_data_onnx(location: str) -> bytes:
    import onnx
    from onnx import TensorProto, helper

    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4], data_location=TensorProto.EXTERNAL)
    weight.external_data.add(key="location", value=location)
    weight.external_data.add(key="length", value="16")
    graph = helper.make_graph([helper.make_node("Add", ["scores", "w"], ["probs"])], "g",
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1000])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 1000])], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def subgraph_external_onnx() -> bytes:
    import onnx
    from onnx import TensorProto, helper

    hidden = TensorProto(name="k", data_type=TensorProto.FLOAT, dims=[1], data_location=TensorProto.EXTERNAL)
    hidden.external_data.add(key="location", value="secrets/key")
    then = helper.make_graph([helper.make_node("Identity", ["k"], ["o"])], "then", [],
                             [helper.make_tensor_value_info("o", TensorProto.FLOAT, [1])], [hidden])
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True])),
         helper.make_node("If", ["c"], ["probs"], then_branch=then, else_branch=then)], "g",
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1000])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize("onnx_bytes", [external_data_onnx("id_fake"), external_data_onnx(".ssh/id_fake"),
                                        external_data_onnx("/etc/passwd"), subgraph_external_onnx()],
                         ids=["relative", "subdirectory", "absolute", "in-a-subgraph"])
def test_host_onnx_naming_a_file_is_refused_and_nothing_is_read(parts, onnx_bytes, tmp_path, monkeypatch):
    secret = tmp_path / ".ssh" / "id_fake"
    secret.parent.mkdir()
    secret.write_bytes(b"SECRET-KEY-BYTES")
    (tmp_path / "id_fake").write_bytes(b"SECRET-KEY-BYTES")
    monkeypatch.chdir(tmp_path)  # onnxruntime would resolve the location here
    data = rebuilt(parts, lambda m, mem: mem.__setitem__("host/2.onnx", onnx_bytes))
    with pytest.raises(ModelFileError, match=r"plan\[2\]\.model .*references external data"):
        read_model(data)
    from runtime.registry import Registry

    path = tmp_path / "evil.npu"
    path.write_bytes(data)
    with pytest.raises(ModelFileError, match="external data"):
        Registry(tmp_path / "store").register(path, "evil")


# -- the container -------------------------------------------------------------------------------

def raw_zip(entries, method=zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


def manifest_entry() -> tuple[str, bytes]:
    return "manifest.json", json.dumps({"format": "npu-model", "format_version": 1, "members": {}}).encode()


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_compressed_members_are_refused_before_reading(method):
    bomb = raw_zip([manifest_entry(), ("weights.bin", b"\0" * (8 << 20))], method)
    assert len(bomb) < 100_000
    with pytest.raises(ModelFileError, match="is compressed"):
        read_model(bomb)


@pytest.mark.parametrize("name", ["../escape.bin", "/abs.bin", "a/../../b", "c:\\\\x", "sp ace", "é.bin", "a//b"])
def test_unsafe_member_names_are_refused(name):
    with pytest.raises(ModelFileError, match="is not a relative path of safe characters"):
        read_model(raw_zip([manifest_entry(), (name, b"x")]))


def test_limits_apply_before_reading():
    data = raw_zip([manifest_entry()] + [(f"m{i}.bin", b"x" * 100) for i in range(20)])
    with pytest.raises(ModelFileError, match="has 21 members, more than the limit of 10"):
        read_model(data, Limits(max_members=10))
    with pytest.raises(ModelFileError, match="'m0.bin' declares 100 bytes .* the limit is 80"):
        read_model(data, Limits(max_member_bytes=80, max_manifest_bytes=80))
    with pytest.raises(ModelFileError, match="more than the limit of 1000"):
        read_model(data, Limits(max_file_bytes=1000))
    deep = b'{"format": "npu-model", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    with pytest.raises(ModelFileError, match="nests deeper than 64 levels"):
        read_model(raw_zip([("manifest.json", deep)]))


def test_overlapping_and_duplicate_members_are_refused():
    data = bytearray(raw_zip([manifest_entry(), ("a.bin", b"A" * 64), ("b.bin", b"B" * 64)]))
    # point b.bin's central-directory entry at a.bin's local header: one span of bytes, two members
    cd = data.rindex(b"PK\x01\x02")
    a_offset = struct.unpack_from("<I", data, data.index(b"PK\x01\x02") + 42)[0]
    first_cd = data.index(b"PK\x01\x02")
    second = data.index(b"PK\x01\x02", first_cd + 4)
    struct.pack_into("<I", data, cd + 42, struct.unpack_from("<I", data, second + 42)[0])
    assert a_offset == 0
    with pytest.raises(ModelFileError, match="overlap|disagrees|appears twice|runs past"):
        read_model(bytes(data))
    with pytest.warns(UserWarning):
        dup = raw_zip([manifest_entry(), ("a.bin", b"1"), ("a.bin", b"2")])
    with pytest.raises(ModelFileError, match="appears twice"):
        read_model(dup)


def test_encrypted_flag_is_refused():
    data = bytearray(raw_zip([manifest_entry(), ("a.bin", b"x")]))
    at = data.rindex(b"PK\x01\x02")
    struct.pack_into("<H", data, at + 8, struct.unpack_from("<H", data, at + 8)[0] | 1)
    with pytest.raises(ModelFileError, match="encrypted"):
        read_model(bytes(data))


# -- random mutation ---------------------------------------------------------------------------------

GARBAGE = [None, True, -1, 0, 2 ** 31, 2 ** 70, -2 ** 63, 1e308, float("nan"), "", "x" * 5000, "../../etc/passwd",
           [], [[]], {}, {"a": []}, [-1, -1], [2 ** 32, 2 ** 32], "npu/1.bin", "host/0.onnx", 3.5]


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            if prefix == () and k == "compiler":
                continue  # free-form by design
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value[:8]):
            yield from _paths(v, prefix + (i,))


def mutate(manifest: dict, rng: random.Random) -> None:
    paths = [p for p in _paths(manifest) if p]
    for _ in range(rng.choice((1, 1, 2, 3))):
        path = rng.choice(paths)
        target = manifest
        try:
            for key in path[:-1]:
                target = target[key]
            if rng.random() < 0.15 and isinstance(target, dict):
                target.pop(path[-1], None)
            else:
                target[path[-1]] = copy.deepcopy(rng.choice(GARBAGE))
        except (KeyError, IndexError, TypeError):
            pass


def run_fuzz(parts, cases: int, seed: int) -> dict:
    """Mutate, load, and run what loads; every outcome is a ModelFileError (NpuError) or a correct run."""
    from runtime.executor import Executor

    rng = random.Random(seed)
    manifest0, members = parts
    x = np.random.default_rng(seed).random((1, 3, 16, 16), dtype=np.float32)
    want, _ = Executor(read_model(model_bytes(manifest0, members))).run({"images": x})
    counts = {"refused": 0, "ran": 0}
    for case in range(cases):
        manifest = copy.deepcopy(manifest0)
        mutate(manifest, rng)
        try:
            data = model_bytes(manifest, members)
        except TypeError:  # a mutation left an int key where JSON has only strings: not a file anyone can write
            continue
        if rng.random() < 0.3:  # and damage the bytes too, sometimes
            raw = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            data = bytes(raw)
        try:
            model = read_model(data)
        except ModelFileError:
            counts["refused"] += 1
            continue
        except Exception as exc:  # noqa: BLE001 -- the finding this test exists for
            raise AssertionError(f"case {case} (seed {seed}): {type(exc).__name__}: {exc}") from exc
        try:
            got, _ = Executor(model).run({"images": x})
        except NpuError:
            counts["refused"] += 1
            continue
        for name in ("scores", "probs"):
            if name in got:
                np.testing.assert_array_equal(got[name], want[name], err_msg=f"case {case} ran with other output")
        counts["ran"] += 1
    return counts


def test_random_manifest_mutations(parts):
    counts = run_fuzz(parts, CASES, SEED)
    assert counts["refused"] > CASES // 2, counts


@pytest.mark.slow
def test_random_manifest_mutations_long(parts):
    counts = run_fuzz(parts, 3000, SEED + 1)
    assert counts["refused"] > 1500, counts
