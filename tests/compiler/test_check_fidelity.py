"""npu check's fidelity figures (issue 10): the input-sensitive cosine, NaN/inf mismatches counted as
failures, strict JSON."""
from __future__ import annotations

import json
import math

import numpy as np
import onnxruntime as ort

from compiler import compile_model, zoo
from compiler.check import check_model, compare, cosine, random_feeds
from npu.modelfile import read_model
from runtime.executor import Executor
from test_check import two_heads


def test_input_sensitive_cosine_is_that_of_output_differences_between_consecutive_feeds():
    model = zoo.build("tiny_cnn", seed=0)
    res = check_model(model, "tiny", inputs=3, seed=2)
    ex = Executor(read_model(compile_model(model, "tiny")))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = [(ex.run(f)[0]["output"], sess.run(["output"], f)[0]) for f in random_feeds(model, 3, 2)]
    expected = min(cosine(outs[k][0] - outs[k + 1][0], outs[k][1] - outs[k + 1][1]) for k in range(2))
    assert math.isclose(res.diff_cosine_min, expected, rel_tol=1e-12)
    assert res.outputs[0].diff_cosine_min == res.diff_cosine_min
    assert 0.9 < res.diff_cosine_min <= 1.0 and res.ok


def test_one_feed_has_no_input_sensitive_cosine():
    res = check_model(two_heads(), "tiny", inputs=1)
    assert res.diff_cosine_min is None and json.loads(res.to_json())["diff_cosine_min"] is None


def test_nan_or_inf_in_one_result_only_is_a_failure_not_cosine_one():
    c, a, r, bad = compare(np.array([1.0, np.nan, 2.0]), np.array([1.0, 3.0, 2.0]))
    assert (c, a, r, bad) == (0.0, math.inf, math.inf, 1)
    c, a, r, bad = compare(np.array([1.0, np.inf, 2.0]), np.array([1.0, np.inf, 2.5]))
    assert bad == 0 and a == 0.5 and c > 0.99   # the same inf on both sides agrees
    assert compare(np.array([np.inf]), np.array([-np.inf]))[3] == 1


def test_check_of_non_finite_outputs_writes_strict_json():
    """A NaN input makes onnxruntime's outputs NaN; whatever the NPU makes of it, the check must not
    report cosine 1 and error 0, and its JSON must parse with a strict parser."""
    x = np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)
    x[0, 3] = np.nan
    res = check_model(two_heads(), "tiny", feeds=[{"x": x}])
    text = res.to_json()
    d = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert "Infinity" not in text and "NaN" not in text
    assert not res.ok and d["ok"] is False and res.nonfinite_mismatches > 0 and res.cosine_min == 0.0
    assert d["max_abs_err"] is None and "max_abs_err=inf" in d["nonfinite"]
    assert json.dumps(res.to_dict(), allow_nan=False)   # what `npu check --json` prints
