"""REST front ends on one port: KServe v2 (with Triton's binary tensor extension),
TensorFlow Serving's REST API, and Prometheus /metrics.

KServe v2::

    GET  /v2/health/live | /v2/health/ready
    GET  /v2                                         server metadata
    GET  /v2/models/NAME[/versions/V]                model metadata
    GET  /v2/models/NAME[/versions/V]/ready
    POST /v2/models/NAME[/versions/V]/infer          JSON, or JSON + binary tensors
                                                     (Inference-Header-Content-Length)
TensorFlow Serving::

    GET  /v1/models/NAME[/versions/N]                model status
    GET  /v1/models/NAME[/versions/N]/metadata
    POST /v1/models/NAME[/versions/N]:predict        {"instances": ...} or {"inputs": ...}

The stdlib ThreadingHTTPServer is enough here: each request blocks on an NPU
session anyway, and it keeps the runtime free of a web framework.
"""
from __future__ import annotations

import base64
import json
import logging
import re
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from runtime.errors import InvalidRequest, ModelNotFound
from runtime.grpc_server import V2_EXTENSIONS, model_status, signature_def_map, v2_model_metadata
from runtime.service import DEFAULT_SIGNATURE, SERVER_NAME, SERVER_VERSION, ModelServer, Overloaded
from runtime.session import alias
from runtime.tensors import numpy_dtype, numpy_to_raw, raw_to_numpy, v2_datatype, v2_json_to_numpy

log = logging.getLogger("npu.serve")

HEADER_LENGTH = "Inference-Header-Content-Length"
V2_MODEL = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<rest>/ready|/infer)?$")
V1_MODEL = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?"
                      r"(?P<rest>/metadata|:predict|:classify|:regress)?$")


class HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _http_status(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, HttpError):
        return exc.status, str(exc)
    if isinstance(exc, InvalidRequest):
        return 400, str(exc)
    if isinstance(exc, ModelNotFound):
        return 404, str(exc)
    if isinstance(exc, Overloaded):
        return 503, str(exc)
    log.exception("internal error while serving a request")
    return 500, f"internal error: {type(exc).__name__}: {exc}"


def _json_value(array: np.ndarray) -> list:
    """The v2 JSON ``data`` of an array: flat, row-major."""
    if array.dtype == object:
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in array.reshape(-1)]
    return array.reshape(-1).tolist()


