"""`npu sim`: run a program binary on the simulator."""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from npu.errors import NpuError


def add_commands(sub) -> None:
    p = sub.add_parser(
        "sim", help="run a program on the cycle-approximate simulator",
        description="Execute a program file bit-exactly and report its modeled cycles, latency and tile "
                    "utilization (the MACs its mv_mul instructions perform on whole native tiles over the "
                    "peak of the same cycles; a program has no graph, so this is its only utilization).",
        epilog="examples:\n"
               "  npu asm examples/matvec_bias_relu.s --config tiny -o mv.bin\n"
               "  npu sim mv.bin --mrf examples/matvec_weights.npy --input examples/matvec_x.npy --json\n"
               "  npu sim mv.bin --trace trace.json      # open in https://ui.perfetto.dev\n\n"
               "--mrf takes a float matrix [out, in] (.npy), quantized and tiled into the MRF at tile 0;\n"
               "--vrf SPACE:MFU:ADDR=FILE.npy preloads vectors (e.g. asvrf:0:0=bias.npy).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("program", help="program file (.bin, from `npu asm`)")
    p.add_argument("--config", help="configuration (default: the one in the program header)")
    p.add_argument("--mrf", metavar="W.npy", help="weight matrix [out, in] to pin in the MRF at tile 0")
    p.add_argument("--vrf", metavar="SPACE:MFU:ADDR=FILE", action="append", default=[],
                   help="preload vectors into a vector memory (repeatable)")
    p.add_argument("--input", metavar="X.npy", help="values to push on the input queue (flattened)")
    p.add_argument("--output", metavar="Y.npy", help="save the output queue")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--trace", metavar="FILE", help="write a Chrome trace-event file (Perfetto)")
    p.set_defaults(func=_sim)


def _load_npy(path: str) -> np.ndarray:
    try:
        return np.load(path)
    except (OSError, ValueError) as exc:
        raise NpuError(f"{path}: cannot read .npy: {exc}") from None


def _sim(args) -> int:
    from npu.config import get_config
    from npu.isa import Space
    from npu.program import Program
    from npu.weights import tile_matrix
    from sim.machine import Machine
    from sim.trace import write_trace

    program = Program.load(args.program)
    if args.config and get_config(args.config) != program.config:
        raise NpuError(f"{args.program} was assembled for {program.config.name!r}, not {args.config!r}")
    m = Machine(program.config)
    if args.mrf:
        image, rows, cols = tile_matrix(_load_npy(args.mrf), program.config)
        m.load_mrf(image)
    for spec in args.vrf:
        try:
            where, path = spec.split("=", 1)
            space, mfu, addr = where.split(":")
            m.load_vectors(Space[space.upper()], int(addr, 0), _load_npy(path).reshape(-1, program.config.native_dim),
                           int(mfu))
        except (ValueError, KeyError):
            raise NpuError(f"--vrf {spec!r}: expected SPACE:MFU:ADDR=FILE.npy, e.g. asvrf:0:0=bias.npy") from None
    if args.input:
        x = _load_npy(args.input).ravel()
        n = program.config.native_dim
        m.push_input(np.pad(x, (0, -len(x) % n)))
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
