"""The server, through real clients over loopback: tritonclient gRPC and HTTP
(JSON and binary), TF Serving stubs generated from runtime/protos, REST, health,
metrics, bad requests (the server keeps serving) and a bounded load test."""
from __future__ import annotations

import base64
import json
import sys
import threading
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

from conftest import reference_scores

RNG = np.random.default_rng(7)


def image_batch(n=1):
    return RNG.random((n, 3, 16, 16), dtype=np.float32)


# -- stubs generated from our protos (as a TF Serving user would) -------------------

@pytest.fixture(scope="module")
def tf_apis(tmp_path_factory):
    from runtime.proto import generate_python_stubs

    out = generate_python_stubs(tmp_path_factory.mktemp("stubs"))
    sys.path.insert(0, str(out))
    try:
        from tensorflow.core.framework import tensor_pb2, types_pb2
        from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                             predict_pb2, prediction_service_pb2_grpc)
        yield type("Apis", (), dict(tensor_pb2=tensor_pb2, types_pb2=types_pb2, predict_pb2=predict_pb2,
                                    get_model_metadata_pb2=get_model_metadata_pb2,
                                    get_model_status_pb2=get_model_status_pb2,
                                    prediction_service_pb2_grpc=prediction_service_pb2_grpc,
                                    model_service_pb2_grpc=model_service_pb2_grpc))
    finally:
        sys.path.remove(str(out))


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as ch:
        yield ch


@pytest.fixture(scope="module")
def triton_grpc(server):
    return tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")


@pytest.fixture(scope="module")
def triton_http(server):
    return thttp.InferenceServerClient(f"127.0.0.1:{server.http_port}")


