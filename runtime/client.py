"""A TensorFlow Serving gRPC client, shaped like Azure's accelerated-models client.

>>> client = PredictionClient("localhost", 8500)                    # doctest: +SKIP
>>> scores = client.score_file("cat.jpg", outputs="scores")          # doctest: +SKIP
>>> top_k(scores, 5, "imagenet")                                    # doctest: +SKIP

Requests leave ``model_spec`` empty unless a model name is given, so the server
picks its default model and the "serving_default" signature, as with
azureml-accel-models.  Only UNAVAILABLE (server starting or restarting) is
retried; every other error is raised at once as :class:`grpc.RpcError`.
"""
from __future__ import annotations

import time
from pathlib import Path

import grpc
import numpy as np

from runtime import proto
from runtime.tensors import make_tensor_proto, tensor_proto_to_numpy, tf_dtype_enum


def _pem(value) -> bytes | None:
    """PEM bytes given as bytes or as a file path."""
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


def _is_loopback(address: str) -> bool:
    import ipaddress

    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


class PredictionClient:
    """Calls ``tensorflow.serving.PredictionService/Predict`` on ``address:port``.

    Parameters
    ----------
    address, port:
        The server (``npu serve`` listens for gRPC on 8500).
    use_ssl:
        Use TLS: the server's certificate is checked against ``root_certificates`` (PEM bytes or a
        file path), else the system's roots.
    service_name:
        Sent as ``x-ms-aml-grpc-service-route`` metadata, for gateways that route on it; `npu serve`
        takes it as the model's name when the request names none.
    model_name, version:
        Ask for this model (and version) instead of the server's default.
    access_token:
        Sent as ``authorization: Bearer ...`` when given; only over TLS, or in clear text to a
        loopback address (a token sent elsewhere in clear text is a token given away).
    client_certificate, client_key:
        PEM bytes or file paths, for servers that require client certificates.
    """

    def __init__(self, address: str, port: int = 8500, use_ssl: bool = False, service_name: str | None = None,
                 *, model_name: str = "", version: int | None = None, access_token: str = "",
                 root_certificates=None, client_certificate=None, client_key=None,
                 max_message_mb: float = 64, retries: int = 3):
        if not address:
            raise ValueError("address must be a host name or IP address")
        target = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        options = [("grpc.max_receive_message_length", int(max_message_mb * 1024 * 1024)),
                   ("grpc.max_send_message_length", int(max_message_mb * 1024 * 1024))]
        if use_ssl:
            credentials = grpc.ssl_channel_credentials(_pem(root_certificates), _pem(client_key),
                                                       _pem(client_certificate))
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            if access_token and not _is_loopback(address):
                raise ValueError(f"access_token would go to {address} in clear text; use use_ssl=True")
            self._channel = grpc.insecure_channel(target, options=options)
        self._stub = proto.Stub(self._channel, proto.PREDICTION_SERVICE)
        self.metadata: list[tuple[str, str]] = []
        if access_token:
            self.metadata.append(("authorization", f"Bearer {access_token}"))
        if service_name:
            self.metadata.append(("x-ms-aml-grpc-service-route", f"/api/v1/service/{service_name}"))
        self.model_name = model_name
        self.version = version
        self.retries = retries

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "PredictionClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the seed client's API -------------------------------------------------

    def score_file(self, path: str | Path, input_name: str = "images", outputs=None, timeout: float = 10.0):
        """Score one image file, sent as an encoded-image string tensor of shape [1].

        Returns the output with its batch axis removed: one array when
        ``outputs`` is a string or the model has one output, else a list.
        """
        data = Path(path).read_bytes()
        result = self.score_tensors({input_name: (data, [1], "DT_STRING")}, outputs, timeout)
        if isinstance(result, list):
            return [r[0] for r in result]
        return result[0]

    def score_numpy_arrays(self, input_map: dict[str, np.ndarray], outputs=None, timeout: float = 30.0):
        """Score numpy arrays ({input alias: array}); sent in the typed ``*_val`` fields."""
        request = self._request()
        for name, value in input_map.items():
            request.inputs[name].CopyFrom(make_tensor_proto(value))
        return self._predict(request, timeout, outputs)

    def score_tensors(self, input_map: dict, outputs=None, timeout: float = 10.0):
        """Score raw tensors: ``{name: (data bytes, shape, dtype)}``.

        ``dtype`` is a TF DataType name (``"DT_FLOAT"``) or number; string data
        goes in ``string_val``, anything else in ``tensor_content``.
        """
        request = self._request()
        for name, (data, shape, dtype) in input_map.items():
            tensor = request.inputs[name]
            enum = proto.pool().FindEnumTypeByName("tensorflow.DataType")
            tensor.dtype = enum.values_by_name[dtype].number if isinstance(dtype, str) else int(dtype)
            if tensor.dtype == tf_dtype_enum("object"):
                tensor.string_val.extend(data if isinstance(data, (list, tuple)) else [data])
            else:
                tensor.tensor_content = bytes(data)
            for size in shape:
                tensor.tensor_shape.dim.add().size = int(size)
        return self._predict(request, timeout, outputs)

    # -- helpers ---------------------------------------------------------------

    def _request(self):
        request = proto.message("tensorflow.serving.PredictRequest")()
        if self.model_name:
            request.model_spec.name = self.model_name
            if self.version is not None:
                request.model_spec.version.value = int(self.version)
        return request

    def predict(self, request, timeout: float = 10.0):
        """Send a ``PredictRequest`` as is; returns the ``PredictResponse``."""
        delay = 0.5
        for attempt in range(self.retries + 1):
            try:
                return self._stub.Predict(request, timeout=timeout, metadata=self.metadata)
            except grpc.RpcError as exc:
                if exc.code() is not grpc.StatusCode.UNAVAILABLE or attempt == self.retries:
                    raise
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _predict(self, request, timeout: float, outputs):
        if isinstance(outputs, str):
            request.output_filter.append(outputs)
        elif outputs:
            request.output_filter.extend(outputs)
        response = self.predict(request, timeout)
        arrays = {name: tensor_proto_to_numpy(t, f"output {name!r}") for name, t in response.outputs.items()}
        if isinstance(outputs, str):
            return arrays[outputs]
        if outputs:
            return [arrays[name] for name in outputs]
        if len(arrays) == 1:
            return next(iter(arrays.values()))
        return [arrays[name] for name in sorted(arrays)]

    def metadata_of(self, timeout: float = 10.0) -> dict:
        """The served model's predict signature: {"name", "version", "inputs": {alias: (dtype, shape)}, "outputs"}."""
        request = proto.message("tensorflow.serving.GetModelMetadataRequest")(metadata_field=["signature_def"])
        if self.model_name:
            request.model_spec.name = self.model_name
            if self.version is not None:
                request.model_spec.version.value = int(self.version)
        response = self._stub.GetModelMetadata(request, timeout=timeout, metadata=self.metadata)
        sigmap = proto.message("tensorflow.serving.SignatureDefMap")()
        response.metadata["signature_def"].Unpack(sigmap)
        signature = sigmap.signature_def["serving_default"]
        enum = proto.pool().FindEnumTypeByName("tensorflow.DataType")

        def info(m):
            return {k: (enum.values_by_number[v.dtype].name, [d.size for d in v.tensor_shape.dim]) for k, v in m.items()}
        return {"name": response.model_spec.name, "version": response.model_spec.version.value,
                "inputs": info(signature.inputs), "outputs": info(signature.outputs)}
