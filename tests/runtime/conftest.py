"""Fixtures of the runtime tests: a tiny classifier compiled to a real model file.

The classifier (Flatten, MatMul, Add on the NPU; Softmax on the host) is
compiled by the real compiler for brainslice-128 and executed by the real
executor on the simulator.  Serving tests compare what comes over the wire with
what the same model computes in-process (bit for bit), and test_session checks
that against the float model within the number format.
"""
from __future__ import annotations

import functools
import socket
import tempfile
from pathlib import Path

import numpy as np
import pytest

INPUT_SHAPE = (1, 3, 16, 16)
CLASSES = 1000
CONFIG = "brainslice-128"
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
PREPROCESSING = {"kind": "image", "layout": "NCHW", "size": [16, 16], "resize": 18,
                 "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "labels": "imagenet"}


def tiny_classifier_onnx(seed: int = 0) -> bytes:
    """images [1,3,16,16] -> scores [1,1000] (Flatten, MatMul, Add) and probs = Softmax(scores)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    features = int(np.prod(INPUT_SHAPE[1:]))
    weight = (rng.standard_normal((features, CLASSES)) * 0.05).astype(np.float32)
    bias = (rng.standard_normal(CLASSES) * 0.01).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["images"], ["flat"], axis=1),
         helper.make_node("MatMul", ["flat", "weight"], ["mm"]),
         helper.make_node("Add", ["mm", "bias"], ["scores"]),
         helper.make_node("Softmax", ["scores"], ["probs"], axis=1)],
        "tiny_classifier",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, list(INPUT_SHAPE))],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, CLASSES]),
         helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, CLASSES])],
        [numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def write_tiny_model(path: Path, seed: int = 0) -> Path:
    from compiler import compile_to_file

    compile_to_file(tiny_classifier_onnx(seed), path, config=CONFIG, preprocessing=PREPROCESSING)
    return path


def float_reference_scores(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """What the tiny classifier computes in float32 numpy."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(tiny_classifier_onnx(seed)).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    return images.reshape(images.shape[0], -1) @ init["weight"] + init["bias"]


@functools.lru_cache(maxsize=4)
def _reference_executor(seed: int):
    from npu.modelfile import read_model
    from runtime.executor import Executor

    path = write_tiny_model(Path(tempfile.mkdtemp(prefix="npu-ref-")) / "tiny.npu", seed)
    return Executor(read_model(path))


def reference_scores(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """What the compiled tiny classifier computes in-process on the simulator, one image at a time."""
    ex = _reference_executor(seed)
    images = np.asarray(images, dtype=np.float32).reshape(-1, *INPUT_SHAPE[1:])
    return np.concatenate([ex.run({"images": im[None]})[0]["scores"] for im in images])


def make_pki(out: Path) -> Path:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, as PEM files in ``out``
    (``ca``, ``server``, ``client`` .pem and .key), made at run time: no key is ever committed."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(stem, key, cert):
        (out / f"{stem}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                            serialization.PrivateFormat.PKCS8,
                                                            serialization.NoEncryption()))
        (out / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def builder(subject, issuer, key):
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=1)))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (builder(name("npu test CA"), name("npu test CA"), ca_key)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    write("ca", ca_key, ca)
    for stem, usage, san in (("server", ExtendedKeyUsageOID.SERVER_AUTH,
                              [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                             ("client", ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName("client")])):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (builder(name(stem), ca.subject, key).add_extension(x509.SubjectAlternativeName(san), critical=False)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False).sign(ca_key, hashes.SHA256()))
        write(stem, key, cert)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny.npu")


@pytest.fixture(scope="session")
def sample_jpeg() -> Path:
    """scikit-learn's china.jpg, used from the installed package (not copied into the repo)."""
    import sklearn.datasets

    path = Path(sklearn.datasets.__file__).parent / "images" / "china.jpg"
    assert path.exists(), path
    return path


@pytest.fixture(scope="session")
def sample_png(tmp_path_factory) -> Path:
    from PIL import Image

    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("images") / "noise.png"
    Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(autouse=True)
def _npu_home(tmp_path, monkeypatch):
    """Keep every test's registry away from ~/.npu."""
    monkeypatch.setenv("NPU_HOME", str(tmp_path / "npu-home"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_model):
    """A running server on free loopback ports, shared by a test module."""
    from runtime.server import ServeConfig, Server

    config = ServeConfig(host="127.0.0.1", grpc_port=0, http_port=0, workers=2, threads=8,
                         max_message_mb=1, max_concurrent=32, drain_seconds=2)
    with Server(str(tiny_model), config) as srv:
        yield srv
