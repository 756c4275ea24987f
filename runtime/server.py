"""`npu serve`: models behind gRPC (TF Serving + KServe v2 + health) and HTTP (REST + /metrics).

One server serves every model version it was given: ``.npu`` files (version 1, named by their
stem), registry references ``NAME:VERSION``, and registry names, whose versions follow TF
Serving's model_version_policy (``latest``, ``all``, or specific versions ``1,3``); ``--all``
serves every registered name.  The first model named is the default for requests that name none.

Secure by default: it listens on 127.0.0.1 unless told another address; ``tls`` makes both ports
TLS (with client certificates when a client CA is given); ``auth_token`` requires
``authorization: Bearer <token>`` on both protocols, /metrics included (health checks stay open).

:class:`Server` is usable in-process (tests, benchmarks): ``Server(...).start()``
binds the ports (0 picks a free one) and returns at once; :meth:`Server.drain`
stops taking requests, lets those in flight finish and closes.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from npu.errors import NpuError
from npu.modelfile import ModelFile
from runtime.grpc_server import build_grpc_server
from runtime.http_server import HttpServer
from runtime.service import ModelServer, ServedModel, ServerOptions, TlsFiles
from runtime.session import SessionPool, open_model

log = logging.getLogger("npu.serve")

MB = 1024 * 1024


@dataclass
class ServeConfig:
    """Everything `npu serve` takes besides the models."""

    host: str = "127.0.0.1"
    grpc_port: int | None = 8500      # None: no gRPC
    http_port: int | None = 8501      # None: no HTTP
    backend: str = "sim"
    workers: int = 1                  # NPU sessions (instances) of each model version
    threads: int = 16                 # gRPC handler threads
    max_message_mb: float = 64
    max_request_mb: float = 16        # decoded inputs and outputs of one request
    max_json_mb: float = 16
    max_image_pixels: int = ServerOptions.max_image_pixels
    max_concurrent: int = 64
    max_connections: int = 256
    read_timeout_s: float = 30.0
    drain_seconds: float = 30.0
    versions: str = "latest"          # registry names: "latest", "all" or "1,3"
    tls: TlsFiles | None = None
    auth_token: str | None = None

    def options(self) -> ServerOptions:
        return ServerOptions(max_message_bytes=int(self.max_message_mb * MB),
                             max_request_bytes=int(self.max_request_mb * MB),
                             max_json_bytes=int(min(self.max_json_mb, self.max_message_mb) * MB),
                             max_image_pixels=self.max_image_pixels, max_concurrent=self.max_concurrent,
                             read_timeout_s=self.read_timeout_s, max_connections=self.max_connections,
                             auth_token=self.auth_token or None)


def version_policy(text: str) -> str | tuple[int, ...]:
    """``latest``, ``all`` or specific versions ``1,3`` (TF Serving's model_version_policy)."""
    if text in ("latest", "all"):
        return text
    try:
        versions = tuple(int(v) for v in text.split(","))
    except ValueError:
        versions = ()
    if not versions or any(v < 1 for v in versions):
        raise NpuError(f"--versions must be latest, all, or version numbers like 1,3; not {text!r}")
    return versions


def collect_models(sources, store=None, policy: str = "latest", every_registered: bool = False
                   ) -> list[tuple[ModelFile, str, int]]:
    """(model file, name, version) of every version to serve, the default model first."""
    from runtime.registry import Registry, parse_ref

    chosen = version_policy(policy)
    registry = None
    found: list[tuple[ModelFile, str, int]] = []
    refs = list(sources)
    if every_registered:
        registry = Registry(store)
        refs += [name for name in dict.fromkeys(r.name for r in registry.list()) if name not in refs]
    for source in refs:
        is_reference = isinstance(source, str) and not (Path(source).exists() or source.endswith(".npu")
                                                        or "/" in source)
        if not is_reference:
            model, name, version = open_model(source, store)
            found.append((model, name, version or 1))
            continue
        name, version = parse_ref(source)
        registry = registry or Registry(store)
        records = registry.list(name)
        if not records:
            registry.resolve(source)  # raises ModelNotFound listing the registered names
        if version is not None:
            wanted = [registry.resolve(source)]
        elif chosen == "latest":
            wanted = records[-1:]
        elif chosen == "all":
            wanted = records
        else:
            wanted = [registry.resolve(f"{name}:{v}") for v in chosen]
        found += [(registry.open(r), r.name, r.version) for r in wanted]
    seen = set()
    for _, name, version in found:
        if (name, version) in seen:
            raise NpuError(f"{name}:{version} is named twice; serve each model version once (a file is served as "
                           "version 1 of its stem: register files to serve several versions)")
        seen.add((name, version))
    if not found:
        raise NpuError("no models to serve: name .npu files or registry models, or give --all")
    return found


class Server:
    """A running (after :meth:`start`) model server.

    Members
    -------
    grpc_port, http_port:
        The bound ports (useful when 0 asked for a free one).
    model_server:
        The protocol-neutral core (models, options, metrics).
    """

    def __init__(self, source, config: ServeConfig | None = None, *, store: str | Path | None = None,
                 every_registered: bool = False):
        self.config = c = config or ServeConfig()
        sources = list(source) if isinstance(source, (list, tuple)) else ([] if source is None else [source])
        served = []
        for model, name, version in collect_models(sources, store, c.versions, every_registered):
            pool = SessionPool(model, c.workers, c.backend, name=name, version=version)
            served.append(ServedModel.create(pool, name, version, c.backend))
        self.model_server = ModelServer(served, c.options())
        self.grpc_port: int | None = None
        self.http_port: int | None = None
        self._grpc = self._http = self._health = None
        self._stopped = threading.Event()

    @property
    def model(self) -> ServedModel:
        return self.model_server.default

    def start(self) -> "Server":
        c = self.config
        if c.grpc_port is not None:
            self._grpc, self.grpc_port, self._health = build_grpc_server(self.model_server, c.host, c.grpc_port,
                                                                          c.threads, c.tls)
            self._grpc.start()
        if c.http_port is not None:
            try:
                self._http = HttpServer(self.model_server, c.host, c.http_port, c.tls, c.drain_seconds).start()
            except BaseException:
                if self._grpc is not None:
                    self._grpc.stop(0)
                raise
            self.http_port = self._http.port
        return self

    def drain(self, timeout: float | None = None) -> None:
        """Stop accepting requests, finish those in flight (up to ``timeout`` s), close."""
        timeout = self.config.drain_seconds if timeout is None else timeout
        server = self.model_server
        server.draining = True
        if self._health is not None:
            self._health.enter_graceful_shutdown()
        deadline = time.monotonic() + timeout
        done = self._grpc.stop(grace=timeout) if self._grpc is not None else None
        if self._http is not None:
            self._http.shutdown(timeout)
        while server.metrics.in_flight > 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        if done is not None:
            done.wait(max(0.0, deadline - time.monotonic()))
        self._stopped.set()

    def wait(self) -> None:
        self._stopped.wait()

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        if not self._stopped.is_set():
            self.drain(timeout=2.0)


def serve(source, config: ServeConfig, *, store=None, ready=print, every_registered: bool = False) -> int:
    """Serve until SIGTERM or SIGINT, then drain; what `npu serve` runs."""
    server = Server(source, config, store=store, every_registered=every_registered).start()
    models = server.model_server.models
    ready(f"serving {', '.join(f'{m.name}:{m.version}' for m in models)} on the {config.backend} backend with "
          f"{config.workers} NPU session(s) each")
    scheme = "TLS" if config.tls else "plaintext"
    auth = "bearer token required" if config.auth_token else "no authentication"
    if server.grpc_port:
        ready(f"  gRPC  {config.host}:{server.grpc_port}  ({scheme}, {auth}; TF Serving PredictionService/"
              "ModelService, KServe v2, grpc.health.v1)")
    if server.http_port:
        ready(f"  HTTP  {config.host}:{server.http_port}  ({scheme}, {auth}; /v2/..., "
              f"/v1/models/{server.model.name}:predict, /metrics)")

    def on_signal(signum, frame):
        ready(f"received {signal.Signals(signum).name}: draining (up to {config.drain_seconds:g} s)")
        threading.Thread(target=server.drain, name="npu-drain", daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not server._stopped.wait(0.5):
        pass
    ready("stopped")
    return 0
