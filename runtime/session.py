"""Sessions: a loaded model bound to one NPU instance (simulated or RTL).

A :class:`Session` owns one ``runtime.executor.Executor`` and runs one request
at a time (an NPU instance holds one model's state while it runs); it checks
every feed against the model's input specs first, so a bad request fails with
a message saying what was expected instead of somewhere inside the executor.
A :class:`SessionPool` holds N sessions of one model for a server's workers.
"""
from __future__ import annotations

import queue
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from npu.modelfile import ModelFile, RunStats, TensorSpec, read_model
from runtime.backends import BACKENDS
from runtime.errors import InvalidRequest
from runtime.executor import Executor

IMAGE_ALIAS = "images"


def alias(name: str) -> str:
    """TF Serving's alias of a tensor name: ``images:0`` -> ``images``."""
    base, sep, index = name.rpartition(":")
    return base if sep and index.isdigit() else name


def describe(spec: TensorSpec) -> str:
    return f"{spec.name} ({spec.dtype} {list(spec.shape)})"


def _shape_matches(expected: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    return len(expected) == len(shape) and all(e < 0 or e == s for e, s in zip(expected, shape))


def _add_stats(total: RunStats, part: RunStats, config) -> None:
    for field in ("npu_cycles", "latency_us", "macs", "tile_macs", "instructions", "host_time_s"):
        setattr(total, field, getattr(total, field) + getattr(part, field))
    total.utilization = config.utilization(total.macs, total.npu_cycles)
    total.tile_utilization = config.utilization(total.tile_macs, total.npu_cycles)


class Session:
    """A model loaded on one NPU instance.

    Parameters
    ----------
    model:
        An opened model file.
    backend:
        ``"sim"`` (the cycle-modelled simulator) or ``"rtl"`` (Verilator co-simulation).
    name, version:
        How the model is known (registry name and version, or the file's stem).

    Members
    -------
    inputs, outputs:
        The model's tensor specs.
    manifest:
        The model file's manifest (``preprocessing`` describes image inputs).
    last_stats:
        :class:`npu.modelfile.RunStats` of the latest :meth:`run` (None before).
    """

    def __init__(self, model: ModelFile, backend: str = "sim", *, name: str | None = None,
                 version: int | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        self.model = model
        self.backend = backend
        self.name = name or (Path(model.path).stem if model.path else "model")
        self.version = version
        self._executor = Executor(model, backend=backend)
        self.inputs: list[TensorSpec] = model.inputs
        self.outputs: list[TensorSpec] = model.outputs
        self.manifest: dict[str, Any] = model.manifest
        self.last_stats: RunStats | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        version = f":{self.version}" if self.version is not None else ""
        return f"<Session {self.name}{version} on {self.backend}: {', '.join(map(describe, self.inputs))}>"

    # -- names ---------------------------------------------------------------

    def input_spec(self, key: str) -> TensorSpec:
        """The input named ``key``, by tensor name or alias (``images`` / ``images:0``)."""
        return self._find(key, self.inputs, "input")

    def output_spec(self, key: str) -> TensorSpec:
        """The output named ``key``, by tensor name or alias."""
        return self._find(key, self.outputs, "output")

    def _find(self, key: str, specs: list[TensorSpec], what: str) -> TensorSpec:
        for spec in specs:
            if key == spec.name:
                return spec
        for spec in specs:
            if alias(key) == alias(spec.name):
                return spec
        # Azure's accelerated-model clients send the encoded image under the signature alias "images":
        # a model whose single input is an image answers to it, whatever its ONNX input is called.
        if (what == "input" and alias(key) == IMAGE_ALIAS and len(specs) == 1
                and (self.manifest.get("preprocessing") or {}).get("kind") == "image"):
            return specs[0]
        raise InvalidRequest(f"model {self.name!r} has no {what} {key!r}; its {what}s are "
                             f"{', '.join(map(describe, specs))}")

    # -- checking ------------------------------------------------------------

    def check_feeds(self, feeds: dict[str, Any]) -> tuple[dict[str, np.ndarray], int | None]:
        """Feeds keyed by tensor name, cast where lossless enough, and the batch to split.

        Returns the checked feeds and N when every input came with N > 1 items
        along a leading dimension the model fixes at 1 (the session then runs
        the items one by one), else None.
        """
        checked: dict[str, np.ndarray] = {}
        for key, value in feeds.items():
            spec = self.input_spec(key)
            if spec.name in checked:
                raise InvalidRequest(f"input {spec.name!r} is given twice (as {key!r})")
            checked[spec.name] = self._coerce(spec, value)
        missing = [describe(s) for s in self.inputs if s.name not in checked]
        if missing:
            raise InvalidRequest(f"model {self.name!r} needs input {', '.join(missing)}; "
                                 f"got {sorted(feeds) or 'none'}")
        batches = set()
        for spec in self.inputs:
            shape = checked[spec.name].shape
            if _shape_matches(spec.shape, shape):
                batches.add(None)
            elif spec.shape and spec.shape[0] == 1 and len(shape) == len(spec.shape) and shape[0] > 1 \
                    and _shape_matches(spec.shape[1:], shape[1:]):
                batches.add(shape[0])
            else:
                raise InvalidRequest(f"input {spec.name!r} of model {self.name!r} must have shape "
                                     f"{list(spec.shape)} (-1: any size), got {list(shape)}")
        if len(batches) > 1:
            raise InvalidRequest(f"inputs of model {self.name!r} disagree on the batch size: "
                                 + ", ".join(f"{n}: {list(a.shape)}" for n, a in checked.items()))
        return checked, batches.pop() if batches else None

    def _coerce(self, spec: TensorSpec, value: Any) -> np.ndarray:
        want = np.dtype(spec.dtype)
        try:
            array = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise InvalidRequest(f"input {spec.name!r}: not an array: {exc}") from None
        if array.dtype == want:
            return array
        # Float precision may change (JSON numbers arrive as float64); a change of
        # kind (int into float, float into int8) is a client bug worth reporting.
        if array.dtype.kind == want.kind == "f":
            return array.astype(want)
        raise InvalidRequest(f"input {spec.name!r} of model {self.name!r} must be {spec.dtype} "
                             f"{list(spec.shape)}, got {array.dtype} {list(array.shape)}")

    # -- running -------------------------------------------------------------

    def run(self, feeds: dict[str, Any]) -> dict[str, np.ndarray]:
        """Run the model on ``feeds`` ({input name or alias: array}); returns {output name: array}."""
        outputs, _ = self.run_with_stats(feeds)
        return outputs

    def run_with_stats(self, feeds: dict[str, Any]) -> tuple[dict[str, np.ndarray], RunStats]:
        checked, batch = self.check_feeds(feeds)
        start = time.perf_counter()
        with self._lock:
            if batch is None:
                outputs, stats = self._executor.run(checked)
            else:
                stats = RunStats()
                parts: list[dict[str, np.ndarray]] = []
                for i in range(batch):
                    out, part = self._executor.run({n: a[i:i + 1] for n, a in checked.items()})
                    parts.append(out)
                    _add_stats(stats, part, self.model.config)
                stats.extra = {"batch": batch}
                outputs = {n: np.concatenate([p[n] for p in parts], axis=0) for n in parts[0]}
            stats.wall_time_s = time.perf_counter() - start
            self.last_stats = stats
        return outputs, stats


class SessionPool:
    """N sessions of one model; each request borrows one for its duration.

    Members
    -------
    sessions:
        The sessions (one NPU instance each).
    """

    def __init__(self, model: ModelFile, size: int = 1, backend: str = "sim", *,
                 name: str | None = None, version: int | None = None):
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"pool size must be a positive integer, not {size!r}")
        self.sessions = [Session(model, backend, name=name, version=version) for _ in range(size)]
        self._free: queue.Queue[Session] = queue.Queue()
        for session in self.sessions:
            self._free.put(session)

    def __len__(self) -> int:
        return len(self.sessions)

    @property
    def first(self) -> Session:
        return self.sessions[0]

    @contextmanager
    def session(self, timeout: float | None = None):
        """Borrow a session; raises :class:`TimeoutError` if none frees up in ``timeout`` s."""
        try:
            session = self._free.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no free NPU session within {timeout} s") from None
        try:
            yield session
        finally:
            self._free.put(session)

    def run_with_stats(self, feeds: dict[str, Any], timeout: float | None = None):
        with self.session(timeout) as session:
            return session.run_with_stats(feeds)

    def run(self, feeds: dict[str, Any]) -> dict[str, np.ndarray]:
        return self.run_with_stats(feeds)[0]


def open_model(source: "str | Path | bytes | ModelFile", store: str | Path | None = None
               ) -> tuple[ModelFile, str, int | None]:
    """The model file behind ``source`` with its name and registry version.

    ``source`` is an opened :class:`ModelFile`, the bytes or path of a ``.npu``
    file, or a registry reference ``NAME[:VERSION]`` (looked up in ``store``).
    """
    if isinstance(source, ModelFile):
        return source, Path(source.path).stem if source.path else "model", None
    if isinstance(source, (bytes, bytearray)):
        return read_model(source), "model", None
    path = Path(source)
    if path.exists() or path.suffix == ".npu" or "/" in str(source):
        model = read_model(path)
        return model, path.stem, None
    from runtime.registry import Registry

    registry = Registry(store)
    record = registry.resolve(str(source))
    return registry.open(record), record.name, record.version


def load(source: "str | Path | bytes | ModelFile", backend: str = "sim", *,
         store: str | Path | None = None) -> Session:
    """Load a model on an NPU instance.

    ``source``: a ``.npu`` path, an opened :class:`ModelFile`, or a registry
    reference ``"resnet50"`` / ``"resnet50:3"``.  ``backend``: ``"sim"`` or ``"rtl"``.

    >>> session = load("resnet50.npu")                 # doctest: +SKIP
    >>> session.run({"images": batch})["scores"]       # doctest: +SKIP
    """
    model, name, version = open_model(source, store)
    return Session(model, backend, name=name, version=version)
