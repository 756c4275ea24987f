"""`npu sim`: run a program binary on the simulator."""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from cli import machine_inputs
from npu.errors import NpuError

#: Every file named here exists (tests/test_examples.py runs these lines).
EXAMPLES = """\
  npu asm examples/matvec_bias_relu.s --config tiny -o mv.bin
  npu sim mv.bin --mrf examples/matvec_w.npy --vrf asvrf:0:0=examples/matvec_b.npy --input examples/matvec_x.npy
  npu sim mv.bin --mrf examples/matvec_w.npy --vrf asvrf:0:0=examples/matvec_b.npy --input examples/matvec_x.npy \\
      --json --trace trace.json      # open the trace in https://ui.perfetto.dev"""


def add_commands(sub) -> None:
    p = sub.add_parser(
        "sim", help="run a program on the cycle-approximate simulator",
        description="Execute a program file bit-exactly and report its modeled cycles, latency and tile "
                    "utilization (the MACs its mv_mul instructions perform on whole native tiles over the "
                    "peak of the same cycles; a program has no graph, so this is its only utilization).",
        epilog="examples:\n" + EXAMPLES + "\n" + machine_inputs.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("program", help="program file (.bin, from `npu asm`)")
    p.add_argument("--config", help="configuration (default: the one in the program header)")
    machine_inputs.add_arguments(p)
    p.add_argument("--output", metavar="Y.npy", help="save the output queue")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--trace", metavar="FILE", help="write a Chrome trace-event file (Perfetto)")
    p.set_defaults(func=_sim)


def _sim(args) -> int:
    from npu.config import get_config
    from npu.program import Program
    from sim.machine import Machine
    from sim.trace import write_trace

    program = Program.load(args.program)
    if args.config and get_config(args.config) != program.config:
        raise NpuError(f"{args.program} was assembled for {program.config.name!r}, not {args.config!r}")
    m = Machine(program.config)
    machine_inputs.load(m, program, args)
    result = m.run(program)
    y = m.pop_output()
    if args.output:
        np.save(args.output, y)
    if args.trace:
        write_trace(result, args.trace, process_name=args.program)
    if args.json:
        d = result.summary()
        d["outputs"] = y.astype(np.float32).ravel().tolist() if y.size <= 4096 else f"{y.size} values"
        print(json.dumps(d))
        return 0
    s = result.summary()
    print(f"{args.program}: {s['instructions']} instructions, {s['chains']} chains on {s['config']}")
    print(f"  cycles       {s['cycles']:,}")
    print(f"  latency      {s['latency_us']:.3f} us at {program.config.clock_mhz:g} MHz")
    print(f"  tile MACs    {s['tile_macs']:,}  ({s['achieved_tops']:.4f} of {s['peak_tops']:.4f} peak TOPS, "
          f"tile utilization {100 * s['tile_utilization']:.1f} %)")
    busy = ", ".join(f"{u} {100 * v:.0f}%" for u, v in sorted(s["units"].items(), key=lambda kv: -kv[1]))
    print(f"  unit busy    {busy}")
    if y.size:
        np.set_printoptions(precision=4, suppress=True, linewidth=100, threshold=64)
        print(f"  output       {y.shape[0]} vectors: {y.astype(np.float32).ravel()}")
    if args.trace:
        print(f"  trace        {args.trace}")
    sys.stdout.flush()
    return 0
