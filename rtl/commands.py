"""`npu rtl generate|run|check`: Verilog generation and RTL co-simulation from the command line."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from npu.config import get_config
from npu.errors import NpuError

GENERATE_EPILOG = """\
example:
  npu rtl generate --config tiny -o build/tiny
  (writes build/tiny/npu_top.v and build/tiny/report.json)
"""
RUN_EPILOG = """\
examples:
  npu rtl run prog.bin --config tiny --input x.npy
  npu rtl run prog.bin --config tiny --input x.npy --mrf weights.npz --json
  npu rtl run model.npu --config tiny --input x.npy
"""
CHECK_EPILOG = """\
examples:
  npu rtl check prog.bin --config tiny --input x.npy
  npu rtl check --random 20 --config tiny --json
"""


def add_commands(subparsers) -> None:
    rtl = subparsers.add_parser("rtl", help="generate the NPU's Verilog and co-simulate it (Verilator + cocotb)",
                                description="The RTL of the NPU: Verilog generation and co-simulation.")
    sub = rtl.add_subparsers(dest="rtl_command", metavar="SUBCOMMAND")
    fmt = argparse.RawDescriptionHelpFormatter

    g = sub.add_parser("generate", help="write the Verilog and a report", epilog=GENERATE_EPILOG, formatter_class=fmt)
    g.add_argument("--config", default="tiny", help="preset name or .toml/.json file (default: tiny)")
    g.add_argument("-o", "--output", default="build/rtl", help="output folder")
    g.set_defaults(func=cmd_generate)

    for name, func, epilog, helptext in (("run", cmd_run, RUN_EPILOG, "run a program or model on the RTL"),
                                         ("check", cmd_check, CHECK_EPILOG,
                                          "run on the simulator and the RTL and compare bit for bit")):
        p = sub.add_parser(name, help=helptext, epilog=epilog, formatter_class=fmt)
        p.add_argument("program", nargs="?", help="program file (.bin) or model file (.npu)")
        p.add_argument("--config", default=None, help="preset or file (default: the program's own)")
        p.add_argument("--input", help=".npy of input vectors for the network input queue")
        p.add_argument("--mrf", help=".npz weight image (mant, exp) pinned in the MRF")
        p.add_argument("--trace", action="store_true", help="build with waveform tracing (dump.vcd)")
        p.add_argument("--json", action="store_true", help="print JSON")
        if name == "check":
            p.add_argument("--random", type=int, default=0, help="check N random programs instead")
            p.add_argument("--seed", type=int, default=0, help="first random seed")
        p.set_defaults(func=func)
    rtl.set_defaults(func=lambda args: rtl.print_help() or 0)


def cmd_generate(args) -> int:
    from rtl.generate import make_top, report, write_verilog

    config = get_config(args.config)
    path = write_verilog(config, args.output)
    rep = json.loads((Path(args.output) / "report.json").read_text())
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")
    print(f"config {rep['config']}: {rep['macs_per_cycle']} MACs/cycle "
          f"({rep['tile_engines']} tile engines x {rep['dot_product_engines'] // rep['tile_engines']} DPEs x "
          f"{rep['lanes']} lanes), MFUs {rep['mfus']}")
    print("memories:")
    for m in rep["memories"]:
        print(f"  {m['name']:<10} {m['depth']:>7} x {m['width']:>6} bits = {m['bits'] / 8192:10.1f} KiB")
    print("ports: " + ", ".join(f"{p['name']}[{p['width']}]" for p in rep["ports"]))
    return 0


def _load_program(args):
    from npu.program import Program

    if args.program is None:
        raise NpuError("give a program (.bin) or model (.npu) file")
    if args.program.endswith(".npu"):
        return None
    program = Program.load(args.program)
    if args.config and get_config(args.config) != program.config:
        raise NpuError(f"{args.program} was built for {program.config.name!r}, not {args.config!r}")
    return program


def _setup(machine, args):
    from npu.weights import WeightImage

    if args.mrf:
        machine.load_mrf(WeightImage.from_bytes(Path(args.mrf).read_bytes()))
    if args.input:
        machine.push_input(np.load(args.input))


def _run_model(args, backend):
    try:
        from runtime.executor import Executor
    except ImportError:
        raise NpuError("running .npu models needs runtime/executor.py (not available yet); "
                       "give a program .bin with --input/--mrf instead") from None
    from npu.modelfile import load_model

    model = load_model(args.program)
    ex = Executor(model, backend=backend)
    return ex.run(np.load(args.input)) if args.input else ex


def cmd_run(args) -> int:
    from rtl.backend import RtlMachine

    program = _load_program(args)
    if program is None:
        out = _run_model(args, "rtl")
        print(out)
        return 0
    m = RtlMachine(program.config, trace=args.trace)
    _setup(m, args)
    res = m.run(program)
    y = m.pop_output()
    summary = res.summary()
    if args.json:
        summary["output"] = y.astype(np.float32).tolist()
        print(json.dumps(summary, indent=2))
    else:
        print(f"cycles {res.cycles}  latency {res.latency_us:.3f} us  utilization {res.utilization:.3f}  "
              f"(simulated in {res.sim_time_s:.3f} s, {res.wall_time_s:.2f} s with loading)")
        np.set_printoptions(precision=4, suppress=True)
        print(f"output: {len(y)} vectors")
        print(y)
    return 0


def cmd_check(args) -> int:
    from rtl.backend import RtlMachine
    from rtl.check import compare
    from rtl.randprog import Case, random_case

    results = []
    if args.random:
        config = get_config(args.config or "tiny")
        rtl = RtlMachine(config)
        for seed in range(args.seed, args.seed + args.random):
            cmp = compare(random_case(config, seed), rtl)
            results.append(dict(cmp.summary(), seed=seed))
    else:
        program = _load_program(args)
        if program is None:
            raise NpuError("npu rtl check of a .npu model needs runtime/executor.py; give a program .bin")

        class _Setup(Case):
            def load(self, machine):
                _setup(machine, args)

        results.append(compare(_Setup(program)).summary())
    ok = all(r["bit_exact"] for r in results)
    errs = [abs(r["cycle_error"]) for r in results]
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else
                         {"cases": results, "bit_exact": ok, "mean_abs_cycle_error": float(np.mean(errs)),
                          "max_abs_cycle_error": float(np.max(errs))}, indent=2))
    else:
        for r in results:
            print(("" if "seed" not in r else f"seed {r['seed']:4d}  ") +
                  f"bit_exact {r['bit_exact']}  rtl_cycles {r['rtl_cycles']}  sim_cycles {r['sim_cycles']}  "
                  f"cycle_error {r['cycle_error']:+.2%}" + (f"  first mismatch: {r['first_mismatch']}"
                                                            if r["first_mismatch"] else ""))
        if len(results) > 1:
            print(f"{sum(r['bit_exact'] for r in results)}/{len(results)} bit-exact; cycle error mean "
                  f"{np.mean(errs):.2%} max {np.max(errs):.2%}")
    return 0 if ok else 1
