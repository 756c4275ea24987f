"""The protocol-neutral core of the server: which models are served and how a request runs.

Each protocol front end (TF Serving gRPC, KServe v2 gRPC, the REST APIs)
decodes its wire tensors into numpy arrays, calls :meth:`ModelServer.infer`
and encodes the result; names, shapes, image decoding and errors are decided
here once.
"""
from __future__ import annotations

import hmac
import logging
import math
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from npu.modelfile import TensorSpec
from runtime.errors import InvalidRequest, ModelNotFound
from runtime.labels import labels_for
from runtime.metrics import Metrics
from runtime.preprocess import MAX_IMAGE_PIXELS, ImageConfig, images_to_tensor
from runtime.session import SessionPool, alias, describe
from runtime.tensors import check_size, element_count

log = logging.getLogger("npu.serve")

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
    """Limits and credentials shared by every protocol front end.

    Every limit is checked before the thing it limits is allocated: a message or body by its
    length, a tensor by its declared shape times its dtype, an image by the pixel count in its
    header, JSON by its size and nesting.
    """

    max_message_bytes: int = 64 * 1024 * 1024   # a gRPC message, an HTTP body with binary tensors
    max_request_bytes: int = 16 * 1024 * 1024   # the decoded inputs and outputs of one request
    max_json_bytes: int = 16 * 1024 * 1024      # a JSON body (parsed JSON takes up to ~12x its size)
    max_json_depth: int = 32
    max_image_pixels: int = MAX_IMAGE_PIXELS
    max_concurrent: int = 64          # requests handled at once; more get RESOURCE_EXHAUSTED / 503
    session_timeout_s: float = 30.0   # how long a request may wait for a free NPU session
    read_timeout_s: float = 30.0      # how long an HTTP client may take to send its headers and body
    max_connections: int = 256        # HTTP connections at once; more get 503
    auth_token: str | None = None     # when set, every call but health checks needs "authorization: Bearer <token>"


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

    def route(self, name: str, version, service: str = "") -> ServedModel:
        """:meth:`get`, with the model named by the client's service route when the request names none.

        Azure's clients name the service (one model each) in an ``x-ms-aml-grpc-service-route`` header;
        here the service is the model of that name, and a request naming another model is refused.
        """
        if service:
            if name and name != service:
                raise InvalidRequest(f"the request names model {_short(name)} but its service route names "
                                     f"{_short(service)}")
            name = service
        return self.get(name, version)

    def get(self, name: str = "", version: int | str | None = None) -> ServedModel:
        """The model ``name`` (empty: the default) at ``version`` (empty or None: the latest)."""
        if not isinstance(name, str) or len(name) > 256:
            raise InvalidRequest(f"model name must be a string of at most 256 characters, not {_short(name)}")
        if isinstance(version, str):
            version = version.strip()
            if version == "":
                version = None
            elif not (version.isdigit() and version.isascii() and len(version) <= 18):
                raise InvalidRequest(f"model version must be a positive integer, not {_short(version)}")
            else:
                version = int(version)
        elif version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 0):
            raise InvalidRequest(f"model version must be a positive integer, not {_short(version)}")
        if not name:
            name = self.default.name
        matches = [m for m in self.models if m.name == name]
        if not matches:
            raise ModelNotFound(f"model {_short(name)} is not served here; served: "
                                + ", ".join(sorted({m.name for m in self.models})))
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

    def admit(self, model: ServedModel, key: str, shape: tuple[int, ...], dtype: str) -> None:
        """Check one declared input (name, shape, numpy dtype name) before its values are decoded.

        The input must exist and have the model's shape, or a batch of it along a leading dimension
        of 1; decoded, the batch's inputs and the outputs it produces must fit the per-request limit.
        Strings fed to an image input count as the images they decode to.
        """
        if not isinstance(key, str):
            raise InvalidRequest(f"an input name must be a string, not {_short(key)}")
        spec = model.input_spec(key)
        what = f"input {key!r}"
        shape = tuple(shape)
        limit = self.options.max_request_bytes
        want = np.dtype(spec.dtype)
        if dtype == "object" and want != object and model.image is not None:
            batch = element_count(shape, what)
            item = (1, *spec.shape[1:]) if spec.shape and spec.shape[0] == 1 else spec.shape
            nbytes = batch * check_size(tuple(max(1, d) for d in item), want.itemsize, limit, what)
        else:
            itemsize = max(want.itemsize, 8 if dtype == "object" else np.dtype(dtype).itemsize)
            nbytes = check_size(shape, itemsize, limit, what)
            expected = spec.shape
            batched = bool(expected) and expected[0] == 1 and len(shape) == len(expected)
            if _shape_fits(expected, shape):
                batch = 1
            elif batched and _shape_fits(expected[1:], shape[1:]):
                batch = shape[0]
            else:
                raise InvalidRequest(f"{what} of model {model.name!r} must have shape {list(expected)} "
                                     f"(-1: any size), got {list(shape)[:8]}")
        outputs = batch * sum(math.prod(max(1, d) for d in o.shape) * np.dtype(o.dtype).itemsize
                              for o in model.outputs)
        if nbytes + outputs > limit:
            raise InvalidRequest(f"{what}: a batch of {batch} takes {nbytes} bytes of inputs and {outputs} of "
                                 f"outputs, more than the server's per-request limit of {limit} bytes")

    def repository_index(self) -> list[dict]:
        """Every served model version, as KServe v2's repository index lists them."""
        state = "UNAVAILABLE" if self.draining else "READY"
        return [{"name": m.name, "version": str(m.version), "state": state, "reason": ""}
                for m in sorted(self.models, key=lambda m: (m.name, m.version))]

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
                value = images_to_tensor(value, model.image, self.options.max_image_pixels)
            prepared[key] = value
        if outputs and any(not isinstance(o, str) for o in outputs):
            raise InvalidRequest("output names must be strings")
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


