"""No request under 1 MB makes the server allocate more than 64 MB beyond what the model needs.

The server runs as `npu serve` in a subprocess; before each request its peak RSS is reset
(/proc/PID/clear_refs), after it the peak (VmHWM) is read: the growth over the resident size
before the request is what that request cost.  The requests are the issue's attacks (a declared
shape of 1e9 values, decompression bombs, deep and wide JSON, many images in one request) and the
largest images the default limits accept."""
from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest

from conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
BUDGET = 64 * 1024 * 1024
LINUX = Path("/proc/self/clear_refs").exists()


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(field)


def png(width, height, mode="RGBA") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, (width, height), (200, 30, 90, 255)[:len(mode)]).save(buf, "PNG")
    return buf.getvalue()


def jpeg(width, height) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (20, 130, 90)).save(buf, "JPEG", quality=50)
    return buf.getvalue()


@pytest.fixture(scope="module")
def server_process(tiny_model, tmp_path_factory):
    if not LINUX:
        pytest.skip("peak RSS is read from /proc")
    grpc_port, http_port = free_port(), free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), NPU_HOME=str(tmp_path_factory.mktemp("home")))
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", str(tiny_model), "--grpc-port", str(grpc_port),
                             "--http-port", str(http_port), "--drain-seconds", "2"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=1)
            break
        except (urllib.error.URLError, ConnectionError):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.1)
    yield proc, grpc_port, http_port
    proc.terminate()
    proc.wait(timeout=30)


def grpc_predict(port, tensor_setup):
    from runtime import proto
    from runtime.proto import Stub

    request = proto.message("tensorflow.serving.PredictRequest")()
    tensor_setup(request.inputs["images"])
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            Stub(channel, proto.PREDICTION_SERVICE).Predict(request, timeout=60)
            return "OK", len(request.SerializeToString())
        except grpc.RpcError as exc:
            return exc.code().name, len(request.SerializeToString())


def http_post(port, path, body: bytes):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, len(body)
    except urllib.error.HTTPError as exc:
        return exc.code, len(body)


def strings(*items):
    def setup(tensor):
        tensor.dtype = 7  # DT_STRING
        tensor.tensor_shape.dim.add().size = len(items)
        tensor.string_val.extend(items)
    return setup


def huge_fill(tensor):
    tensor.dtype = 1
    tensor.tensor_shape.dim.add().size = 10 ** 9
    tensor.float_val.append(1.0)


def attacks(grpc_port, http_port):
    bomb = png(12_000, 12_000, "RGB")
    limit_png = png(2500, 2500, "RGBA")  # just under the 6 Mpixel default, 4 bytes a pixel
    big_jpeg = jpeg(8000, 6000)          # 48 Mpixel: decoded at 1/8 scale
    tiny_png = png(4, 4, "RGB")
    yield "gRPC 36-byte Predict, float_val filling [1e9]", lambda: grpc_predict(grpc_port, huge_fill)
    yield "gRPC PNG bomb 12000x12000", lambda: grpc_predict(grpc_port, strings(bomb))
    yield "gRPC PNG 2500x2500 RGBA (accepted)", lambda: grpc_predict(grpc_port, strings(limit_png))
    yield "gRPC JPEG 8000x6000 (accepted, 1/8 scale)", lambda: grpc_predict(grpc_port, strings(big_jpeg))
    yield "gRPC 5,000 tiny PNGs in one request", lambda: grpc_predict(grpc_port, strings(*[tiny_png] * 5000))
    yield "REST b64 PNG bomb", lambda: http_post(http_port, "/v1/models/tiny:predict", json.dumps(
        {"instances": [{"b64": base64.b64encode(bomb).decode()}]}).encode())
    yield "REST 1 MB of nested empty lists", lambda: http_post(
        http_port, "/v1/models/tiny:predict", b'{"instances": [' + b"[]," * 330_000 + b"[]]}")
    yield "REST 1 MB of numbers", lambda: http_post(
        http_port, "/v1/models/tiny:predict", b'{"instances": [[' + b"1e1," * 250_000 + b"1]]}")
    yield "REST 1 MB of 2-character strings", lambda: http_post(
        http_port, "/v2/models/tiny/infer", b'{"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", '
        b'"data": [' + b'"ab",' * 200_000 + b'"a"]}]}')
    yield "REST deep nesting", lambda: http_post(http_port, "/v2/models/tiny/infer", b"[" * 400_000 + b"]" * 400_000)
    yield "v2 binary, shape [2^20, 2^20]", lambda: http_post(
        http_port, "/v2/models/tiny/infer", json.dumps({"inputs": [{"name": "images", "shape": [2 ** 20, 2 ** 20],
                                                                    "datatype": "FP32", "data": [1.0]}]}).encode())


def test_no_small_request_costs_more_than_64_mb(server_process):
    proc, grpc_port, http_port = server_process
    # warm up every path once (lazy imports, first allocations), as a model that has served requests has
    x = np.zeros((1, 3, 16, 16), np.float32)
    assert http_post(http_port, "/v1/models/tiny:predict", json.dumps({"instances": x.tolist()}).encode())[0] == 200
    assert grpc_predict(grpc_port, strings(png(300, 200, "RGB")))[0] == "OK"
    report = []
    for label, attack in attacks(grpc_port, http_port):
        Path(f"/proc/{proc.pid}/clear_refs").write_text("5")
        before = status_kb(proc.pid, "VmRSS")
        outcome, size = attack()
        growth = status_kb(proc.pid, "VmHWM") - before
        report.append((label, size, outcome, growth))
        print(f"{label:<45} {size:>9} B  {outcome!s:<18} peak +{growth / 2 ** 20:6.1f} MB")
    assert all(size < 1024 * 1024 for _, size, _, _ in report), report
    over = [r for r in report if r[3] > BUDGET]
    assert not over, over
    assert proc.poll() is None
