"""A batch of independent samples runs on the NPU sample by sample, through one batch-1 program.

A model whose every input and output carries the same batch B > 1 on axis 0 and whose samples never meet
(a CNN classifier exported with batch 8, say) would otherwise go to the host wherever a layer maps batch 1 only
(convolutions, pooling).  :func:`split_batch` compiles it at batch 1 instead and records B: the executor runs
the plan once per sample and stacks the outputs, so every layer the batch-1 model has on the NPU runs there
for the whole batch.  Weights pinned in the MRF serve every sample; streamed ones stream once a sample (a
convolution already reuses each tile over the sample's H x W pixels).  Batches the NPU maps natively (Gemm on
[B, K], recurrent layers on [T, B, K]) are left as they are.

That the samples are independent is not assumed from the operators: the batch-1 model is run by onnxruntime on
every sample of a random batch and must give the batch-B model's outputs; otherwise the model is compiled as
it is (and its batch-1-only layers go to the host, as before).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from npu.manifest import MAX_BATCH

# Operators that hold the batch natively on the NPU: a model made only of these (and element-wise work) keeps B.
NATIVE_BATCH = {"Gemm", "MatMul", "LSTM", "GRU", "RNN"}


def _dims(vi: onnx.ValueInfoProto) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]


def batch_of(model: onnx.ModelProto) -> int:
    """B when every graph input and output is a static tensor of rank >= 2 with the same dim 0 = B > 1, else 1."""
    inits = {i.name for i in model.graph.initializer}
    ios = [vi for vi in model.graph.input if vi.name not in inits] + list(model.graph.output)
    firsts = set()
    for vi in ios:
        if not vi.type.HasField("tensor_type"):
            return 1
        dims = _dims(vi)
        if len(dims) < 2 or any(d is None or d <= 0 for d in dims):
            return 1
        firsts.add(dims[0])
    if len(firsts) != 1:
        return 1
    b = firsts.pop()
    return b if 1 < b <= MAX_BATCH else 1


def _one_sample(model: onnx.ModelProto, b: int) -> onnx.ModelProto:
    """The model with dim 0 of its inputs and outputs set to 1, Reshape targets that name B rewritten to 1 and
    the intermediate shapes forgotten (shape inference finds them again)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {i.name for i in m.graph.initializer}
    for vi in list(m.graph.input) + list(m.graph.output):
        if vi.name not in inits:
            vi.type.tensor_type.shape.dim[0].dim_value = 1
    del m.graph.value_info[:]
    consts = {i.name: i for i in m.graph.initializer}
    producers = {o: n for n in m.graph.node for o in n.output}
    for node in m.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        target = node.input[1]
        if target in consts:
            value = numpy_helper.to_array(consts[target])
            if value.size and value.reshape(-1)[0] == b:
                new = value.copy().reshape(-1)
                new[0] = 1
                consts[target].CopyFrom(numpy_helper.from_array(new.reshape(value.shape).astype(value.dtype), target))
        elif target in producers and producers[target].op_type == "Constant":
            attr = next((a for a in producers[target].attribute if a.name == "value"), None)
            if attr is not None:
                value = numpy_helper.to_array(attr.t)
                if value.size and value.reshape(-1)[0] == b:
                    new = value.copy().reshape(-1)
                    new[0] = 1
                    attr.t.CopyFrom(numpy_helper.from_array(new.reshape(value.shape).astype(value.dtype)))
    return m


def _same_outputs(batched: onnx.ModelProto, single: onnx.ModelProto, b: int) -> bool:
    """onnxruntime gives the batch-B model's outputs from the batch-1 model run sample by sample."""
    import onnxruntime as ort
    from onnx import helper

    try:
        full = ort.InferenceSession(batched.SerializeToString(), providers=["CPUExecutionProvider"])
        one = ort.InferenceSession(single.SerializeToString(), providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(7)
        inits = {i.name for i in batched.graph.initializer}
        feed = {}
        for vi in batched.graph.input:
            if vi.name in inits:
                continue
            dtype = helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
            shape = _dims(vi)
            feed[vi.name] = (rng.standard_normal(shape) if np.issubdtype(dtype, np.floating)
                             else rng.integers(0, 2, size=shape)).astype(dtype)
        want = full.run(None, feed)
        got = [one.run(None, {k: v[i:i + 1] for k, v in feed.items()}) for i in range(b)]
    except Exception:  # noqa: BLE001 - a model onnxruntime cannot run at batch 1 keeps its batch
        return False
    for k, w in enumerate(want):
        g = np.concatenate([np.asarray(r[k]) for r in got], axis=0)
        if g.shape != w.shape:
            return False
        w64, g64 = np.asarray(w, np.float64), np.asarray(g, np.float64)
        scale = float(np.abs(w64[np.isfinite(w64)]).max()) if np.isfinite(w64).any() else 1.0
        if not np.allclose(g64, w64, rtol=1e-4, atol=1e-5 * max(scale, 1e-30), equal_nan=True):
            return False
    return True


def split_batch(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """(the batch-1 model, B) when the model's B samples are independent and some layer needs batch 1 on the
    NPU; (the model, 1) otherwise."""
    b = batch_of(model)
    if b == 1:
        return model, 1
    ops = {n.op_type for n in model.graph.node}
    if ops & NATIVE_BATCH and not ops & {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool",
                                          "GlobalMaxPool", "BatchNormalization", "Resize", "Upsample"}:
        return model, 1
    single = _one_sample(model, b)
    try:
        from compiler.frontend import infer_shapes

        single = infer_shapes(single)
    except Exception:  # noqa: BLE001 - shapes that do not infer at batch 1: keep the batch
        return model, 1
    if not _same_outputs(model, single, b):
        return model, 1
    return single, b