def http(server, method, path, body=None, headers=None):
    request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{path}", data=body, method=method,
                                     headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def assert_still_serving(server):
    x = image_batch()
    client = tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    inp = tgrpc.InferInput("images", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    np.testing.assert_allclose(client.infer("tiny", [inp]).as_numpy("scores"), reference_scores(x), atol=1e-4)


# -- KServe v2 through tritonclient ---------------------------------------------------

def test_triton_grpc(triton_grpc):
    assert triton_grpc.is_server_live() and triton_grpc.is_server_ready()
    assert triton_grpc.is_model_ready("tiny") and not triton_grpc.is_model_ready("nope")
    meta = triton_grpc.get_model_metadata("tiny", as_json=True)
    assert meta["inputs"] == [{"name": "images", "datatype": "FP32", "shape": ["1", "3", "16", "16"]}]
    x = image_batch()
    inp = tgrpc.InferInput("images", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = triton_grpc.infer("tiny", [inp], outputs=[tgrpc.InferRequestedOutput("scores")], request_id="r1")
    np.testing.assert_allclose(result.as_numpy("scores"), reference_scores(x), atol=1e-4)
    assert result.as_numpy("probs") is None
    assert result.get_response().id == "r1"
    both = triton_grpc.infer("tiny", [inp], model_version="1")
    assert both.as_numpy("probs").sum() == pytest.approx(1.0, abs=1e-4)


def test_triton_grpc_encoded_image(triton_grpc, sample_jpeg):
    inp = tgrpc.InferInput("images", [1], "BYTES")
    inp.set_data_from_numpy(np.array([sample_jpeg.read_bytes()], dtype=object))
    probs = triton_grpc.infer("tiny", [inp]).as_numpy("probs")
    assert probs.shape == (1, 1000) and probs.sum() == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("binary", [False, True])
def test_triton_http(triton_http, binary):
    assert triton_http.is_server_live() and triton_http.is_server_ready() and triton_http.is_model_ready("tiny")
    assert triton_http.get_server_metadata()["name"] == "npu-runtime"
    assert triton_http.get_model_metadata("tiny")["outputs"][0]["shape"] == [1, 1000]
    x = image_batch()
    inp = thttp.InferInput("images", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    outputs = [thttp.InferRequestedOutput("scores", binary_data=binary)]
    result = triton_http.infer("tiny", [inp], outputs=outputs)
    np.testing.assert_allclose(result.as_numpy("scores"), reference_scores(x), atol=1e-4)
    everything = triton_http.infer("tiny", [inp])  # no outputs named: all of them, binary
    assert set(o["name"] for o in everything.get_response()["outputs"]) == {"scores", "probs"}


def test_v2_rest_json_by_hand(server):
    x = image_batch()
    body = {"id": "7", "inputs": [{"name": "images", "shape": [1, 3, 16, 16], "datatype": "FP32",
                                   "data": x.reshape(-1).tolist()}], "outputs": [{"name": "probs"}]}
    status, raw, _ = http(server, "POST", "/v2/models/tiny/versions/1/infer", json.dumps(body).encode())
    reply = json.loads(raw)
    assert status == 200 and reply["id"] == "7" and reply["model_version"] == "1"
    assert reply["outputs"][0]["name"] == "probs" and len(reply["outputs"][0]["data"]) == 1000
    assert http(server, "GET", "/v2/health/live")[0] == 200
    assert http(server, "GET", "/v2/models/tiny/ready")[0] == 200


# -- TensorFlow Serving gRPC through generated stubs -------------------------------------

def tf_tensor(apis, array):
    tensor = apis.tensor_pb2.TensorProto(dtype=apis.types_pb2.DT_FLOAT)
    tensor.tensor_shape.dim.extend(tensor.tensor_shape.Dim(size=s) for s in array.shape)
    tensor.tensor_content = array.astype("<f4").tobytes()
    return tensor


def test_tf_serving_predict(channel, tf_apis):
    stub = tf_apis.prediction_service_pb2_grpc.PredictionServiceStub(channel)
    x = image_batch()
    request = tf_apis.predict_pb2.PredictRequest()  # empty model_spec: the default model
    request.inputs["images"].CopyFrom(tf_tensor(tf_apis, x))
    response = stub.Predict(request, timeout=10)
    assert response.model_spec.name == "tiny" and response.model_spec.signature_name == "serving_default"
    assert response.model_spec.version.value == 1
    scores = response.outputs["scores"]
    assert scores.dtype == tf_apis.types_pb2.DT_FLOAT and len(scores.float_val) == 1000  # typed reply
    np.testing.assert_allclose(np.array(scores.float_val).reshape(1, 1000), reference_scores(x), atol=1e-4)

    # tensor name instead of alias, typed float_val input, output filter, explicit model spec
    request = tf_apis.predict_pb2.PredictRequest()
    request.model_spec.name = "tiny"
    request.model_spec.signature_name = "serving_default"
    request.model_spec.version.value = 1
    tensor = request.inputs["images:0"]
    tensor.dtype = tf_apis.types_pb2.DT_FLOAT
    tensor.tensor_shape.dim.extend(tensor.tensor_shape.Dim(size=s) for s in x.shape)
    tensor.float_val.extend(x.reshape(-1).tolist())
    request.output_filter.append("probs")
    response = stub.Predict(request, timeout=10)
    assert list(response.outputs) == ["probs"]


def test_tf_serving_image_string_tensor(channel, tf_apis, sample_jpeg):
    stub = tf_apis.prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = tf_apis.predict_pb2.PredictRequest()
    tensor = request.inputs["images"]
    tensor.dtype = tf_apis.types_pb2.DT_STRING
    tensor.tensor_shape.dim.add().size = 1
    tensor.string_val.append(sample_jpeg.read_bytes())
    response = stub.Predict(request, timeout=10)
    assert len(response.outputs["probs"].float_val) == 1000


def test_tf_serving_metadata_and_status(channel, tf_apis):
    stub = tf_apis.prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = tf_apis.get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "tiny"
    response = stub.GetModelMetadata(request, timeout=10)
    sigmap = tf_apis.get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(sigmap)
    signature = sigmap.signature_def["serving_default"]
    assert signature.method_name == "tensorflow/serving/predict"
    assert signature.inputs["images"].name == "images:0"
    assert [d.size for d in signature.inputs["images"].tensor_shape.dim] == [1, 3, 16, 16]
    assert set(signature.outputs) == {"scores", "probs"}

    models = tf_apis.model_service_pb2_grpc.ModelServiceStub(channel)
    status_request = tf_apis.get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "tiny"
    status = models.GetModelStatus(status_request, timeout=10)
    assert [(s.version, s.state) for s in status.model_version_status] == [
        (1, tf_apis.get_model_status_pb2.ModelVersionStatus.AVAILABLE)]


def test_tf_serving_unimplemented_methods(channel, tf_apis):
    prediction = tf_apis.prediction_service_pb2_grpc.PredictionServiceStub(channel)
    models = tf_apis.model_service_pb2_grpc.ModelServiceStub(channel)
    from tensorflow_serving.apis import (classification_pb2, inference_pb2, model_management_pb2,
                                         regression_pb2)
    for call, request in [(prediction.Classify, classification_pb2.ClassificationRequest()),
                          (prediction.Regress, regression_pb2.RegressionRequest()),
                          (prediction.MultiInference, inference_pb2.MultiInferenceRequest()),
                          (models.HandleReloadConfigRequest, model_management_pb2.ReloadConfigRequest())]:
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_grpc_health(channel):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "tensorflow.serving.PredictionService", "inference.GRPCInferenceService"):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


# -- TensorFlow Serving REST ----------------------------------------------------------

def test_tf_rest_predict_rows_and_columns(server, sample_jpeg):
    x = image_batch(2)
    status, raw, _ = http(server, "POST", "/v1/models/tiny:predict",
                          json.dumps({"instances": x.tolist()}).encode())
    assert status == 200, raw
    rows = json.loads(raw)["predictions"]
    assert len(rows) == 2 and set(rows[0]) == {"scores", "probs"}
    np.testing.assert_allclose(np.array([r["scores"] for r in rows]), reference_scores(x), atol=1e-4)

    status, raw, _ = http(server, "POST", "/v1/models/tiny/versions/1:predict",
                          json.dumps({"inputs": {"images": x[:1].tolist()}}).encode())
    assert status == 200 and np.array(json.loads(raw)["outputs"]["probs"]).shape == (1, 1000)

    b64 = base64.b64encode(sample_jpeg.read_bytes()).decode()
    status, raw, _ = http(server, "POST", "/v1/models/tiny:predict",
                          json.dumps({"instances": [{"b64": b64}]}).encode())
    assert status == 200 and len(json.loads(raw)["predictions"][0]["probs"]) == 1000


def test_tf_rest_status_and_metadata(server):
    status, raw, _ = http(server, "GET", "/v1/models/tiny")
    assert status == 200
    assert json.loads(raw)["model_version_status"] == [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]
    status, raw, _ = http(server, "GET", "/v1/models/tiny/metadata")
    meta = json.loads(raw)
    assert status == 200 and meta["model_spec"]["version"] == "1"
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["images"]["dtype"] == "DT_FLOAT"


# -- bad requests: each answered with a clear error, and the server keeps serving ---------

def test_bad_requests_triton_grpc(server, triton_grpc):
    def infer(name, shape, datatype, data, model="tiny"):
        inp = tgrpc.InferInput(name, shape, datatype)
        inp.set_data_from_numpy(data)
        with pytest.raises(InferenceServerException) as info:
            triton_grpc.infer(model, [inp])
        return info.value

    err = infer("images", [1, 3, 8, 8], "FP32", np.zeros((1, 3, 8, 8), np.float32))
    assert err.status() == "StatusCode.INVALID_ARGUMENT" and "must have shape [1, 3, 16, 16]" in err.message()
    err = infer("images", [1, 3, 16, 16], "INT32", np.zeros((1, 3, 16, 16), np.int32))
    assert "must be float32" in err.message()
    err = infer("pixels", [1, 3, 16, 16], "FP32", np.zeros((1, 3, 16, 16), np.float32))
    assert "no input 'pixels'; its inputs are images" in err.message()
    err = infer("images", [1], "BYTES", np.array([b"not an image"], dtype=object))
    assert err.status() == "StatusCode.INVALID_ARGUMENT" and "cannot decode the image" in err.message()
    err = infer("images", [1, 3, 16, 16], "FP32", np.zeros((1, 3, 16, 16), np.float32), model="nope")
    assert err.status() == "StatusCode.NOT_FOUND" and "served: tiny" in err.message()
    inp = tgrpc.InferInput("images", [1, 3, 16, 16], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 3, 16, 16), np.float32))
    with pytest.raises(InferenceServerException, match="no output 'logits'"):
        triton_grpc.infer("tiny", [inp], outputs=[tgrpc.InferRequestedOutput("logits")])
    assert_still_serving(server)


