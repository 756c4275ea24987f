"""The result cache: one JSON file per unit of work, named by the content hash of what decides its result.

A unit's key hashes its kind, the configuration (its name and source left out), the model's identity (a zoo
network's recipe or an ONNX file's bytes), the options of its kind and the tool version, which includes a
hash of the toolkit's own source: editing the compiler or the simulator invalidates what they computed.
Records are written by the process that drives the sweep as each unit finishes, so an interrupted sweep
resumes where it stopped, and a re-run computes only what is new.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The packages whose source decides a unit's result (and the sweep's own evaluation code).
SOURCE_PACKAGES = ("npu", "sim", "rtl", "runtime", "compiler")
SOURCE_SUFFIXES = (".py", ".pyx", ".h")


def default_dir() -> Path:
    return Path(os.environ.get("NPU_SWEEP_CACHE", Path.home() / ".cache" / "npu-sweep"))


@functools.cache
def tool_version() -> str:
    """The package version and a hash of the source that computes results."""
    try:
        v = version("brainwave-npu")
    except PackageNotFoundError:
        v = "unknown"
    h = hashlib.sha256()
    files = [p for pkg in SOURCE_PACKAGES for p in sorted((ROOT / pkg).rglob("*")) if p.suffix in SOURCE_SUFFIXES]
    for p in files + [ROOT / "sweep" / "evaluate.py"]:
        h.update(str(p.relative_to(ROOT)).encode() + b"\0" + p.read_bytes())
    return f"{v}+src.{h.hexdigest()[:12]}"


def unit_key(kind: str, config: dict, model: dict | None, options: dict) -> str:
    """The content hash of one unit of work."""
    payload = {"kind": kind, "config": {k: v for k, v in config.items() if k not in ("name", "source")},
               "model": model, "options": options, "tool": tool_version()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class Cache:
    """Records by key under ``root`` (two-level fan-out); ``root`` None keeps nothing."""

    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root is not None else None

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        if self.root is None:
            return None
        try:
            return json.loads(self._path(key).read_text())
        except (OSError, ValueError):  # absent, or cut short by a crash: compute it again
            return None

    def put(self, key: str, record: dict) -> None:
        if self.root is None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)  # atomic: a reader sees the whole record or none
