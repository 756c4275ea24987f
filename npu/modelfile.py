"""The `.npu` model file: one self-describing container for a compiled model.

Layout: a ZIP archive (stored, not compressed, so members can be read quickly)
holding

* ``manifest.json`` -- ``format`` (always ``"npu-model"``), ``format_version``,
  the NPU ``config`` (as :meth:`npu.config.NpuConfig.to_dict`), ``inputs`` and
  ``outputs`` (lists of :class:`TensorSpec` dicts), ``preprocessing`` (free-form
  dict, see below), ``compiler`` (free-form: report, options), ``members``
  (``{member name: sha256 hex}`` of every other member) and whatever the
  compiler's executor needs (``plan``).  Format version 2 adds, for a model on
  several NPUs (npu/fabric.py, docs/multinpu.md), ``fabric``, ``devices`` (each
  NPU's weights and constants), ``routes`` (tensors sent between NPUs) and a plan
  step's ``device``; version 1 files read unchanged.
* any number of binary members (``program.bin``, ``weights.bin``,
  ``host/<name>.onnx`` ...), each checked against its sha256 on read.

A model file is data, never instructions.  A reader checks, before it reads or allocates more:

* the container: a ZIP of at most :attr:`Limits.max_members` members, each *stored* (no
  compression, no encryption, no data descriptor), of at most :attr:`Limits.max_member_bytes`,
  named by a relative path of safe characters, not overlapping another member;
* the manifest: every field against the schema in :mod:`npu.manifest` (types, ranges, the
  members, tensors, memories and constants they refer to);
* the members' content: sha256 of each; element maps (int64 ``.npy``, one entry per element,
  inside the vectors they index, no two inputs on one lane); weight and constant images
  (``.npz`` of stored ``.npy`` arrays of the declared shapes); programs (decoded, built for the
  manifest's configuration, ``m_rd`` exactly when the weights stream); host models (ONNX that
  references no external data and no file).

The file is read once into memory (its size checked first) and members are views of it, so
loading costs one copy of the file.  Every violation raises :class:`npu.errors.ModelFileError`
naming the file and the field, member or rule.

``preprocessing`` keys understood by the runtime (all optional):
``kind`` ("image" or "none"), ``layout`` ("NCHW"/"NHWC"), ``size`` ([H, W]),
``resize`` (shorter side before center crop), ``mean`` and ``std`` (per channel,
on 0..1 pixel values), ``labels`` ("imagenet" or a list).
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import struct
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from npu.config import NpuConfig
from npu.errors import ModelFileError, NpuError
from npu.manifest import DEFAULT_LIMITS, MEMBER_NAME, Limits, json_depth_ok, validate

FORMAT_NAME = "npu-model"
#: Written by this toolkit.  Version 2 added the optional ``fabric``, ``devices`` and ``routes`` fields and a
#: plan step's ``device`` (a model on several NPUs, npu/fabric.py); version 1 files read unchanged.
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and numpy dtype name of a model input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: dict) -> "TensorSpec":
        return cls(str(d["name"]), tuple(int(s) for s in d["shape"]), str(d.get("dtype", "float32")))


@dataclass
class RunStats:
    """What one inference cost: modeled NPU time and measured host time.

    ``macs`` are the graph's MACs that ran on the NPU (as the compiler counts the ONNX computation) and
    ``utilization`` = ``config.utilization(macs, npu_cycles)``, the one definition used everywhere;
    ``tile_macs`` and ``tile_utilization`` count the MACs the MVM performed on whole native tiles
    (padding included)."""

    npu_cycles: int = 0
    latency_us: float = 0.0
    utilization: float = 0.0
    macs: int = 0
    tile_macs: int = 0
    tile_utilization: float = 0.0
    instructions: int = 0
    host_time_s: float = 0.0
    wall_time_s: float = 0.0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ModelFile:
    """An opened model file: the manifest and the (verified) members, as views of the file's bytes.

    ``members`` maps each member name to a read-only :class:`memoryview`; :meth:`member` returns
    bytes, :meth:`array`, :meth:`program` and :meth:`weights` the decoded member (cached, so the
    checks made on reading and the executor decode each member once).
    """

    manifest: dict[str, Any]
    members: dict[str, Any]
    path: str | None = None
    _decoded: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec.from_dict(d) for d in self.manifest.get("inputs", [])]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec.from_dict(d) for d in self.manifest.get("outputs", [])]

    @property
    def config(self) -> NpuConfig:
        return NpuConfig.from_dict(self.manifest["config"])

    def _label(self) -> str:
        return self.path or "<model>"

    def view(self, name: str) -> memoryview:
        try:
            return self.members[name]
        except KeyError:
            raise ModelFileError(f"{self._label()}: has no member {name!r}") from None

    def member(self, name: str) -> bytes:
        return bytes(self.view(name))

    def _cached(self, kind: str, name: str, decode):
        key = (kind, name)
        if key not in self._decoded:
            try:
                self._decoded[key] = decode(self.view(name))
            except ModelFileError as exc:
                raise ModelFileError(f"{self._label()}: member {name!r}: {exc}") from None
        return self._decoded[key]

    def array(self, name: str) -> np.ndarray:
        """A ``.npy`` member as a read-only array (no pickles)."""
        return self._cached("npy", name, read_npy)

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        """An ``.npz`` member: {key: array}, every inner member stored and checked like an ``.npy``."""
        return self._cached("npz", name, read_npz)

    def program(self, name: str):
        from npu.program import Program

        def decode(view):
            try:
                return Program.from_bytes(bytes(view), name)
            except NpuError as exc:
                raise ModelFileError(str(exc)) from None
        return self._cached("program", name, decode)

    def weights(self, name: str):
        from npu.weights import WeightImage

        def decode(view):
            z = read_npz(view)
            if set(z) != {"mant", "exp"}:
                raise ModelFileError(f"a weight image holds mant and exp, not {sorted(z)}")
            return WeightImage(z["mant"], z["exp"])
        return self._cached("weights", name, decode)


def _sha256(data) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_members(zf: zipfile.ZipFile, manifest: dict, members: dict[str, bytes]) -> None:
    # A fixed timestamp: the same model compiles to the same bytes (content-addressed registries rely on it).
    def entry(name: str) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_STORED
        return info

    zf.writestr(entry(MANIFEST), json.dumps(manifest, indent=1, sort_keys=True))
    for name, data in sorted(members.items()):
        zf.writestr(entry(name), data)


def _with_checksums(manifest: dict, members: dict[str, bytes]) -> dict:
    return dict(manifest, format=FORMAT_NAME, format_version=FORMAT_VERSION,
                members={name: _sha256(data) for name, data in sorted(members.items())})


def write_model(path: str | Path, manifest: dict[str, Any], members: dict[str, bytes]) -> None:
    """Write a model file atomically (to ``path + '.tmp'``, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        _write_members(zf, _with_checksums(manifest, members), members)
    tmp.replace(path)


def model_bytes(manifest: dict[str, Any], members: dict[str, bytes]) -> bytes:
    """The bytes :func:`write_model` would write (for content-addressed stores)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        _write_members(zf, _with_checksums(manifest, members), members)
    return buf.getvalue()


def read_model(source: str | Path | bytes, limits: Limits = DEFAULT_LIMITS) -> ModelFile:
    """Open and verify a model file (a path or its bytes); see the module docstring for what is checked."""
    label = "<bytes>" if isinstance(source, (bytes, bytearray, memoryview)) else str(source)
    try:
        return _read(source, label, limits)
    except ModelFileError as exc:
        raise ModelFileError(f"{label}: {exc}") from None
    except RecursionError:
        raise ModelFileError(f"{label}: nested too deeply to read") from None


def _read(source, label: str, limits: Limits) -> ModelFile:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        try:
            with open(source, "rb") as f:
                size = _fstat_size(f)
                if size > limits.max_file_bytes:
                    raise ModelFileError(f"is {size} bytes, more than the limit of {limits.max_file_bytes}")
                data = f.read(size + 1)
        except OSError as exc:
            raise ModelFileError(f"cannot read: {exc.strerror or exc}") from None
    if len(data) > limits.max_file_bytes:
        raise ModelFileError(f"is {len(data)} bytes, more than the limit of {limits.max_file_bytes}")
    views = stored_members(memoryview(data), limits)
    if MANIFEST not in views:
        raise ModelFileError(f"not an NPU model file (no {MANIFEST})")
    manifest_bytes = views.pop(MANIFEST)
    if len(manifest_bytes) > limits.max_manifest_bytes:
        raise ModelFileError(f"{MANIFEST} is {len(manifest_bytes)} bytes, more than the limit of "
                             f"{limits.max_manifest_bytes}")
    manifest = _parse_manifest(bytes(manifest_bytes), limits)
    _check_header(manifest)
    for name, digest in sorted(manifest.get("members", {}).items()) if isinstance(manifest.get("members"), dict) else []:
        if name in views and _sha256(views[name]) != digest:
            raise ModelFileError(f"checksum mismatch in member {name!r}: the file was modified or corrupted")
    model = ModelFile(manifest=manifest, members=views, path=None if label == "<bytes>" else label)
    if "plan" in manifest:  # a compiled model (the container alone is a generic format)
        config = validate(manifest, {k: len(v) for k, v in views.items()}, limits)
        check_members(model, config)
    elif set(manifest.get("members", {})) != set(views):
        expected = set(manifest.get("members", {}))
        raise ModelFileError(f"member list does not match the manifest (missing {sorted(expected - set(views))}, "
                             f"unexpected {sorted(set(views) - expected)})")
    return model


def _fstat_size(f) -> int:
    import os

    return os.fstat(f.fileno()).st_size


def _parse_manifest(raw: bytes, limits: Limits) -> dict:
    if not json_depth_ok(raw, limits.max_json_depth):
        raise ModelFileError(f"{MANIFEST} nests deeper than {limits.max_json_depth} levels")
    try:
        manifest = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ModelFileError(f"{MANIFEST} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise ModelFileError(f"{MANIFEST} must hold a JSON object, not {type(manifest).__name__}")
    return manifest


def _check_header(manifest: dict) -> None:
    if manifest.get("format") != FORMAT_NAME:
        raise ModelFileError(f"manifest format is {repr(manifest.get('format'))[:40]}, expected {FORMAT_NAME!r}")
    version = manifest.get("format_version")
    if isinstance(version, bool) or version not in READ_VERSIONS:
        raise ModelFileError(
            f"model file format version {repr(version)[:20]} is not supported "
            f"(this toolkit reads versions {', '.join(map(str, READ_VERSIONS))}); recompile the model with "
            "`npu compile`")


# -- the container ---------------------------------------------------------------------------

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_LOCAL_MAGIC = b"PK\x03\x04"


def stored_members(data: memoryview, limits: Limits = DEFAULT_LIMITS) -> dict[str, memoryview]:
    """{name: view of its bytes} of a ZIP whose members are all stored, checked before any is read.

    Read from the central directory and each local header: compression method 0, no encryption,
    sizes within the limits and the data, names safe and unique, no two members sharing bytes.
    """
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))  # reads the central directory only
        infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError, struct.error) as exc:
        raise ModelFileError(f"not a valid NPU model file (truncated or corrupt: {exc})") from None
    if len(infos) > limits.max_members:
        raise ModelFileError(f"has {len(infos)} members, more than the limit of {limits.max_members}")
    views: dict[str, memoryview] = {}
    spans = []
    for info in infos:
        name = info.filename
        if name in views:
            raise ModelFileError(f"member {name!r} appears twice")
        if not MEMBER_NAME.match(name) or len(name) > 1024:
            raise ModelFileError(f"member name {name[:80]!r} is not a relative path of safe characters")
        if info.compress_type != zipfile.ZIP_STORED:
            raise ModelFileError(f"member {name!r} is compressed (method {info.compress_type}); model files store "
                                 "members uncompressed")
        if info.flag_bits & 0x1:
            raise ModelFileError(f"member {name!r} is encrypted")
        if info.file_size != info.compress_size or info.file_size > limits.max_member_bytes:
            raise ModelFileError(f"member {name!r} declares {info.file_size} bytes (stored as {info.compress_size}); "
                                 f"the limit is {limits.max_member_bytes}")
        at = info.header_offset
        if at + _LOCAL_HEADER.size > len(data):
            raise ModelFileError(f"member {name!r}: local header outside the file (truncated?)")
        (magic, _, flags, method, _, _, _, csize, usize, nlen, xlen) = _LOCAL_HEADER.unpack_from(data, at)
        if magic != _LOCAL_MAGIC or method != 0 or flags & 0x9:
            raise ModelFileError(f"member {name!r}: local header is corrupt or disagrees with the central directory")
        start = at + _LOCAL_HEADER.size + nlen + xlen
        end = start + info.file_size
        if end > len(data) or bytes(data[at + _LOCAL_HEADER.size:at + _LOCAL_HEADER.size + nlen]) != \
                name.encode("utf-8" if info.flag_bits & 0x800 else "cp437"):
            raise ModelFileError(f"member {name!r} runs past the end of the file (truncated?)")
        spans.append((at, end, name))
        views[name] = data[start:end].toreadonly()
    spans.sort()
    for (_, end, name), (nxt, _, other) in zip(spans, spans[1:]):
        if end > nxt:
            raise ModelFileError(f"members {name!r} and {other!r} overlap")
    return views


def read_npy(view) -> np.ndarray:
    """A ``.npy`` member's array, header checked against its size first; no object arrays."""
    buf = io.BytesIO(view)
    try:
        version = np.lib.format.read_magic(buf)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f"unsupported .npy version {version}")
        shape, fortran, dtype = read_header(buf, max_header_size=10000)
    except (ValueError, SyntaxError, TypeError, struct.error, EOFError) as exc:
        raise ModelFileError(f"not a .npy array: {exc}") from None
    if dtype.hasobject or dtype.kind not in "biuf" or fortran:
        raise ModelFileError(f"holds {dtype} values; only C-ordered numbers are accepted")
    count = math.prod(shape)
    start = buf.tell()
    if len(view) - start != count * dtype.itemsize:
        raise ModelFileError(f"declares {list(shape)} {dtype} ({count * dtype.itemsize} bytes) but holds "
                             f"{len(view) - start} bytes")
    return np.frombuffer(view, dtype, count, start).reshape(shape)