def test_bad_requests_tf_grpc(server, channel, tf_apis):
    stub = tf_apis.prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def predict(request):
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(request, timeout=10)
        return info.value

    request = tf_apis.predict_pb2.PredictRequest()
    request.inputs["images"].CopyFrom(tf_tensor(tf_apis, np.zeros((1, 3, 15, 16), np.float32)))
    err = predict(request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "[1, 3, 16, 16]" in err.details()

    request = tf_apis.predict_pb2.PredictRequest()
    tensor = request.inputs["images"]
    tensor.CopyFrom(tf_tensor(tf_apis, np.zeros((1, 3, 16, 16), np.float32)))
    tensor.tensor_content = tensor.tensor_content[:-4]
    assert "holds 767 values" in predict(request).details()

    request = tf_apis.predict_pb2.PredictRequest()
    request.model_spec.name = "missing"
    request.inputs["images"].CopyFrom(tf_tensor(tf_apis, np.zeros((1, 3, 16, 16), np.float32)))
    assert predict(request).code() == grpc.StatusCode.NOT_FOUND

    request = tf_apis.predict_pb2.PredictRequest()
    request.model_spec.signature_name = "classify"
    request.inputs["images"].CopyFrom(tf_tensor(tf_apis, np.zeros((1, 3, 16, 16), np.float32)))
    assert "only the signature 'serving_default'" in predict(request).details()

    # oversized (the fixture limits messages to 1 MiB): refused by gRPC itself
    request = tf_apis.predict_pb2.PredictRequest()
    request.inputs["images"].CopyFrom(tf_tensor(tf_apis, np.zeros((1, 3, 400, 400), np.float32)))
    assert predict(request).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_still_serving(server)


def test_bad_requests_rest(server):
    def post(path, body, headers=None):
        status, raw, _ = http(server, "POST", path, body if isinstance(body, bytes) else json.dumps(body).encode(),
                              headers)
        return status, json.loads(raw)["error"]

    status, error = post("/v1/models/tiny:predict", {"instances": [[1, 2, 3]]})
    assert status == 400 and "must have shape [1, 3, 16, 16]" in error
    status, error = post("/v1/models/tiny:predict", b"{not json")
    assert status == 400 and "not valid JSON" in error
    status, error = post("/v1/models/tiny:predict", {"instances": [{"b64": base64.b64encode(b"junk").decode()}]})
    assert status == 400 and "cannot decode the image" in error
    status, error = post("/v1/models/nope:predict", {"instances": [[0]]})
    assert status == 404 and "served: tiny" in error
    status, error = post("/v2/models/tiny/infer", {"inputs": [{"name": "images", "shape": [1, 3, 16, 16],
                                                               "datatype": "FP32", "data": [1.0]}]})
    assert status == 400 and "holds 1 values but its shape [1, 3, 16, 16] needs 768" in error
    status, error = post("/v2/models/tiny/infer", {"inputs": [{"name": "images", "shape": [1], "datatype": "FP99",
                                                               "data": [1.0]}]})
    assert status == 400 and "datatype 'FP99' is not one of" in error
    status, error = post("/v2/models/tiny/infer", b"{}", {"Inference-Header-Content-Length": "999"})
    assert status == 400 and "outside" in error
    status, error = post("/v1/models/tiny:predict", b"x" * (1024 * 1024 + 1))
    assert status == 413 and "exceeds the limit" in error
    assert http(server, "GET", "/v2/nowhere")[0] == 404
    assert http(server, "GET", "/v2/models/nope/ready")[0] == 400
    assert_still_serving(server)


def test_bad_requests_triton_http(server, triton_http):
    inp = thttp.InferInput("images", [1, 3, 4, 4], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 3, 4, 4), np.float32), binary_data=True)
    with pytest.raises(InferenceServerException, match=r"must have shape \[1, 3, 16, 16\]"):
        triton_http.infer("tiny", [inp])
    assert_still_serving(server)


