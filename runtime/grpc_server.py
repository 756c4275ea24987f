"""gRPC front ends: TensorFlow Serving (PredictionService, ModelService) and KServe v2.

Both run on one ``grpc.server`` together with the standard health service
(grpc.health.v1; the empty service name and each service's full name report
SERVING until the server drains).  With TLS files the port is a TLS port (client
certificates required when a client CA is given); with a token every method but
the health checks (grpc.health.v1, KServe ServerLive/ServerReady) needs
``authorization: Bearer <token>`` metadata, else UNAUTHENTICATED.
"""
from __future__ import annotations

import functools
import logging
import time
from concurrent import futures

import grpc
import numpy as np

from runtime import proto
from runtime.errors import InvalidRequest, ModelNotFound
from runtime.service import (DEFAULT_SIGNATURE, SERVER_NAME, SERVER_VERSION, SERVICE_ROUTE, ModelServer,
                             Overloaded, ServedModel, TlsFiles, internal_error, rejected, service_from_route,
                             tensor_name, token_matches)
from runtime.session import alias
from runtime.tensors import (contents_to_numpy, make_tensor_proto, numpy_dtype, numpy_to_raw, raw_to_numpy,
                             tensor_proto_shape, tensor_proto_to_numpy, tf_dtype_enum, v2_datatype)

log = logging.getLogger("npu.serve")

PREDICT_METHOD = "tensorflow/serving/predict"


