"""The model registry: named, versioned models in a local store.

Layout of a store directory (``--store DIR``, else ``$NPU_HOME``, else ``~/.npu``)::

    registry.sqlite3            one row per (name, version)
    blobs/ab/abcdef....npu      model files, named by the sha256 of their bytes

Every operation is safe with other processes working on the same store:

* a writer writes its blob to a temporary file of its own (``.SHA.PID.RANDOM.tmp``,
  fsync'd, locked with ``flock`` while it lives), then, inside one ``BEGIN IMMEDIATE``
  transaction, renames it into place and inserts the row;
* :meth:`Registry.gc` (and :meth:`Registry.delete`, which ends with it) decides what is
  unreferenced inside such a transaction too, so it never removes a blob a writer is about
  to commit, and removes a temporary file only when no process holds its lock and it is
  older than a minute (a writer that died; the lock goes with its process).

A crash leaves at most an unreferenced blob or temporary file, never a row without its
blob; gc removes the leftovers.  Identical model files share one blob.  Version numbers
of a name only grow, even when the latest version is deleted.

Model names are 1 to 64 letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit
(they appear in URLs, metrics and file listings).

An ONNX file is compiled on registration by the compiler the registry was given
(the command line gives it ``compiler.compile_model``; the runtime itself never imports the compiler).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import secrets
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from npu.errors import ModelFileError
from npu.manifest import DEFAULT_LIMITS
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
);
CREATE TABLE IF NOT EXISTS names (
    name         TEXT PRIMARY KEY,
    last_version INTEGER NOT NULL
);
"""
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
STALE_TMP_SECONDS = 60.0


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
    if not isinstance(name, str) or not NAME.match(name):
        shown = repr(name)[:70]
        raise RegistryError(f"model name {shown}: must be 1 to 64 letters, digits, '.', '_' or '-', starting "
                            "with a letter or digit")


def _lock(f, blocking: bool = True) -> bool:
    """An exclusive flock on an open file (True), or False when another process holds it (non-blocking)."""
    try:
        import fcntl
    except ImportError:  # no flock on this platform: age alone decides what gc removes
        return True
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except BlockingIOError:
        return False


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
        conn.executescript(SCHEMA)
        return conn

    def blob_path(self, sha256: str) -> Path:
        return self.blob_dir / sha256[:2] / f"{sha256}.npu"

    def _write_tmp(self, path: Path, data: bytes):
        """A locked, fsync'd temporary file of this writer's next to ``path``; returns (its path, open file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        f = open(tmp, "xb")
        try:
            _lock(f)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        except BaseException:
            f.close()
            tmp.unlink(missing_ok=True)
            raise
        return tmp, f

    def _place_blob(self, path: Path, data: bytes, tmp: Path | None) -> None:
        """Inside the write transaction: make ``path`` hold ``data`` (from our temporary file, or written now)."""
        if path.exists() and path.stat().st_size == len(data):
            return
        if tmp is not None:
            try:
                tmp.replace(path)
                return
            except FileNotFoundError:  # removed by hand under us: write it again
                pass
        again, f = self._write_tmp(path, data)
        try:
            again.replace(path)
        finally:
            f.close()

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
            size = path.stat().st_size
            if size > DEFAULT_LIMITS.max_file_bytes:
                raise ModelFileError(f"{path}: is {size} bytes, more than the limit of {DEFAULT_LIMITS.max_file_bytes}")
            data = path.read_bytes()
            label = str(path)
        model = self._validate(data, label)
        config = config or str((model.manifest.get("config") or {}).get("name", ""))
        digest = hashlib.sha256(data).hexdigest()
        blob = self.blob_path(digest)
        # The slow write happens before the transaction, into a file only this writer touches.
        tmp, f = (None, None) if blob.exists() else self._write_tmp(blob, data)
        try:
            with self._transaction() as conn:
                record = self._insert(conn, blob, data, tmp, ModelRecord(
                    name, 0, digest, len(data), config, tuple(tags or ()), description, str(path.resolve()),
                    time.time()))
        finally:
            if f is not None:
                f.close()
                tmp.unlink(missing_ok=True)
        return record

    def _insert(self, conn, blob: Path, data: bytes, tmp: Path | None, draft: ModelRecord) -> ModelRecord:
        """Inside the write transaction: the blob into place, then the row of the name's next version."""
        name = draft.name
        self._place_blob(blob, data, tmp)
        self._after_blob_write(draft.sha256)
        (latest,) = conn.execute(
            "SELECT MAX(COALESCE((SELECT MAX(version) FROM models WHERE name = ?), 0), "
            "COALESCE((SELECT last_version FROM names WHERE name = ?), 0))", (name, name)).fetchone()
        record = dataclasses.replace(draft, version=latest + 1)
        conn.execute("INSERT INTO models VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (record.name, record.version, record.sha256, record.size, record.config,
                      json.dumps(list(record.tags)), record.description, record.source, record.created))
        conn.execute("INSERT OR REPLACE INTO names VALUES (?, ?)", (name, record.version))
        return record

    @contextmanager
    def _transaction(self):
        """A ``BEGIN IMMEDIATE`` transaction: one writer of the store at a time, across processes; rolled back
        on any exception (a crash of the process rolls it back too)."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

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
        path = self.path(record)
        try:
            model = read_model(path)
        except ModelFileError:
            if not path.exists():  # deleted by another process since it was resolved
                raise ModelNotFound(f"model {record.ref} was deleted") from None
            raise
        model.path = f"{path}"
        return model

    def delete(self, ref: str) -> list[ModelRecord]:
        """Remove ``NAME`` (every version) or ``NAME:VERSION``; unreferenced blobs go too."""
        name, version = parse_ref(ref)
        doomed = [self.resolve(ref)] if version is not None else self.list(name)
        if not doomed:
            self.resolve(ref)  # raises ModelNotFound with the list of names
        with self._transaction() as conn:
            for record in doomed:
                conn.execute("DELETE FROM models WHERE name = ? AND version = ?", (record.name, record.version))
        self.gc()
        return doomed

    def gc(self) -> list[Path]:
        """Delete blobs no row references and temporary files of writers that died.

        Runs inside a write transaction, so no registration commits while it decides; another
        writer's temporary file is left alone while that writer lives (it holds the file's lock).
        """
        removed = []
        with self._transaction() as conn:
            referenced = {sha for (sha,) in conn.execute("SELECT sha256 FROM models")}
            now = time.time()
            for path in self.blob_dir.glob("*/*"):
                if path.name.endswith(".tmp"):
                    doomed = self._abandoned(path, now)
                else:
                    doomed = path.name.endswith(".npu") and path.name.split(".")[0] not in referenced
                if doomed:
                    path.unlink(missing_ok=True)
                    removed.append(path)
        return removed

    @staticmethod
    def _abandoned(path: Path, now: float) -> bool:
        """A temporary file no living writer holds (its lock is free) and older than STALE_TMP_SECONDS."""
        try:
            if now - path.stat().st_mtime < STALE_TMP_SECONDS:
                return False
            with open(path, "rb") as f:
                return _lock(f, blocking=False)
        except FileNotFoundError:
            return False