class Handler(BaseHTTPRequestHandler):
    server_version = f"{SERVER_NAME}/{SERVER_VERSION}"
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, a keep-alive client's
    # delayed ACK stalls the second one by ~40 ms.
    disable_nagle_algorithm = True
    model_server: ModelServer  # set on the subclass made by build_http_server

    def log_message(self, format, *args):  # noqa: A002 -- the stdlib's signature
        log.debug("%s %s", self.address_string(), format % args)

    # -- plumbing ----------------------------------------------------------

    def _send(self, status: int, body: bytes = b"", content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, obj) -> None:
        self._send(status, json.dumps(obj).encode())

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                raise HttpError(411, "chunked request bodies are not supported; send Content-Length")
            return b""
        try:
            n = int(length)
        except ValueError:
            raise HttpError(400, f"bad Content-Length {length!r}") from None
        limit = self.model_server.options.max_message_bytes
        if n > limit:
            # Read and drop the body so the connection stays usable, then refuse.
            remaining = n
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                remaining -= len(chunk)
            raise HttpError(413, f"request body of {n} bytes exceeds the limit of {limit} bytes "
                                 "(serve with a larger --max-message-mb)")
        return self.rfile.read(n)

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        start = time.perf_counter()
        protocol, model_name = "http", ""
        try:
            body = self._body() if method == "POST" else b""
            if path.startswith("/v2"):
                protocol = "kserve-http"
                model_name = self._v2(method, path, body) or ""
            elif path.startswith("/v1/"):
                protocol = "tfserving-http"
                model_name = self._v1(method, path, body) or ""
            elif path == "/metrics" and method == "GET":
                self._send(200, self.model_server.metrics.render().encode(),
                           "text/plain; version=0.0.4; charset=utf-8")
                return
            else:
                raise HttpError(404, f"no such endpoint: {method} {path}")
            status = 200
        except Exception as exc:  # noqa: BLE001 -- every failure becomes a status
            status, message = _http_status(exc)
            self._send_json(status, {"error": message})
        if model_name:
            self.model_server.metrics.request(protocol, model_name, str(status), time.perf_counter() - start)

    def do_GET(self):  # noqa: N802 -- the stdlib's name
        self._dispatch("GET")

    def do_POST(self):  # noqa: N802
        self._dispatch("POST")

    # -- KServe v2 ---------------------------------------------------------

    def _v2(self, method: str, path: str, body: bytes) -> str | None:
        server = self.model_server
        if method == "GET" and path == "/v2/health/live":
            self._send(200)
            return None
        if method == "GET" and path == "/v2/health/ready":
            self._send(503 if server.draining else 200)
            return None
        if method == "GET" and path == "/v2":
            self._send_json(200, {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": V2_EXTENSIONS})
            return None
        match = V2_MODEL.match(path)
        if not match:
            raise HttpError(404, f"no such endpoint: {method} {path}")
        rest = match["rest"]
        if method == "GET" and rest == "/ready":
            try:
                server.get(match["name"], match["version"])
            except (ModelNotFound, InvalidRequest):
                self._send(400)
                return None
            self._send(503 if server.draining else 200)
            return None
        if method == "GET" and rest is None:
            self._send_json(200, v2_model_metadata(server.get(match["name"], match["version"])))
            return None
        if method == "POST" and rest == "/infer":
            with server.slot():
                self._v2_infer(match["name"], match["version"], body)
            return match["name"]
        raise HttpError(405 if rest in (None, "/ready", "/infer") else 404, f"{method} is not allowed on {path}")

    def _v2_infer(self, name: str, version: str | None, body: bytes) -> None:
        server = self.model_server
        model = server.get(name, version)
        header_length = self.headers.get(HEADER_LENGTH)
        if header_length is not None:
            try:
                n = int(header_length)
            except ValueError:
                raise InvalidRequest(f"{HEADER_LENGTH} must be an integer, not {header_length!r}") from None
            if not 0 <= n <= len(body):
                raise InvalidRequest(f"{HEADER_LENGTH} {n} is outside the {len(body)}-byte body")
            header, binary = body[:n], body[n:]
        else:
            header, binary = body, b""
        try:
            request = json.loads(header or b"{}")
        except ValueError as exc:
            raise InvalidRequest(f"the request is not valid JSON: {exc}") from None
        if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
            raise InvalidRequest('a v2 infer request is a JSON object with an "inputs" list')
        feeds: dict[str, np.ndarray] = {}
        offset = 0
        for tensor in request["inputs"]:
            if not isinstance(tensor, dict) or not {"name", "shape", "datatype"} <= set(tensor):
                raise InvalidRequest('each input needs "name", "shape" and "datatype"')
            what = f"input {tensor['name']!r}"
            try:
                shape = tuple(int(s) for s in tensor["shape"])
            except (TypeError, ValueError):
                raise InvalidRequest(f"{what}: shape must be a list of integers") from None
            params = tensor.get("parameters") or {}
            if "binary_data_size" in params:
                size = int(params["binary_data_size"])
                if offset + size > len(binary):
                    raise InvalidRequest(f"{what}: binary_data_size {size} runs past the binary data")
                feeds[tensor["name"]] = raw_to_numpy(binary[offset:offset + size], tensor["datatype"], shape, what)
                offset += size
            elif "data" in tensor:
                feeds[tensor["name"]] = v2_json_to_numpy(tensor["data"], tensor["datatype"], shape, what)
            else:
                raise InvalidRequest(f'{what}: has neither "data" nor binary_data_size')
            numpy_dtype(tensor["datatype"], what)
        requested = request.get("outputs") or []
        default_binary = bool((request.get("parameters") or {}).get("binary_data_output", False))
        binary_of = {o["name"]: bool((o.get("parameters") or {}).get("binary_data", default_binary))
                     for o in requested if isinstance(o, dict) and "name" in o}
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
            reply["id"] = request["id"]
        text = json.dumps(reply).encode()
        if chunks:
            self._send(200, text + b"".join(chunks), "application/octet-stream",
                       {HEADER_LENGTH: str(len(text))})
        else:
            self._send(200, text)

    # -- TensorFlow Serving REST ---------------------------------------------

    def _v1(self, method: str, path: str, body: bytes) -> str | None:
        server = self.model_server
        match = V1_MODEL.match(path)
        if not match:
            raise HttpError(404, f"no such endpoint: {method} {path}")
        name, version, rest = match["name"], match["version"], match["rest"]
        if method == "GET" and rest is None:
            from google.protobuf import json_format

            status = model_status(server, name, int(version) if version and version.isdigit() else None)
            self._send_json(200, json_format.MessageToDict(status, preserving_proto_field_name=True,
                                                               always_print_fields_with_no_presence=True))
            return None
        if method == "GET" and rest == "/metadata":
            from google.protobuf import json_format

            model = server.get(name, version)
            sigmap = json_format.MessageToDict(signature_def_map(model), preserving_proto_field_name=True,
                                                always_print_fields_with_no_presence=True)
            self._send_json(200, {"model_spec": {"name": model.name, "signature_name": "",
                                                 "version": str(model.version)},
                                  "metadata": {"signature_def": sigmap}})
            return None
        if method == "POST" and rest == ":predict":
            with server.slot():
                self._v1_predict(name, version, body)
            return name
        if method == "POST" and rest in (":classify", ":regress"):
            raise HttpError(501, f"{rest[1:]} is not implemented by this server; use :predict")
        raise HttpError(405, f"{method} is not allowed on {path}")

    def _v1_predict(self, name: str, version: str | None, body: bytes) -> None:
        server = self.model_server
        model = server.get(name, version)
        try:
            request = json.loads(body or b"{}")
        except ValueError as exc:
            raise InvalidRequest(f"the request is not valid JSON: {exc}") from None
        if not isinstance(request, dict):
            raise InvalidRequest('a predict request is a JSON object with "instances" or "inputs"')
        signature = request.get("signature_name") or DEFAULT_SIGNATURE
        if signature != DEFAULT_SIGNATURE:
            raise InvalidRequest(f"model {model.name!r} has only the signature {DEFAULT_SIGNATURE!r}, not {signature!r}")
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
        feeds = {key: self._json_array(model, key, value) for key, value in columns.items()}
        results = server.infer(model, feeds)
        outputs = {alias(k): v for k, v in results.items()}
        if "instances" in request:
            if len(outputs) == 1:
                predictions = _json_rows(next(iter(outputs.values())))
            else:
                rows = {k: _json_rows(v) for k, v in outputs.items()}
                count = len(next(iter(rows.values())))
                predictions = [{k: rows[k][i] for k in rows} for i in range(count)]
            self._send_json(200, {"predictions": predictions})
        else:
            if len(outputs) == 1:
                self._send_json(200, {"outputs": _json_nested(next(iter(outputs.values())))})
            else:
                self._send_json(200, {"outputs": {k: _json_nested(v) for k, v in outputs.items()}})

    @staticmethod
    def _json_array(model, key: str, value) -> np.ndarray:
        spec = model.input_spec(key)

        def unwrap(v):
            if isinstance(v, dict):
                if set(v) != {"b64"}:
                    raise InvalidRequest(f"input {key!r}: an object value must be {{\"b64\": \"...\"}}")
                try:
                    return base64.b64decode(v["b64"], validate=True)
                except (ValueError, TypeError) as exc:
                    raise InvalidRequest(f"input {key!r}: invalid base64: {exc}") from None
            if isinstance(v, list):
                return [unwrap(x) for x in v]
            return v

        value = unwrap(value)
        if _has_bytes(value):
            array = np.empty(_count(value), dtype=object)
            array[:] = list(_flatten(value))
            return array
        try:
            array = np.asarray(value)
            if array.dtype.kind in "biuf" and np.dtype(spec.dtype).kind in "biuf":
                array = array.astype(spec.dtype)
        except (ValueError, TypeError) as exc:
            raise InvalidRequest(f"input {key!r}: not a rectangular array of numbers: {exc}") from None
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


def _count(value) -> int:
    return sum(1 for _ in _flatten(value))


def _json_nested(array: np.ndarray):
    if array.dtype == object:
        return np.asarray(_json_value(array), dtype=object).reshape(array.shape).tolist()
    return array.tolist()


def _json_rows(array: np.ndarray) -> list:
    nested = _json_nested(array)
    return nested if isinstance(nested, list) else [nested]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def build_http_server(server: ModelServer, host: str, port: int) -> ThreadingHTTPServer:
    """A bound (not yet serving) HTTP server for ``server``."""
    handler = type("BoundHandler", (Handler,), {"model_server": server})
    return _Server((host, port), handler)
