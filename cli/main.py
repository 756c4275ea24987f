"""The `npu` command line: assembles the parser from the modules of cli/, in pipeline order."""
from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, version

from cli import arch, bench, compile, demo, models, rtl, sim, sweep, zoo
from npu.errors import NpuError

# Order is the pipeline order users meet them in `npu --help`.
COMMAND_MODULES = (
    arch,     # config, asm, disasm, isa
    sim,      # sim
    compile,  # compile, run, check
    zoo,      # zoo list|build
    rtl,      # rtl generate|run|check
    models,   # models, serve, predict
    sweep,    # sweep, sweep plot
    demo,     # demo
    bench,    # bench
)

DESCRIPTION = """\
An open Brainwave-style NPU toolkit: compile ONNX models to a block-floating-point
vector ISA, simulate them bit-exactly with a cycle model, co-simulate the RTL, and
serve them over TensorFlow Serving / KServe v2 protocols.

Typical flow:
  npu zoo build resnet50 -o resnet50.onnx
  npu compile resnet50.onnx --config brainslice-128 -o resnet50.npu
  npu run resnet50.npu --input cat.jpg
  npu models register resnet50.npu --name resnet50 && npu serve resnet50

Every command has --help with examples.
"""


def package_version() -> str:
    try:
        return version("brainwave-npu")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="npu", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
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
