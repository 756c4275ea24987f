import os

import pytest

from npu.config import PRESETS


@pytest.fixture(scope="session")
def tiny_rtl():
    """One Verilator build of `tiny` per session (cached across sessions in ~/.cache/npu-rtl)."""
    from rtl.backend import RtlMachine

    return RtlMachine(PRESETS["tiny"])


@pytest.fixture(scope="session")
def small_rtl():
    """One Verilator build of `small` (about 1-1.5 minutes on 2 cores; slow tests only)."""
    from rtl.backend import RtlMachine

    return RtlMachine(PRESETS["small"])


def assert_exact(case, machine) -> None:
    """The case on the simulator and on ``machine``: the same bits, the same steps completing in the same
    cycles, the same total cycle count."""
    from rtl.check import compare

    cmp = compare(case, machine)
    label = f"seed {case.seed}"
    assert cmp.bit_exact, f"{label}: {cmp.first_mismatch}"
    assert cmp.commits_rtl == cmp.commits_sim, label
    assert cmp.rtl_cycles == cmp.sim_cycles, label


def check_compiled_model(model, config, tmp_path, capsys) -> dict:
    """``model`` (a zoo model's name, built with seed 3, or an ONNX ModelProto) compiled for ``config`` and run
    by `npu rtl check` (the simulator, then the RTL twice: the model file carries the configuration, so the RTL
    build is the one a fixture made): asserts the same bits and the same cycles in all three runs; the check's
    JSON."""
    import json

    from cli.main import main
    from compiler import compile_to_file
    from compiler.zoo import build

    name = model if isinstance(model, str) else model.graph.name
    path = tmp_path / f"{name}.npu"
    compile_to_file(build(model, seed=3) if isinstance(model, str) else model, path, config=config)
    capsys.readouterr()
    assert main(["rtl", "check", str(path), "--seed", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bit_exact"], result["first_mismatch"]
    assert result["rtl_cycles"] == result["sim_cycles"] == result["rtl_cycles_second_run"] > 0
    return result


def random_count(default: int = 6) -> int:
    return int(os.environ.get("NPU_RTL_RANDOM", default))


def pipelined(config):
    """``config`` as the pipelined machine of docs/pipeline.md, as far as the RTL implements it (every
    scoreboard entry of npu.config.PIPELINED_DESIGN; one row slot)."""
    from npu.config import PIPELINED_DESIGN

    return config.with_scoreboard(PIPELINED_DESIGN["scoreboard_entries"])


@pytest.fixture(scope="session")
def tiny_pipelined_rtl():
    """One Verilator build of the pipelined `tiny` per session."""
    from rtl.backend import RtlMachine

    return RtlMachine(pipelined(PRESETS["tiny"]))


@pytest.fixture(scope="session")
def small_pipelined_rtl():
    """One Verilator build of the pipelined `small` (slow tests only)."""
    from rtl.backend import RtlMachine

    return RtlMachine(pipelined(PRESETS["small"]))
