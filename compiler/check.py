"""Fidelity check: the compiled model on the simulator against onnxruntime on the same ONNX.

:func:`check_model` compiles, runs ``inputs`` random (or given) feeds through
both, and returns :class:`CheckResult` with the minimum cosine similarity,
the largest absolute and relative errors and top-1/top-5 agreement of every
classifier-like output; with ``per_layer`` it also compares every
intermediate tensor.  Those come from a second compilation that makes every
intermediate tensor an output (which stops fusions and adds output chains),
so the outputs, errors and latency reported are always the plain model's.

With seeded random weights a network's output barely depends on its input
(two images give outputs at cosine 0.9999), so the cosine of the outputs
says little; ``diff_cosine_min`` compares what does depend on the input:
``out(x_k) - out(x_{k+1})`` on the simulator against the same difference on
onnxruntime, over consecutive pairs of feeds.  An element that is NaN or
infinite in one result and not the same in the other is a mismatch: it
makes the cosine 0 and the errors infinite (``nonfinite_mismatches`` counts
them), never a silent 1.0.  :meth:`CheckResult.to_dict` is strict JSON:
non-finite numbers become null, and their fields are listed in ``nonfinite``.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx


@dataclass
class TensorCheck:
    name: str
    cosine_min: float = 1.0
    max_abs_err: float = 0.0
    max_rel_err: float = 0.0
    top1_agreement: float | None = None   # classifier-like outputs ([1, K] scores) only
    top5_agreement: float | None = None
    diff_cosine_min: float | None = None  # out(x1) - out(x2) against onnxruntime's (two or more feeds)
    nonfinite_mismatches: int = 0         # elements NaN/inf in one result and not alike in the other
    reference_max_abs: float = 0.0        # onnxruntime's largest finite magnitude (beyond fp16's: overflow explains)

    @property
    def beyond_fp16(self) -> bool:
        """onnxruntime's values exceed what the NPU's fp16 vector unit holds: NaN/inf there is the numbers' range."""
        from compiler.passes.partition import FP16_MAX

        return self.reference_max_abs > FP16_MAX

    def update(self, c: float, a: float, r: float, bad: int) -> None:
        self.cosine_min = min(self.cosine_min, c)
        self.max_abs_err = max(self.max_abs_err, a)
        self.max_rel_err = max(self.max_rel_err, r)
        self.nonfinite_mismatches += bad


@dataclass
class CheckResult:
    config: str
    format: str
    inputs: int
    cosine_min: float = 1.0
    max_abs_err: float = 0.0
    max_rel_err: float = 0.0
    top1_agreement: float | None = None   # the lowest over the classifier-like outputs
    top5_agreement: float | None = None
    diff_cosine_min: float | None = None  # the input-sensitive cosine, lowest over the outputs
    nonfinite_mismatches: int = 0
    outputs: list[TensorCheck] = field(default_factory=list)
    layers: list[TensorCheck] = field(default_factory=list)
    npu_cycles: int = 0
    latency_us: float = 0.0

    @property
    def ok(self) -> bool:
        """No NaN/inf mismatch (the cosine thresholds are the caller's to choose)."""
        return self.nonfinite_mismatches == 0

    def to_dict(self) -> dict:
        """Strict-JSON-safe: a non-finite float becomes None and its path is listed under ``nonfinite``."""
        nonfinite: list[str] = []
        d = _finite(asdict(self), "", nonfinite)
        d["ok"] = self.ok
        d["nonfinite"] = nonfinite
        return d

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), allow_nan=False, **kw)


def _finite(value, path: str, nonfinite: list[str]):
    """A copy of asdict output with every non-finite float replaced by None (its path noted):
    ``outputs[logits].max_abs_err=inf``."""
    if isinstance(value, dict):
        return {k: _finite(v, f"{path}.{k}" if path else k, nonfinite) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v, f"{path}[{v.get('name', i) if isinstance(v, dict) else i}]", nonfinite)
                for i, v in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        nonfinite.append(f"{path}={value}")
        return None
    return value


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def nonfinite_mismatches(a: np.ndarray, ref: np.ndarray) -> int:
    """Elements where one result is NaN or infinite and the other is not the same (NaN matches NaN,
    +inf +inf)."""
    a = np.asarray(a, np.float64)
    ref = np.asarray(ref, np.float64)
    same = (np.isnan(a) & np.isnan(ref)) | (np.isinf(a) & (a == ref)) | (np.isfinite(a) & np.isfinite(ref))
    return int(same.size - np.count_nonzero(same))


