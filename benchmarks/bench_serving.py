"""Serving overhead: requests/s and p50/p99 latency through each protocol vs the session in-process,
and the load test over TLS with tokens.

    PYTHONPATH=. python benchmarks/bench_serving.py                       # the tiny test classifier
    PYTHONPATH=. python benchmarks/bench_serving.py --model resnet50.npu --requests 50 --concurrency 1 4
    PYTHONPATH=. python benchmarks/bench_serving.py --tls                 # 8 clients x 2,000 mixed requests

The server runs in this process on free loopback ports; clients are the real
ones (tritonclient gRPC and HTTP, runtime.client for TF Serving gRPC, urllib
for TF Serving REST).  Without --model the runtime tests' tiny classifier is used.

``--tls`` serves over TLS (certificates made at run time) with a bearer token and
runs ``--clients`` threads of ``--per-client`` requests each, rotating through the
four protocols, 60 % good requests (checked bit for bit against the same model
in-process) and 40 % bad ones (wrong shape, unknown model or version, no or a
wrong token, garbage), each of which must get its expected status: it prints
lost (no answer, or an unexpected error) and wrong (another status, another
value) counts and p50/p99 per protocol beside the in-process session.
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
    parser.add_argument("--tls", action="store_true", help="the load test over TLS with tokens")
    parser.add_argument("--clients", type=int, default=8, help="--tls: client threads")
    parser.add_argument("--per-client", type=int, default=2000, help="--tls: requests per client")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT / "tests" / "runtime"))
    import conftest  # noqa: E402 -- the tests' tiny classifier

    if args.tls:
        result = load_test(conftest, args.model, args.clients, args.per_client, args.workers)
        print(json.dumps(result, indent=1) if args.json else format_load(result))
        return 0 if result["lost"] == 0 and result["wrong"] == 0 else 1
    note = "runtime.executor"
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


# -- the load test over TLS with tokens ------------------------------------------------------------

TOKEN = "bench-token"
PROTOCOLS = ("kserve-grpc", "kserve-http", "tfserving-grpc", "tfserving-rest")
BAD_KINDS = ("shape", "model", "version", "no-token", "wrong-token", "garbage")


def load_test(conftest, model_path=None, clients: int = 8, per_client: int = 2000, workers: int = 2,
              seed: int = 0) -> dict:
    """8 clients x 2,000 mixed good and bad requests over TLS with a token; lost, wrong, latency per protocol."""
    import random
    import ssl
    import tempfile
    import urllib.error

    import grpc
    import tritonclient.grpc as tgrpc
    import tritonclient.http as thttp
    from tritonclient.utils import InferenceServerException

    import runtime
    from runtime.client import PredictionClient
    from runtime.server import ServeConfig, Server
    from runtime.service import TlsFiles

    tmp = Path(tempfile.mkdtemp(prefix="npu-bench-"))
    pki = conftest.make_pki(tmp / "pki")
    model_path = Path(model_path) if model_path else conftest.write_tiny_model(tmp / "tiny.npu")
    session = runtime.load(model_path)
    spec = session.inputs[0]
    rng = np.random.default_rng(seed)
    inputs = [rng.random(spec.shape, dtype=np.float32).astype(spec.dtype) for _ in range(8)]
    expected = [session.run({spec.name: x}) for x in inputs]
    out_name = session.outputs[0].name
    in_process = []
    for i in range(200):
        start = time.perf_counter()
        session.run({spec.name: inputs[i % 8]})
        in_process.append(time.perf_counter() - start)

    config = ServeConfig(host="127.0.0.1", grpc_port=0, http_port=0, workers=workers, threads=max(8, 2 * clients),
                         max_concurrent=256, tls=TlsFiles(str(pki / "server.pem"), str(pki / "server.key")),
                         auth_token=TOKEN)
    name = session.name
    ca = str(pki / "ca.pem")
    good_headers = {"authorization": f"Bearer {TOKEN}"}
    latencies = {p: [] for p in PROTOCOLS}
    counts = {"requests": 0, "good": 0, "bad": 0, "lost": 0, "wrong": 0}
    problems: list[str] = []
    lock = threading.Lock()

    with Server(str(model_path), config) as server:
        grpc_url, http_url = f"localhost:{server.grpc_port}", f"localhost:{server.http_port}"
        context = ssl.create_default_context(cafile=ca)

        def request(protocol: str, kind: str, k: int, clients_of: dict):
            """(status, array or None): the status as the protocol says it, normalised to a word."""
            x = inputs[k]
            model, version, headers = name, "", dict(good_headers)
            if kind == "shape":
                x = x.reshape(-1)[: x.size // 2]
            elif kind == "model":
                model = "no-such-model"
            elif kind == "version":
                version = "7"
            elif kind == "no-token":
                headers = {}
            elif kind == "wrong-token":
                headers = {"authorization": "Bearer nope"}
            if protocol == "kserve-grpc":
                client = clients_of["tgrpc"]
                if kind == "garbage":
                    inp = tgrpc.InferInput(spec.name, [1], "BYTES")
                    inp.set_data_from_numpy(np.array([b"\x00garbage"], dtype=object))
                else:
                    inp = tgrpc.InferInput(spec.name, list(x.shape), "FP32")
                    inp.set_data_from_numpy(x)
                try:
                    result = client.infer(model, [inp], model_version=version, headers=headers)
                    return "OK", result.as_numpy(out_name)
                except InferenceServerException as exc:
                    return str(exc.status()).replace("StatusCode.", ""), None
            if protocol == "kserve-http":
                client = clients_of["thttp"]
                if kind == "garbage":
                    inp = thttp.InferInput(spec.name, [1, 7], "FP32")
                    inp.set_data_from_numpy(np.zeros((1, 7), np.float32), binary_data=True)
                else:
                    inp = thttp.InferInput(spec.name, list(x.shape), "FP32")
                    inp.set_data_from_numpy(x, binary_data=True)
                try:
                    result = client.infer(model, [inp], model_version=version, headers=headers)
                    return "OK", result.as_numpy(out_name)
                except InferenceServerException as exc:
                    return http_word(exc.status()), None
            if protocol == "tfserving-grpc":
                stub = clients_of["tf"]
                metadata = list(headers.items())
                req = __import__("runtime.proto", fromlist=["message"]).message("tensorflow.serving.PredictRequest")()
                req.model_spec.name = model
                if version:
                    req.model_spec.version.value = int(version)
                tensor = req.inputs[spec.name]
                if kind == "garbage":
                    tensor.dtype = 7
                    tensor.tensor_shape.dim.add().size = 1
                    tensor.string_val.append(b"not an image")
                else:
                    from runtime.tensors import make_tensor_proto

                    tensor.CopyFrom(make_tensor_proto(x, content=True))
                try:
                    response = stub._stub.Predict(req, timeout=30, metadata=metadata)
                    from runtime.tensors import tensor_proto_to_numpy

                    return "OK", tensor_proto_to_numpy(response.outputs[out_name])
                except grpc.RpcError as exc:
                    return exc.code().name, None
            path = f"/v1/models/{model}" + (f"/versions/{version}" if version else "") + ":predict"
            body = b"{garbage" if kind == "garbage" else json.dumps({"inputs": {spec.name: x.tolist()}}).encode()
            req = urllib.request.Request(f"https://{http_url}{path}", data=body, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=30, context=context) as response:
                    return "OK", np.asarray(json.loads(response.read())["outputs"][out_name], np.float32)
            except urllib.error.HTTPError as exc:
                exc.read()
                return http_word(exc.code), None

        want = {"shape": {"INVALID_ARGUMENT"}, "model": {"NOT_FOUND"}, "version": {"NOT_FOUND"},
                "no-token": {"UNAUTHENTICATED"}, "wrong-token": {"UNAUTHENTICATED"}, "garbage": {"INVALID_ARGUMENT"}}

        def client_thread(c: int):
            r = random.Random(seed * 1000 + c)
            clients_of = {"tgrpc": tgrpc.InferenceServerClient(grpc_url, ssl=True, root_certificates=ca),
                          "thttp": thttp.InferenceServerClient(http_url, ssl=True, ssl_options={"ca_certs": ca},
                                                               network_timeout=60),
                          "tf": PredictionClient("localhost", server.grpc_port, use_ssl=True, root_certificates=ca,
                                                 access_token=TOKEN, retries=0)}
            mine = {p: [] for p in PROTOCOLS}
            local = {"requests": 0, "good": 0, "bad": 0, "lost": 0, "wrong": 0}
            notes = []
            for i in range(per_client):
                protocol = PROTOCOLS[(c + i) % len(PROTOCOLS)]
                kind = "good" if r.random() < 0.6 else r.choice(BAD_KINDS)
                k = r.randrange(len(inputs))
                start = time.perf_counter()
                try:
                    status, value = request(protocol, kind, k, clients_of)
                except Exception as exc:  # noqa: BLE001 -- a lost request, counted and shown
                    local["lost"] += 1
                    notes.append(f"{protocol} {kind}: {type(exc).__name__}: {str(exc)[:120]}")
                    continue
                elapsed = time.perf_counter() - start
                local["requests"] += 1
                if kind == "good":
                    local["good"] += 1
                    mine[protocol].append(elapsed)
                    ok = status == "OK" and value is not None and np.array_equal(
                        np.asarray(value, np.float32).reshape(-1), expected[k][out_name].reshape(-1))
                else:
                    local["bad"] += 1
                    ok = status in want[kind]
                if not ok:
                    local["wrong"] += 1
                    notes.append(f"{protocol} {kind}: got {status}")
            clients_of["tf"].close()
            with lock:
                for p in PROTOCOLS:
                    latencies[p] += mine[p]
                for key in counts:
                    counts[key] += local[key]
                problems.extend(notes[:5])

        started = time.perf_counter()
        threads = [threading.Thread(target=client_thread, args=(c,)) for c in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
    rows = [{"mode": "in-process Session.run", "requests": len(in_process), "p50_ms": _percentile(in_process, 50),
             "p99_ms": _percentile(in_process, 99)}]
    for p in PROTOCOLS:
        rows.append({"mode": f"{p} (TLS + token)", "requests": len(latencies[p]), "p50_ms": _percentile(latencies[p], 50),
                     "p99_ms": _percentile(latencies[p], 99)})
    return dict(counts, clients=clients, per_client=per_client, seconds=round(elapsed, 1), rows=rows,
                problems=problems[:20])


def http_word(status: int) -> str:
    return {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 404: "NOT_FOUND", 413: "RESOURCE_EXHAUSTED",
            500: "INTERNAL", 503: "UNAVAILABLE"}.get(int(status), str(status))


def format_load(result: dict) -> str:
    lines = [f"load test over TLS with a bearer token: {result['clients']} clients x {result['per_client']} requests "
             f"in {result['seconds']} s",
             f"  requests answered {result['requests']}  good {result['good']}  bad {result['bad']}  "
             f"lost {result['lost']}  wrong {result['wrong']}",
             f"{'mode':<30} {'reqs':>6} {'p50 ms':>8} {'p99 ms':>8}"]
    for r in result["rows"]:
        lines.append(f"{r['mode']:<30} {r['requests']:>6} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}")
    lines += [f"  ! {p}" for p in result["problems"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
