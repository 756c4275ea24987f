"""ONNX in, :class:`compiler.ir.Graph` out.

Loads a path, bytes or ``onnx.ModelProto`` (with external data), fixes
dynamic input dimensions from ``input_shapes``, runs ``onnx.checker`` and
shape inference, and turns every initializer and ``Constant`` into a constant
:class:`~compiler.ir.Tensor`.  Every problem is a :class:`CompileError` that
says how to fix it.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from compiler.ir import Graph, Node, Tensor
from npu.errors import CompileError

MIN_OPSET = 9


def parse_input_shapes(specs) -> dict[str, tuple[int, ...]]:
    """``["input=1,3,224,224", ...]`` (or a dict) -> {name: shape}."""
    if not specs:
        return {}
    if isinstance(specs, dict):
        return {k: tuple(int(d) for d in v) for k, v in specs.items()}
    out = {}
    for spec in specs:
        name, sep, dims = str(spec).rpartition("=")
        try:
            shape = tuple(int(d) for d in dims.replace("x", ",").split(",") if d.strip())
        except ValueError:
            shape = ()
        if not sep or not name or not shape or min(shape) <= 0:
            raise CompileError(f"--input-shape {spec!r} is not NAME=D1,D2,... with positive dimensions",
                               hint="e.g. --input-shape input=1,3,224,224")
        out[name] = shape
    return out


def load_model(source, input_shapes=None) -> onnx.ModelProto:
    """Read, fix input shapes, check and shape-infer an ONNX model."""
    if isinstance(source, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(source)
        base_dir = None
    else:
        try:
            if isinstance(source, (bytes, bytearray)):
                model = onnx.load_from_string(bytes(source))
                base_dir = None
            else:
                path = Path(os.fspath(source))
                if not path.exists():
                    raise CompileError(f"{path}: no such file")
                model = onnx.load(str(path), load_external_data=False)
                base_dir = str(path.parent)
        except CompileError:
            raise
        except Exception as exc:  # protobuf raises DecodeError and friends
            raise CompileError(f"{source if not isinstance(source, bytes) else '<bytes>'}: not a valid ONNX model "
                               f"({type(exc).__name__}: {exc})", hint="check the file is a complete .onnx export") from None
    if base_dir is not None:
        try:
            onnx.external_data_helper.load_external_data_for_model(model, base_dir)
        except (OSError, ValueError) as exc:
            raise CompileError(f"cannot load the model's external data: {exc}",
                               hint="keep the .onnx file next to its external data files") from None
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset < MIN_OPSET:
        raise CompileError(f"model uses ONNX opset {opset}; the compiler needs opset >= {MIN_OPSET}",
                           hint="re-export with a newer opset or run onnx.version_converter.convert_version")
    _fix_input_shapes(model, parse_input_shapes(input_shapes))
    skeleton, big = _without_large_initializers(model)
    try:
        onnx.checker.check_model(skeleton)
    except onnx.checker.ValidationError as exc:
        raise CompileError(f"the model fails onnx.checker: {str(exc).splitlines()[0]}",
                           hint="re-export the model, or fix it with onnx tools") from None
    return infer_shapes(model, skeleton)


def infer_shapes(model: onnx.ModelProto, skeleton: onnx.ModelProto | None = None) -> onnx.ModelProto:
    """The model's value_info and outputs from ONNX shape inference on ``skeleton`` (the model without its big
    weights; made here when not given), then shapes by execution where inference stops. Returns ``model``.
    Passes that rewrite the ModelProto (compiler/passes/recurrent_loops.py) call it again."""
    if skeleton is None:
        skeleton, _ = _without_large_initializers(model)
    try:
        inferred = shape_inference.infer_shapes(skeleton, data_prop=True)
    except Exception as exc:
        raise CompileError(f"ONNX shape inference failed: {str(exc).splitlines()[0]}") from None
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    del model.graph.output[:]
    model.graph.output.extend(inferred.graph.output)
    _shapes_by_execution(model)
    return model


def _static(vi) -> bool:
    tt = vi.type.tensor_type
    return vi.type.HasField("tensor_type") and tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim)


def _shapes_by_execution(model: onnx.ModelProto) -> None:
    """Fill shapes ONNX shape inference leaves open (after ai.onnx.ml operators, say) by running
    onnxruntime on two different feeds (zeros, then seeded random values).

    Only a shape both runs agree on, with no zero-size dimension, is recorded: a shape that depends
    on the input's values (a Range up to a computed bound, NonZero, a data-dependent Reshape) is not
    static, and recording the one that zeros give would make later passes lay out the wrong sizes.
    Those tensors keep an unknown shape and their readers run on the host."""
    infos = {vi.name: vi for vi in list(model.graph.value_info) + list(model.graph.output)}
    missing = []
    for node in model.graph.node:
        for o in node.output:
            vi = infos.get(o)
            if o and (vi is None or not _static(vi)):
                missing.append(o)
    if not missing:
        return
    runs = None
    for guess_float in (True, False):
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        known_outputs = {o.name for o in probe.graph.output}
        typed = []
        for name in missing:
            vi = infos.get(name)
            if name in known_outputs:
                typed.append(name)
            elif vi is not None and vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
                probe.graph.output.append(helper.make_tensor_value_info(name, vi.type.tensor_type.elem_type, None))
                typed.append(name)
            elif vi is None and guess_float:
                probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
                typed.append(name)
        if not typed:
            return
        try:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.log_severity_level = 4
            sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
            runs = [sess.run(typed, feeds) for feeds in _probe_feeds(model)]
            break
        except Exception:
            continue
    if runs is None:
        return  # shapes stay unknown; those nodes run on the host
    outputs = {o.name for o in model.graph.output}
    for k, name in enumerate(typed):
        values = [r[k] for r in runs]
        if not all(isinstance(v, np.ndarray) for v in values):
            continue
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) != 1 or 0 in values[0].shape:
            continue  # depends on the input's values (or is empty): not a static shape
        v = values[0]
        vi = infos.get(name)
        elem = vi.type.tensor_type.elem_type if vi is not None else helper.np_dtype_to_tensor_dtype(v.dtype)
        new = helper.make_tensor_value_info(name, elem, list(v.shape))
        if vi is not None:
            vi.CopyFrom(new)
        elif name not in outputs:
            model.graph.value_info.append(new)


def _probe_feeds(model: onnx.ModelProto) -> list[dict]:
    """Zeros, then seeded values: floats N(0, 1) + 2 (nonzero, not all alike), integers in 1..3."""
    rng = np.random.default_rng(12345)
    inits = {i.name for i in model.graph.initializer}
    zeros, other = {}, {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        shape = [d.dim_value for d in tt.shape.dim]
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        zeros[vi.name] = np.zeros(shape, dtype)
        if dtype.kind == "f":
            other[vi.name] = (rng.standard_normal(shape) + 2.0).astype(dtype)
        elif dtype.kind == "b":
            other[vi.name] = np.ones(shape, dtype)
        elif dtype.kind in "iu":
            other[vi.name] = rng.integers(1, 4, size=shape).astype(dtype)
        else:
            other[vi.name] = zeros[vi.name]
    return [zeros, other]


LARGE_INITIALIZER = 4096  # elements; smaller ones (shapes, axes) stay for shape inference's data propagation


def _without_large_initializers(model: onnx.ModelProto):
    """A copy whose big weights are graph inputs of the same type and shape.

    The checker and shape inference serialize the whole model; weights only
    cost time there (seconds for ResNet-152), so they see declarations instead.
    """
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)
    keep, big = [], []
    for init in skeleton.graph.initializer:
        (big if np.prod(init.dims, dtype=np.int64) > LARGE_INITIALIZER else keep).append(init)
    if not big:
        return skeleton, big
    declared = {i.name for i in skeleton.graph.input}
    del skeleton.graph.initializer[:]
    skeleton.graph.initializer.extend(keep)
    for init in big:
        if init.name not in declared:
            skeleton.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    return skeleton, big


def _fix_input_shapes(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> None:
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    names = {i.name for i in inputs}
    for name in shapes:
        if name not in names:
            raise CompileError(f"--input-shape names {name!r}, which is not a model input",
                               hint=f"inputs: {', '.join(sorted(names))}")
    for vi in inputs:
        tt = vi.type.tensor_type
        if vi.name in shapes:
            shape = shapes[vi.name]
            if tt.HasField("shape") and len(tt.shape.dim) != len(shape):
                raise CompileError(f"--input-shape gives {vi.name!r} {len(shape)} dimensions, the model has "
                                   f"{len(tt.shape.dim)}")
            for d, s in zip(tt.shape.dim, shape) if tt.HasField("shape") else ():
                if d.HasField("dim_value") and d.dim_value > 0 and d.dim_value != s:
                    raise CompileError(f"--input-shape {vi.name}: dimension {d.dim_value} is fixed in the model, "
                                       f"not {s}")
            tt.ClearField("shape")
            tt.shape.dim.extend([onnx.TensorShapeProto.Dimension(dim_value=s) for s in shape])
            continue
        if not tt.HasField("shape"):
            raise CompileError(f"input {vi.name!r} has no shape",
                               hint=f"give one with --input-shape {vi.name}=1,3,224,224")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
        if 0 in dims:
            shown = ",".join(str(d) if d >= 0 else "?" for d in dims)
            raise CompileError(f"input {vi.name!r} of shape [{shown}] has a zero-size dimension (dimension "
                               f"{dims.index(0)}): it holds no data",
                               hint=f"give every dimension a positive size, e.g. --input-shape {vi.name}="
                                    + ",".join(str(d) if d > 0 else "1" for d in dims))
        if any(d < 0 for d in dims):
            shown = ",".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?")
                             for d in tt.shape.dim)
            raise CompileError(f"input {vi.name!r} has a dynamic shape [{shown}]; the NPU needs static shapes",
                               hint=f"fix it with --input-shape {vi.name}=" + ",".join(
                                   str(d) if d > 0 else "1" for d in dims))


def _attr_value(a: onnx.AttributeProto):
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, onnx.TensorProto):
        return numpy_helper.to_array(v)
    if isinstance(v, list) and v and isinstance(v[0], bytes):
        return [x.decode() for x in v]
    return v


def _np_dtype(elem_type: int) -> str:
    try:
        return str(np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)))
    except Exception:
        return "float32"


#: The largest tensor the compiler takes (the largest preset's vector DRAM holds 2**18 x 400 elements).
MAX_TENSOR_ELEMENTS = 1 << 31


def to_graph(model: onnx.ModelProto) -> Graph:
    """Build the IR of a checked, shape-inferred model."""
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    g = Graph(opset)
    g.onnx_opsets = {o.domain: o.version for o in model.opset_import}
    g.ir_version = model.ir_version
    for init in model.graph.initializer:
        g.const(init.name, numpy_helper.to_array(init))
    value_infos = list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output)
    g.type_protos = {vi.name: vi.type for vi in value_infos}
    for vi in value_infos:
        if vi.name in g.tensors:
            continue
        tt = vi.type.tensor_type
        shape = None
        if tt.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
            shape = tuple(dims) if all(d >= 0 for d in dims) else None
            if shape is not None and int(np.prod(shape, dtype=object)) > MAX_TENSOR_ELEMENTS:
                raise CompileError(f"tensor {vi.name!r} of shape {list(shape)} has more than {MAX_TENSOR_ELEMENTS:,} "
                                   f"elements, more than any NPU configuration holds")
        g.tensors[vi.name] = Tensor(vi.name, shape, _np_dtype(tt.elem_type) if tt.elem_type else "float32")
    inits = {i.name for i in model.graph.initializer}
    g.inputs = [i.name for i in model.graph.input if i.name not in inits]
    g.outputs = [o.name for o in model.graph.output]
    for k, n in enumerate(model.graph.node):
        name = n.name or f"{n.op_type}_{k}"
        attrs = {a.name: _attr_value(a) for a in n.attribute}
        if n.op_type == "Constant":
            value = _constant_value(n, attrs)
            g.const(n.output[0], value)
            continue
        for sub in ("body", "then_branch", "else_branch"):
            if sub in attrs:
                attrs[sub] = None  # subgraphs run on the host from the original proto
        node = Node(name, n.op_type, list(n.input), list(n.output), attrs, n.domain, proto=n)
        subgraphs = [a.g for a in n.attribute if a.HasField("g")] + [s for a in n.attribute for s in a.graphs]
        outer = set().union(*(subgraph_reads(s) for s in subgraphs))
        node.implicit = {t: t for t in sorted(outer) if t in g.tensors}
        g.add(node)
        for o in n.output:
            if o and o not in g.tensors:
                g.tensors[o] = Tensor(o, None)
    return g


def subgraph_reads(graph: onnx.GraphProto) -> set[str]:
    """The tensors a subgraph (and the subgraphs inside it) reads from outside itself."""
    used, defined = set(), {i.name for i in graph.input} | {i.name for i in graph.initializer}
    for n in graph.node:
        used.update(i for i in n.input if i)
        defined.update(o for o in n.output if o)
        for a in n.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                used |= subgraph_reads(sub)
    return used - defined


def _constant_value(n: onnx.NodeProto, attrs: dict) -> np.ndarray:
    if "value" in attrs:
        return np.asarray(attrs["value"])
    for key, dtype in (("value_float", np.float32), ("value_int", np.int64)):
        if key in attrs:
            return np.asarray(attrs[key], dtype=dtype)
    for key, dtype in (("value_floats", np.float32), ("value_ints", np.int64)):
        if key in attrs:
            return np.asarray(attrs[key], dtype=dtype)
    raise CompileError("Constant without a supported value attribute", node=n.name, op="Constant")
