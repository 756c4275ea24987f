"""Fixtures of the runtime tests: a tiny classifier model file and, until the
compiler's executor lands, a stand-in for it.

########################################################################
# FAKE EXECUTOR -- a test double, not the product.                     #
# runtime/executor.py (the compiler's Executor, which runs a model     #
# file's plan on the NPU) does not exist yet.  When it cannot be       #
# imported, or NPU_TEST_FAKE_EXECUTOR=1, ``FakeExecutor`` is installed  #
# as ``runtime.executor``: it runs a host-only plan with onnxruntime    #
# and reports made-up cycle counts.  Everything else under test is the #
# real runtime.                                                         #
########################################################################
"""
from __future__ import annotations

import os
import socket
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from npu.modelfile import ModelFile, RunStats, write_model

INPUT_SHAPE = (1, 3, 16, 16)
CLASSES = 1000
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class FakeExecutor:
    """Runs the ``host`` steps of a plan with onnxruntime (see the module docstring)."""

    def __init__(self, model: ModelFile, backend: str = "sim"):
        import onnxruntime as ort

        self.manifest = model.manifest
        self.inputs = model.inputs
        self.outputs = model.outputs
        self.steps = []
        for step in model.manifest["plan"]:
            assert step["kind"] == "host", f"the fake executor runs host steps only, not {step['kind']!r}"
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(model.member(step["member"]), options,
                                           providers=["CPUExecutionProvider"])
            self.steps.append((step, session))

    def run(self, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], RunStats]:
        start = time.perf_counter()
        env = dict(feeds)
        for step, session in self.steps:
            values = session.run(step["outputs"], {name: env[name] for name in step["inputs"]})
            env.update(zip(step["outputs"], values))
        elapsed = time.perf_counter() - start
        return ({spec.name: env[spec.name] for spec in self.outputs},
                RunStats(npu_cycles=12345, latency_us=49.4, macs=768 * CLASSES, host_time_s=elapsed))


def install_fake_executor() -> bool:
    """Make ``runtime.executor`` importable; True if the fake had to be installed."""
    if os.environ.get("NPU_TEST_FAKE_EXECUTOR") != "1":
        try:
            import runtime.executor  # noqa: F401
            return False
        except ImportError as exc:
            if exc.name != "runtime.executor":
                raise
    module = types.ModuleType("runtime.executor")
    module.Executor = FakeExecutor
    module.__doc__ = "FAKE EXECUTOR installed by tests/runtime/conftest.py"
    sys.modules["runtime.executor"] = module
    import runtime

    runtime.executor = module
    return True


FAKE_EXECUTOR = install_fake_executor()


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


def tiny_manifest() -> dict:
    return {
        "config": {"name": "test-tiny"},
        "inputs": [{"name": "images", "shape": list(INPUT_SHAPE), "dtype": "float32"}],
        "outputs": [{"name": "scores", "shape": [1, CLASSES], "dtype": "float32"},
                    {"name": "probs", "shape": [1, CLASSES], "dtype": "float32"}],
        "preprocessing": {"kind": "image", "layout": "NCHW", "size": [16, 16], "resize": 18,
                          "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "labels": "imagenet"},
        "compiler": {"note": "hand-made for the runtime tests"},
        "plan": [{"kind": "host", "member": "host/0.onnx", "inputs": ["images"], "outputs": ["scores", "probs"]}],
    }


def write_tiny_model(path: Path, seed: int = 0) -> Path:
    write_model(path, tiny_manifest(), {"host/0.onnx": tiny_classifier_onnx(seed)})
    return path


def reference_scores(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """What the tiny classifier computes, in numpy."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(tiny_classifier_onnx(seed)).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    return images.reshape(images.shape[0], -1) @ init["weight"] + init["bias"]


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