def read_npz(view) -> dict[str, np.ndarray]:
    """An ``.npz`` member: its inner members stored and each a checked ``.npy``."""
    inner = stored_members(view if isinstance(view, memoryview) else memoryview(view))
    out = {}
    for name, data in inner.items():
        if not name.endswith(".npy"):
            raise ModelFileError(f"inner member {name!r} is not an .npy array")
        try:
            out[name[:-4]] = read_npy(data)
        except ModelFileError as exc:
            raise ModelFileError(f"inner member {name!r}: {exc}") from None
    return out


# -- the members' content ----------------------------------------------------------------------

def check_members(model: ModelFile, config: NpuConfig) -> None:
    """The checks that read members: element maps, weights, constants, programs, host models."""
    from npu.manifest import device_images

    manifest = model.manifest
    n = config.native_dim
    images = device_images(manifest)
    reads_dram_weights = [False] * len(images)
    for k, step in enumerate(manifest["plan"]):
        where = f"manifest.plan[{k}]"
        if step["kind"] == "host":
            check_host_model(model.view(step["model"]), f"{where}.model ({step['model']})")
            continue
        program = model.program(step["program"])
        if program.config != config:
            raise ModelFileError(f"{where}.program: {step['program']!r} was built for configuration "
                                 f"{program.config.name!r} ({program.config.fingerprint()}), the manifest declares "
                                 f"{config.name!r} ({config.fingerprint()})")
        if any(ins.mnemonic == "m_rd" for ins in program.instructions):
            reads_dram_weights[step.get("device", 0)] = True
        for j, (first, last, _) in enumerate(step["regions"]):
            if last >= max(1, len(program)):
                raise ModelFileError(f"{where}.regions[{j}]: last pc {last} is past the program's "
                                     f"{len(program)} instructions")
        for j, spec in enumerate(step["inputs"]):
            if spec["kind"] == "stream":
                _check_emap(model, spec, n, f"{where}.inputs[{j}]", injective=True)
        for j, spec in enumerate(step["outputs"]):
            _check_emap(model, spec, n, f"{where}.outputs[{j}]", injective=False)
    for (where, image), reads in zip(images, reads_dram_weights):
        _check_image(model, config, where, image, reads)
    for name, member in (manifest.get("const_outputs") or {}).items():
        model.array(member)


