"""The ONNX -> NPU compiler.

    from compiler import compile_model
    data = compile_model("resnet50.onnx", config="brainslice-128")   # .npu bytes
    report = compile_report("resnet50.onnx", config="brainslice-128")

compiler/driver.py lists the passes; compiler/zoo/ builds the test networks.
"""
from __future__ import annotations


def compile_to_file(onnx_path_or_model, path, config="brainslice-128", fmt=None, input_shapes=None,
                    host_fallback=True, preprocessing=None, progress=None, dump_after=(), dump=print):
    """Compile and write a .npu file; returns the :class:`compiler.report.CompileReport`.

    ``dump_after`` names passes (compiler.driver.PASS_NAMES, or "all") after which ``dump`` gets the IR."""
    from compiler import driver
    from compiler.report import CompileReport
    from npu.modelfile import write_model

    c = driver.compile_graph(onnx_path_or_model, config, fmt, input_shapes, host_fallback, progress,
                             dump_after=dump_after, dump=dump)
    manifest, members = driver.package(c, preprocessing or default_preprocessing(onnx_path_or_model, c))
    write_model(path, manifest, members)
    report = CompileReport.from_dict(manifest["compiler"]["report"])
    report.compile_time_s = round(c.timings.get("total_s", 0.0), 3)
    return report


def compile_model(onnx_path_or_model, config="brainslice-128", fmt=None, input_shapes=None,
                  host_fallback=True, preprocessing=None) -> bytes:
    """Compile an ONNX model (path, bytes or ModelProto) to the bytes of a .npu model file."""
    from compiler import driver
    from npu.modelfile import model_bytes

    c = driver.compile_graph(onnx_path_or_model, config, fmt, input_shapes, host_fallback)
    manifest, members = driver.package(c, preprocessing or default_preprocessing(onnx_path_or_model, c))
    return model_bytes(manifest, members)


def compile_report(onnx_path_or_model, config="brainslice-128", fmt=None, input_shapes=None, host_fallback=True):
    """The :class:`compiler.report.CompileReport` of a compilation (per-layer cycles, MACs, where each runs)."""
    from compiler import driver
    from compiler.report import build_report

    return build_report(driver.compile_graph(onnx_path_or_model, config, fmt, input_shapes, host_fallback))


def default_preprocessing(source, compiled) -> dict:
    """ImageNet preprocessing for image classifiers (one [1, 3, H, W] input, 1000 classes), else none."""
    g = compiled.graph
    if len(g.inputs) == 1 and len(g.outputs) >= 1:
        shape = g.shape(g.inputs[0]) or ()
        out = g.shape(g.outputs[0]) or ()
        if len(shape) == 4 and shape[1] == 3 and shape[2] >= 32:
            h, w = int(shape[2]), int(shape[3])
            pre = {"kind": "image", "layout": "NCHW", "size": [h, w], "resize": int(round(256 * h / 224)),
                   "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
            if len(out) == 2 and out[1] == 1000:
                pre["labels"] = "imagenet"
            return pre
    return {"kind": "none"}


__all__ = ["compile_model", "compile_report", "compile_to_file"]
