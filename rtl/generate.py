"""Verilog generation and the generation report (ports, memories, MAC count)."""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from npu.config import NpuConfig
from npu.errors import ConfigError
from rtl.layout import MAX_WORD_BITS
from rtl.npu import Npu

#: Verilog module name of the NPU.
TOPLEVEL = "npu_top"


@dataclass(frozen=True)
class RtlParams:
    """Generator parameters that are not part of the architecture (see rtl.npu.Npu)."""

    program_depth: int = 4096
    queue_depth: int = 512
    max_word_bits: int = MAX_WORD_BITS


def make_top(config: NpuConfig, params: RtlParams | None = None) -> Npu:
    if config.pipelined and config.latencies.chain_setup < 2:
        raise ConfigError("latencies.chain_setup", "the pipelined RTL needs chain_setup >= 2 (the issue unit sees "
                                                   "the read sequencer free a cycle after its last read)")
    params = params or RtlParams()
    return Npu(config, program_depth=params.program_depth, queue_depth=params.queue_depth,
               max_word_bits=params.max_word_bits)


def write_verilog(config: NpuConfig, outdir: str | Path, params=None) -> Path:
    """Write ``npu_top.v`` (every unit of rtl/units.py defined once, then the top) and ``report.json``
    into outdir; returns the Verilog path."""
    top = make_top(config, params)
    return write_design(top, top, TOPLEVEL, outdir)


def write_design(design, core: Npu, name: str, outdir: str | Path, **extra) -> Path:
    """Write ``<name>.v`` (every unit of ``core``, rtl/units.py, defined once, then ``design``: the core
    itself or a design around it) and ``report.json`` (:func:`report` of the core updated by ``extra``, with
    the Verilog's size and each module's conversion time) into outdir; returns the Verilog path."""
    from amaranth.back import verilog

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    seconds, parts = {}, []
    for unit_name, unit in core.units.items():
        t0 = time.perf_counter()
        parts.append(verilog.convert(unit, name=unit_name, emit_src=False))
        seconds[unit_name] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    with _no_zero_memory_init():
        parts.append(verilog.convert(design, name=name, emit_src=False))
    seconds[name] = round(time.perf_counter() - t0, 2)
    path = outdir / f"{name}.v"
    path.write_text("".join(parts))
    rep = report(core)
    rep.update(extra)
    rep["verilog_bytes"] = path.stat().st_size
    rep["convert_seconds"] = seconds
    (outdir / "report.json").write_text(json.dumps(rep, indent=2) + "\n")
    return path


@contextmanager
def _no_zero_memory_init():
    """Emit no initial contents for all-zero memories while converting (Amaranth 0.5 internals).

    Amaranth writes every memory's initial contents bit by bit into the RTLIL and Yosys one ``initial``
    line per word into the Verilog, even when they are all zero: most of small's Verilog, and for
    brainwave-s10 (a 1.3 GB weight DRAM) more than can be built at all.  The NPU's RAMs start at zero
    only in simulation, where Verilator's ``--x-initial 0`` (rtl/cosim.py) zeroes every variable;
    constant tables (the activation ROMs) keep their contents.
    """
    from amaranth.back import rtlil

    emitter = getattr(rtlil, "ModuleEmitter", None)
    if emitter is None or not hasattr(emitter, "emit_memory"):
        raise RuntimeError("this Amaranth has no rtlil.ModuleEmitter.emit_memory; rtl/generate.py needs 0.5")
    original = emitter.emit_memory

    def emit_memory(self, cell_idx, cell):
        if any(cell.init):
            original(self, cell_idx, cell)

    emitter.emit_memory = emit_memory
    try:
        yield
    finally:
        emitter.emit_memory = original


def report(top) -> dict:
    """Ports, memories and their sizes, and the MAC count of a generated NPU."""
    from amaranth.hdl import Shape

    c = top.config
    ports = []
    for path, member in top.signature.members.flatten():
        if member.is_port:
            ports.append({"name": "__".join(map(str, path)), "dir": member.flow.value,
                          "width": Shape.cast(member.shape).width})
    mems = [{"name": m.name, "depth": m.depth, "width": m.width, "bits": m.depth * m.width}
            for m in top.memmap.memories]
    mems.append({"name": "mvm_buffer", "depth": top.mvm_buffer,
                 "width": c.native_dim * (c.act_fmt.mant_bits + 1) + (c.native_dim // c.block) * c.act_fmt.exp_bits,
                 "bits": 0})
    mems[-1]["bits"] = mems[-1]["depth"] * mems[-1]["width"]
    for q in ("inq", "outq"):
        mems.append({"name": q, "depth": top.queue_depth, "width": 16 * c.native_dim,
                     "bits": top.queue_depth * 16 * c.native_dim})
    return {"config": c.name, "fingerprint": c.fingerprint(), "macs_per_cycle": c.macs_per_cycle,
            "tile_engines": c.tile_engines, "dot_product_engines": c.tile_engines * c.native_dim,
            "lanes": c.dpe_lanes, "mfus": [list(u) for u in c.mfus], "ports": ports, "memories": mems,
            "memory_bits": sum(m["bits"] for m in mems)}
