"""The zoo's tiny CNN, tiny RNN and digits MLP (its first layer reads the input queue and its last writes the output
queue, compiler/passes/queue_io.py), compiled for `tiny`, on the RTL against the simulator (`npu rtl check`)."""
import json

import pytest

pytestmark = pytest.mark.rtl


@pytest.mark.parametrize("name", ["tiny_cnn", "tiny_rnn", "digits"])
def test_rtl_check_of_a_compiled_model_is_bit_and_cycle_exact(name, tiny_rtl, tmp_path, capsys):
    from compiler import compile_to_file
    from compiler.zoo import build
    from cli.main import main

    path = tmp_path / f"{name}.npu"
    compile_to_file(build(name, seed=3), path, config="tiny")
    capsys.readouterr()
    assert main(["rtl", "check", str(path), "--seed", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bit_exact"], result["first_mismatch"]
    assert result["rtl_cycles"] == result["sim_cycles"] == result["rtl_cycles_second_run"] > 0
    assert result["cycle_error"] == 0.0
