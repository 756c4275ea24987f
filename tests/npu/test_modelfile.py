import pytest

from npu.errors import ModelFileError
from npu.modelfile import TensorSpec, read_model, write_model


def test_round_trip_and_refusals(tmp_path):
    path = tmp_path / "m.npu"
    write_model(path, {"inputs": [TensorSpec("x", (1, 3)).to_dict()]}, {"program.bin": b"abc", "w": b"\x00" * 100})
    m = read_model(path)
    assert m.member("program.bin") == b"abc" and m.inputs == [TensorSpec("x", (1, 3))]
    data = path.read_bytes()
    (tmp_path / "t.npu").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        read_model(tmp_path / "t.npu")
    tampered = data.replace(b"abc", b"abd")
    with pytest.raises(ModelFileError, match="program.bin"):
        read_model(tampered)
    with pytest.raises(ModelFileError, match="cannot read"):
        read_model(tmp_path / "missing.npu")


def test_same_content_same_bytes(tmp_path):
    import time

    from npu.modelfile import model_bytes

    first = model_bytes({"a": 1}, {"x": b"1"})
    time.sleep(2.1)  # zip timestamps have a 2-second resolution
    assert model_bytes({"a": 1}, {"x": b"1"}) == first
    write_model(tmp_path / "m.npu", {"a": 1}, {"x": b"1"})
    assert (tmp_path / "m.npu").read_bytes() == first
