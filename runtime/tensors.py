"""numpy <-> wire tensors: TensorFlow's TensorProto and KServe v2 tensors.

One table per protocol maps the numpy dtype to the protocol's type and to the
typed field that carries it; every converter reads those tables.
"""
from __future__ import annotations

import math
import struct

import numpy as np

from runtime import proto
from runtime.errors import InvalidRequest

# numpy dtype name -> (TF DataType name, TensorProto typed field)
TF_TYPES = {
    "float32": ("DT_FLOAT", "float_val"),
    "float64": ("DT_DOUBLE", "double_val"),
    "float16": ("DT_HALF", "half_val"),
    "int32": ("DT_INT32", "int_val"),
    "int16": ("DT_INT16", "int_val"),
    "int8": ("DT_INT8", "int_val"),
    "uint8": ("DT_UINT8", "int_val"),
    "uint16": ("DT_UINT16", "int_val"),
    "int64": ("DT_INT64", "int64_val"),
    "uint32": ("DT_UINT32", "uint32_val"),
    "uint64": ("DT_UINT64", "uint64_val"),
    "bool": ("DT_BOOL", "bool_val"),
    "object": ("DT_STRING", "string_val"),
}

# numpy dtype name -> (KServe v2 datatype, InferTensorContents field)
V2_TYPES = {
    "bool": ("BOOL", "bool_contents"),
    "uint8": ("UINT8", "uint_contents"),
    "uint16": ("UINT16", "uint_contents"),
    "uint32": ("UINT32", "uint_contents"),
    "uint64": ("UINT64", "uint64_contents"),
    "int8": ("INT8", "int_contents"),
    "int16": ("INT16", "int_contents"),
    "int32": ("INT32", "int_contents"),
    "int64": ("INT64", "int64_contents"),
    "float16": ("FP16", None),
    "float32": ("FP32", "fp32_contents"),
    "float64": ("FP64", "fp64_contents"),
    "object": ("BYTES", "bytes_contents"),
}
V2_TO_NUMPY = {v2: np.dtype(name) for name, (v2, _) in V2_TYPES.items()}


def _dtype_name(array: np.ndarray) -> str:
    if array.dtype.kind in "SUO":
        return "object"
    return array.dtype.name


def element_count(shape: tuple[int, ...], what: str = "tensor") -> int:
    """Elements of ``shape``, computed in Python integers (no overflow); InvalidRequest for a negative size."""
    if any(not isinstance(d, int) or d < 0 for d in shape):
        raise InvalidRequest(f"{what}: shape {list(shape)[:8]} must be non-negative integers")
    return math.prod(shape)


def check_size(shape: tuple[int, ...], itemsize: int, limit: int | None, what: str = "tensor") -> int:
    """Bytes that ``shape`` of ``itemsize`` would take; InvalidRequest, before anything is allocated, past ``limit``."""
    nbytes = element_count(shape, what) * itemsize
    if limit is not None and nbytes > limit:
        raise InvalidRequest(f"{what}: shape {list(shape)[:8]} needs {nbytes} bytes, more than the server's "
                             f"per-request limit of {limit} bytes")
    return nbytes


def _check_count(what: str, count: int, shape: tuple[int, ...]) -> None:
    expected = element_count(shape, what)
    if count != expected:
        raise InvalidRequest(f"{what}: holds {count} values but its shape {list(shape)} needs {expected}")


def _to_bytes_array(values, shape) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = [bytes(v) for v in values]
    return array.reshape(shape)


# -- TensorFlow TensorProto ---------------------------------------------------

def tf_dtype_enum(dtype_name: str) -> int:
    return proto.pool().FindEnumTypeByName("tensorflow.DataType").values_by_name[TF_TYPES[dtype_name][0]].number


def _tf_enum_name(value: int) -> str:
    enum = proto.pool().FindEnumTypeByName("tensorflow.DataType")
    found = enum.values_by_number.get(value)
    return found.name if found else str(value)


