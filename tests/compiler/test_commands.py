"""npu compile / run / check / zoo through cli.main."""
from __future__ import annotations

import json

import numpy as np
import pytest

from compiler import zoo
from cli.main import main


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    path = d / "tiny.onnx"
    zoo.save(zoo.build("tiny_cnn", seed=0), path)
    return d, path


def test_help_has_examples(capsys):
    for cmd in ("compile", "run", "check"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        assert "examples:" in capsys.readouterr().out


def test_compile_run_check(tiny, capsys):
    d, onnx_path = tiny
    out = d / "tiny.npu"
    assert main(["compile", str(onnx_path), "--config", "tiny", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "NPU share of MACs 100.0%" in text and "/conv1/Conv" in text and out.exists()
    assert main(["compile", str(onnx_path), "--config", "tiny", "-o", str(out), "--json", "--format", "bfp-e8m3b8"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["npu_mac_share"] == 1.0 and rep["total_cycles"] > 0 and rep["layers"][0]["target"] == "npu"
    x = d / "x.npy"
    np.save(x, np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32))
    trace = d / "trace.json"
    assert main(["run", str(out), "--input", str(x), "--json", "--trace", str(trace)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res["outputs"]["output"]["top5"]) == 5 and res["stats"]["npu_cycles"] > 0
    assert json.loads(trace.read_text())["traceEvents"]
    assert main(["run", str(out), "--input", str(x), "--layers"]) == 0
    text = capsys.readouterr().out
    assert "cycles" in text and "/conv2/Conv" in text
    assert main(["check", str(onnx_path), "--config", "tiny", "--inputs", "3", "--json"]) == 0
    chk = json.loads(capsys.readouterr().out)
    assert chk["cosine_min"] > 0.999 and chk["top1_agreement"] == 1.0 and chk["max_abs_err"] < 0.2
    assert chk["diff_cosine_min"] > 0.9 and chk["ok"] and chk["nonfinite"] == []
    assert main(["check", str(onnx_path), "--config", "tiny", "--inputs", "2"]) == 0
    assert "input-sensitive cosine" in capsys.readouterr().out
    assert main(["check", str(onnx_path), "--config", "tiny", "--inputs", "1", "--per-layer"]) == 0
    assert "/conv2/Conv_output_0" in capsys.readouterr().out


def test_check_fails_when_the_npu_overflows_where_onnxruntime_does_not(tmp_path, capsys):
    """x * 300 * 300 exceeds fp16 (65,504) on the NPU, not in float32: an inf against finite numbers is a
    failure (exit 1), and --json stays strict JSON (the infinite error is null, named under "nonfinite")."""
    import numpy as np
    from onnx import helper

    from helpers import make_model

    model = make_model([helper.make_node("Mul", ["x", "k"], ["a"]), helper.make_node("Mul", ["a", "k"], ["y"])],
                       {"x": [1, 16]}, {"y": [1, 16]}, {"k": np.full(16, 300.0, np.float32)})
    path = tmp_path / "overflow.onnx"
    path.write_bytes(model.SerializeToString())
    assert main(["check", str(path), "--config", "tiny", "--inputs", "2"]) == 1
    out = capsys.readouterr().out
    assert "NaN/inf" in out and "beyond fp16's range" in out  # the reason: onnxruntime's own values overflow fp16
    assert main(["check", str(path), "--config", "tiny", "--inputs", "2", "--json"]) == 1
    text = capsys.readouterr().out
    res = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in strict JSON"))
    assert not res["ok"] and res["nonfinite_mismatches"] > 0 and res["nonfinite"]
    assert res["outputs"][0]["reference_max_abs"] > 65504


def test_compile_dumps_the_ir_after_named_passes(tiny, capsys):
    from compiler.driver import PASS_NAMES

    d, onnx_path = tiny
    with pytest.raises(SystemExit):
        main(["compile", "--help"])
    assert " -> ".join(PASS_NAMES[:3]) in capsys.readouterr().out  # the help lists the passes in order
    out = d / "dump.npu"
    assert main(["compile", str(onnx_path), "--config", "tiny", "-o", str(out), "-q",
                 "--dump-after", "partition", "--dump-after", "fuse_epilogues"]) == 0
    text = capsys.readouterr().out
    partitioned = text.split("# IR after partition\n")[1].split("# IR after fuse_epilogues\n")[0]
    fused = text.split("# IR after fuse_epilogues\n")[1]
    assert "\n  /relu1/Relu  Relu  " in partitioned and "\n  /relu1/Relu  Relu  " not in fused
    assert "-> /relu3/Relu_output_0:1x16x4x4  npu  [add(/relu2/Relu_output_0), relu]  " \
           "fused: /bn3/BatchNormalization, /residual/Add, /relu3/Relu\n" in fused
    assert main(["compile", str(onnx_path), "--config", "tiny", "-o", str(out), "--json",
                 "--dump-after", "all"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["npu_mac_share"] == 1.0  # the IR went to stderr
    assert captured.err.count("# IR after ") == len(PASS_NAMES)
    with pytest.raises(SystemExit):
        main(["compile", str(onnx_path), "--dump-after", "no_such_pass"])
    assert "invalid choice: 'no_such_pass'" in capsys.readouterr().err


def test_disasm_of_a_model_file_names_each_layer(tiny, capsys):
    from npu.modelfile import read_model
    from npu.program import Program

    d, onnx_path = tiny
    out = d / "layers.npu"
    assert main(["compile", str(onnx_path), "--config", "tiny", "-o", str(out), "-q"]) == 0
    capsys.readouterr()
    assert main(["disasm", str(out), "--pc"]) == 0
    text = capsys.readouterr().out.splitlines()
    (step,) = read_model(out).manifest["plan"]
    program = Program.from_bytes(read_model(out).member(step["program"]))
    assert sum(1 for line in text if not line.startswith("#") and line) == len(program)
    for first, _, name in step["regions"]:  # each layer's name stands right above its first instruction
        at = next(k for k, line in enumerate(text) if line.strip().startswith(f"{first}  "))
        assert text[at - 1] == f"# layer {name}"
    assert "# layer /conv1/Conv" in text and "# layer /fc/Gemm" in text


def test_errors_are_reported_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx at all")
    assert main(["compile", str(bad), "--config", "tiny", "-o", str(tmp_path / "x.npu")]) == 1
    assert "not a valid ONNX model" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.npu"), "--input", "x.npy"]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_zoo_is_wired(tmp_path, capsys):
    assert main(["zoo", "list"]) == 0
    assert "resnet50" in capsys.readouterr().out


def test_run_with_an_image(tmp_path, capsys):
    """A [1, 3, 32, 32] model gets ImageNet preprocessing in its manifest; `npu run` decodes a PNG."""
    from PIL import Image

    from compiler import compile_to_file
    from npu.modelfile import read_model
    from ops.test_conv import conv_model

    model = conv_model(3, 8, 32, 3, pad=1, act="Relu")
    out = tmp_path / "img.npu"
    compile_to_file(model, out, config="tiny")
    pre = read_model(out).manifest["preprocessing"]
    assert pre["kind"] == "image" and pre["size"] == [32, 32] and pre["resize"] == 37
    img = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(img)
    assert main(["run", str(out), "--input", str(img), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["outputs"]["y"]["shape"] == [1, 8, 32, 32]


def test_mac_share_of_a_model_that_runs_on_the_host(tmp_path, capsys):
    """Nothing on the NPU is no NPU share, even when the host's operators multiply nothing."""
    from onnx import helper

    from helpers import make_model

    path = tmp_path / "softmax.onnx"
    zoo.save(make_model([helper.make_node("Softmax", ["x"], ["y"])], {"x": [1, 10]}, {"y": None}), path)
    assert main(["compile", str(path), "--config", "tiny", "-o", str(tmp_path / "s.npu"), "-q"]) == 0
    assert "NPU share of MACs 0.0%" in capsys.readouterr().out
