"""gRPC front ends: TensorFlow Serving (PredictionService, ModelService) and KServe v2.

Both run on one ``grpc.server`` together with the standard health service
(grpc.health.v1; the empty service name and each service's full name report
SERVING until the server drains).
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
from runtime.service import (DEFAULT_SIGNATURE, SERVER_NAME, SERVER_VERSION, ModelServer, Overloaded,
                             ServedModel, tensor_name)
from runtime.session import alias
from runtime.tensors import (contents_to_numpy, make_tensor_proto, numpy_to_raw, raw_to_numpy,
                             tensor_proto_to_numpy, tf_dtype_enum, v2_datatype)

log = logging.getLogger("npu.serve")

PREDICT_METHOD = "tensorflow/serving/predict"


def _status(exc: Exception) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, InvalidRequest):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, ModelNotFound):
        return grpc.StatusCode.NOT_FOUND, str(exc)
    if isinstance(exc, Overloaded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
    log.exception("internal error while serving a request")
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


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
            if infer:
                self.server.metrics.request(protocol, model_name or self.server.default.name, code.name,
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
    models = [server.get(name, version)] if version else [m for m in server.models if m.name == (name or server.default.name)]
    if not models:
        server.get(name)  # raises ModelNotFound naming what is served
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
        model = self.server.get(request.model_spec.name, _spec_version(request.model_spec))
        signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
        if signature != DEFAULT_SIGNATURE:
            raise InvalidRequest(f"model {model.name!r} has only the signature {DEFAULT_SIGNATURE!r}, "
                                 f"not {signature!r}")
        if not request.inputs:
            raise InvalidRequest(f"the request has no inputs; model {model.name!r} takes "
                                 + ", ".join(alias(s.name) for s in model.inputs))
        feeds = {key: tensor_proto_to_numpy(tensor, f"input {key!r}") for key, tensor in request.inputs.items()}
        results = self.server.infer(model, feeds, list(request.output_filter) or None)
        response = proto.message("tensorflow.serving.PredictResponse")()
        response.model_spec.CopyFrom(model_spec(model, signature))
        for name, value in results.items():
            response.outputs[alias(name)].CopyFrom(make_tensor_proto(value))
        return response

    @rpc("tfserving-grpc")
    def GetModelMetadata(self, request, context):
        model = self.server.get(request.model_spec.name, _spec_version(request.model_spec))
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
        return model_status(self.server, request.model_spec.name, _spec_version(request.model_spec))


# -- KServe v2 ---------------------------------------------------------------

def _tensor_metadata(cls, spec):
    return cls(name=spec.name, datatype=v2_datatype(spec.dtype), shape=list(spec.shape))


def v2_model_metadata(model: ServedModel) -> dict:
    """The v2 model metadata, as a dict (the REST reply; gRPC builds its message from it)."""
    return {"name": model.name, "versions": [str(model.version)], "platform": f"npu_{model.backend}",
            "inputs": [{"name": s.name, "datatype": v2_datatype(s.dtype), "shape": list(s.shape)}
                       for s in model.inputs],
            "outputs": [{"name": s.name, "datatype": v2_datatype(s.dtype), "shape": list(s.shape)}
                        for s in model.outputs]}


V2_EXTENSIONS = ["binary_tensor_data"]


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
            self.server.get(request.name, request.version)
        except (ModelNotFound, InvalidRequest):
            return self._message("ModelReadyResponse")(ready=False)
        return self._message("ModelReadyResponse")(ready=not self.server.draining)

    def ServerMetadata(self, request, context):
        return self._message("ServerMetadataResponse")(name=SERVER_NAME, version=SERVER_VERSION,
                                                       extensions=V2_EXTENSIONS)

    @rpc("kserve-grpc")
    def ModelMetadata(self, request, context):
        meta = v2_model_metadata(self.server.get(request.name, request.version))
        cls = self._message("ModelMetadataResponse")
        return cls(name=meta["name"], versions=meta["versions"], platform=meta["platform"],
                   inputs=[cls.TensorMetadata(**t) for t in meta["inputs"]],
                   outputs=[cls.TensorMetadata(**t) for t in meta["outputs"]])

    @rpc("kserve-grpc", infer=True)
    def ModelInfer(self, request, context):
        model = self.server.get(request.model_name, request.model_version)
        raw = list(request.raw_input_contents)
        if raw and len(raw) != len(request.inputs):
            raise InvalidRequest(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs")
        feeds: dict[str, np.ndarray] = {}
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

def build_grpc_server(server: ModelServer, host: str, port: int, threads: int):
    """A started-ready (not yet started) grpc.Server with every service; returns (grpc server, port, health)."""
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    limit = server.options.max_message_bytes
    grpc_server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="npu-grpc"),
        options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit),
                 ("grpc.so_reuseport", 0)],
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
    bound = grpc_server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {host}:{port} (in use?)")
    return grpc_server, bound, health_servicer
