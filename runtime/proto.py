"""Message classes and gRPC plumbing built from the `.proto` files in runtime/protos/.

The `.proto` files are the one description of the wire formats (TensorFlow
Serving's and KServe v2's, same packages, names and field numbers as the
published ones).  They are compiled with grpcio-tools' bundled ``protoc`` the
first time they are needed, into a descriptor set cached on disk (keyed by the
files' contents and the protobuf version), so a fresh ``pip install -e .`` needs
no build step and an edited ``.proto`` is picked up on the next start.

The descriptors are loaded into a private :class:`DescriptorPool`, not the
process-wide default one, because tritonclient registers its own copy of the
``inference`` package there and two copies of one symbol in a pool is an
error.  Services are served and called through gRPC's generic handlers and
``channel.unary_unary``, which only need a method path and (de)serializers.

:func:`generate_python_stubs` writes ordinary ``*_pb2.py`` / ``*_pb2_grpc.py``
modules for clients that want them.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent / "protos"

TF_SERVING_FILES = (
    "tensorflow_serving/apis/prediction_service.proto",
    "tensorflow_serving/apis/model_service.proto",
)
KSERVE_FILES = ("kserve/grpc_predict_v2.proto",)

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
INFERENCE_SERVICE = "inference.GRPCInferenceService"

_lock = threading.Lock()
_pool = None


class ProtoBuildError(RuntimeError):
    """protoc could not compile runtime/protos (a broken install or an edited .proto)."""


def _protoc(args: list[str]) -> None:
    from importlib import resources

    from grpc_tools import protoc

    well_known = str(resources.files("grpc_tools") / "_proto")
    code = protoc.main(["protoc", f"-I{PROTO_DIR}", f"-I{well_known}", *args])
    if code != 0:
        raise ProtoBuildError(f"protoc failed (exit {code}) compiling {PROTO_DIR}: see the messages above")


def _all_files() -> list[str]:
    return sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))


def _cache_dir() -> Path:
    base = os.environ.get("NPU_PROTO_CACHE")
    if base:
        return Path(base)
    home = os.environ.get("NPU_HOME")
    if home:
        return Path(home) / "cache" / "protos"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "npu" / "protos"


def descriptor_set() -> bytes:
    """The serialized FileDescriptorSet of every runtime proto (compiled once, then cached)."""
    import google.protobuf

    files = _all_files()
    digest = hashlib.sha256(google.protobuf.__version__.encode())
    for name in files:
        digest.update(name.encode() + b"\0" + (PROTO_DIR / name).read_bytes())
    key = digest.hexdigest()[:16]
    for directory in (_cache_dir(), Path(tempfile.gettempdir()) / "npu-protos"):
        cached = directory / f"runtime-{key}.pb"
        if cached.exists():
            return cached.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        _protoc(["--include_imports", f"--descriptor_set_out={out}", *files])
        data = out.read_bytes()
    # The cache is an optimisation: an unwritable home only costs a recompile.
    for directory in (_cache_dir(), Path(tempfile.gettempdir()) / "npu-protos"):
        try:
            directory.mkdir(parents=True, exist_ok=True)
            tmp_path = directory / f".runtime-{key}.{os.getpid()}.tmp"
            tmp_path.write_bytes(data)
            tmp_path.replace(directory / f"runtime-{key}.pb")
            break
        except OSError:
            continue
    return data


def pool():
    """The private descriptor pool holding every runtime message and service."""
    global _pool
    with _lock:
        if _pool is None:
            from google.protobuf import descriptor_pb2, descriptor_pool

            fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set())
            p = descriptor_pool.DescriptorPool()
            for fd in fds.file:
                p.Add(fd)
            _pool = p
        return _pool


_classes: dict[str, type] = {}


def message(full_name: str) -> type:
    """The message class of ``full_name``, e.g. ``message("tensorflow.serving.PredictRequest")``."""
    cls = _classes.get(full_name)
    if cls is None:
        from google.protobuf import message_factory

        cls = message_factory.GetMessageClass(pool().FindMessageTypeByName(full_name))
        _classes[full_name] = cls
    return cls


def _methods(service: str):
    return pool().FindServiceByName(service).methods


class Undecodable:
    """What a request that does not parse as its message type becomes (answered INVALID_ARGUMENT, not logged
    with a traceback by gRPC's deserializer)."""

    def __init__(self, type_name: str):
        self.type_name = type_name


def _safe_parser(cls):
    from google.protobuf.message import DecodeError

    def parse(data: bytes):
        try:
            return cls.FromString(data)
        except (DecodeError, RecursionError, ValueError):
            return Undecodable(cls.DESCRIPTOR.full_name)
    return parse


def generic_handler(service: str, implementation, unimplemented: str = ""):
    """A gRPC generic handler serving every method of ``service``.

    ``implementation`` has one ``Method(request, context)`` per rpc; a missing
    method answers UNIMPLEMENTED with ``unimplemented`` as the detail, a request
    that is not a valid message INVALID_ARGUMENT.
    """
    import grpc

    def guarded(func):
        def call(request, context):
            if isinstance(request, Undecodable):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid {request.type_name}")
            return func(request, context)
        return call

    handlers = {}
    for method in _methods(service):
        request_cls = message(method.input_type.full_name)
        response_cls = message(method.output_type.full_name)
        func = getattr(implementation, method.name, None)
        if func is None:
            def func(request, context, _name=method.name):
                context.abort(grpc.StatusCode.UNIMPLEMENTED,
                              f"{service}/{_name} is not implemented by this server{unimplemented}")
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            guarded(func), request_deserializer=_safe_parser(request_cls),
            response_serializer=response_cls.SerializeToString)
    return grpc.method_handlers_generic_handler(service, handlers)


class Stub:
    """A client stub for ``service`` on ``channel``: one callable attribute per rpc."""

    def __init__(self, channel, service: str):
        for method in _methods(service):
            setattr(self, method.name, channel.unary_unary(
                f"/{service}/{method.name}",
                request_serializer=message(method.input_type.full_name).SerializeToString,
                response_deserializer=message(method.output_type.full_name).FromString))


def generate_python_stubs(out_dir: str | Path, files: tuple[str, ...] = TF_SERVING_FILES) -> Path:
    """Write ``*_pb2.py`` and ``*_pb2_grpc.py`` for ``files`` (and their imports) into ``out_dir``.

    Put ``out_dir`` on ``sys.path`` and ``from tensorflow_serving.apis import
    predict_pb2`` works as with the official package.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wanted = set(files)
    # The imports have to be generated too; follow them through the descriptor set.
    from google.protobuf import descriptor_pb2

    fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set())
    by_name = {fd.name: fd for fd in fds.file}
    todo = list(files)
    while todo:
        for dep in by_name[todo.pop()].dependency:
            if dep in by_name and not dep.startswith("google/") and dep not in wanted:
                wanted.add(dep)
                todo.append(dep)
    _protoc([f"--python_out={out}", f"--grpc_python_out={out}", *sorted(wanted)])
    return out
