"""The protocol-neutral core of the server: which models are served and how a request runs.

Each protocol front end (TF Serving gRPC, KServe v2 gRPC, the REST APIs)
decodes its wire tensors into numpy arrays, calls :meth:`ModelServer.infer`
and encodes the result; names, shapes, image decoding and errors are decided
here once.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from npu.modelfile import TensorSpec
from runtime.errors import InvalidRequest, ModelNotFound
from runtime.labels import labels_for
from runtime.metrics import Metrics
from runtime.preprocess import ImageConfig, images_to_tensor
from runtime.session import SessionPool, alias, describe

SERVER_NAME = "npu-runtime"
SERVER_VERSION = "0.1.0"
DEFAULT_SIGNATURE = "serving_default"


@dataclass
class ServedModel:
    """One model version behind the server, with its pool of NPU sessions."""

    name: str
    version: int
    pool: SessionPool
    backend: str = "sim"
    image: ImageConfig | None = None
    labels: tuple[str, ...] | None = None

    @classmethod
    def create(cls, pool: SessionPool, name: str, version: int, backend: str = "sim") -> "ServedModel":
        session = pool.first
        image = None
        if len(session.inputs) == 1:
            image = ImageConfig.from_manifest(session.manifest, session.inputs[0])
        return cls(name, version, pool, backend, image, labels_for(session.manifest))

    @property
    def inputs(self) -> list[TensorSpec]:
        return self.pool.first.inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self.pool.first.outputs

    def input_spec(self, key: str) -> TensorSpec:
        return self.pool.first.input_spec(key)

    def output_spec(self, key: str) -> TensorSpec:
        return self.pool.first.output_spec(key)


@dataclass
class ServerOptions:
    """Limits shared by every protocol front end."""

    max_message_bytes: int = 64 * 1024 * 1024
    max_concurrent: int = 64          # requests handled at once; more get RESOURCE_EXHAUSTED / 503
    session_timeout_s: float = 30.0   # how long a request may wait for a free NPU session


@dataclass
class ModelServer:
    """The served models (the first is the default one) and the shared metrics."""

    models: list[ServedModel]
    options: ServerOptions = field(default_factory=ServerOptions)
    metrics: Metrics = field(default_factory=Metrics)

    def __post_init__(self):
        if not self.models:
            raise ValueError("a server needs at least one model")
        self.draining = False
        self._slots = threading.BoundedSemaphore(self.options.max_concurrent)

    @property
    def default(self) -> ServedModel:
        return self.models[0]

    def get(self, name: str = "", version: int | str | None = None) -> ServedModel:
        """The model ``name`` (empty: the default) at ``version`` (empty or None: the latest)."""
        if isinstance(version, str):
            if version.strip() == "":
                version = None
            elif not version.strip().isdigit():
                raise InvalidRequest(f"model version must be a positive integer, not {version!r}")
            else:
                version = int(version)
        matches = [m for m in self.models if not name or m.name == name]
        if not matches:
            raise ModelNotFound(f"model {name!r} is not served here; served: "
                                + ", ".join(f"{m.name} (version {m.version})" for m in self.models))
        if version is None or version == 0:
            return max(matches, key=lambda m: m.version)
        for model in matches:
            if model.version == version:
                return model
        raise ModelNotFound(f"model {matches[0].name!r} has no version {version} here; served versions: "
                            + ", ".join(str(m.version) for m in matches))

    @contextmanager
    def slot(self):
        """Admission control: at most ``max_concurrent`` requests at once."""
        if not self._slots.acquire(blocking=False):
            raise Overloaded(f"the server is handling {self.options.max_concurrent} requests already; retry later")
        self.metrics.enter()
        try:
            yield
        finally:
            self.metrics.leave()
            self._slots.release()

    def infer(self, model: ServedModel, feeds: dict[str, np.ndarray],
              outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """Run ``model`` on ``feeds`` ({input name or alias: array}); {output tensor name: array}.

        A string tensor fed to a float image input is decoded and pre-processed
        as the model's manifest says.
        """
        prepared: dict[str, np.ndarray] = {}
        for key, value in feeds.items():
            spec = model.input_spec(key)
            if value.dtype == object and np.dtype(spec.dtype) != object:
                if model.image is None:
                    raise InvalidRequest(
                        f"input {key!r} carries strings, but model {model.name!r} takes {describe(spec)} and "
                        "has no image pre-processing, so encoded images are not accepted")
                value = images_to_tensor(value, model.image)
            prepared[key] = value
        wanted = [model.output_spec(o).name for o in outputs] if outputs else [o.name for o in model.outputs]
        try:
            results, stats = model.pool.run_with_stats(prepared, timeout=self.options.session_timeout_s)
        except TimeoutError as exc:
            raise Overloaded(str(exc)) from None
        items = int((stats.extra or {}).get("batch", 1)) if isinstance(stats.extra, dict) else 1
        self.metrics.inference(model.name, stats.npu_cycles, items)
        return {name: np.asarray(results[name]) for name in wanted}


class Overloaded(Exception):
    """No admission slot or NPU session is free (RESOURCE_EXHAUSTED / HTTP 503)."""


def tensor_name(spec: TensorSpec) -> str:
    """TF-style tensor name of a spec: ``images`` -> ``images:0``."""
    return spec.name if alias(spec.name) != spec.name else f"{spec.name}:0"