def make_tensor_proto(value, dtype: str | None = None, *, content: bool = False):
    """A ``tensorflow.TensorProto`` holding ``value`` (typed ``*_val`` fields, or
    ``tensor_content`` when ``content`` is true; strings always use ``string_val``)."""
    if dtype is not None and dtype != "object":
        array = np.asarray(value, dtype=dtype)
    else:
        array = np.asarray(value)
    name = _dtype_name(array)
    if name not in TF_TYPES:
        raise InvalidRequest(f"numpy dtype {array.dtype} has no TensorFlow DataType here")
    tensor = proto.message("tensorflow.TensorProto")()
    tensor.dtype = tf_dtype_enum(name)
    for size in array.shape:
        tensor.tensor_shape.dim.add().size = int(size)
    field = TF_TYPES[name][1]
    if name == "object":
        tensor.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1))
    elif content:
        tensor.tensor_content = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
    elif name == "float16":
        tensor.half_val.extend(array.reshape(-1).view(np.uint16).astype(np.int32).tolist())
    else:
        getattr(tensor, field).extend(array.reshape(-1).tolist())
    return tensor


def tensor_proto_shape(tensor, what: str = "tensor") -> tuple[tuple[int, ...], str]:
    """The declared shape and numpy dtype name of a ``tensorflow.TensorProto``, before its values are read."""
    shape = tuple(int(d.size) for d in tensor.tensor_shape.dim)
    if any(s < 0 for s in shape):
        raise InvalidRequest(f"{what}: shape {list(shape)[:8]} has an unknown (-1) dimension")
    dt = _tf_enum_name(tensor.dtype)
    if dt not in _TF_NAMES:
        raise InvalidRequest(f"{what}: dtype {dt} is not supported; use one of " + ", ".join(sorted(_TF_NAMES)))
    return shape, _TF_NAMES[dt][0]


def tensor_proto_to_numpy(tensor, what: str = "tensor", limit: int | None = None) -> np.ndarray:
    """The array a ``tensorflow.TensorProto`` holds; InvalidRequest if it is inconsistent or, declared
    shape times dtype, larger than ``limit`` bytes (checked before anything is allocated)."""
    shape, np_name = tensor_proto_shape(tensor, what)
    field = TF_TYPES[np_name][1]
    if np_name == "object":
        values = list(tensor.string_val)
        if len(values) == 1 and element_count(shape, what) != 1 and tensor.version_number == 0:
            check_size(shape, len(values[0]) + 64, limit, what)
            values = values * element_count(shape, what)
        _check_count(what, len(values), shape)
        return _to_bytes_array(values, shape)
    dtype = np.dtype(np_name)
    check_size(shape, dtype.itemsize, limit, what)
    if tensor.tensor_content:
        if len(tensor.tensor_content) % dtype.itemsize:
            raise InvalidRequest(f"{what}: tensor_content of {len(tensor.tensor_content)} bytes is not a "
                                 f"whole number of {np_name} values")
        flat = np.frombuffer(tensor.tensor_content, dtype=dtype.newbyteorder("<")).astype(dtype)
    else:
        raw = getattr(tensor, field)
        if np_name == "float16":
            flat = np.asarray(raw, dtype=np.int32).astype(np.uint16).view(np.float16)
        else:
            flat = np.asarray(raw, dtype=dtype)
        count = element_count(shape, what)
        if flat.size == 1 and count != 1:
            flat = np.full(count, flat[0], dtype=dtype)  # version 0: one value fills the shape
    _check_count(what, flat.size, shape)
    return flat.reshape(shape)


_TF_NAMES = {tf: (np_name, field) for np_name, (tf, field) in TF_TYPES.items()}


# -- KServe v2 ----------------------------------------------------------------

def v2_datatype(dtype_name: str) -> str:
    return V2_TYPES["object" if dtype_name in ("object", "bytes", "str") else dtype_name][0]


