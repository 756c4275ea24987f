"""`npu serve`: one model behind gRPC (TF Serving + KServe v2 + health) and HTTP (REST + /metrics).

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

from runtime.grpc_server import build_grpc_server
from runtime.http_server import build_http_server
from runtime.service import ModelServer, ServedModel, ServerOptions
from runtime.session import SessionPool, open_model

log = logging.getLogger("npu.serve")


@dataclass
class ServeConfig:
    """Everything `npu serve` takes besides the model."""

    host: str = "0.0.0.0"
    grpc_port: int | None = 8500      # None: no gRPC
    http_port: int | None = 8501      # None: no HTTP
    backend: str = "sim"
    workers: int = 1                  # NPU sessions (instances) of the model
    threads: int = 16                 # gRPC handler threads
    max_message_mb: float = 64
    max_concurrent: int = 64
    drain_seconds: float = 30.0


class Server:
    """A running (after :meth:`start`) model server.

    Members
    -------
    grpc_port, http_port:
        The bound ports (useful when 0 asked for a free one).
    model_server:
        The protocol-neutral core (models, options, metrics).
    """

    def __init__(self, source, config: ServeConfig | None = None, *, store: str | Path | None = None):
        self.config = config or ServeConfig()
        model, name, version = open_model(source, store)
        pool = SessionPool(model, self.config.workers, self.config.backend, name=name, version=version)
        served = ServedModel.create(pool, name, version or 1, self.config.backend)
        options = ServerOptions(max_message_bytes=int(self.config.max_message_mb * 1024 * 1024),
                                max_concurrent=self.config.max_concurrent)
        self.model_server = ModelServer([served], options)
        self.grpc_port: int | None = None
        self.http_port: int | None = None
        self._grpc = self._http = self._health = None
        self._http_thread: threading.Thread | None = None
        self._stopped = threading.Event()

    @property
    def model(self) -> ServedModel:
        return self.model_server.default

    def start(self) -> "Server":
        c = self.config
        if c.grpc_port is not None:
            self._grpc, self.grpc_port, self._health = build_grpc_server(self.model_server, c.host, c.grpc_port,
                                                                          c.threads)
            self._grpc.start()
        if c.http_port is not None:
            self._http = build_http_server(self.model_server, c.host, c.http_port)
            self.http_port = self._http.server_address[1]
            self._http_thread = threading.Thread(target=self._http.serve_forever, name="npu-http", daemon=True)
            self._http_thread.start()
        return self

    def drain(self, timeout: float | None = None) -> None:
        """Stop accepting requests, finish those in flight (up to ``timeout`` s), close."""
        timeout = self.config.drain_seconds if timeout is None else timeout
        server = self.model_server
        server.draining = True
        if self._health is not None:
            self._health.enter_graceful_shutdown()
        done = None
        if self._grpc is not None:
            done = self._grpc.stop(grace=timeout)
        if self._http is not None:
            self._http.shutdown()
        deadline = time.monotonic() + timeout
        while server.metrics.in_flight > 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        if done is not None:
            done.wait(max(0.0, deadline - time.monotonic()))
        if self._http is not None:
            self._http.server_close()
        self._stopped.set()

    def wait(self) -> None:
        self._stopped.wait()

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        if not self._stopped.is_set():
            self.drain(timeout=2.0)


def serve(source, config: ServeConfig, *, store=None, ready=print) -> int:
    """Serve until SIGTERM or SIGINT, then drain; what `npu serve` runs."""
    server = Server(source, config, store=store).start()
    model = server.model
    ready(f"serving {model.name}:{model.version} on the {config.backend} backend with {config.workers} "
          f"NPU session(s)")
    if server.grpc_port:
        ready(f"  gRPC  {config.host}:{server.grpc_port}  (TF Serving PredictionService/ModelService, "
              "KServe v2, grpc.health.v1)")
    if server.http_port:
        ready(f"  HTTP  {config.host}:{server.http_port}  (/v2/..., /v1/models/{model.name}:predict, /metrics)")

    def on_signal(signum, frame):
        ready(f"received {signal.Signals(signum).name}: draining (up to {config.drain_seconds:g} s)")
        threading.Thread(target=server.drain, name="npu-drain", daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not server._stopped.wait(0.5):
        pass
    ready("stopped")
    return 0
