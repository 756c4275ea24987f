"""Export real PyTorch models to ONNX as a user would: torchvision classifiers and HuggingFace Transformers.

    python benchmarks/torch_export.py --out /tmp/torch_onnx                 # every model below
    python benchmarks/torch_export.py --out DIR --models resnet50 bert_base --legacy

Needs torch, torchvision and transformers (not dependencies of this project: run it with a Python that has
them, e.g. a separate venv; benchmarks/bench_models.py --torch-python PATH calls it for you). Weights are
random (torchvision ``weights=None``, HuggingFace configs' default initialisation, seed 0); the exports go
through ``torch.onnx.export`` as it is today (the dynamo exporter; ``--legacy`` for the TorchScript one),
batch 1, static shapes; torchvision models' BatchNorm statistics are set from activations on random inputs
(``--no-calibrate`` keeps the initial ones: see calibrate_batchnorm). Prints one JSON line per model: name, file, seconds, or the export's error.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

# torchvision classifiers named by issue 10 (one per family), input side 224 unless stated
TORCHVISION = {
    "resnet50": 224, "mobilenet_v2": 224, "mobilenet_v3_large": 224, "efficientnet_b0": 224,
    "googlenet": 224, "inception_v3": 299, "squeezenet1_0": 224, "shufflenet_v2_x1_0": 224,
    "densenet121": 224, "vgg16": 224, "regnet_y_400mf": 224, "convnext_tiny": 224, "vit_b_16": 224,
    "swin_t": 224,
}
# HuggingFace Transformers with the base configurations, sequence 128 (ViT: 224x224 image)
HUGGINGFACE = {"bert_base": 128, "gpt2": 128, "distilbert": 128, "vit_b16_hf": 224}
# --reduced: the same architectures, small enough for a test (2 layers, hidden 128, sequence 16, 64x64 images)
REDUCED_SIDE, REDUCED_SEQ = 64, 16
REDUCED_HF = {"bert_base": dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512),
              "gpt2": dict(n_layer=2, n_embd=128, n_head=2), "distilbert": dict(n_layers=2, dim=128, n_heads=2,
                                                                                 hidden_dim=512),
              "vit_b16_hf": dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512,
                                 image_size=32)}


def calibrate_batchnorm(model, side: int, batches: int = 4, size: int = 4) -> None:
    """Set every BatchNorm's running statistics from the activations it sees on random inputs, as training leaves
    them. torchvision's initialisation (mean 0, variance 1) lets a deep network's activations drift by orders of
    magnitude (MobileNetV2's outputs ~1e-9, below fp16; InceptionV3's ~1e8, above it), which says nothing about
    the model a user exports after training."""
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(size, 3, side, side))
    model.eval()


def torchvision_model(name: str, reduced: bool, calibrate: bool = True):
    import torch
    import torchvision

    kwargs = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    side = TORCHVISION[name]
    if reduced and name != "swin_t":  # swin_t's windows need its full size
        side = max(REDUCED_SIDE, 80 if name == "inception_v3" else 0)
        if name == "vit_b_16":
            kwargs["image_size"] = side
    model = getattr(torchvision.models, name)(weights=None, **kwargs).eval()
    if calibrate:
        calibrate_batchnorm(model, side)
    return model, (torch.randn(1, 3, side, side),), ["input"]


def huggingface_model(name: str, reduced: bool, params: dict | None = None, seq: int | None = None):
    """(model, example inputs, input names); ``params`` override the configuration (tests' tiny models)."""
    import torch
    import transformers as hf

    params = params if params is not None else REDUCED_HF[name] if reduced else {}
    if name == "vit_b16_hf":
        model = hf.ViTModel(hf.ViTConfig(**params), add_pooling_layer=False)
        side = model.config.image_size
        return model.eval(), (torch.randn(1, 3, side, side),), ["pixel_values"]
    seq = seq or (REDUCED_SEQ if reduced else HUGGINGFACE[name])
    cls = {"bert_base": (hf.BertModel, hf.BertConfig), "gpt2": (hf.GPT2Model, hf.GPT2Config),
           "distilbert": (hf.DistilBertModel, hf.DistilBertConfig)}[name]
    model = cls[0](cls[1](**params)).eval()
    model.config.return_dict = False
    ids = torch.randint(0, model.config.vocab_size, (1, seq))
    return model, (ids,), ["input_ids"]


class _FirstOutput:
    """Wraps a model so the export has one output: the first tensor (HF models return tuples)."""

    def __new__(cls, model):
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = model

            def forward(self, x):
                out = self.inner(x)
                return out[0] if isinstance(out, (tuple, list)) else out

        return Wrapped().eval()


def export(name: str, out_dir: str, legacy: bool, opset: int | None, reduced: bool = False, built=None,
           file: str | None = None, calibrate: bool = True) -> dict:
    """Export one model to ``out_dir/<file or name>.onnx``; ``built`` is (model, args, names) made already."""
    import torch

    torch.manual_seed(0)
    if built is None:
        built = torchvision_model(name, reduced, calibrate) if name in TORCHVISION else huggingface_model(name, reduced)
    model, args, names = built
    name = file or name
    path = os.path.join(out_dir, f"{name}.onnx")
    t = time.perf_counter()
    kwargs = {"input_names": names, "output_names": ["output"], "dynamo": not legacy}
    if opset:
        kwargs["opset_version"] = opset
    with torch.no_grad():
        torch.onnx.export(_FirstOutput(model), args, path, **kwargs)
    if not legacy:  # the dynamo exporter may write weights beside the file: fold them in
        import onnx

        proto = onnx.load(path, load_external_data=True)
        for f in os.listdir(out_dir):
            if f.startswith(f"{name}.onnx") and f != f"{name}.onnx":
                os.remove(os.path.join(out_dir, f))
        onnx.save(proto, path, save_as_external_data=proto.ByteSize() > 2_000_000_000)
    return {"name": name, "file": path, "seconds": round(time.perf_counter() - t, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="directory for the .onnx files")
    ap.add_argument("--models", nargs="*", default=list(TORCHVISION) + list(HUGGINGFACE),
                    help=f"any of: {' '.join(list(TORCHVISION) + list(HUGGINGFACE))}")
    ap.add_argument("--legacy", action="store_true", help="the TorchScript exporter (dynamo=False)")
    ap.add_argument("--reduced", action="store_true", help="small variants (2-layer hidden-128 Transformers, "
                    "sequence 16, 64x64 images) for tests")
    ap.add_argument("--no-calibrate", action="store_true", help="keep torchvision's initial BatchNorm statistics")
    ap.add_argument("--opset", type=int, default=None, help="opset_version (default: the exporter's)")
    args = ap.parse_args(argv)
    unknown = [m for m in args.models if m not in TORCHVISION and m not in HUGGINGFACE]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; choose from {list(TORCHVISION) + list(HUGGINGFACE)}")
    export_rows(args.out, args.models, lambda name: export(name, args.out, args.legacy, args.opset, args.reduced,
                                                           calibrate=not args.no_calibrate))
    return 0


def export_rows(out_dir: str, names: list[str], export_one) -> None:
    """Export each model with ``export_one(name)`` (a row dict) and print its JSON line; an export that fails is
    a row with its error, and the next model goes on (keras_export.py uses this too)."""
    os.makedirs(out_dir, exist_ok=True)
    for name in names:
        try:
            row = export_one(name)
        except Exception as exc:  # report and go on: one model's export failure is a row, not the end
            row = {"name": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    sys.exit(main())
