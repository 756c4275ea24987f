"""The model registry: named, versioned models in a local store.

Layout of a store directory (``--store DIR``, else ``$NPU_HOME``, else ``~/.npu``)::

    registry.sqlite3            one row per (name, version)
    blobs/ab/abcdef....npu      model files, named by the sha256 of their bytes

Registering writes the blob first (to a temporary file, fsync'd, then renamed)
and then inserts the row in one SQLite transaction.  A crash between the two
leaves an unreferenced blob, never a row pointing at a missing or half-written
file; :meth:`Registry.gc` removes such leftovers.  Identical model files share
one blob.

An ONNX file is compiled on registration by the compiler the registry was given
(the command line gives it ``compiler.compile_model``; the runtime itself never imports the compiler).
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from npu.errors import ModelFileError
from npu.modelfile import ModelFile, read_model
from runtime.errors import ModelNotFound, RegistryError

SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    name        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    size        INTEGER NOT NULL,
    config      TEXT NOT NULL DEFAULT '',
    tags        TEXT NOT NULL DEFAULT '[]',
    description TEXT NOT NULL DEFAULT '',
    source      TEXT NOT NULL DEFAULT '',
    created     REAL NOT NULL,
    PRIMARY KEY (name, version)
)
"""


def default_store() -> Path:
    return Path(os.environ.get("NPU_HOME") or Path.home() / ".npu")


