"""The `.npu` model file: one self-describing container for a compiled model.

Layout: a ZIP archive (stored, not compressed, so members can be read quickly)
holding

* ``manifest.json`` -- ``format`` (always ``"npu-model"``), ``format_version``,
  the NPU ``config`` (as :meth:`npu.config.NpuConfig.to_dict`), ``inputs`` and
  ``outputs`` (lists of :class:`TensorSpec` dicts), ``preprocessing`` (free-form
  dict, see below), ``compiler`` (free-form: report, options), ``members``
  (``{member name: sha256 hex}`` of every other member) and whatever the
  compiler's executor needs (``plan``).
* any number of binary members (``program.bin``, ``weights.bin``,
  ``host/<name>.onnx`` ...), each checked against its sha256 on read.

A truncated or tampered file, or one of another format version, raises
:class:`npu.errors.ModelFileError` naming the file and what is wrong.

``preprocessing`` keys understood by the runtime (all optional):
``kind`` ("image" or "none"), ``layout`` ("NCHW"/"NHWC"), ``size`` ([H, W]),
``resize`` (shorter side before center crop), ``mean`` and ``std`` (per channel,
on 0..1 pixel values), ``labels`` ("imagenet" or a list).
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from npu.config import NpuConfig
from npu.errors import ModelFileError

FORMAT_NAME = "npu-model"
FORMAT_VERSION = 1
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
    """An opened model file: the manifest and the (verified) member bytes."""

    manifest: dict[str, Any]
    members: dict[str, bytes]
    path: str | None = None

    @property
    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec.from_dict(d) for d in self.manifest.get("inputs", [])]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec.from_dict(d) for d in self.manifest.get("outputs", [])]

    @property
    def config(self) -> NpuConfig:
        return NpuConfig.from_dict(self.manifest["config"])

    def member(self, name: str) -> bytes:
        try:
            return self.members[name]
        except KeyError:
            raise ModelFileError(f"{self.path or '<model>'}: has no member {name!r}") from None


def _sha256(data: bytes) -> str:
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


def read_model(source: str | Path | bytes) -> ModelFile:
    """Open and verify a model file (a path or its bytes)."""
    label = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
    try:
        raw = bytes(source) if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{label}: cannot read: {exc.strerror or exc}") from None
    try:
        zf = zipfile.ZipFile(io.BytesIO(raw))
        names = zf.namelist()
        if MANIFEST not in names:
            raise ModelFileError(f"{label}: not an NPU model file (no {MANIFEST})")
        manifest = json.loads(zf.read(MANIFEST))
        members = {n: zf.read(n) for n in names if n != MANIFEST}
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, EOFError, ValueError, KeyError, OSError) as exc:
        raise ModelFileError(f"{label}: not a valid NPU model file (truncated or corrupt: {exc})") from None
    if manifest.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{label}: manifest format is {manifest.get('format')!r}, expected {FORMAT_NAME!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{label}: model file format version {manifest.get('format_version')!r} is not supported "
            f"(this toolkit reads version {FORMAT_VERSION}); recompile the model with `npu compile`")
    expected = manifest.get("members", {})
    if set(expected) != set(members):
        missing = sorted(set(expected) - set(members))
        extra = sorted(set(members) - set(expected))
        raise ModelFileError(f"{label}: member list does not match the manifest (missing {missing}, unexpected {extra})")
    for name, digest in expected.items():
        if _sha256(members[name]) != digest:
            raise ModelFileError(f"{label}: checksum mismatch in member {name!r}: the file was modified or corrupted")
    return ModelFile(manifest=manifest, members=members, path=None if label == "<bytes>" else label)
