"""An area model of the generated RTL: LUTs, flip-flops, DSPs and on-chip memory bits of any configuration.

Yosys (rtl/synth.py, the ``generic`` 6-LUT target) synthesises the RTL of small configurations module by
module; this model writes each group of modules' counts as a sum of structural terms of the configuration
(:data:`GROUPS`: e.g. the MVM rows' LUTs as native_dim x [tile_engines x lanes x (mantissa bits + 1)^2, ...]),
fits one non-negative coefficient per term by least squares on the synthesised points (:data:`TRAIN`), and
checks itself on configurations it was not fitted on (:data:`HELDOUT`).  The coefficients and the synthesised
points live in ``sweep/area_model.json``; ``python -m sweep.area --refit`` synthesises the points again (cached per
module) and refits them, which the model needs whenever the RTL changes.

DSPs are the multipliers the design instantiates (the MVM's products and the MFU's multiply and activation
units), which ``synth_xilinx`` maps to one DSP48 each (docs/synthesis.md).  Memory bits are counted from the
RTL's memory map (rtl/layout.py) plus the memories the components hold (the MVM buffer, the queues, the
activation tables), as rtl/synth.py reports them; the DRAM models are off-chip and not counted.  ``bram36`` is the
RAMB36 blocks those bits fill at best (one copy, no read-port replication): a lower bound.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

from npu.config import PRESETS, Latencies, NpuConfig, bits_for

#: Where the fitted coefficients and the synthesised points are kept.
MODEL_FILE = Path(__file__).with_name("area_model.json")

_ALL = ("addsub", "mul", "act")


def _cfg(name: str, **changes) -> NpuConfig:
    return PRESETS["tiny"].replace(name=name, **changes)


#: The configurations the model is fitted on: every field the terms read varies among them.
TRAIN: dict[str, NpuConfig] = {c.name: c for c in (
    PRESETS["tiny"],
    PRESETS["small"],
    _cfg("a-n16-msfp16", native_dim=16, weight_format="msfp16", act_format="msfp16"),
    _cfg("a-n16-t2l8-msfp12", native_dim=16, tile_engines=2, dpe_lanes=8, weight_format="msfp12",
         act_format="msfp12", dram_latency=40),
    _cfg("a-n8-t2l2-1mfu", tile_engines=2, dpe_lanes=2, mfus=(_ALL,)),
    _cfg("a-n16-l16-fp9", native_dim=16, dpe_lanes=16, weight_format="ms-fp9", act_format="ms-fp9",
         mfus=(("addsub", "act"), ("mul",))),
    _cfg("a-n24-t3l8-fp9", native_dim=24, tile_engines=3, dpe_lanes=8, weight_format="ms-fp9", act_format="ms-fp9",
         latencies=Latencies(), netq_latency=12),
    _cfg("a-n32-l4-fp8-3mfu", native_dim=32, dpe_lanes=4, weight_format="ms-fp8", act_format="ms-fp8",
         mfus=(_ALL, _ALL, _ALL)),
    _cfg("a-n16-t4l4", native_dim=16, tile_engines=4, latencies=Latencies(), dram_latency=60),
    _cfg("a-n8-t3l8-fp8", tile_engines=3, dpe_lanes=8, weight_format="ms-fp8", act_format="ms-fp8", mrf_tiles=96),
)}

#: Configurations the model is *not* fitted on: its error on them is the error it reports.
HELDOUT: dict[str, NpuConfig] = {c.name: c for c in (
    _cfg("h-n24-t2l4", native_dim=24, tile_engines=2),
    _cfg("h-n16-t3l16-msfp12", native_dim=16, tile_engines=3, dpe_lanes=16, weight_format="msfp12",
         act_format="msfp12", latencies=Latencies()),
    _cfg("h-n32-t2l16-fp9-1mfu", native_dim=32, tile_engines=2, dpe_lanes=16, weight_format="ms-fp9",
         act_format="ms-fp9", mfus=(_ALL,), dram_latency=30),
    _cfg("h-n40-l8-fp9", native_dim=40, dpe_lanes=8, weight_format="ms-fp9", act_format="ms-fp9",
         latencies=Latencies()),
    _cfg("h-n16-t2l4-3mfu", native_dim=16, tile_engines=2, weight_format="msfp16", act_format="msfp16",
         mfus=(_ALL, ("addsub", "mul"), ("act",))),
)}


# ---------------------------------------------------------------------------- structure
def _stages(cfg: NpuConfig, stage: str) -> int:
    return sum(stage in m for m in cfg.mfus)


def _vector_memories(cfg: NpuConfig) -> int:
    """The vector memories a chain reads or writes: the IVRF, DRAM and each MFU's two VRFs."""
    return 2 + 2 * cfg.n_mfus


def _terms_row(c: NpuConfig) -> dict[str, float]:
    n, tl = c.native_dim, c.tile_engines * c.dpe_lanes
    ma, mw, eb = c.act_fmt.mant_bits, c.weight_fmt.mant_bits, c.weight_fmt.exp_bits
    nsub = c.dpe_lanes // min(c.dpe_lanes, c.block)
    return {"products": n * tl * (ma + 1) * (mw + 1), "sums": n * tl * (ma + mw + 2),
            "exponents": n * c.tile_engines * nsub * eb, "rows": n}


def _terms_bfp(c: NpuConfig) -> dict[str, float]:
    n, ma = c.native_dim, c.act_fmt.mant_bits
    return {"elements": n, "mantissas": n * (ma + 1), "blocks": n // c.block}


def _terms_stage(stage: str) -> Callable[[NpuConfig], dict[str, float]]:
    def terms(c: NpuConfig) -> dict[str, float]:
        return {"elements": c.native_dim * _stages(c, stage)}
    return terms


def _terms_wrappers(c: NpuConfig) -> dict[str, float]:
    k = sum(len(m) for m in c.mfus)
    return {"stage_bits": 16 * c.native_dim * k, "stage_pipe": 16 * c.native_dim * k * c.latencies.mfu_stage,
            "operand_bits": 16 * c.native_dim * (_stages(c, "addsub") + _stages(c, "mul")), "stages": k}


def _terms_mvm(c: NpuConfig) -> dict[str, float]:
    n, tl = c.native_dim, c.tile_engines * c.dpe_lanes
    ma, mw, eb = c.act_fmt.mant_bits, c.weight_fmt.mant_bits, c.weight_fmt.exp_bits
    return {"vector_bits": 16 * n, "delay": 16 * n * (c.latencies.mvm + c.latencies.mvm_reduce),
            "weight_select": n * tl * (mw + 1 + eb), "act_select": tl * (ma + 1) * c.cycles_per_tile,
            "odd_banks": _odd_banks(c), "one": 1}


def _odd_banks(c: NpuConfig) -> float:
    """Address bits divided by a tile-engine count that is not a power of two (tile a in bank a % T, row a // T:
    a divider instead of a bit slice)."""
    t = c.tile_engines
    return float(bits_for(c.mrf_tiles)) if t & (t - 1) else 0.0


def _terms_readseq(c: NpuConfig) -> dict[str, float]:
    # the request delay line is as long as the slowest source's latency
    return {"read_select": 16 * c.native_dim * _vector_memories(c), "vector_bits": 16 * c.native_dim,
            "delay": max(c.dram_latency, c.netq_latency, c.latencies.vrf_read), "one": 1}


def _terms_write(c: NpuConfig) -> dict[str, float]:
    return {"write_ports": c.write_slots * _vector_memories(c), "vector_bits": 16 * c.native_dim,
            "delay": 16 * c.native_dim * c.latencies.vrf_write, "one": 1}


def _tile_word_bits(c: NpuConfig) -> int:
    nsub = c.dpe_lanes // min(c.dpe_lanes, c.block)
    return c.native_dim * (c.dpe_lanes * (c.weight_fmt.mant_bits + 1) + nsub * c.weight_fmt.exp_bits)


def _terms_dma(c: NpuConfig) -> dict[str, float]:
    # the weight DRAM's tile words go to one of the tile engines' MRF banks
    t = c.tile_engines
    return {"bank_select": _tile_word_bits(c) * (t // 2), "odd_banks": _odd_banks(c), "one": 1}


def _terms_top(c: NpuConfig) -> dict[str, float]:
    # the load port reads back any memory: a multiplexer over every memory's word
    return {"load_port": _memory_map_widths(c), "odd_banks": _odd_banks(c), "one": 1}


@lru_cache(maxsize=256)
def _memory_map_widths(c: NpuConfig) -> int:
    from rtl.layout import MemoryMap

    return sum(m.width for m in MemoryMap(c, 4096).memories)


def _terms_control(c: NpuConfig) -> dict[str, float]:
    return {"vector_bits": 16 * c.native_dim, "stages": sum(len(m) for m in c.mfus), "one": 1}


#: Module groups of the generated RTL: which modules (rtl/synth.py's names) and the terms of their total count.
GROUPS: dict[str, tuple[Callable[[str], bool], Callable[[NpuConfig], dict[str, float]]]] = {
    "mvm_row": (lambda m: m == "npu_mvm_row", _terms_row),
    "bfp_block": (lambda m: m == "npu_bfp_block", _terms_bfp),
    **{f"mfu_{s}": ((lambda s: lambda m: m == f"npu_mfu_{s}")(s), _terms_stage(s)) for s in _ALL},
    "mfu_stages": (lambda m: m.startswith("npu_top.mfu.mfu"), _terms_wrappers),
    "mvm": (lambda m: m == "npu_top.mvm", _terms_mvm),
    "readseq": (lambda m: m == "npu_top.readseq", _terms_readseq),
    "write": (lambda m: m == "npu_top.write", _terms_write),
    "dma": (lambda m: m == "npu_top.dma", _terms_dma),
    "top": (lambda m: m == "npu_top", _terms_top),
}
#: Every other module (front end, executor, queues, the MFU chain's wiring): the control group.
CONTROL = "control"
METRICS = ("luts", "ffs")


def group_of(module: str) -> str:
    for name, (match, _) in GROUPS.items():
        if match(module):
            return name
    return CONTROL


def terms(cfg: NpuConfig) -> dict[str, dict[str, float]]:
    """Every group's structural terms for ``cfg``."""
    out = {name: fn(cfg) for name, (_, fn) in GROUPS.items()}
    out[CONTROL] = _terms_control(cfg)
    return out


def multipliers(cfg: NpuConfig) -> int:
    """Hardware multipliers of the RTL: tile_engines x lanes per MVM row, one per MFU multiply and activation
    element (the activation's slope product)."""
    n = cfg.native_dim
    return n * cfg.tile_engines * cfg.dpe_lanes + n * (_stages(cfg, "mul") + _stages(cfg, "act"))


def memory_bits(cfg: NpuConfig, queue_depth: int = 512, program_depth: int = 4096) -> int:
    """On-chip memory bits of the RTL as rtl/synth.py counts them (the DRAM models excluded; the front end's step
    queue, about a thousand bits, left out)."""
    from rtl.layout import MemoryMap

    mm = MemoryMap(cfg, program_depth)
    bits = sum(m.depth * m.width for m in mm.memories if not m.name.startswith(("dram", "wdram")))
    n, ma, eb = cfg.native_dim, cfg.act_fmt.mant_bits, cfg.act_fmt.exp_bits
    bits += cfg.mvm_buffer * (n * (ma + 1) + (n // cfg.block) * eb)   # the MVM's circular input buffer
    bits += cfg.mvm_buffer * (eb + 2)                                  # its exponent ring
    bits += 2 * (queue_depth - 1) * 16 * n                             # the input and output queues
    bits += n * _stages(cfg, "act") * _activation_rom_bits()          # each activation element's two tables
    return int(bits)


@lru_cache(maxsize=1)
def _activation_rom_bits() -> int:
    """Bits of one activation element's slope and intercept tables (rtl/units.py: sigmoid then tanh, fp16), less
    the bit columns that are constant in a table, which Yosys removes."""
    from npu.numerics import activation_table, fp16_bits

    sa, sb = activation_table("sigm")
    ta, tb = activation_table("tanh")
    total = 0
    for p, q in ((sa, ta), (sb, tb)):
        words = np.concatenate([fp16_bits(p), fp16_bits(q)]).astype(np.uint32)
        varying = int(np.bitwise_or.reduce(words) & ~np.bitwise_and.reduce(words))
        total += len(words) * bin(varying).count("1")
    return total


# ---------------------------------------------------------------------------- points and fit
def point(report) -> dict:
    """A synthesised point: the configuration and its per-group counts (from an rtl.synth.SynthReport)."""
    from rtl.synth import TARGETS, _count

    tgt = TARGETS[report.target]
    groups: dict[str, dict[str, int]] = {}
    for mod in report.modules:
        g = groups.setdefault(group_of(mod.name), {m: 0 for m in METRICS})
        g["luts"] += mod.instances * _count(mod.cells, tgt.lut)
        g["ffs"] += mod.instances * _count(mod.cells, tgt.ff)
    return {"config": report.config, "target": report.target, "groups": groups,
            "totals": {"luts": report.luts, "ffs": report.ffs, "memory_bits": report.memory_bits},
            "seconds": report.seconds}


def _configs() -> dict[str, NpuConfig]:
    return {**TRAIN, **HELDOUT}


def fit(points: list[dict]) -> dict:
    """Non-negative least-squares coefficients per group and metric, on relative errors (every point counts)."""
    from scipy.optimize import nnls

    configs = _configs()
    coef: dict[str, dict[str, dict[str, float]]] = {}
    for group in [*GROUPS, CONTROL]:
        names = list(terms(configs[points[0]["config"]])[group])
        a = np.array([[terms(configs[p["config"]])[group][k] for k in names] for p in points], dtype=float)
        coef[group] = {}
        for metric in METRICS:
            y = np.array([p["groups"].get(group, {}).get(metric, 0) for p in points], dtype=float)
            w = 1.0 / np.maximum(y, 1.0)   # fit relative error, so small configurations weigh as much
            scale = np.maximum(np.abs(a).max(axis=0), 1e-12)
            x, _ = nnls(a * w[:, None] / scale, y * w)
            coef[group][metric] = {k: float(v / s) for k, v, s in zip(names, x, scale)}
    return coef


@lru_cache(maxsize=1)
def load_model() -> dict:
    try:
        return json.loads(MODEL_FILE.read_text())
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"{MODEL_FILE} is missing or broken ({exc}); refit it with `python -m sweep.area --refit`")


def estimate(cfg: NpuConfig, model: dict | None = None) -> dict[str, int]:
    """LUTs, flip-flops, DSPs, on-chip memory bits and RAMB36 blocks (at best) of ``cfg``'s RTL."""
    coef = (model or load_model())["coefficients"]
    t = terms(cfg)
    out = {}
    for metric in METRICS:
        out[metric] = int(round(sum(c * t[g][k] for g, per in coef.items() for k, c in per[metric].items())))
    out["dsps"] = multipliers(cfg)
    out["memory_bits"] = memory_bits(cfg)
    out["bram36"] = math.ceil(out["memory_bits"] / 36864)
    return out


def area(cfg: NpuConfig) -> dict[str, int]:
    """The sweep's area columns (sweep/facts.py)."""
    e = estimate(cfg)
    return {"area_luts": e["luts"], "area_ffs": e["ffs"], "area_dsps": e["dsps"],
            "area_memory_bits": e["memory_bits"], "area_bram36": e["bram36"]}


def errors(model: dict, names) -> list[dict]:
    """Model vs Yosys on the stored points of ``names``."""
    by_name = {p["config"]: p for p in model["points"]}
    rows = []
    configs = _configs()
    for name in names:
        p = by_name[name]
        e = estimate(configs[name], model)
        rows.append({"config": name, **{f"{m}_yosys": p["totals"][m] for m in (*METRICS, "memory_bits")},
                     **{f"{m}_model": e[m] for m in (*METRICS, "memory_bits")},
                     **{f"{m}_error": e[m] / p["totals"][m] - 1 for m in (*METRICS, "memory_bits")}})
    return rows


# ---------------------------------------------------------------------------- refit
def synthesize_points(names, *, jobs: int = 2, timeout: float = 3600.0, log=print) -> list[dict]:
    from rtl.synth import synthesize

    configs = _configs()
    points = []
    for name in names:
        t0 = time.perf_counter()
        rep = synthesize(configs[name], "generic", jobs=jobs, timeout=timeout)
        points.append(point(rep))
        log(f"{name}: {rep.luts:,} LUTs, {rep.ffs:,} FFs, {rep.memory_bits:,} memory bits "
            f"({time.perf_counter() - t0:.0f} s)")
    return points


def refit(points: list[dict]) -> dict:
    from rtl.synth import FLOW_VERSION, _version_cached

    train = [p for p in points if p["config"] in TRAIN]
    model = {"about": "sweep/area.py: coefficients fitted on Yosys synthesis of TRAIN (generic 6-LUT target); "
                      "refit with `python -m sweep.area --refit`",
             "flow_version": FLOW_VERSION, "yosys": _version_cached(), "points": points,
             "coefficients": fit(train)}
    model["heldout"] = errors(model, [p["config"] for p in points if p["config"] in HELDOUT])
    return model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sweep.area", description="Refit the area model on Yosys synthesis.")
    ap.add_argument("--refit", action="store_true", help="synthesise TRAIN and HELDOUT (cached per module) and refit")
    ap.add_argument("--from-points", action="store_true", help="refit on the points stored in area_model.json")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("-o", "--output", default=str(MODEL_FILE))
    args = ap.parse_args(argv)
    if args.from_points:
        points = json.loads(MODEL_FILE.read_text())["points"]
    elif args.refit:
        points = synthesize_points([*TRAIN, *HELDOUT], jobs=args.jobs)
    else:
        ap.print_help()
        return 2
    model = refit(points)
    Path(args.output).write_text(json.dumps(model, indent=1) + "\n")
    for row in model["heldout"]:
        print(f"{row['config']:<24} LUTs {row['luts_yosys']:>9,} model {row['luts_model']:>9,} "
              f"({row['luts_error']:+.1%})  FFs {row['ffs_yosys']:>8,} model {row['ffs_model']:>8,} "
              f"({row['ffs_error']:+.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
