"""The area model (sweep/area.py) against Yosys on configurations it was not fitted on, and its estimate of the
large presets beside the FPGAs the papers ran them on.

    python benchmarks/bench_area.py                 # held-out configs + small's synthesis time + the presets
    python benchmarks/bench_area.py --dsp           # also tiny on synth_xilinx: DSP48s vs the model's multipliers
    python benchmarks/bench_area.py --cache /tmp/c  # a cache folder (default: ~/.cache/npu-synth, warm after a run)

Targets (issues 13 and 14): the model's error on held-out configurations <= 10 % for LUTs and flip-flops;
small synthesises in under 15 minutes on this 2-core machine (`npu rtl synth --config small`).

Published capacities (vendor pages):
* Stratix 10 GX 2800 (1SG280, the "S10 280" of Fowers et al., ISCA 2018): 933,120 ALMs, 3,732,480 registers,
  11,721 M20K blocks (Intel, Stratix 10 GX FPGA Development Kit User Guide 683674, board overview); 5,760 DSP
  blocks (Intel ARK, Stratix 10 GX FPGA Development Kit).
* Arria 10 GX 1150 (10AX115, BrainSlice's Catapult boards): 427,200 ALMs, 1,708,800 registers, 2,713 M20K
  blocks (Intel, Arria 10 FPGA Development Kit User Guide 683526, board overview).
An ALM holds one 6-input LUT (or two smaller ones) and four registers (Intel, Arria 10 Core Fabric Handbook,
ALM resources): the table compares 6-LUTs with ALMs one for one, an upper bound on the ALMs they need.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TARGET_ERROR = 0.10
SMALL_TARGET_S = 15 * 60

#: name, ALMs, registers, M20K blocks, DSP blocks (None: not on the cited page)
FPGAS = {
    "brainwave-s10": ("Stratix 10 GX 2800", 933_120, 3_732_480, 11_721, 5_760),
    "brainslice-128": ("Arria 10 GX 1150", 427_200, 1_708_800, 2_713, None),
}
M20K_BITS = 20 * 1024


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", help="synthesis cache folder (default ~/.cache/npu-synth or $NPU_SYNTH_CACHE)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--dsp", action="store_true", help="also synthesise tiny for xc7 and compare DSP48s")
    ap.add_argument("--no-small", action="store_true", help="skip timing small's synthesis")
    args = ap.parse_args(argv)
    if args.cache:
        os.environ["NPU_SYNTH_CACHE"] = args.cache

    from npu.config import PRESETS
    from rtl.synth import synthesize
    from sweep import area

    model = area.load_model()
    print(f"area model: fitted on {len(area.TRAIN)} synthesised configurations ({', '.join(area.TRAIN)}); "
          f"{model['yosys'].split('(')[0].strip()}, generic 6-LUT flow\n")
    print("held-out configuration     MACs   LUTs Yosys    model   error   FFs Yosys   model   error   "
          "mem bits err  synth s (modules cached)")
    worst = {"luts": 0.0, "ffs": 0.0}
    for name, cfg in area.HELDOUT.items():
        rep = synthesize(cfg, "generic", jobs=args.jobs)
        est = area.estimate(cfg)
        err = {m: est[m] / getattr(rep, m) - 1 for m in ("luts", "ffs", "memory_bits")}
        for m in worst:
            worst[m] = max(worst[m], abs(err[m]))
        print(f"{name:<24} {cfg.macs_per_cycle:>6} {rep.luts:>12,} {est['luts']:>8,} {err['luts']:>+7.1%} "
              f"{rep.ffs:>10,} {est['ffs']:>7,} {err['ffs']:>+7.1%} {err['memory_bits']:>+12.2%} {rep.seconds:>8.0f} "
              f"({sum(m.cached for m in rep.modules)}/{len(rep.modules)})")
    for m, label in (("luts", "LUTs"), ("ffs", "flip-flops")):
        verdict = "meets" if worst[m] <= TARGET_ERROR else "MISSES"
        print(f"largest held-out error, {label}: {worst[m]:.1%} ({verdict} the {TARGET_ERROR:.0%} target)")

    if not args.no_small:  # with an empty cache: the time a first `npu rtl synth --config small` takes
        saved = os.environ.get("NPU_SYNTH_CACHE")
        with tempfile.TemporaryDirectory(prefix="bench-area-") as cold:
            os.environ["NPU_SYNTH_CACHE"] = cold
            t0 = time.perf_counter()
            rep = synthesize(PRESETS["small"], "generic", jobs=args.jobs)
            took = time.perf_counter() - t0
        if saved is None:
            os.environ.pop("NPU_SYNTH_CACHE")
        else:
            os.environ["NPU_SYNTH_CACHE"] = saved
        print(f"\nsmall, cold cache: {rep.luts:,} LUTs, {rep.ffs:,} FFs, {rep.memory_bits:,} memory bits, "
              f"{rep.logic_levels} logic levels; synthesised in {took:.0f} s, target {SMALL_TARGET_S} s: "
              f"ratio {took / SMALL_TARGET_S:.2f}")

    if args.dsp:
        rep = synthesize(PRESETS["tiny"], "xilinx", jobs=args.jobs)
        print(f"\ntiny on synth_xilinx (xc7): {rep.dsps} DSP48E1; the model's multipliers "
              f"{area.estimate(PRESETS['tiny'])['dsps']} ({area.estimate(PRESETS['tiny'])['dsps'] / rep.dsps - 1:+.1%}); "
              f"{rep.luts:,} LUTs, {rep.carry:,} CARRY4, {rep.ffs:,} FFs ({rep.seconds:.0f} s)")

    print("\npreset           FPGA                  6-LUTs (model)     ALMs   LUT/ALM   FFs (model)  registers  "
          "FF/reg   memory Mbit  M20K Mbit  mem/M20K   multipliers  DSPs")
    for name, (fpga, alms, regs, m20k, dsps) in FPGAS.items():
        est = area.estimate(PRESETS[name])
        mbit, cap = est["memory_bits"] / 1e6, m20k * M20K_BITS / 1e6
        print(f"{name:<16} {fpga:<20} {est['luts']:>15,} {alms:>9,} {est['luts'] / alms:>8.2f} {est['ffs']:>13,} "
              f"{regs:>10,} {est['ffs'] / regs:>7.2f} {mbit:>12.1f} {cap:>10.1f} {mbit / cap:>9.2f} "
              f"{est['dsps']:>12,} {dsps if dsps else '-':>5}")
    print("\n(memory: every on-chip memory of the RTL as written, activation tables and queues included; the "
          "DRAM models are off-chip.  LUTs: every multiplier in LUTs, as the generic flow maps them.)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
