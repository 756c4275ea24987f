import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from cli.main import main

EXAMPLES = Path(__file__).parents[2] / "examples"


def test_asm_sim_disasm(tmp_path, capsys):
    prog = tmp_path / "mv.bin"
    assert main(["asm", str(EXAMPLES / "matvec_bias_relu.s"), "--config", "tiny", "-o", str(prog)]) == 0
    rng = np.random.default_rng(1)
    np.save(tmp_path / "w.npy", rng.normal(size=(16, 24)))
    np.save(tmp_path / "x.npy", rng.normal(size=24))
    np.save(tmp_path / "b.npy", rng.normal(size=16))
    capsys.readouterr()
    assert main(["sim", str(prog), "--mrf", str(tmp_path / "w.npy"), "--input", str(tmp_path / "x.npy"),
                 "--vrf", f"asvrf:0:0={tmp_path / 'b.npy'}", "--json", "--trace", str(tmp_path / "t.json")]) == 0
    d = json.loads(capsys.readouterr().out)
    assert {"cycles", "latency_us", "tile_utilization", "tile_macs", "instructions"} <= set(d)
    assert d["instructions"] == 8 and d["cycles"] > 0 and len(d["outputs"]) == 16
    assert json.loads((tmp_path / "t.json").read_text())["traceEvents"]
    assert main(["disasm", str(prog)]) == 0
    assert "mv_mul 0" in capsys.readouterr().out


def test_bad_input_is_a_message_not_a_traceback(tmp_path):
    bad = tmp_path / "bad.s"
    bad.write_text("v_rd sram 0\n")
    r = subprocess.run([sys.executable, "-m", "cli.main", "asm", str(bad), "-o", str(tmp_path / "o.bin")],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "bad.s:1: v_rd: operand 'space': unknown space 'sram'" in r.stderr and "Traceback" not in r.stderr


def test_help_lists_commands_with_examples():
    r = subprocess.run([sys.executable, "-m", "cli.main", "--help"], capture_output=True, text=True)
    for cmd in ("config", "asm", "disasm", "sim"):
        assert cmd in r.stdout
    r = subprocess.run([sys.executable, "-m", "cli.main", "sim", "--help"], capture_output=True, text=True)
    assert "examples:" in r.stdout