@dataclass(frozen=True)
class ModelRecord:
    """One registered model version."""

    name: str
    version: int
    sha256: str
    size: int
    config: str = ""
    tags: tuple[str, ...] = ()
    description: str = ""
    source: str = ""
    created: float = 0.0
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "sha256": self.sha256, "size": self.size,
                "config": self.config, "tags": list(self.tags), "description": self.description,
                "source": self.source, "created": self.created}


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``"name"`` -> (name, None); ``"name:3"`` -> (name, 3)."""
    name, sep, version = ref.rpartition(":")
    if not sep:
        return ref, None
    if not version.isdigit():
        raise ModelNotFound(f"{ref!r}: a model reference is NAME or NAME:VERSION (VERSION a positive integer)")
    return name, int(version)


def _check_name(name: str) -> None:
    if not name or ":" in name or "/" in name or name.strip() != name:
        raise RegistryError(f"model name {name!r}: must be non-empty without ':', '/' or surrounding spaces")


class Registry:
    """A model store (see the module docstring for its layout and guarantees)."""

    def __init__(self, root: str | Path | None = None, compiler: Callable[..., bytes] | None = None):
        """``compiler(path, config=...)`` returns the bytes of a .npu file; without one, only .npu files register."""
        self.root = Path(root) if root else default_store()
        self.compiler = compiler
        self.db_path = self.root / "registry.sqlite3"
        self.blob_dir = self.root / "blobs"

    # -- storage -------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            self.blob_dir.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise RegistryError(f"cannot open the model store {self.root}: {exc}") from None
        conn.execute(SCHEMA)
        return conn

    def blob_path(self, sha256: str) -> Path:
        return self.blob_dir / sha256[:2] / f"{sha256}.npu"

    def _write_blob(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        path = self.blob_path(digest)
        if path.exists() and path.stat().st_size == len(data):
            return digest
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
        return digest

    def _after_blob_write(self, digest: str) -> None:
        """Hook between the blob write and the row insert (tests inject a crash here)."""

    def _compile_onnx(self, path: Path, config: str | None) -> bytes:
        if self.compiler is None:
            raise RegistryError(f"{path}: registering an ONNX model compiles it, but the compiler is not available "
                                f"to this registry; compile it with `npu compile` and register the .npu file, or "
                                f"use `npu models register`, which compiles")
        data = self.compiler(str(path), config=config) if config else self.compiler(str(path))
        if not isinstance(data, (bytes, bytearray)):
            raise RegistryError(f"{path}: the compiler returned {type(data).__name__}, expected the bytes of a .npu file")
        return bytes(data)

    # -- operations ----------------------------------------------------------

    def register(self, path: str | Path, name: str, *, config: str | None = None, tags: list[str] | None = None,
                 description: str = "") -> ModelRecord:
        """Add ``path`` (a ``.npu`` or ``.onnx`` file) as the next version of ``name``."""
        _check_name(name)
        path = Path(path)
        if not path.is_file():
            raise RegistryError(f"{path}: no such file")
        if path.suffix.lower() == ".onnx":
            data = self._compile_onnx(path, config)
            label = f"{path} (compiled)"
        else:
            data = path.read_bytes()
            label = str(path)
        model = self._validate(data, label)
        config = config or str((model.manifest.get("config") or {}).get("name", ""))
        digest = self._write_blob(data)
        self._after_blob_write(digest)
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            (latest,) = conn.execute("SELECT COALESCE(MAX(version), 0) FROM models WHERE name = ?",
                                     (name,)).fetchone()
            record = ModelRecord(name, latest + 1, digest, len(data), config, tuple(tags or ()), description,
                                 str(path.resolve()), time.time())
            conn.execute("INSERT INTO models VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (record.name, record.version, record.sha256, record.size, record.config,
                          json.dumps(list(record.tags)), record.description, record.source, record.created))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()
        return record

    @staticmethod
    def _validate(data: bytes, label: str) -> ModelFile:
        try:
            model = read_model(data)
        except ModelFileError as exc:
            raise ModelFileError(str(exc).replace("<bytes>", label, 1)) from None
        if not model.manifest.get("inputs") or not model.manifest.get("outputs"):
            raise ModelFileError(f"{label}: the manifest declares no inputs or no outputs; it cannot be served")
        return model

    def list(self, name: str | None = None) -> list[ModelRecord]:
        """Every registered version (of ``name``), by name then version."""
        conn = self._connect()
        try:
            if name is None:
                rows = conn.execute("SELECT * FROM models ORDER BY name, version").fetchall()
            else:
                rows = conn.execute("SELECT * FROM models WHERE name = ? ORDER BY version", (name,)).fetchall()
        finally:
            conn.close()
        return [self._record(row) for row in rows]

    @staticmethod
    def _record(row) -> ModelRecord:
        name, version, sha, size, config, tags, description, source, created = row
        return ModelRecord(name, version, sha, size, config, tuple(json.loads(tags)), description, source, created)

    def resolve(self, ref: str) -> ModelRecord:
        """The record of ``NAME`` (latest version) or ``NAME:VERSION``."""
        name, version = parse_ref(ref)
        versions = self.list(name)
        if not versions:
            known = sorted({r.name for r in self.list()})
            raise ModelNotFound(f"no model {name!r} in {self.root}; registered: {', '.join(known) or 'none'} "
                                f"(add one with `npu models register FILE --name {name}`)")
        if version is None:
            return versions[-1]
        for record in versions:
            if record.version == version:
                return record
        raise ModelNotFound(f"model {name!r} has no version {version}; versions: "
                            f"{', '.join(str(r.version) for r in versions)}")

    def path(self, record: ModelRecord) -> Path:
        return self.blob_path(record.sha256)

    def open(self, record: ModelRecord) -> ModelFile:
        """The verified model file of ``record``."""
        model = read_model(self.path(record))
        model.path = f"{self.path(record)}"
        return model

    def delete(self, ref: str) -> list[ModelRecord]:
        """Remove ``NAME`` (every version) or ``NAME:VERSION``; unreferenced blobs go too."""
        name, version = parse_ref(ref)
        doomed = [self.resolve(ref)] if version is not None else self.list(name)
        if not doomed:
            self.resolve(ref)  # raises ModelNotFound with the list of names
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for record in doomed:
                conn.execute("DELETE FROM models WHERE name = ? AND version = ?", (record.name, record.version))
            conn.execute("COMMIT")
        finally:
            conn.close()
        self.gc()
        return doomed

    def gc(self) -> list[Path]:
        """Delete blobs no row references and temporary files of interrupted writes."""
        referenced = {r.sha256 for r in self.list()}
        removed = []
        for path in self.blob_dir.glob("*/*"):
            stem = path.name.split(".")[0]
            if path.name.endswith(".tmp") or stem not in referenced:
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed
