"""Serving overhead: requests/s and p50/p99 latency through each protocol vs the session in-process.

    PYTHONPATH=. python benchmarks/bench_serving.py                       # the tiny test classifier
    PYTHONPATH=. python benchmarks/bench_serving.py --model resnet50.npu --requests 50 --concurrency 1 4

The server runs in this process on free loopback ports; clients are the real
ones (tritonclient gRPC and HTTP, runtime.client for TF Serving gRPC, urllib
for TF Serving REST).  Without --model the runtime tests' tiny classifier is
used, and when runtime.executor is not there yet the tests' fake executor runs
it (the table says so).
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _percentile(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1000.0, q))


def measure(name: str, make_call, requests: int, concurrency: int) -> dict:
    """Run ``requests`` calls spread over ``concurrency`` threads (each with its own client)."""
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []
    per_thread = max(1, requests // concurrency)

    def worker():
        call = make_call()
        call()  # warm-up (connection set-up) outside the timing
        mine = []
        for _ in range(per_thread):
            start = time.perf_counter()
            try:
                call()
            except Exception as exc:  # noqa: BLE001 -- reported in the table
                errors.append(str(exc))
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return {"mode": name, "concurrency": concurrency, "requests": len(latencies),
            "rps": len(latencies) / elapsed, "p50_ms": _percentile(latencies, 50),
            "p99_ms": _percentile(latencies, 99), "errors": len(errors)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help=".npu file (default: the runtime tests' tiny classifier)")
    parser.add_argument("--requests", type=int, default=200, help="requests per mode and concurrency")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--workers", type=int, default=2, help="NPU sessions behind the server")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT / "tests" / "runtime"))
    import conftest  # noqa: E402 -- installs the fake executor only if runtime.executor is missing

    note = "fake executor (runtime.executor missing)" if conftest.FAKE_EXECUTOR else "runtime.executor"
    import tempfile

    import tritonclient.grpc as tgrpc
    import tritonclient.http as thttp

    import runtime
    from runtime.client import PredictionClient
    from runtime.server import ServeConfig, Server

    tmp = tempfile.TemporaryDirectory()
    model_path = Path(args.model) if args.model else conftest.write_tiny_model(Path(tmp.name) / "tiny.npu")
    session = runtime.load(model_path)
    spec = session.inputs[0]
    x = np.random.default_rng(0).random(spec.shape, dtype=np.float32).astype(spec.dtype)
    name = session.name

    config = ServeConfig(host="127.0.0.1", grpc_port=0, http_port=0, workers=args.workers,
                         threads=max(8, max(args.concurrency) * 2), max_concurrent=256)
    rows = []
    with Server(str(model_path), config) as server:
        grpc_addr, http_addr = f"127.0.0.1:{server.grpc_port}", f"127.0.0.1:{server.http_port}"

        def in_process():
            return lambda: session.run({spec.name: x})

        def tf_grpc():
            client = PredictionClient("127.0.0.1", server.grpc_port)
            return lambda: client.score_numpy_arrays({spec.name: x})

        def kserve_grpc():
            client = tgrpc.InferenceServerClient(grpc_addr)
            inp = tgrpc.InferInput(spec.name, list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            return lambda: client.infer(name, [inp])

        def kserve_http_binary():
            client = thttp.InferenceServerClient(http_addr)
            inp = thttp.InferInput(spec.name, list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=True)
            return lambda: client.infer(name, [inp])

        def tf_rest_json():
            body = json.dumps({"inputs": {spec.name: x.tolist()}}).encode()
            url = f"http://{http_addr}/v1/models/{name}:predict"
            return lambda: urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30).read()

        modes = [("in-process Session.run", in_process), ("TF Serving gRPC", tf_grpc),
                 ("KServe v2 gRPC", kserve_grpc), ("KServe v2 HTTP binary", kserve_http_binary),
                 ("TF Serving REST JSON", tf_rest_json)]
        for concurrency in args.concurrency:
            for label, factory in modes:
                # in-process there is one session: concurrent callers queue on its lock, like one NPU
                rows.append(measure(label, factory, args.requests, concurrency))
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"model {model_path.name} ({spec.dtype} {list(spec.shape)}), executor: {note}, "
          f"server sessions: {args.workers}")
    header = f"{'mode':<24} {'conc':>4} {'reqs':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['mode']:<24} {r['concurrency']:>4} {r['requests']:>5} {r['rps']:>9.1f} "
              f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['errors']:>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
