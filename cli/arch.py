"""`npu config`, `npu asm`, `npu disasm`, `npu isa`: the architecture commands."""
from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path

from npu.asm import assemble, disassemble
from npu.config import PRESETS, get_config
from npu.errors import NpuError
from npu.isa import INSTRUCTIONS
from npu.isadoc import isa_c_header, isa_markdown
from npu.modelfile import read_model
from npu.program import Program, analyze


def _fmt(epilog: str) -> dict:
    return {"epilog": epilog, "formatter_class": argparse.RawDescriptionHelpFormatter}


def add_commands(sub) -> None:
    p = sub.add_parser("config", help="list, show and save architecture configurations",
                       description="Architecture configurations: named presets or .toml/.json files.",
                       **_fmt("examples:\n  npu config list\n  npu config show brainwave-s10 --json\n"
                              "  npu config show tiny --save my.toml   # named 'my'; edit it, then use --config my.toml"))
    csub = p.add_subparsers(dest="config_command", metavar="ACTION")
    pl = csub.add_parser("list", help="list the presets")
    pl.set_defaults(func=_config_list)
    ps = csub.add_parser("show", help="show one configuration",
                         **_fmt("example:\n  npu config show brainslice-128 --json"))
    ps.add_argument("name", help="preset name or .toml/.json file")
    ps.add_argument("--json", action="store_true", help="print JSON")
    ps.add_argument("--save", metavar="FILE", help="also write it to FILE (.toml or .json)")
    ps.set_defaults(func=_config_show)
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])

    p = sub.add_parser("asm", help="assemble text into a program binary",
                       description="Assemble NPU assembly (see docs/isa.md) into a self-describing program file.",
                       **_fmt("example:\n  npu asm examples/matvec_bias_relu.s --config tiny -o matvec.bin"))
    p.add_argument("source", help="assembly file ('-' for stdin)")
    p.add_argument("--config", default="tiny", help="preset or config file (default: tiny)")
    p.add_argument("-o", "--output", required=True, help="program file to write")
    p.add_argument("--no-check", action="store_true", help="skip the static program rules")
    p.set_defaults(func=_asm)

    p = sub.add_parser("disasm", help="print a program binary, or a model file's programs, as assembly",
                       description="Disassemble a program file (its header names its configuration), or every "
                                   "NPU segment of a .npu model file with the name of each layer where its "
                                   "instructions start.",
                       **_fmt("examples:\n  npu disasm matvec.bin --pc\n  npu disasm resnet50.npu --pc | less"))
    p.add_argument("program", help="program file (.bin) or model file (.npu)")
    p.add_argument("--pc", action="store_true", help="prefix each line with its pc")
    p.set_defaults(func=_disasm)

    p = sub.add_parser("isa", help="print the instruction set",
                       description="The instruction table (the single source of the ISA).",
                       **_fmt("examples:\n  npu isa\n  npu isa --markdown > docs/isa.md\n  npu isa --c-header > sim/_isa.h"))
    p.add_argument("--markdown", action="store_true", help="print docs/isa.md")
    p.add_argument("--c-header", action="store_true", help="print sim/_isa.h (the C kernels' opcodes)")
    p.set_defaults(func=_isa)


def _config_list(args) -> int:
    print(f"{'name':16} {'N':>4} {'MACs/cycle':>10} {'MHz':>6} {'peak TOPS':>9} {'MRF tiles':>9}  formats")
    for c in PRESETS.values():
        print(f"{c.name:16} {c.native_dim:>4} {c.macs_per_cycle:>10,} {c.clock_mhz:>6.0f} {c.peak_tops:>9.3f} "
              f"{c.mrf_tiles:>9}  {c.weight_format}/{c.act_format}/{c.mfu_format}")
    return 0


def _config_show(args) -> int:
    c = get_config(args.name)
    if args.save:
        c.save(args.save)
        c = c.replace(name=Path(args.save).stem)
    if args.json:
        d = c.to_dict()
        d["derived"] = {"macs_per_cycle": c.macs_per_cycle, "peak_tops": c.peak_tops, "block": c.block,
                        "cycles_per_tile": c.cycles_per_tile, "fingerprint": c.fingerprint()}
        print(json.dumps(d, indent=2))
    else:
        print(c.to_toml(), end="")
        print(f"# derived: {c.macs_per_cycle:,} MACs/cycle, {c.peak_tops:.3f} peak TOPS, BFP block {c.block}")
    return 0


def _read_source(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text()
    except UnicodeDecodeError:
        raise NpuError(f"{path}: not assembly text (it is binary; `npu disasm` reads program files)") from None
    except OSError as exc:
        raise NpuError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _asm(args) -> int:
    text = _read_source(args.source)
    program = Program(get_config(args.config), assemble(text, args.source))
    if not args.no_check:
        analyze(program)
    program.save(args.output)
    print(f"{args.output}: {len(program)} instructions, {len(program.to_bytes())} bytes, config {program.config.name}")
    return 0


def _disasm(args) -> int:
    if zipfile.is_zipfile(args.program):  # a .npu model file is a zip archive, a program is not
        return _disasm_model(args)
    program = Program.load(args.program)
    print(f"# config {program.config.name} ({program.config.fingerprint()}), {len(program)} instructions")
    sys.stdout.write(disassemble(program.instructions, with_pc=args.pc))
    return 0


def _disasm_model(args) -> int:
    """Every NPU step of the model's plan, a ``# layer`` line where each region (first_pc, last_pc, name) starts."""
    model = read_model(args.program)
    steps = model.manifest["plan"]
    print(f"# {args.program}: config {model.config.name}, {sum(s['kind'] == 'npu' for s in steps)} NPU segments")
    for k, step in enumerate(steps):
        if step["kind"] != "npu":
            print(f"\n# step {k}: host ({step['model']}): {', '.join(step['inputs'])} -> {', '.join(step['outputs'])}")
            continue
        program = Program.from_bytes(model.member(step["program"]), step["program"])
        print(f"\n# step {k}: NPU segment {step['program']}, {len(program)} instructions")
        starts = {first: name for first, _, name in step.get("regions", [])}
        lines = disassemble(program.instructions, with_pc=args.pc).splitlines()
        for pc, line in enumerate(lines):
            if pc in starts:
                print(f"# layer {starts[pc]}")
            print(line)
    return 0


def _isa(args) -> int:
    if args.markdown:
        sys.stdout.write(isa_markdown())
        return 0
    if args.c_header:
        sys.stdout.write(isa_c_header())
        return 0
    for d in INSTRUCTIONS:
        ops = " ".join(f.name if f.default is None else f"[{f.name}]" for f in d.fields)
        print(f"{d.opcode:3d} {d.mnemonic:11} {ops:28} {d.semantics}")
    return 0
