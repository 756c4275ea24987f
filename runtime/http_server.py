"""REST front ends on one port, a Starlette app under uvicorn: KServe v2 (with Triton's binary tensor
extension and repository index), TensorFlow Serving's REST API, and Prometheus /metrics.

KServe v2::

    GET  /v2/health/live | /v2/health/ready          (open even with a token)
    GET  /v2                                         server metadata
    POST /v2/repository/index                        every served model version
    GET  /v2/models/NAME[/versions/V]                model metadata
    GET  /v2/models/NAME[/versions/V]/ready
    POST /v2/models/NAME[/versions/V]/infer          JSON, or JSON + binary tensors
                                                     (Inference-Header-Content-Length)
TensorFlow Serving::

    GET  /v1/models/NAME[/versions/N]                model status
    GET  /v1/models/NAME[/versions/N]/metadata
    POST /v1/models/NAME[/versions/N]:predict        {"instances": ...} or {"inputs": ...}

uvicorn parses HTTP (h11), limits connections (``max_connections``; more get 503), closes idle
keep-alive connections, and on shutdown finishes the requests in flight (answered with
``Connection: close``) before it closes.  :class:`TimedH11Protocol` adds what uvicorn lacks: a
connection that has not sent a whole request head within ``read_timeout_s`` is closed; a body
must arrive within the same time (408 otherwise).  Bodies are kept up to the limit and no
further (413); parsing and inference run on worker threads, never on the event loop.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import socket
import threading
import time

import anyio
import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from npu.manifest import json_depth_ok
from runtime.errors import InvalidRequest, ModelNotFound
from runtime.grpc_server import V2_EXTENSIONS, model_status, signature_def_map, v2_model_metadata
from runtime.service import (DEFAULT_SIGNATURE, SERVER_NAME, SERVER_VERSION, ModelServer, Overloaded, TlsFiles,
                             internal_error, rejected, token_matches)
from runtime.session import alias
from runtime.tensors import numpy_dtype, numpy_to_raw, raw_to_numpy, v2_datatype, v2_json_to_numpy

log = logging.getLogger("npu.serve")

HEADER_LENGTH = "Inference-Header-Content-Length"
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
V2_MODEL = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<rest>/ready|/infer)?$")
V1_MODEL = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?"
                      r"(?P<rest>/metadata|:predict|:classify|:regress)?$")


class HttpError(Exception):
    def __init__(self, status: int, message: str, close: bool = False):
        super().__init__(message)
        self.status = status
        self.close = close


def _http_status(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, HttpError):
        return exc.status, str(exc)
    if isinstance(exc, InvalidRequest):
        return 400, str(exc)
    if isinstance(exc, ModelNotFound):
        return 404, str(exc)
    if isinstance(exc, Overloaded):
        return 503, str(exc)
    return 500, internal_error(exc)


class Reply:
    """What a handler answers: status, body, content type, extra headers."""

    def __init__(self, status: int = 200, body: bytes = b"", content_type: str = "application/json",
                 headers: dict[str, str] | None = None):
        self.status, self.body, self.content_type, self.headers = status, body, content_type, headers or {}

    @classmethod
    def json(cls, obj, status: int = 200) -> "Reply":
        return cls(status, json.dumps(obj).encode())


def _json_value(array: np.ndarray) -> list:
    """The v2 JSON ``data`` of an array: flat, row-major."""
    if array.dtype == object:
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in array.reshape(-1)]
    return array.reshape(-1).tolist()


class RestApi:
    """The REST protocols as plain functions of (method, path, headers, body) -> Reply, run on worker threads."""

    def __init__(self, server: ModelServer):
        self.server = server

    def parse_json(self, data: bytes, what: str = "the request"):
        options = self.server.options
        if len(data) > options.max_json_bytes:
            raise HttpError(413, f"{what} is {len(data)} bytes of JSON, more than the limit of "
                                 f"{options.max_json_bytes} (send tensors as binary data)")
        if not json_depth_ok(data, options.max_json_depth):
            raise InvalidRequest(f"{what} nests JSON deeper than {options.max_json_depth} levels")
        try:
            return json.loads(data or b"{}")
        except (ValueError, RecursionError) as exc:
            raise InvalidRequest(f"{what} is not valid JSON: {str(exc)[:200]}") from None

    # -- KServe v2 ---------------------------------------------------------

    def v2_model(self, method: str, path: str, headers, body: bytes) -> Reply:
        server = self.server
        match = V2_MODEL.match(path)
        if not match:
            raise HttpError(404, f"no such endpoint: {method} {path[:200]}")
        rest = match["rest"]
        if method == "GET" and rest == "/ready":
            try:
                server.get(match["name"], match["version"])
            except (ModelNotFound, InvalidRequest):
                return Reply(400)
            return Reply(503 if server.draining else 200)
        if method == "GET" and rest is None:
            return Reply.json(v2_model_metadata(server.get(match["name"], match["version"]), server))
        if method == "POST" and rest == "/infer":
            with server.slot():
                return self.v2_infer(match["name"], match["version"], headers, body)
        raise HttpError(405 if rest in (None, "/ready", "/infer") else 404, f"{method} is not allowed on {path[:200]}")

    def v2_infer(self, name: str, version: str | None, headers, body: bytes) -> Reply:
        server = self.server
        model = server.get(name, version)
        header_length = headers.get(HEADER_LENGTH)
        if header_length is not None:
            if not header_length.isdigit() or len(header_length) > 18:
                raise InvalidRequest(f"{HEADER_LENGTH} must be an integer, not {header_length[:40]!r}")
            n = int(header_length)
            if not 0 <= n <= len(body):
                raise InvalidRequest(f"{HEADER_LENGTH} {n} is outside the {len(body)}-byte body")
            header, binary = body[:n], body[n:]
        else:
            if len(body) > server.options.max_json_bytes:
                raise HttpError(413, f"a JSON request of {len(body)} bytes is more than the limit of "
                                     f"{server.options.max_json_bytes}; send tensors as binary data")
            header, binary = body, b""
        request = self.parse_json(header)
        if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
            raise InvalidRequest('a v2 infer request is a JSON object with an "inputs" list')
        declared = []
        for i, tensor in enumerate(request["inputs"]):
            where = f"inputs[{i}]"
            if not isinstance(tensor, dict) or not {"name", "shape", "datatype"} <= set(tensor):
                raise InvalidRequest(f'{where}: needs "name", "shape" and "datatype"')
            if not isinstance(tensor["name"], str):
                raise InvalidRequest(f"{where}.name: must be a string")
            what = f"input {tensor['name'][:80]!r}"
            shape = tensor["shape"]
            if not isinstance(shape, list) or len(shape) > 32 or \
                    any(not isinstance(s, int) or isinstance(s, bool) or not 0 <= s < 2 ** 62 for s in shape):
                raise InvalidRequest(f"{what}: shape must be a list of non-negative integers")
            if not isinstance(tensor["datatype"], str):
                raise InvalidRequest(f"{what}: datatype must be a string")
            dtype = numpy_dtype(tensor["datatype"], what)
            server.admit(model, tensor["name"], tuple(shape), dtype.name)
            params = tensor.get("parameters") or {}
            if not isinstance(params, dict):
                raise InvalidRequest(f"{what}: parameters must be an object")
            declared.append((tensor, what, tuple(shape), params))
        feeds: dict[str, np.ndarray] = {}
        offset = 0
        for tensor, what, shape, params in declared:
            if "binary_data_size" in params:
                size = params["binary_data_size"]
                if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                    raise InvalidRequest(f"{what}: binary_data_size must be a non-negative integer, "
                                         f"not {str(size)[:40]!r}")
                if offset + size > len(binary):
                    raise InvalidRequest(f"{what}: binary_data_size {size} runs past the binary data")
                feeds[tensor["name"]] = raw_to_numpy(binary[offset:offset + size], tensor["datatype"], shape, what)
                offset += size
            elif "data" in tensor:
                feeds[tensor["name"]] = v2_json_to_numpy(tensor["data"], tensor["datatype"], shape, what)
            else:
                raise InvalidRequest(f'{what}: has neither "data" nor binary_data_size')
        requested = request.get("outputs") or []
        top = request.get("parameters") or {}
        if not isinstance(requested, list) or not isinstance(top, dict):
            raise InvalidRequest('"outputs" must be a list and "parameters" an object')
        default_binary = bool(top.get("binary_data_output", False))
        binary_of = {}
        for o in requested:
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise InvalidRequest('each of "outputs" must be an object with a "name" string')
            binary_of[o["name"]] = bool((o.get("parameters") or {}).get("binary_data", default_binary))
        results = server.infer(model, feeds, list(binary_of) or None)
        outputs, chunks = [], []
        for out_name, value in results.items():
            entry = {"name": out_name, "datatype": v2_datatype(value.dtype.name if value.dtype != object else "object"),
                     "shape": list(value.shape)}
            if binary_of.get(out_name, default_binary):
                raw = numpy_to_raw(value)
                entry["parameters"] = {"binary_data_size": len(raw)}
                chunks.append(raw)
            else:
                entry["data"] = _json_value(value)
            outputs.append(entry)
        reply = {"model_name": model.name, "model_version": str(model.version), "outputs": outputs}
        if "id" in request:
            reply["id"] = request["id"] if isinstance(request["id"], str) else str(request["id"])[:256]
        text = json.dumps(reply).encode()
        if chunks:
            return Reply(200, text + b"".join(chunks), "application/octet-stream", {HEADER_LENGTH: str(len(text))})
        return Reply(200, text)

    # -- TensorFlow Serving REST ---------------------------------------------

    def v1(self, method: str, path: str, headers, body: bytes) -> Reply:
        server = self.server
        match = V1_MODEL.match(path)
        if not match:
            raise HttpError(404, f"no such endpoint: {method} {path[:200]}")
        name, version, rest = match["name"], match["version"], match["rest"]
        if method == "GET" and rest is None:
            from google.protobuf import json_format

            model = server.get(name, version)
            status = model_status(server, model.name, int(version) if version else None)
            return Reply.json(json_format.MessageToDict(status, preserving_proto_field_name=True,
                                                        always_print_fields_with_no_presence=True))
        if method == "GET" and rest == "/metadata":
            from google.protobuf import json_format

            model = server.get(name, version)
            sigmap = json_format.MessageToDict(signature_def_map(model), preserving_proto_field_name=True,
                                               always_print_fields_with_no_presence=True)
            return Reply.json({"model_spec": {"name": model.name, "signature_name": "", "version": str(model.version)},
                               "metadata": {"signature_def": sigmap}})
        if method == "POST" and rest == ":predict":
            with server.slot():
                return self.v1_predict(name, version, body)
        if method == "POST" and rest in (":classify", ":regress"):
            raise HttpError(501, f"{rest[1:]} is not implemented by this server; use :predict")
        raise HttpError(405, f"{method} is not allowed on {path[:200]}")

    def v1_predict(self, name: str, version: str | None, body: bytes) -> Reply:
        server = self.server
        model = server.get(name, version)
        request = self.parse_json(body)
        if not isinstance(request, dict):
            raise InvalidRequest('a predict request is a JSON object with "instances" or "inputs"')
        signature = request.get("signature_name") or DEFAULT_SIGNATURE
        if signature != DEFAULT_SIGNATURE:
            raise InvalidRequest(f"model {model.name!r} has only the signature {DEFAULT_SIGNATURE!r}, "
                                 f"not {str(signature)[:80]!r}")
        if ("instances" in request) == ("inputs" in request):
            raise InvalidRequest('give exactly one of "instances" (row format) or "inputs" (columnar format)')
        names = [alias(s.name) for s in model.inputs]
        if "instances" in request:
            instances = request["instances"]
            if not isinstance(instances, list) or not instances:
                raise InvalidRequest('"instances" must be a non-empty list')
            if all(isinstance(i, dict) and "b64" not in i for i in instances):
                keys = set(instances[0])
                if any(set(i) != keys for i in instances):
                    raise InvalidRequest("every instance must name the same inputs")
                columns = {k: [i[k] for i in instances] for k in keys}
            elif len(names) == 1:
                columns = {names[0]: instances}
            else:
                raise InvalidRequest(f"model {model.name!r} has inputs {names}: each instance must be an object "
                                     "naming them")
        else:
            inputs = request["inputs"]
            if isinstance(inputs, dict) and not ("b64" in inputs and len(inputs) == 1):
                columns = inputs
            elif len(names) == 1:
                columns = {names[0]: inputs}
            else:
                raise InvalidRequest(f"model {model.name!r} has inputs {names}: \"inputs\" must be an object naming them")
        feeds = {}
        for key, value in columns.items():
            array = _json_array(model, key, value)
            server.admit(model, key, array.shape, array.dtype.name if array.dtype != object else "object")
            feeds[key] = array
        results = server.infer(model, feeds)
        outputs = {alias(k): v for k, v in results.items()}
        if "instances" in request:
            if len(outputs) == 1:
                predictions = _json_rows(next(iter(outputs.values())))
            else:
                rows = {k: _json_rows(v) for k, v in outputs.items()}
                count = len(next(iter(rows.values())))
                predictions = [{k: rows[k][i] for k in rows} for i in range(count)]
            return Reply.json({"predictions": predictions})
        if len(outputs) == 1:
            return Reply.json({"outputs": _json_nested(next(iter(outputs.values())))})
        return Reply.json({"outputs": {k: _json_nested(v) for k, v in outputs.items()}})


def _json_array(model, key: str, value) -> np.ndarray:
    """A TF REST input value (nested lists of numbers, or {"b64": ...} strings) as an array."""
    spec = model.input_spec(key)

    def unwrap(v):
        """``v`` with {"b64": ...} objects decoded; lists without any are returned as they are, not copied."""
        if isinstance(v, dict):
            if set(v) != {"b64"} or not isinstance(v["b64"], str):
                raise InvalidRequest(f"input {key!r}: an object value must be {{\"b64\": \"...\"}}")
            try:
                return base64.b64decode(v["b64"], validate=True)
            except (ValueError, TypeError) as exc:
                raise InvalidRequest(f"input {key!r}: invalid base64: {exc}") from None
        if isinstance(v, list):
            out = None
            for i, x in enumerate(v):
                y = unwrap(x)
                if y is not x:
                    out = out if out is not None else list(v)
                    out[i] = y
            return v if out is None else out
        return v

    value = unwrap(value)
    if _has_bytes(value):
        items = list(_flatten(value))
        if any(not isinstance(v, bytes) for v in items):
            raise InvalidRequest(f"input {key!r}: mixes encoded images with other values")
        array = np.empty(len(items), dtype=object)
        array[:] = items
        return array
    try:
        array = np.asarray(value)
        if array.dtype.kind in "biuf" and np.dtype(spec.dtype).kind in "biuf":
            array = array.astype(spec.dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidRequest(f"input {key!r}: not a rectangular array of numbers: {str(exc)[:200]}") from None
    if array.dtype.kind not in "biuf":
        raise InvalidRequest(f"input {key!r} must be {spec.dtype} numbers shaped {list(spec.shape)}, "
                             f"got {array.dtype} values")
    return array


def _has_bytes(value) -> bool:
    if isinstance(value, bytes):
        return True
    return isinstance(value, list) and any(_has_bytes(v) for v in value)


def _flatten(value):
    if isinstance(value, list):
        for v in value:
            yield from _flatten(v)
    else:
        yield value


def _json_nested(array: np.ndarray):
    if array.dtype == object:
        return np.asarray(_json_value(array), dtype=object).reshape(array.shape).tolist()
    return array.tolist()


def _json_rows(array: np.ndarray) -> list:
    nested = _json_nested(array)
    return nested if isinstance(nested, list) else [nested]


# -- the ASGI app ------------------------------------------------------------------------------

def build_app(server: ModelServer) -> Starlette:
    """The Starlette app of ``server``: routes, bearer-token check, bounded bodies, metrics."""
    api = RestApi(server)
    options = server.options
    limiter = anyio.CapacityLimiter(max(1, options.max_concurrent))

    async def read_body(request: Request) -> bytes:
        """The body, read up to the limit within the read timeout.  A body past the limit is read on and
        dropped (up to 4x the limit, so the client sees the 413 instead of a broken pipe), then refused."""
        limit = options.max_message_bytes
        length = request.headers.get("content-length")
        declared = int(length) if length is not None and length.isdigit() and len(length) < 19 else None
        chunks, size = [], 0
        try:
            with anyio.fail_after(options.read_timeout_s):
                if declared is not None and declared > 4 * limit:
                    raise HttpError(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes "
                                         "(serve with a larger --max-message-mb)", close=True)
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > 4 * limit:
                        break
                    if size <= limit:
                        chunks.append(chunk)
        except TimeoutError:
            raise HttpError(408, f"the request body did not arrive within {options.read_timeout_s:g} s",
                            close=True) from None
        if size > limit:
            raise HttpError(413, f"request body of {declared or size} bytes exceeds the limit of {limit} bytes "
                                 "(serve with a larger --max-message-mb)", close=size > 4 * limit)
        return b"".join(chunks)

    def respond(reply: Reply, close: bool = False) -> Response:
        headers = dict(reply.headers)
        if close:
            headers["Connection"] = "close"
        return Response(reply.body, reply.status, headers=headers, media_type=reply.content_type)

    def endpoint(protocol: str, handler, model_of=None):
        async def call(request: Request) -> Response:
            start = time.perf_counter()
            path = request.url.path
            try:
                body = await read_body(request) if request.method == "POST" else b""
                reply = await anyio.to_thread.run_sync(handler, request.method, path, request.headers, body,
                                                       limiter=limiter)
                close = False
            except Exception as exc:  # noqa: BLE001 -- every failure becomes a status
                status, message = _http_status(exc)
                if status != 500:
                    rejected(protocol, f"{request.method} {path}", str(status), message)
                reply, close = Reply.json({"error": message}, status), getattr(exc, "close", False)
            if model_of is not None and request.method == "POST":
                name = model_of(path)
                known = name if any(m.name == name for m in server.models) else "(other)"
                server.metrics.request(protocol, known, str(reply.status), time.perf_counter() - start)
            return respond(reply, close)
        return call

    def model_name(pattern):
        return lambda path: match["name"] if (match := pattern.match(path)) else ""

    async def live(request: Request) -> Response:
        return Response(b"", 200)

    async def ready(request: Request) -> Response:
        return Response(b"", 503 if server.draining else 200)

    async def metadata(request: Request) -> Response:
        return respond(Reply.json({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": V2_EXTENSIONS}))

    async def repository_index(request: Request) -> Response:
        return respond(Reply.json(server.repository_index()))

    async def metrics(request: Request) -> Response:
        return Response(server.metrics.render().encode(), 200, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def not_found(request: Request, exc) -> Response:
        status = getattr(exc, "status_code", 404)
        return respond(Reply.json({"error": f"no such endpoint: {request.method} {request.url.path[:200]}"}, status))

    routes = [
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2", metadata, methods=["GET"]),
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        Route("/v2/models/{rest:path}", endpoint("kserve-http", api.v2_model, model_name(V2_MODEL)),
              methods=["GET", "POST"]),
        Route("/v1/models/{rest:path}", endpoint("tfserving-http", api.v1, model_name(V1_MODEL)),
              methods=["GET", "POST"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
    if options.auth_token:
        return BearerAuth(app, options.auth_token)
    return app


class BearerAuth:
    """ASGI middleware: every path but the health checks needs ``Authorization: Bearer <token>``."""

    def __init__(self, app, token: str):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        if token_matches(self.token, header):
            return await self.app(scope, receive, send)
        rejected("http", f"{scope['method']} {scope['path'][:80]}", "401", "missing or wrong bearer token")
        body = b'{"error": "this server needs an \\"Authorization: Bearer <token>\\" header"}'
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline for each request head (``read_timeout_s``): a client that
    connects and sends nothing, or a partial head, is disconnected instead of holding the connection."""

    read_timeout_s = 30.0

    def connection_made(self, transport):
        super().connection_made(transport)
        self._arm_head_timer()

    def _arm_head_timer(self):
        cycle = self.cycle
        self._head_timer = self.loop.call_later(self.read_timeout_s, self._head_timeout, cycle)

    def _head_timeout(self, cycle):
        waiting = self.cycle is cycle and (cycle is None or cycle.response_complete)
        if waiting and not self.transport.is_closing():
            self.transport.close()

    def on_response_complete(self):
        super().on_response_complete()
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
        if not self.transport.is_closing():
            self._arm_head_timer()

    def connection_lost(self, exc):
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
        super().connection_lost(exc)