# -- load ------------------------------------------------------------------------

def test_concurrent_load(server):
    """8 threads x 25 requests over three protocols; every answer checked."""
    failures: list[str] = []
    inputs = image_batch(8)
    expected = reference_scores(inputs)

    def worker(k: int):
        x = inputs[k:k + 1]
        try:
            if k % 3 == 0:
                client = tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
                for _ in range(25):
                    inp = tgrpc.InferInput("images", [1, 3, 16, 16], "FP32")
                    inp.set_data_from_numpy(x)
                    got = client.infer("tiny", [inp], outputs=[tgrpc.InferRequestedOutput("scores")]).as_numpy("scores")
                    np.testing.assert_allclose(got[0], expected[k], atol=1e-4)
            elif k % 3 == 1:
                client = thttp.InferenceServerClient(f"127.0.0.1:{server.http_port}")
                for _ in range(25):
                    inp = thttp.InferInput("images", [1, 3, 16, 16], "FP32")
                    inp.set_data_from_numpy(x, binary_data=True)
                    got = client.infer("tiny", [inp]).as_numpy("scores")
                    np.testing.assert_allclose(got[0], expected[k], atol=1e-4)
            else:
                from runtime.client import PredictionClient

                with PredictionClient("127.0.0.1", server.grpc_port) as client:
                    for _ in range(25):
                        got = client.score_numpy_arrays({"images": x}, outputs="scores")
                        np.testing.assert_allclose(got[0], expected[k], atol=1e-4)
        except Exception as exc:  # noqa: BLE001 -- collected and reported below
            failures.append(f"worker {k}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "load test threads hung"
    assert not failures, failures
    status, raw, _ = http(server, "GET", "/metrics")
    text = raw.decode()
    assert status == 200
    assert 'npu_requests_total{protocol="kserve-grpc",model="tiny",code="OK"}' in text
    assert "npu_request_duration_seconds_bucket" in text and 'npu_cycles_total{model="tiny"}' in text