def numpy_dtype(datatype: str, what: str = "tensor") -> np.dtype:
    try:
        return V2_TO_NUMPY[datatype]
    except KeyError:
        raise InvalidRequest(f"{what}: datatype {datatype!r} is not one of {', '.join(V2_TO_NUMPY)}") from None


def serialize_bytes(array: np.ndarray) -> bytes:
    """BYTES tensor -> v2 raw form: each element as a 4-byte little-endian length and its bytes."""
    out = bytearray()
    for item in np.asarray(array, dtype=object).reshape(-1):
        data = item if isinstance(item, bytes) else str(item).encode()
        out += struct.pack("<I", len(data)) + data
    return bytes(out)


def deserialize_bytes(raw: bytes, shape: tuple[int, ...], what: str = "tensor") -> np.ndarray:
    items, pos = [], 0
    if element_count(shape, what) * 4 > len(raw):
        raise InvalidRequest(f"{what}: shape {list(shape)[:8]} needs more BYTES elements than {len(raw)} bytes hold")
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise InvalidRequest(f"{what}: BYTES data ends inside a length prefix")
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + n > len(raw):
            raise InvalidRequest(f"{what}: BYTES element of {n} bytes runs past the end of the data")
        items.append(raw[pos:pos + n])
        pos += n
    _check_count(what, len(items), shape)
    return _to_bytes_array(items, shape)


def raw_to_numpy(raw: bytes, datatype: str, shape: tuple[int, ...], what: str = "tensor") -> np.ndarray:
    """v2 raw (binary) contents -> array (never larger than ``raw``)."""
    dtype = numpy_dtype(datatype, what)
    if datatype == "BYTES":
        return deserialize_bytes(raw, shape, what)
    expected = check_size(shape, dtype.itemsize, None, what)
    if len(raw) != expected:
        raise InvalidRequest(f"{what}: {len(raw)} bytes of {datatype} data, but shape {list(shape)} "
                             f"needs {expected}")
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)


def numpy_to_raw(array: np.ndarray) -> bytes:
    if _dtype_name(array) == "object":
        return serialize_bytes(array)
    return np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()


def contents_to_numpy(contents, datatype: str, shape: tuple[int, ...], what: str = "tensor") -> np.ndarray:
    """v2 typed ``InferTensorContents`` -> array."""
    dtype = numpy_dtype(datatype, what)
    field = V2_TYPES[_dtype_name(np.empty(0, dtype))][1]
    if field is None:
        raise InvalidRequest(f"{what}: {datatype} data must be sent as raw contents")
    values = list(getattr(contents, field))
    _check_count(what, len(values), shape)
    if datatype == "BYTES":
        return _to_bytes_array(values, shape)
    return np.asarray(values, dtype=dtype).reshape(shape)


def v2_json_to_numpy(data, datatype: str, shape: tuple[int, ...], what: str = "tensor") -> np.ndarray:
    """The ``data`` of a v2 JSON input (flat or nested, row-major) -> array (as many elements as ``data`` has)."""
    dtype = numpy_dtype(datatype, what)
    if not isinstance(data, list):
        raise InvalidRequest(f"{what}: data must be a list")
    if datatype == "BYTES":
        try:
            flat = np.asarray(data, dtype=object).reshape(-1)
        except ValueError as exc:
            raise InvalidRequest(f"{what}: data is not a rectangular list: {exc}") from None
        items = [v.encode("utf-8") if isinstance(v, str) else v for v in flat]
        if any(not isinstance(v, bytes) for v in items):
            raise InvalidRequest(f"{what}: BYTES data must be strings")
        _check_count(what, len(items), shape)
        return _to_bytes_array(items, shape)
    try:
        array = np.asarray(data, dtype=dtype).reshape(-1)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"{what}: data is not a list of {datatype} numbers: {exc}") from None
    _check_count(what, array.size, shape)
    return array.reshape(shape)