def internal_error(exc: BaseException) -> str:
    """Log an unexpected failure in one line (the traceback only at DEBUG) and return what the client is told:
    a reference to the log line, never the exception's text."""
    ref = uuid.uuid4().hex[:12]
    log.error("internal error %s while serving a request: %s: %s", ref, type(exc).__name__, str(exc)[:300])
    log.debug("traceback of internal error %s", ref, exc_info=exc)
    return f"internal error (reference {ref} in the server's log)"


def rejected(protocol: str, what: str, code: str, message: str) -> None:
    """One log line for a refused request (bad input, unknown model, no credentials)."""
    log.info("%s %s: %s: %s", protocol, what[:80], code, message[:200])


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of the server's certificate chain and key, and optionally the CA that signs client certificates."""

    cert: str
    key: str
    client_ca: str | None = None

    def read(self) -> tuple[bytes, bytes, bytes | None]:
        from npu.errors import NpuError

        out = []
        for label, path in (("--tls-cert", self.cert), ("--tls-key", self.key), ("--tls-client-ca", self.client_ca)):
            if path is None:
                out.append(None)
                continue
            try:
                out.append(open(path, "rb").read())
            except OSError as exc:
                raise NpuError(f"{label} {path}: cannot read: {exc.strerror or exc}") from None
        return out[0], out[1], out[2]


def token_matches(expected: str | None, header: str | bytes | None) -> bool:
    """True when no token is required, or ``header`` is ``Bearer <expected>`` (compared in constant time)."""
    if expected is None:
        return True
    if header is None:
        return False
    if isinstance(header, str):
        header = header.encode("utf-8", "replace")
    return hmac.compare_digest(header, b"Bearer " + expected.encode())


SERVICE_ROUTE = "x-ms-aml-grpc-service-route"
_ROUTE_PREFIX = "/api/v1/service/"


def service_from_route(route: str | None) -> str:
    """The service named by an ``x-ms-aml-grpc-service-route`` value (``/api/v1/service/NAME``), or ""."""
    if not route:
        return ""
    name = route[len(_ROUTE_PREFIX):] if route.startswith(_ROUTE_PREFIX) else route.strip("/")
    return name.split("/", 1)[0]


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _shape_fits(expected: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    return len(expected) == len(shape) and all(e < 0 or e == s for e, s in zip(expected, shape))


def tensor_name(spec: TensorSpec) -> str:
    """TF-style tensor name of a spec: ``images`` -> ``images:0``."""
    return spec.name if alias(spec.name) != spec.name else f"{spec.name}:0"