def compare(a: np.ndarray, ref: np.ndarray) -> tuple[float, float, float, int]:
    """(cosine, max abs error, max error relative to the reference's largest magnitude, NaN/inf
    mismatches) over the elements where both are finite; any mismatch makes the cosine 0 and the
    errors infinite."""
    a = np.asarray(a, np.float64)
    ref = np.asarray(ref, np.float64)
    if a.shape != ref.shape:
        return 0.0, math.inf, math.inf, max(a.size, ref.size)
    bad = nonfinite_mismatches(a, ref)
    if bad:
        return 0.0, math.inf, math.inf, bad
    both = np.isfinite(a) & np.isfinite(ref)
    a, ref = a[both], ref[both]
    err = float(np.abs(a - ref).max()) if a.size else 0.0
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    return cosine(a, ref), err, err / scale if scale else err, 0


def diff_cosine(a1, a2, r1, r2) -> float | None:
    """Cosine of the simulator's out(x1) - out(x2) against onnxruntime's (None where a result is not
    finite; 1.0 when neither output moves, 0.0 when only one does)."""
    d = np.asarray(a1, np.float64) - np.asarray(a2, np.float64)
    e = np.asarray(r1, np.float64) - np.asarray(r2, np.float64)
    if d.shape != e.shape:
        return 0.0
    if not (np.isfinite(d).all() and np.isfinite(e).all()):
        return None
    return cosine(d, e)


def random_feeds(model: onnx.ModelProto, count: int, seed: int = 0, shapes: dict | None = None) -> list[dict]:
    """Standard-normal float inputs (image-like models get N(0, 1) per pixel, as normalized images are)."""
    from onnx import helper

    rng = np.random.default_rng(seed)
    inits = {i.name for i in model.graph.initializer}
    feeds = []
    for _ in range(count):
        feed = {}
        for vi in model.graph.input:
            if vi.name in inits:
                continue
            tt = vi.type.tensor_type
            shape = (shapes or {}).get(vi.name) or [d.dim_value for d in tt.shape.dim]
            dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
            if np.issubdtype(dtype, np.floating):
                feed[vi.name] = rng.standard_normal(shape).astype(dtype)
            else:
                feed[vi.name] = rng.integers(0, 2, size=shape).astype(dtype)
        feeds.append(feed)
    return feeds


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    infos = {vi.name: vi for vi in m.graph.value_info}
    for n in names:
        if n not in have and n in infos:
            m.graph.output.append(infos[n])
    return m


def intermediate_tensors(model: onnx.ModelProto) -> list[str]:
    """Float outputs of the layers worth comparing (Conv/Gemm/pool/activation/add outputs)."""
    float_ok = {vi.name for vi in model.graph.value_info if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
                and vi.type.tensor_type.HasField("shape")}
    keep = ("Conv", "Gemm", "MatMul", "Relu", "Add", "MaxPool", "AveragePool", "GlobalAveragePool", "Concat",
            "LSTM", "GRU", "Sigmoid", "Tanh", "Clip", "BatchNormalization", "Mul", "Sum")
    return [n.output[0] for n in model.graph.node if n.op_type in keep and n.output[0] in float_ok]


def classifier_like(scores: np.ndarray) -> bool:
    """One row of several class scores ([1, K], K > 1)."""
    return scores.ndim == 2 and scores.shape[0] == 1 and scores.shape[1] > 1


