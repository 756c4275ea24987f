"""Small-graph builders and the simulator-vs-onnxruntime comparison used across compiler tests."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from compiler import compile_model
from npu.modelfile import read_model
from runtime.executor import Executor

# msfp16-class formats (7 mantissa bits) on the tiny and small configurations
COSINE_MIN = 0.999
REL_ERR_MAX = 0.05


def weights(rng: np.random.Generator, *shape, scale=None) -> np.ndarray:
    """He-initialised float32 weights (or standard deviation `scale`)."""
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return (rng.standard_normal(shape) * (scale or np.sqrt(2.0 / fan_in))).astype(np.float32)


def make_model(nodes, inputs: dict, outputs: dict, inits: dict | None = None, opset: int = 17) -> onnx.ModelProto:
    """inputs/outputs: {name: shape}; inits: {name: array}."""
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v)) for k, v in inputs.items()],
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v) if v is not None else None)
         for k, v in outputs.items()],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    if any(v is None for v in outputs.values()):
        # exporters always declare output shapes; let shape inference write them
        inferred = onnx.shape_inference.infer_shapes(model)
        known = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
        for o in model.graph.output:
            if not o.type.tensor_type.HasField("shape") and o.name in known:
                o.CopyFrom(known[o.name])
    return model


def random_inputs(model: onnx.ModelProto, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    inits = {i.name for i in model.graph.initializer}
    return {vi.name: rng.standard_normal([d.dim_value for d in vi.type.tensor_type.shape.dim]).astype(np.float32)
            for vi in model.graph.input if vi.name not in inits}


def reference(model: onnx.ModelProto, feeds: dict) -> dict:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return 1.0 if na == nb == 0 else float(a @ b / (na * nb))


def run_npu(model: onnx.ModelProto, feeds: dict, config: str = "tiny", **kw):
    data = compile_model(model, config=config, **kw)
    ex = Executor(read_model(data))
    return ex.run(feeds), ex


def assert_matches(model: onnx.ModelProto, config: str = "tiny", seed: int = 0, cos_min: float = COSINE_MIN,
                   rel_max: float = REL_ERR_MAX, npu_only: bool = True, **kw) -> dict:
    """Compile, run on the simulator and compare every output with onnxruntime."""
    feeds = random_inputs(model, seed)
    (got, stats), ex = run_npu(model, feeds, config, **kw)
    ref = reference(model, feeds)
    if npu_only:
        kinds = {s["kind"] for s in ex.manifest["plan"]}
        assert kinds == {"npu"}, f"expected everything on the NPU, plan has {kinds}: " + \
            str([(L['name'], L['reason']) for L in ex.manifest['compiler']['report']['layers'] if L['target'] == 'host'])
    for name, r in ref.items():
        g = got[name]
        assert g.shape == r.shape, (name, g.shape, r.shape)
        c = cosine(g, r)
        scale = float(np.abs(r).max()) or 1.0
        rel = float(np.abs(g - r).max()) / scale
        assert c >= cos_min, f"{name}: cosine {c:.6f} < {cos_min}"
        assert rel <= rel_max, f"{name}: max error {rel:.4f} of the largest magnitude > {rel_max}"
    return {"stats": stats, "executor": ex, "got": got, "ref": ref}
