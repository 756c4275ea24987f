"""``npu zoo list`` and ``npu zoo build``.

cli/main.py calls :func:`add_commands` with the top-level
sub-parsers; each command's ``func(args)`` returns the exit status and raises
:class:`~compiler.zoo.errors.ZooError` for bad requests.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from compiler.zoo import registry, save, stats
from compiler.zoo.errors import ZooError

ZOO_EPILOG = """\
examples:
  npu zoo list
  npu zoo build resnet50 -o resnet50.onnx
  npu zoo build resnet50 -o resnet50-64.onnx --input-size 64 --seed 3
  npu zoo build lstm -o lstm.onnx --param hidden_size=1024 --param timesteps=50
  npu zoo build bert_base -o bert.onnx                     # sequence 128; input = embeddings [1,128,768]
  npu zoo build bert_base -o bert-tiny.onnx --input-size 16 --param layers=2 --param hidden=128 \
      --param heads=2 --param intermediate=512
"""

BUILD_EPILOG = """\
examples:
  npu zoo build vgg16 -o vgg16.onnx
  npu zoo build tiny_cnn -o tiny.onnx --param in_channels=4
  npu zoo build mlp -o mlp.onnx --param hidden=256,256 --param num_classes=10

--input-size is the height = width of a CNN's (and ViT's) input, the feature
width of an RNN or the MLP, and the sequence length of BERT and GPT-2 (whose
input is the embeddings [1, T, hidden] and output the last hidden state).
--param KEY=VALUE overrides one of the parameters that `npu zoo list` shows;
a comma-separated VALUE is a list.
"""


def add_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``zoo`` with its ``list`` and ``build`` actions to the ``npu`` sub-parsers."""
    zoo = subparsers.add_parser(
        "zoo", help="list and build the ONNX networks the toolkit compiles",
        description="The model zoo: ResNet, DenseNet, VGG, SSD, MobileNetV2, EfficientNet-B0, BERT, GPT-2, ViT, "
                    "LSTM/GRU and small test networks as ONNX (opset 17) with seeded weights.",
        epilog=ZOO_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = zoo.add_subparsers(dest="zoo_command", metavar="ACTION")
    zoo.set_defaults(func=lambda args: _print_help(zoo))

    listing = actions.add_parser("list", help="show the models, their kind, input size and parameters",
                                 description="Show every zoo model with its defaults.")
    listing.set_defaults(func=run_list)

    build = actions.add_parser(
        "build", help="write one model as an ONNX file",
        description="Build a zoo model and write it as ONNX; prints its parameter count and MACs.",
        epilog=BUILD_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    build.add_argument("name", metavar="NAME", help="model name (see `npu zoo list`)")
    build.add_argument("-o", "--output", required=True, type=Path, help="ONNX file to write")
    build.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    build.add_argument("--input-size", type=int, default=None, metavar="H",
                       help="input height = width (CNNs, ViT), feature width (RNNs, MLP) or sequence length "
                            "(BERT, GPT-2); default per model")
    build.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                       help="override a model parameter; repeatable")
    build.set_defaults(func=run_build)
    return zoo


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0


def run_list(args: argparse.Namespace) -> int:
    rows = [(m.name, m.kind, str(m.input_size),
             " ".join(f"{k}={_format(v)}" for k, v in m.params.items()), m.description)
            for m in registry.list_models()]
    header = ("NAME", "KIND", "INPUT", "PARAMS", "DESCRIPTION")
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(4)]
    for row in (header, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[4])
    return 0


def run_build(args: argparse.Namespace) -> int:
    entry = registry.get(args.name)
    params = dict(parse_param(entry.params, item) for item in args.param)
    path = args.output
    # Checked first: VGG-16 takes seconds to build.
    if not path.parent.is_dir():
        raise ZooError(f"cannot write {path}: directory {path.parent} does not exist")
    model = registry.build(args.name, seed=args.seed, input_size=args.input_size, **params)
    save(model, path)
    graph = model.graph
    inputs = ", ".join(f"{v.name} {_dims(v)}" for v in graph.input)
    outputs = ", ".join(f"{v.name} {_dims(v)}" for v in graph.output)
    print(f"{args.name}: {stats.count_parameters(model):,} parameters, "
          f"{_macs(stats.count_macs(model))}, {inputs} -> {outputs}; "
          f"wrote {path} ({_size(os.path.getsize(path))})")
    return 0


def parse_param(defaults, item: str) -> tuple[str, object]:
    """``KEY=VALUE`` parsed to the type of KEY's default (int, float, str, tuple of ints)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ZooError(f"--param wants KEY=VALUE, not {item!r}")
    if key not in defaults:
        valid = ", ".join(defaults) or "none"
        raise ZooError(f"unknown parameter {key!r}; valid: {valid}")
    default = defaults[key]
    try:
        if isinstance(default, tuple):
            return key, tuple(int(v) for v in text.split(",") if v.strip())
        if isinstance(default, bool):
            raise ValueError  # no boolean parameters yet; refuse rather than guess
        return key, type(default)(text)
    except ValueError:
        raise ZooError(f"--param {key}: {text!r} is not a valid {type(default).__name__} "
                       f"(default {_format(default)})") from None


def _format(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _dims(value_info) -> str:
    return "[" + ", ".join(str(d.dim_value) for d in value_info.type.tensor_type.shape.dim) + "]"


def _size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"


def _macs(macs: int) -> str:
    for scale, unit in ((1e9, "GMACs"), (1e6, "MMACs"), (1e3, "kMACs")):
        if macs >= scale:
            return f"{macs / scale:.2f} {unit}"
    return f"{macs} MACs"
