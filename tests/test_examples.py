"""Every example in examples/ runs and checks itself against numpy."""
import runpy
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(path, capsys):
    runpy.run_path(str(path), run_name="__main__")
    assert capsys.readouterr().out


def test_the_sim_help_examples_run(tmp_path, monkeypatch, capsys):
    """The command lines `npu sim --help` shows work as printed, from the project root, on files that exist;
    the output equals relu(W x + b) within the format's error bound."""
    import json
    import shlex

    import numpy as np

    from cli.main import main
    from cli.sim import EXAMPLES as LINES

    root = Path(__file__).parents[1]
    monkeypatch.chdir(root)
    commands = [shlex.split(line.split("#")[0]) for line in LINES.replace("\\\n", " ").splitlines()]
    for words in commands:
        assert words[0] == "npu"
        words = [str(tmp_path / w) if w == "mv.bin" else w.replace("trace.json", str(tmp_path / "t.json"))
                 for w in words[1:]]
        assert main(words) == 0, words
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    W, b, x = (np.load(root / "examples" / f"matvec_{n}.npy").astype(np.float64) for n in ("w", "b", "x"))
    ref = np.maximum(W @ x + b, 0)
    assert np.abs(np.array(out["outputs"]) - ref).max() <= 2 ** -6 * (np.abs(W) @ np.abs(x)).max()
    assert (tmp_path / "t.json").exists()


def test_a_program_with_mv_mul_and_no_weights_is_refused(tmp_path, capsys):
    from cli.main import main

    root = Path(__file__).parents[1]
    prog = tmp_path / "mv.bin"
    assert main(["asm", str(root / "examples" / "matvec_bias_relu.s"), "--config", "tiny", "-o", str(prog)]) == 0
    assert main(["sim", str(prog), "--input", str(root / "examples" / "matvec_x.npy")]) == 1
    assert "no --mrf weights were given" in capsys.readouterr().err
