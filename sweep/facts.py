"""Derived facts of a configuration: the columns a sweep computes from the configuration alone.

Each provider in :data:`PROVIDERS` maps a valid :class:`~npu.config.NpuConfig` to named numbers; they become
columns of the results table and names that constraints may use.  :data:`COST_AXES` are the columns the
plots offer as a cost.

The on-chip memory bits of :func:`resource_proxy` are a *resource proxy*: a count of the bits the configuration
asks the MRF and the vector register files to hold.  :func:`area` is the area model of sweep/area.py, fitted on
Yosys synthesis of the generated RTL (docs/synthesis.md): LUTs, flip-flops, DSPs, every on-chip memory bit of the
RTL (queues, buffers and tables included) and the RAMB36 blocks those bits fill at best.
"""
from __future__ import annotations

from collections.abc import Callable

from npu.config import PRESETS, NpuConfig


def core(cfg: NpuConfig) -> dict[str, float]:
    """The configuration's own derived properties (npu/config.py)."""
    return {"macs_per_cycle": cfg.macs_per_cycle, "peak_tops": cfg.peak_tops, "n_mfus": cfg.n_mfus,
            "block": cfg.block, "cycles_per_tile": cfg.cycles_per_tile}


def resource_proxy(cfg: NpuConfig) -> dict[str, int]:
    """Bits of on-chip memory: MRF tiles x tile bits + VRF depths x vector bits.

    A tile holds native_dim^2 weights of sign + mantissa bits and one shared exponent per block; a vector
    native_dim fp16 elements.  The VRFs are the MVM's initial VRF and each MFU's add/sub and multiply VRFs.
    """
    n_el = cfg.native_dim * cfg.native_dim
    tile_bits = n_el * (1 + cfg.weight_fmt.mant_bits) + (n_el // cfg.block) * cfg.weight_fmt.exp_bits
    vector_bits = 16 * cfg.native_dim
    mrf_bits = cfg.mrf_tiles * tile_bits
    vrf_bits = (cfg.ivrf_depth + cfg.n_mfus * (cfg.asvrf_depth + cfg.mulvrf_depth)) * vector_bits
    return {"mrf_bits": mrf_bits, "vrf_bits": vrf_bits, "onchip_bits": mrf_bits + vrf_bits}


def area(cfg: NpuConfig) -> dict[str, int]:
    """The area model (sweep/area.py): area_luts, area_ffs, area_dsps, area_memory_bits, area_bram36."""
    from sweep.area import area as model

    return model(cfg)


#: Every provider of derived facts, in column order.
PROVIDERS: tuple[Callable[[NpuConfig], dict], ...] = (core, resource_proxy, area)

#: Columns a plot draws a cost axis for by default, with their axis labels: the area model's LUTs first (the
#: question is "which NPU should I build"), then the resource proxies.
COST_AXES: dict[str, str] = {
    "area_luts": "LUT6 (area model fitted on Yosys synthesis)",
    "macs_per_cycle": "MACs per cycle",
    "onchip_bits": "on-chip memory bits (resource proxy, not area)",
}


def facts(cfg: NpuConfig) -> dict[str, float]:
    """Every derived fact of ``cfg``."""
    out: dict[str, float] = {}
    for provider in PROVIDERS:
        out.update(provider(cfg))
    return out


#: The facts' names (of any configuration), for checking constraints before a sweep runs.
NAMES: tuple[str, ...] = tuple(facts(PRESETS["tiny"]))