class HttpServer:
    """uvicorn serving :func:`build_app` on its own thread and event loop.

    Members
    -------
    port:
        The bound port (useful when 0 asked for a free one).
    """

    def __init__(self, server: ModelServer, host: str, port: int, tls: TlsFiles | None = None,
                 drain_seconds: float = 30.0):
        import ssl

        import uvicorn

        options = server.options
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host, port))
        except OSError:
            self.socket.close()
            raise
        self.port = self.socket.getsockname()[1]
        protocol = type("BoundTimedH11Protocol", (TimedH11Protocol,), {"read_timeout_s": options.read_timeout_s})
        ssl_options = {}
        if tls is not None:
            tls.read()  # a clear error for unreadable files
            ssl_options = dict(ssl_certfile=tls.cert, ssl_keyfile=tls.key)
            if tls.client_ca:
                ssl_options.update(ssl_ca_certs=tls.client_ca, ssl_cert_reqs=ssl.CERT_REQUIRED)
        config = uvicorn.Config(build_app(server), http=protocol, lifespan="off", log_level="warning",
                                access_log=False, limit_concurrency=options.max_connections,
                                timeout_keep_alive=5, timeout_graceful_shutdown=int(max(1, drain_seconds)),
                                h11_max_incomplete_event_size=64 * 1024, server_header=False, **ssl_options)
        self.uvicorn = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def start(self) -> "HttpServer":
        self._thread = threading.Thread(target=self._run, name="npu-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.uvicorn.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self.uvicorn.started:
            raise OSError("the HTTP server did not start (see the log)")
        return self

    def _run(self) -> None:
        asyncio.run(self.uvicorn.serve(sockets=[self.socket]))

    def shutdown(self, timeout: float) -> None:
        """Stop accepting, finish the requests in flight (``Connection: close``), close; at most ``timeout`` s."""
        self.uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self.socket.close()