def _status(exc: Exception) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, InvalidRequest):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, ModelNotFound):
        return grpc.StatusCode.NOT_FOUND, str(exc)
    if isinstance(exc, Overloaded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
    return grpc.StatusCode.INTERNAL, internal_error(exc)


def _service(context) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == SERVICE_ROUTE:
            return service_from_route(value)
    return ""


def rpc(protocol: str, infer: bool = False):
    """Map runtime errors to status codes and record the request in the metrics."""
    def decorate(method):
        @functools.wraps(method)
        def wrapper(self, request, context):
            start = time.perf_counter()
            model_name = getattr(request, "model_name", None) or getattr(request, "name", "")
            if hasattr(request, "model_spec"):
                model_name = request.model_spec.name
            try:
                if infer:
                    with self.server.slot():
                        reply = method(self, request, context)
                else:
                    reply = method(self, request, context)
                code = grpc.StatusCode.OK
            except Exception as exc:  # noqa: BLE001 -- every failure becomes a status
                code, message = _status(exc)
                if code is not grpc.StatusCode.INTERNAL:
                    rejected(protocol, method.__name__, code.name, message)
            if infer:
                known = model_name if any(m.name == model_name for m in self.server.models) else "(other)"
                self.server.metrics.request(protocol, known if model_name else self.server.default.name, code.name,
                                            time.perf_counter() - start)
            if code is not grpc.StatusCode.OK:
                context.abort(code, message)
            return reply
        return wrapper
    return decorate


# -- TensorFlow Serving -----------------------------------------------------------

def model_spec(model: ServedModel, signature: str = DEFAULT_SIGNATURE):
    spec = proto.message("tensorflow.serving.ModelSpec")(name=model.name, signature_name=signature)
    spec.version.value = model.version
    return spec


def _tensor_info(spec):
    info = proto.message("tensorflow.TensorInfo")(name=tensor_name(spec), dtype=tf_dtype_enum(spec.dtype))
    for size in spec.shape:
        info.tensor_shape.dim.add().size = int(size)
    return info


def signature_def_map(model: ServedModel):
    """The ``signature_def`` metadata of ``model``: one predict signature, keyed by alias."""
    sigmap = proto.message("tensorflow.serving.SignatureDefMap")()
    signature = sigmap.signature_def[DEFAULT_SIGNATURE]
    signature.method_name = PREDICT_METHOD
    for spec in model.inputs:
        signature.inputs[alias(spec.name)].CopyFrom(_tensor_info(spec))
    for spec in model.outputs:
        signature.outputs[alias(spec.name)].CopyFrom(_tensor_info(spec))
    return sigmap


def model_status(server: ModelServer, name: str, version: int | None):
    response = proto.message("tensorflow.serving.GetModelStatusResponse")()
    latest = server.get(name)  # raises ModelNotFound naming what is served
    models = [server.get(name, version)] if version else [m for m in server.models if m.name == latest.name]
    for model in sorted(models, key=lambda m: m.version):
        status = response.model_version_status.add(version=model.version)
        status.state = status.State.Value("AVAILABLE") if not server.draining else status.State.Value("UNLOADING")
        status.status.error_message = ""
    return response


def _spec_version(spec) -> int | None:
    if spec.WhichOneof("version_choice") == "version_label":
        raise InvalidRequest(f"version labels are not supported (got {spec.version_label!r}); "
                             "give a version number or none for the latest")
    return spec.version.value if spec.HasField("version") else None


class PredictionService:
    """tensorflow.serving.PredictionService: Predict and GetModelMetadata."""

    def __init__(self, server: ModelServer):
        self.server = server

    @rpc("tfserving-grpc", infer=True)
    def Predict(self, request, context):
        model = self.server.route(request.model_spec.name, _spec_version(request.model_spec), _service(context))
        signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
        if signature != DEFAULT_SIGNATURE:
            raise InvalidRequest(f"model {model.name!r} has only the signature {DEFAULT_SIGNATURE!r}, "
                                 f"not {signature!r}")
        if not request.inputs:
            raise InvalidRequest(f"the request has no inputs; model {model.name!r} takes "
                                 + ", ".join(alias(s.name) for s in model.inputs))
        limit = self.server.options.max_request_bytes
        for key, tensor in request.inputs.items():
            self.server.admit(model, key, *tensor_proto_shape(tensor, f"input {key!r}"))
        feeds = {key: tensor_proto_to_numpy(tensor, f"input {key!r}", limit) for key, tensor in request.inputs.items()}
        results = self.server.infer(model, feeds, list(request.output_filter) or None)
        response = proto.message("tensorflow.serving.PredictResponse")()
        response.model_spec.CopyFrom(model_spec(model, signature))
        for name, value in results.items():
            response.outputs[alias(name)].CopyFrom(make_tensor_proto(value))
        return response

    @rpc("tfserving-grpc")
    def GetModelMetadata(self, request, context):
        model = self.server.route(request.model_spec.name, _spec_version(request.model_spec), _service(context))
        fields = list(request.metadata_field)
        unknown = [f for f in fields if f != "signature_def"]
        if not fields or unknown:
            raise InvalidRequest(f"metadata_field must be ['signature_def'], got {fields}")
        response = proto.message("tensorflow.serving.GetModelMetadataResponse")()
        response.model_spec.CopyFrom(model_spec(model, ""))
        response.metadata["signature_def"].Pack(signature_def_map(model))
        return response


class ModelService:
    """tensorflow.serving.ModelService: GetModelStatus (HandleReloadConfigRequest is UNIMPLEMENTED)."""

    def __init__(self, server: ModelServer):
        self.server = server

    @rpc("tfserving-grpc")
    def GetModelStatus(self, request, context):
        name = self.server.route(request.model_spec.name, None, _service(context)).name
        return model_status(self.server, name, _spec_version(request.model_spec))


# -- KServe v2 ---------------------------------------------------------------

def _tensor_metadata(cls, spec):
    return cls(name=spec.name, datatype=v2_datatype(spec.dtype), shape=list(spec.shape))


def v2_model_metadata(model: ServedModel, server: ModelServer) -> dict:
    """The v2 model metadata, as a dict (the REST reply; gRPC builds its message from it)."""
    versions = sorted(m.version for m in server.models if m.name == model.name)
    return {"name": model.name, "versions": [str(v) for v in versions], "platform": f"npu_{model.backend}",
            "inputs": [{"name": s.name, "datatype": v2_datatype(s.dtype), "shape": list(s.shape)}
                       for s in model.inputs],
            "outputs": [{"name": s.name, "datatype": v2_datatype(s.dtype), "shape": list(s.shape)}
                        for s in model.outputs]}


V2_EXTENSIONS = ["binary_tensor_data", "model_repository"]


class InferenceService:
    """inference.GRPCInferenceService (KServe Open Inference Protocol v2)."""

    def __init__(self, server: ModelServer):
        self.server = server

    def _message(self, name: str):
        return proto.message(f"inference.{name}")

    def ServerLive(self, request, context):
        return self._message("ServerLiveResponse")(live=True)

    def ServerReady(self, request, context):
        return self._message("ServerReadyResponse")(ready=not self.server.draining)

    def ModelReady(self, request, context):
        try:
            self.server.route(request.name, request.version, _service(context))
        except (ModelNotFound, InvalidRequest):
            return self._message("ModelReadyResponse")(ready=False)
        return self._message("ModelReadyResponse")(ready=not self.server.draining)

    def ServerMetadata(self, request, context):
        return self._message("ServerMetadataResponse")(name=SERVER_NAME, version=SERVER_VERSION,
                                                       extensions=V2_EXTENSIONS)

    @rpc("kserve-grpc")
    def ModelMetadata(self, request, context):
        meta = v2_model_metadata(self.server.route(request.name, request.version, _service(context)),
                                 self.server)
        cls = self._message("ModelMetadataResponse")
        return cls(name=meta["name"], versions=meta["versions"], platform=meta["platform"],
                   inputs=[cls.TensorMetadata(**t) for t in meta["inputs"]],
                   outputs=[cls.TensorMetadata(**t) for t in meta["outputs"]])

    @rpc("kserve-grpc")
    def RepositoryIndex(self, request, context):
        cls = self._message("RepositoryIndexResponse")
        return cls(models=[cls.ModelIndex(**entry) for entry in self.server.repository_index()])

    @rpc("kserve-grpc", infer=True)
    def ModelInfer(self, request, context):
        model = self.server.route(request.model_name, request.model_version, _service(context))
        raw = list(request.raw_input_contents)
        if raw and len(raw) != len(request.inputs):
            raise InvalidRequest(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs")
        feeds: dict[str, np.ndarray] = {}
        for tensor in request.inputs:
            what = f"input {tensor.name[:80]!r}"
            self.server.admit(model, tensor.name, tuple(tensor.shape), numpy_dtype(tensor.datatype, what).name)
        for i, tensor in enumerate(request.inputs):
            what = f"input {tensor.name!r}"
            shape = tuple(int(s) for s in tensor.shape)
            if raw:
                feeds[tensor.name] = raw_to_numpy(raw[i], tensor.datatype, shape, what)
            else:
                feeds[tensor.name] = contents_to_numpy(tensor.contents, tensor.datatype, shape, what)
        results = self.server.infer(model, feeds, [o.name for o in request.outputs] or None)
        response = self._message("ModelInferResponse")(model_name=model.name, model_version=str(model.version),
                                                       id=request.id)
        for name, value in results.items():
            response.outputs.add(name=name, datatype=v2_datatype(value.dtype.name if value.dtype != object
                                                                 else "object"), shape=list(value.shape))
            response.raw_output_contents.append(numpy_to_raw(value))
        return response


# -- the server --------------------------------------------------------------

OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch",
                          f"/{proto.INFERENCE_SERVICE}/ServerLive", f"/{proto.INFERENCE_SERVICE}/ServerReady"})


