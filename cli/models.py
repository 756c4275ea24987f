"""The runtime's `npu` sub-commands: models (register/list/show/delete/gc), serve, predict."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from npu.errors import NpuError


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action):
        if action.default in (None, False):  # "(default: None)" tells nothing
            return action.help
        return super()._get_help_string(action)


def _parser(sub, name: str, help: str, epilog: str, **kw) -> argparse.ArgumentParser:  # noqa: A002
    return sub.add_parser(name, help=help, description=help, epilog="examples:\n" + epilog,
                          formatter_class=_Formatter, **kw)


def _store_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", metavar="DIR", default=None,
                   help="model store directory (default: $NPU_HOME, else ~/.npu)")


def add_commands(subparsers) -> None:
    # -- models ----------------------------------------------------------------
    models = _parser(subparsers, "models", "manage the local model registry",
                     "  npu models register resnet50.npu --name resnet50 --tag imagenet\n"
                     "  npu models list\n"
                     "  npu models show resnet50:1\n"
                     "  npu models delete resnet50:1\n"
                     "  npu models gc\n")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION")
    models.set_defaults(func=lambda args: (models.print_help(), 2)[1])

    reg = _parser(msub, "register", "add a .npu (or .onnx, compiled on the way) as the next version of NAME",
                  "  npu models register resnet50.npu --name resnet50\n"
                  "  npu models register resnet50.onnx --name resnet50 --config brainslice-128 "
                  "--tag imagenet --description 'ResNet-50 v1.5'\n")
    reg.add_argument("file", help="a .npu model file, or an .onnx model to compile")
    reg.add_argument("--name", required=True, help="registry name")
    reg.add_argument("--config", default=None, help="NPU configuration to compile an .onnx for")
    reg.add_argument("--tag", action="append", default=[], help="a tag (repeatable)")
    reg.add_argument("--description", default="", help="free text")
    _store_arg(reg)
    reg.set_defaults(func=cmd_models_register)

    lst = _parser(msub, "list", "list registered models (every version)",
                  "  npu models list\n  npu models list resnet50 --json\n")
    lst.add_argument("name", nargs="?", help="only this model's versions")
    lst.add_argument("--json", action="store_true", help="print JSON")
    _store_arg(lst)
    lst.set_defaults(func=cmd_models_list)

    show = _parser(msub, "show", "show one model version: record, inputs, outputs, pre-processing",
                   "  npu models show resnet50        # latest version\n  npu models show resnet50:2 --json\n")
    show.add_argument("ref", metavar="NAME[:VERSION]")
    show.add_argument("--json", action="store_true", help="print JSON")
    _store_arg(show)
    show.set_defaults(func=cmd_models_show)

    delete = _parser(msub, "delete", "delete a model version, or every version of a model",
                     "  npu models delete resnet50:1\n  npu models delete resnet50     # all versions\n")
    delete.add_argument("ref", metavar="NAME[:VERSION]")
    _store_arg(delete)
    delete.set_defaults(func=cmd_models_delete)

    gc = _parser(msub, "gc", "remove blobs no model references and temporary files of interrupted registrations",
                 "  npu models gc\n  npu models gc --store /srv/models\n")
    _store_arg(gc)
    gc.set_defaults(func=cmd_models_gc)

    # -- serve -----------------------------------------------------------------
    serve = _parser(subparsers, "serve",
                    "serve models over TF Serving gRPC/REST, KServe v2 gRPC/REST, health and /metrics",
                    "  npu serve resnet50.npu\n"
                    "  npu serve resnet50:2 --grpc-port 9000 --http-port 9001 --workers 2\n"
                    "  npu serve resnet50 digits --versions all      # every registered version of both\n"
                    "  npu serve --all --host 0.0.0.0 --tls-cert cert.pem --tls-key key.pem   # token from $NPU_AUTH_TOKEN\n"
                    "  curl localhost:8501/v2/health/ready\n"
                    "  npu predict --server localhost:8500 cat.jpg\n")
    serve.add_argument("models", nargs="*", metavar="NAME[:VERSION]|model.npu",
                       help="models to serve; the first is the default for requests that name none")
    serve.add_argument("--all", action="store_true", help="serve every model in the registry")
    serve.add_argument("--versions", default="latest",
                       help="versions of each registry name: latest, all, or numbers like 1,3 (TF Serving's "
                            "model_version_policy)")
    serve.add_argument("--grpc-port", type=int, default=8500, help="gRPC port (0: any free port)")
    serve.add_argument("--http-port", type=int, default=8501, help="HTTP port (0: any free port)")
    serve.add_argument("--no-grpc", action="store_true", help="serve no gRPC")
    serve.add_argument("--no-http", action="store_true", help="serve no HTTP")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (0.0.0.0: every interface; then use TLS and a token)")
    serve.add_argument("--backend", choices=("sim", "rtl"), default="sim", help="NPU backend")
    serve.add_argument("--workers", type=int, default=1, help="NPU sessions (instances) of the model")
    serve.add_argument("--threads", type=int, default=16, help="gRPC handler threads")
    serve.add_argument("--max-message-mb", type=float, default=64, help="largest request or reply")
    serve.add_argument("--max-concurrent", type=int, default=64,
                       help="requests handled at once; more are refused (RESOURCE_EXHAUSTED / 503)")
    serve.add_argument("--drain-seconds", type=float, default=30, help="how long SIGTERM waits for requests in flight")
    serve.add_argument("--max-request-mb", type=float, default=16,
                       help="decoded inputs and outputs of one request (a batch counts whole)")
    serve.add_argument("--max-json-mb", type=float, default=16, help="largest JSON request body")
    serve.add_argument("--max-image-pixels", type=int, default=6 * 1024 * 1024, help="largest image, in pixels")
    serve.add_argument("--max-connections", type=int, default=256, help="HTTP connections at once; more get 503")
    serve.add_argument("--read-timeout", type=float, default=30,
                       help="seconds an HTTP client may take to send a request's head, and again its body")
    serve.add_argument("--tls-cert", metavar="PEM", help="certificate chain: serve gRPC and HTTP over TLS")
    serve.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")
    serve.add_argument("--tls-client-ca", metavar="PEM", help="require client certificates signed by this CA")
    serve.add_argument("--auth-token", default=None,
                       help="require 'authorization: Bearer TOKEN' on every call but health checks (default: "
                            "$NPU_AUTH_TOKEN; prefer the variable, a command line is visible to other users)")
    _store_arg(serve)
    serve.set_defaults(func=cmd_serve)

    # -- predict ---------------------------------------------------------------
    predict = _parser(subparsers, "predict", "classify images with a served (or local) model; prints the top 5",
                      "  npu predict --server localhost:8500 cat.jpg\n"
                      "  npu predict --server localhost:8500 --model resnet50 --json cat.jpg dog.png\n"
                      "  npu predict --local resnet50.npu cat.jpg\n"
                      "  npu predict --server localhost:8500 "
                      "$(python -c 'import sklearn.datasets as d, os; print(os.path.dirname(d.__file__))')"
                      "/images/china.jpg\n")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG or PNG files")
    where = predict.add_mutually_exclusive_group()
    where.add_argument("--server", default="localhost:8500", help="HOST:PORT of a TF Serving gRPC endpoint")
    where.add_argument("--local", metavar="MODEL", help="run in-process instead: a .npu file or NAME[:VERSION]")
    predict.add_argument("--model", default="", help="model name on the server (default: its default model)")
    predict.add_argument("--input", default="images", help="input alias that takes encoded images")
    predict.add_argument("--output", default=None, help="output alias with class scores (default: guessed)")
    predict.add_argument("--labels", default="imagenet", help="'imagenet', a file with one label per line, or 'none'")
    predict.add_argument("--top", type=int, default=5, help="how many classes to print")
    predict.add_argument("--timeout", type=float, default=30, help="seconds per request")
    predict.add_argument("--ssl", action="store_true", help="use TLS")
    predict.add_argument("--ca-cert", metavar="PEM", help="CA that signed the server's certificate (implies --ssl)")
    predict.add_argument("--token", default=None, help="bearer token (default: $NPU_AUTH_TOKEN)")
    predict.add_argument("--json", action="store_true", help="print JSON")
    predict.add_argument("--backend", choices=("sim", "rtl"), default="sim", help="backend for --local")
    _store_arg(predict)
    predict.set_defaults(func=cmd_predict)


# -- models ------------------------------------------------------------------

def _compile(path: str, **options) -> bytes:
    from compiler import compile_model  # only when an .onnx is registered: the compiler is slow to import

    return compile_model(path, **options)


def _registry(args):
    from runtime.registry import Registry

    return Registry(args.store, compiler=_compile)


def cmd_models_register(args) -> int:
    record = _registry(args).register(args.file, args.name, config=args.config, tags=args.tag,
                                      description=args.description)
    print(f"registered {record.ref} ({record.size} bytes, sha256 {record.sha256[:12]})")
    return 0


def cmd_models_list(args) -> int:
    records = _registry(args).list(args.name)
    if args.json:
        print(json.dumps([r.to_dict() for r in records], indent=1))
        return 0
    if not records:
        print("no models registered" + (f" under {args.name!r}" if args.name else ""))
        return 0
    rows = [("NAME", "VERSION", "CONFIG", "SIZE", "CREATED", "TAGS")]
    for r in records:
        rows.append((r.name, str(r.version), r.config or "-", f"{r.size / 1024:.0f} KiB",
                     time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created)), ",".join(r.tags)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def cmd_models_show(args) -> int:
    registry = _registry(args)
    record = registry.resolve(args.ref)
    model = registry.open(record)
    info = dict(record.to_dict(), path=str(registry.path(record)),
                inputs=model.manifest.get("inputs"), outputs=model.manifest.get("outputs"),
                preprocessing=model.manifest.get("preprocessing", {}), config_name=record.config)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"{record.ref}  {record.description}".rstrip())
    print(f"  file:          {info['path']} ({record.size} bytes)")
    print(f"  sha256:        {record.sha256}")
    print(f"  config:        {record.config or '-'}")
    print(f"  tags:          {', '.join(record.tags) or '-'}")
    print(f"  registered:    {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(record.created))} from {record.source}")
    for kind in ("inputs", "outputs"):
        for spec in info[kind] or []:
            print(f"  {kind[:-1]:<7}        {spec['name']}  {spec.get('dtype', 'float32')} {spec['shape']}")
    if info["preprocessing"]:
        print(f"  preprocessing: {json.dumps(info['preprocessing'])}")
    return 0


def cmd_models_delete(args) -> int:
    for record in _registry(args).delete(args.ref):
        print(f"deleted {record.ref}")
    return 0


def cmd_models_gc(args) -> int:
    removed = _registry(args).gc()
    for path in removed:
        print(f"removed {path}")
    print(f"{len(removed)} file(s) removed")
    return 0


# -- serve -------------------------------------------------------------------

def cmd_serve(args) -> int:
    import logging

    from runtime.server import ServeConfig, serve
    from runtime.service import TlsFiles

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.no_grpc and args.no_http:
        raise NpuError("--no-grpc and --no-http together leave nothing to serve")
    if not args.models and not args.all:
        raise NpuError("name the models to serve (.npu files or registry names), or give --all")
    if bool(args.tls_cert) != bool(args.tls_key) or (args.tls_client_ca and not args.tls_cert):
        raise NpuError("--tls-cert and --tls-key go together (and --tls-client-ca needs them)")
    tls = TlsFiles(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None
    config = ServeConfig(host=args.host, grpc_port=None if args.no_grpc else args.grpc_port,
                         http_port=None if args.no_http else args.http_port, backend=args.backend,
                         workers=args.workers, threads=args.threads, max_message_mb=args.max_message_mb,
                         max_request_mb=args.max_request_mb, max_json_mb=args.max_json_mb,
                         max_image_pixels=args.max_image_pixels, max_connections=args.max_connections,
                         read_timeout_s=args.read_timeout, max_concurrent=args.max_concurrent,
                         drain_seconds=args.drain_seconds, versions=args.versions, tls=tls,
                         auth_token=args.auth_token or os.environ.get("NPU_AUTH_TOKEN") or None)
    try:
        return serve(args.models, config, store=args.store, ready=lambda line: print(line, flush=True),
                     every_registered=args.all)
    except OSError as exc:
        raise NpuError(f"cannot start the server: {exc}") from None


# -- predict -----------------------------------------------------------------

def _labels(spec: str, classes: int):
    from runtime.labels import imagenet_classes

    if spec == "none":
        return None
    if spec == "imagenet":
        names = imagenet_classes()
        if classes == 1001:  # TF-slim models put "background" at 0
            return ("background",) + names
        return names if classes == 1000 else None
    return tuple(line.strip() for line in Path(spec).read_text().splitlines() if line.strip())


def _pick_output(outputs: dict) -> str:
    names = sorted(outputs)
    for hint in ("prob", "softmax", "score", "logit", "output"):
        for name in names:
            if hint in name.lower():
                return name
    return names[0]


def cmd_predict(args) -> int:
    from runtime.labels import top_k

    for image in args.images:
        if not Path(image).is_file():
            raise NpuError(f"{image}: no such file")
    results = []
    if args.local:
        import numpy as np

        from runtime.preprocess import ImageConfig, images_to_tensor
        from runtime.session import load

        session = load(args.local, args.backend, store=args.store)
        config = ImageConfig.from_manifest(session.manifest, session.inputs[0])
        if config is None:
            raise NpuError(f"{args.local}: the model has no image pre-processing in its manifest")
        for image in args.images:
            batch = images_to_tensor(np.array([Path(image).read_bytes()], dtype=object), config)
            outputs = session.run({session.inputs[0].name: batch})
            name = args.output or _pick_output(outputs)
            results.append((image, name, outputs[name][0]))
    else:
        import grpc

        from runtime.client import PredictionClient

        host, _, port = args.server.rpartition(":")
        if not host or not port.isdigit():
            raise NpuError(f"--server must be HOST:PORT, not {args.server!r}")
        token = args.token or os.environ.get("NPU_AUTH_TOKEN") or ""
        try:
            client = PredictionClient(host, int(port), use_ssl=args.ssl or bool(args.ca_cert), model_name=args.model,
                                      access_token=token, root_certificates=args.ca_cert)
        except (ValueError, OSError) as exc:
            raise NpuError(str(exc)) from None
        with client:
            for image in args.images:
                try:
                    if args.output:
                        scores = client.score_file(image, args.input, args.output, args.timeout)
                        name = args.output
                    else:
                        request = client._request()
                        request.inputs[args.input].CopyFrom(_string_tensor(Path(image).read_bytes()))
                        response = client.predict(request, args.timeout)
                        name = _pick_output(response.outputs)
                        from runtime.tensors import tensor_proto_to_numpy

                        scores = tensor_proto_to_numpy(response.outputs[name])[0]
                except grpc.RpcError as exc:
                    raise NpuError(f"{args.server}: {exc.code().name}: {exc.details()}") from None
                results.append((image, name, scores))
    report = []
    for image, name, scores in results:
        labels = _labels(args.labels, int(scores.size))
        top = top_k(scores, args.top, labels)
        report.append({"image": image, "output": name,
                       "top": [{"class": i, "label": label, "confidence": round(c, 6)} for i, label, c in top]})
    if args.json:
        print(json.dumps(report if len(report) > 1 else report[0], indent=1))
        return 0
    for entry in report:
        print(f"{entry['image']}  ({entry['output']})")
        for t in entry["top"]:
            print(f"  {t['confidence'] * 100:6.2f}%  {t['label']}  [{t['class']}]")
    sys.stdout.flush()
    return 0


def _string_tensor(data: bytes):
    from runtime.tensors import make_tensor_proto
    import numpy as np

    return make_tensor_proto(np.array([data], dtype=object))