def check_model(source, config="brainslice-128", fmt=None, inputs: int = 20, seed: int = 0, feeds=None,
                per_layer: bool = False, input_shapes=None, host_fallback: bool = True, progress=None,
                compiled: bytes | None = None) -> CheckResult:
    """Compare the compiled model (``compiled``: its .npu bytes when already compiled with these
    options, else it is compiled here) on the simulator with onnxruntime on ``inputs`` random feeds
    (or ``feeds``)."""
    import onnxruntime as ort

    from compiler import compile_model
    from compiler.driver import resolve_config
    from compiler.frontend import load_model, parse_input_shapes
    from npu.modelfile import read_model
    from runtime.executor import Executor

    model = load_model(source, input_shapes)
    layers = intermediate_tensors(model) if per_layer else []
    target = _with_outputs(model, layers) if layers else model

    opts = ort.SessionOptions()
    opts.log_severity_level = 3

    def run_both(m, data=None):
        """(simulator, onnxruntime) for a model: the plain one, or the one that outputs every layer."""
        ex = Executor(read_model(data or compile_model(m, config=config, fmt=fmt, input_shapes=input_shapes,
                                                       host_fallback=host_fallback)))
        return ex, ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    ex, sess = run_both(model, compiled)
    ex_layers, sess_layers = run_both(target) if layers else (None, None)
    if feeds is None:
        feeds = random_feeds(model, inputs, seed, parse_input_shapes(input_shapes))
    out_names = [o.name for o in model.graph.output]
    cfg = resolve_config(config, fmt)
    res = CheckResult(cfg.name, cfg.weight_format, len(feeds))
    per: dict[str, TensorCheck] = {n: TensorCheck(n) for n in out_names + layers}
    top1: dict[str, int] = {}  # classifier-like outputs -> agreeing feeds
    top5: dict[str, int] = {}
    previous: tuple[dict, dict] | None = None  # (simulator, onnxruntime) outputs of the previous feed
    for k, feed in enumerate(feeds):
        got, stats = ex.run(feed)
        res.npu_cycles, res.latency_us = stats.npu_cycles, stats.latency_us
        ref = dict(zip(out_names, sess.run(out_names, feed)))
        if layers:
            got = {**ex_layers.run(feed)[0], **got}
            ref.update(zip(layers, sess_layers.run(layers, feed)))
        names = out_names + layers
        for name in names:
            per[name].update(*compare(got[name], ref[name]))
            r = np.abs(np.asarray(ref[name], np.float64))
            if r.size and np.isfinite(r).any():
                per[name].reference_max_abs = max(per[name].reference_max_abs, float(r[np.isfinite(r)].max()))
        if previous is not None:
            for name in out_names:
                c = diff_cosine(got[name], previous[0][name], ref[name], previous[1][name])
                t = per[name]
                if c is not None:
                    t.diff_cosine_min = c if t.diff_cosine_min is None else min(t.diff_cosine_min, c)
        previous = ({n: np.asarray(got[n]) for n in out_names}, {n: np.asarray(ref[n]) for n in out_names})
        for name in out_names:
            r = np.asarray(ref[name])
            if classifier_like(r):
                g = np.asarray(got[name]).ravel()
                top1[name] = top1.get(name, 0) + int(g.argmax() == r.ravel().argmax())
                top5[name] = top5.get(name, 0) + int(r.ravel().argmax() in np.argsort(-g)[:5])
        if progress is not None:
            progress(k + 1, len(feeds))
    res.outputs = [per[n] for n in out_names]
    res.layers = [per[n] for n in layers]
    res.cosine_min = min(t.cosine_min for t in res.outputs)
    res.max_abs_err = max(t.max_abs_err for t in res.outputs)
    res.max_rel_err = max(t.max_rel_err for t in res.outputs)
    res.nonfinite_mismatches = sum(t.nonfinite_mismatches for t in res.outputs)
    diffs = [t.diff_cosine_min for t in res.outputs if t.diff_cosine_min is not None]
    res.diff_cosine_min = min(diffs) if diffs else None
    for t in res.outputs:
        if t.name in top1:
            t.top1_agreement, t.top5_agreement = top1[t.name] / len(feeds), top5[t.name] / len(feeds)
    if top1:
        res.top1_agreement = min(t.top1_agreement for t in res.outputs if t.name in top1)
        res.top5_agreement = min(t.top5_agreement for t in res.outputs if t.name in top1)
    return res
