"""PredictionClient, the `npu models / serve / predict` commands, and draining on SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from cli.main import build_parser, main
from runtime.client import PredictionClient

from conftest import free_port, reference_scores

ROOT = Path(__file__).resolve().parents[2]


def test_client_score_file_numpy_and_tensors(server, sample_jpeg):
    with PredictionClient("127.0.0.1", server.grpc_port) as client:
        probs = client.score_file(sample_jpeg, input_name="images", outputs="probs")
        assert probs.shape == (1000,) and probs.sum() == pytest.approx(1.0, abs=1e-4)
        both = client.score_file(str(sample_jpeg), outputs=["scores", "probs"])
        assert [a.shape for a in both] == [(1000,), (1000,)]

        x = np.random.default_rng(3).random((1, 3, 16, 16), dtype=np.float32)
        scores = client.score_numpy_arrays({"images": x}, outputs="scores")
        np.testing.assert_allclose(scores, reference_scores(x), atol=1e-4)
        raw = client.score_tensors({"images": (x.tobytes(), [1, 3, 16, 16], "DT_FLOAT")}, outputs="scores")
        np.testing.assert_allclose(raw, reference_scores(x), atol=1e-4)
        assert client.metadata_of()["inputs"] == {"images": ("DT_FLOAT", [1, 3, 16, 16])}

        with pytest.raises(grpc.RpcError) as info:
            client.score_numpy_arrays({"images": x[:, :, :8]})
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_client_named_model(server):
    x = np.zeros((1, 3, 16, 16), np.float32)
    with PredictionClient("127.0.0.1", server.grpc_port, model_name="tiny", version=1) as client:
        assert client.score_numpy_arrays({"images": x}, outputs="probs").shape == (1, 1000)
    # Azure's service route names the model when the request names none, and must agree when it does
    with PredictionClient("127.0.0.1", server.grpc_port, service_name="tiny") as client:
        assert client.score_numpy_arrays({"images": x}, outputs="probs").shape == (1, 1000)
    with PredictionClient("127.0.0.1", server.grpc_port, service_name="svc") as client:
        with pytest.raises(grpc.RpcError) as info:
            client.score_numpy_arrays({"images": x})
        assert info.value.code() == grpc.StatusCode.NOT_FOUND and "'svc' is not served here" in info.value.details()
    with PredictionClient("127.0.0.1", server.grpc_port, model_name="tiny", service_name="svc") as client:
        with pytest.raises(grpc.RpcError) as info:
            client.score_numpy_arrays({"images": x})
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with PredictionClient("127.0.0.1", server.grpc_port, model_name="other") as client:
        with pytest.raises(grpc.RpcError) as info:
            client.score_numpy_arrays({"images": x})
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_predict_command(server, sample_jpeg, capsys):
    assert main(["predict", "--server", f"127.0.0.1:{server.grpc_port}", str(sample_jpeg)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(str(sample_jpeg)) and "(probs)" in lines[0]
    assert len(lines) == 6 and all("%" in line for line in lines[1:])

    assert main(["predict", "--server", f"127.0.0.1:{server.grpc_port}", "--json", "--top", "3",
                 "--output", "scores", str(sample_jpeg)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["output"] == "scores" and len(report["top"]) == 3
    from runtime.labels import imagenet_classes

    assert all(t["label"] == imagenet_classes()[t["class"]] for t in report["top"])
    confidences = [t["confidence"] for t in report["top"]]
    assert confidences == sorted(confidences, reverse=True) and 0 < sum(confidences) <= 1


def test_predict_command_local_and_errors(tiny_model, sample_jpeg, capsys):
    assert main(["predict", "--local", str(tiny_model), "--json", str(sample_jpeg)]) == 0
    assert len(json.loads(capsys.readouterr().out)["top"]) == 5
    assert main(["predict", "--local", str(tiny_model), "missing.jpg"]) == 1
    assert "missing.jpg: no such file" in capsys.readouterr().err
    port = free_port()  # nothing listens there
    assert main(["predict", "--server", f"127.0.0.1:{port}", "--timeout", "2", str(sample_jpeg)]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_models_commands(tiny_model, tmp_path, capsys):
    store = str(tmp_path / "store")
    assert main(["models", "register", str(tiny_model), "--name", "tiny", "--tag", "demo", "--store", store]) == 0
    assert "registered tiny:1" in capsys.readouterr().out
    assert main(["models", "register", str(tiny_model), "--name", "tiny", "--store", store]) == 0
    assert main(["models", "list", "--store", store]) == 0
    out = capsys.readouterr().out
    assert "tiny:2" in out and "NAME" in out and "demo" in out
    assert main(["models", "show", "tiny:1", "--json", "--store", store]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == 1 and shown["inputs"][0]["name"] == "images"
    assert main(["models", "show", "tiny", "--store", store]) == 0
    assert "tiny:2" in capsys.readouterr().out
    assert main(["models", "delete", "tiny:1", "--store", store]) == 0
    assert capsys.readouterr().out == "deleted tiny:1\n"
    assert main(["models", "list", "--json", "--store", store]) == 0
    assert [r["version"] for r in json.loads(capsys.readouterr().out)] == [2]
    assert main(["models", "show", "nope", "--store", store]) == 1
    assert "no model 'nope'" in capsys.readouterr().err


def test_every_runtime_command_has_an_example_epilog():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in ("models", "serve", "predict"):
        command = sub.choices[name]
        assert command.epilog and command.epilog.startswith("examples:\n  npu "), name
    models = next(a for a in sub.choices["models"]._actions if a.dest == "models_command")
    for name, command in models.choices.items():
        assert command.epilog and "npu models " + name in command.epilog, name


def test_serve_drains_on_sigterm(tiny_model, sample_jpeg, tmp_path):
    """`npu serve` in a subprocess: a request in flight when SIGTERM arrives still completes."""
    grpc_port, http_port = free_port(), free_port()
    launcher = ("import sys; sys.path.insert(0, %r); import conftest; "
                "import time, runtime.executor as e; real = e.Executor.run\n"
                "def slow(self, feeds):\n    time.sleep(1.0)\n    return real(self, feeds)\n"
                "e.Executor.run = slow\n"
                "from cli.main import main; sys.exit(main(sys.argv[1:]))") % str(Path(__file__).parent)
    env = dict(os.environ, PYTHONPATH=str(ROOT), NPU_HOME=str(tmp_path / "home"))
    proc = subprocess.Popen([sys.executable, "-c", launcher, "serve", str(tiny_model), "--host", "127.0.0.1",
                             "--grpc-port", str(grpc_port), "--http-port", str(http_port), "--drain-seconds", "10"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + 30
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            while True:
                try:
                    grpc.channel_ready_future(channel).result(timeout=0.5)
                    break
                except grpc.FutureTimeoutError:
                    assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        result: dict = {}

        def call():
            with PredictionClient("127.0.0.1", grpc_port, retries=0) as client:
                try:
                    result["probs"] = client.score_file(sample_jpeg, outputs="probs", timeout=20)
                except grpc.RpcError as exc:
                    result["error"] = exc
        thread = threading.Thread(target=call)
        thread.start()
        time.sleep(0.5)  # the request is now inside the (slowed) executor
        proc.send_signal(signal.SIGTERM)
        thread.join(timeout=30)
        assert "probs" in result, result
        assert proc.wait(timeout=30) == 0
        output = proc.stdout.read()
        assert "draining" in output and "stopped" in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_command_checks_its_arguments(tiny_model, capsys):
    assert main(["serve"]) == 1
    assert "name the models to serve" in capsys.readouterr().err
    assert main(["serve", str(tiny_model), "--tls-cert", "c.pem"]) == 1
    assert "--tls-cert and --tls-key go together" in capsys.readouterr().err
    assert main(["serve", str(tiny_model), "--versions", "latest,2", "--grpc-port", "0", "--http-port", "0"]) == 1
    assert "--versions must be latest, all, or version numbers" in capsys.readouterr().err
    args = build_parser().parse_args(["serve", "a", "b:2", "--all"])
    assert args.models == ["a", "b:2"] and args.all and args.host == "127.0.0.1"


def test_models_gc_command(tiny_model, tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["models", "register", str(tiny_model), "--name", "tiny", "--store", str(store)]) == 0
    orphan = store / "blobs" / "00" / ("0" * 64 + ".npu")
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"PK")
    capsys.readouterr()
    assert main(["models", "gc", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert str(orphan) in out and "1 file(s) removed" in out and not orphan.exists()
    assert main(["models", "register", str(tiny_model), "--name", "bad name", "--store", str(store)]) == 1
    assert "must be 1 to 64 letters" in capsys.readouterr().err