def _check_image(model: ModelFile, config: NpuConfig, where: str, image: dict, reads_dram_weights: bool) -> None:
    """One NPU's weight image and constant vectors against what the manifest declares of them."""
    from npu.spaces import Space

    n = config.native_dim
    spec = image["weights"]
    weights = model.weights(spec["member"])
    tiles = spec["tiles"]
    if weights.mant.shape != (tiles, n, n) or weights.exp.shape != (tiles, n, n // config.block) \
            or weights.mant.dtype != np.int16 or weights.exp.dtype != np.int16:
        raise ModelFileError(f"{where}weights: the image holds {weights.mant.dtype} {list(weights.mant.shape)} and "
                             f"{weights.exp.dtype} {list(weights.exp.shape)}, the manifest declares {tiles} int16 tiles "
                             f"of {n}x{n} weights and {n}x{n // config.block} exponents")
    if tiles and (spec["mode"] == "streaming") != reads_dram_weights:
        raise ModelFileError(f"{where}weights.mode: is {spec['mode']!r}, but the programs "
                             f"{'read' if reads_dram_weights else 'never read'} weight tiles from DRAM (m_rd)")
    consts = model.arrays(image["constants"]["member"])
    for i, c in enumerate(image["constants"]["vectors"]):
        at = f"{where}constants.vectors[{i}]"
        if c["key"] not in consts:
            raise ModelFileError(f"{at}.key: {c['key']!r} is not in {image['constants']['member']!r}")
        arr = consts[c["key"]]
        depth = config.vector_space_depth(Space(c["space"]))
        if arr.ndim != 2 or arr.shape[1] != n or c["addr"] + arr.shape[0] > depth:
            raise ModelFileError(f"{at}: {list(arr.shape)} vectors at {c['addr']} do not fit "
                                 f"{Space(c['space']).name} ({depth} vectors of {n})")


def _check_emap(model: ModelFile, spec: dict, n: int, where: str, injective: bool) -> None:
    emap = model.array(spec["emap"])
    count = math.prod(spec["shape"])
    if emap.dtype != np.int64 or emap.shape != (count,):
        raise ModelFileError(f"{where}.emap: {spec['emap']!r} must be {count} int64 stream indices (one per element "
                             f"of {spec['shape']}), not {emap.dtype} {list(emap.shape)}")
    lanes = spec["vectors"] * n
    if count and (int(emap.min()) < 0 or int(emap.max()) >= lanes):
        raise ModelFileError(f"{where}.emap: indices must lie in [0, {lanes}) ({spec['vectors']} vectors of {n}), "
                             f"found [{int(emap.min())}, {int(emap.max())}]")
    if injective and count > 1 and np.unique(emap).size != count:
        raise ModelFileError(f"{where}.emap: two elements map to one lane")


def check_host_model(data, where: str) -> None:
    """A host segment's ONNX: parseable, and neither it nor any subgraph references external data or a file.

    onnxruntime would resolve an external-data location relative to the server's working directory,
    so a model file could read any file there; model files carry their weights inline.
    """
    import onnx

    try:
        model = onnx.ModelProto.FromString(bytes(data))
    except Exception as exc:  # noqa: BLE001 -- protobuf's DecodeError and friends
        raise ModelFileError(f"{where}: not an ONNX model: {type(exc).__name__}") from None
    graphs = [model.graph] + [g for f in model.functions for g in _function_graphs(f)]
    seen = 0
    while graphs:
        g = graphs.pop()
        seen += 1
        if seen > 100_000:
            raise ModelFileError(f"{where}: nests more than 100000 subgraphs")
        tensors = list(g.initializer) + [s.values for s in g.sparse_initializer] + \
            [s.indices for s in g.sparse_initializer]
        for node in g.node:
            for attr in node.attribute:
                tensors += [attr.t] if attr.HasField("t") else []
                tensors += list(attr.tensors)
                graphs += ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
                if attr.HasField("sparse_tensor"):
                    tensors += [attr.sparse_tensor.values, attr.sparse_tensor.indices]
        for t in tensors:
            if t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data):
                raise ModelFileError(f"{where}: tensor {t.name[:80]!r} references external data; a model file "
                                     "may not name files")


def _function_graphs(function):
    for node in function.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield attr.g
            yield from attr.graphs
