"""The wire formats: our KServe v2 messages agree field by field with tritonclient's copy."""
from __future__ import annotations

import pytest

from runtime import proto


def fields(descriptor) -> dict:
    out = {}
    for f in descriptor.fields:
        kind = f.message_type.full_name.split(".")[-1] if f.message_type else f.type
        out[f.name] = (f.number, f.type, kind, f.is_repeated)
    for nested in descriptor.nested_types:
        if not nested.GetOptions().map_entry:
            out.update({f"{nested.name}.{k}": v for k, v in fields(nested).items()})
    return out


@pytest.mark.parametrize("name", [
    "ServerLiveResponse", "ServerReadyResponse", "ModelReadyRequest", "ModelReadyResponse",
    "ServerMetadataResponse", "ModelMetadataRequest", "ModelMetadataResponse", "ModelInferRequest",
    "ModelInferResponse", "InferParameter", "InferTensorContents", "RepositoryIndexRequest",
    "RepositoryIndexResponse"])
def test_kserve_messages_match_tritonclient(name):
    from tritonclient.grpc import service_pb2

    ours = proto.pool().FindMessageTypeByName(f"inference.{name}")
    theirs = service_pb2.DESCRIPTOR.message_types_by_name[name]
    assert fields(ours) == fields(theirs)


def test_kserve_service_paths_match_tritonclient():
    from tritonclient.grpc import service_pb2

    ours = {m.name: (m.input_type.name, m.output_type.name)
            for m in proto.pool().FindServiceByName(proto.INFERENCE_SERVICE).methods}
    theirs = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods_by_name
    for method, (request, response) in ours.items():
        assert (theirs[method].input_type.name, theirs[method].output_type.name) == (request, response)


def test_tf_serving_field_numbers():
    """Spot checks of the numbers TF Serving clients depend on."""
    def number(message, field):
        return proto.pool().FindMessageTypeByName(message).fields_by_name[field].number

    assert number("tensorflow.serving.PredictRequest", "model_spec") == 1
    assert number("tensorflow.serving.PredictRequest", "inputs") == 2
    assert number("tensorflow.serving.PredictRequest", "output_filter") == 3
    assert number("tensorflow.serving.PredictResponse", "outputs") == 1
    assert number("tensorflow.serving.PredictResponse", "model_spec") == 2
    assert [number("tensorflow.serving.ModelSpec", f) for f in ("name", "version", "signature_name",
                                                                 "version_label")] == [1, 2, 3, 4]
    assert [number("tensorflow.TensorProto", f) for f in ("dtype", "tensor_shape", "version_number",
                                                          "tensor_content", "float_val", "string_val",
                                                          "half_val", "uint64_val")] == [1, 2, 3, 4, 5, 8, 13, 17]
    enum = proto.pool().FindEnumTypeByName("tensorflow.DataType")
    assert enum.values_by_name["DT_STRING"].number == 7 and enum.values_by_name["DT_HALF"].number == 19


def test_stubs_generate_into_a_directory(tmp_path):
    out = proto.generate_python_stubs(tmp_path)
    assert (out / "tensorflow_serving" / "apis" / "prediction_service_pb2_grpc.py").exists()
    assert (out / "tensorflow" / "core" / "framework" / "tensor_pb2.py").exists()