class TokenAuth(grpc.ServerInterceptor):
    """Every method but the health checks needs ``authorization: Bearer <token>`` metadata."""

    def __init__(self, token: str):
        self.token = token

        def deny(request, context):
            rejected("grpc", "call", "UNAUTHENTICATED", "missing or wrong bearer token")
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "this server needs an 'authorization: Bearer <token>' header")
        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation, details):
        if details.method in OPEN_METHODS:
            return continuation(details)
        header = next((v for k, v in details.invocation_metadata or () if k == "authorization"), None)
        return continuation(details) if token_matches(self.token, header) else self._deny


def build_grpc_server(server: ModelServer, host: str, port: int, threads: int, tls: TlsFiles | None = None):
    """A ready (not yet started) grpc.Server with every service; returns (grpc server, port, health)."""
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    limit = server.options.max_message_bytes
    token = server.options.auth_token
    grpc_server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="npu-grpc"),
        interceptors=[TokenAuth(token)] if token else None,
        options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit),
                 ("grpc.so_reuseport", 0), ("grpc.max_metadata_size", 16 * 1024)],
        maximum_concurrent_rpcs=server.options.max_concurrent)
    note = " (this NPU server implements Predict, GetModelMetadata and GetModelStatus)"
    grpc_server.add_generic_rpc_handlers((
        proto.generic_handler(proto.PREDICTION_SERVICE, PredictionService(server), note),
        proto.generic_handler(proto.MODEL_SERVICE, ModelService(server), note),
        proto.generic_handler(proto.INFERENCE_SERVICE, InferenceService(server)),
    ))
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, grpc_server)
    for service in ("", proto.PREDICTION_SERVICE, proto.MODEL_SERVICE, proto.INFERENCE_SERVICE):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if tls is not None:
        cert, key, client_ca = tls.read()
        credentials = grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca,
                                                  require_client_auth=client_ca is not None)
        bound = grpc_server.add_secure_port(address, credentials)
    else:
        bound = grpc_server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {host}:{port} (in use, or the TLS files are not a key and its "
                      "certificate?)")
    return grpc_server, bound, health_servicer
