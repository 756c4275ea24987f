"""The `npu` command line.

Each package contributes its own sub-commands through a module with an
``add_commands(subparsers)`` function; this file only assembles them, so a
command's code lives beside what it drives.  Modules are imported lazily at
parser-build time and a package that fails to import only loses its commands
(the error is reported when one of them is asked for).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from npu.errors import NpuError

# Order is the pipeline order users meet them in `npu --help`.
COMMAND_MODULES = (
    "npu.commands",       # config, asm, disasm, isa
    "sim.commands",       # sim
    "compiler.commands",  # compile, run, check, zoo
    "rtl.commands",       # rtl generate|run|check
    "runtime.commands",   # models, serve, predict, bench
)

DESCRIPTION = """\
An open Brainwave-style NPU toolkit: compile ONNX models to a block-floating-point
vector ISA, simulate them bit-exactly with a cycle model, co-simulate the RTL, and
serve them over TensorFlow Serving / KServe v2 protocols.

Typical flow:
  npu zoo build resnet50 -o resnet50.onnx
  npu compile resnet50.onnx --config brainslice-128 -o resnet50.npu
  npu run resnet50.npu --input cat.jpg
  npu serve resnet50.npu
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="npu", description=DESCRIPTION, formatter_class=_Formatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.set_defaults(_unavailable={})
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:  # a package not built yet must not break the others
            parser.get_default("_unavailable")[name] = exc
            continue
        module.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        result = args.func(args)
    except NpuError as exc:
        print(f"npu {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
