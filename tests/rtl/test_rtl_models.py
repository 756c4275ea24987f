"""The zoo's tiny CNN, tiny RNN and digits MLP (its first layer reads the input queue and its last writes the output
queue, compiler/passes/queue_io.py), compiled for `tiny`, on the RTL against the simulator (`npu rtl check`)."""
import json

import pytest

from tests.rtl.conftest import check_compiled_model

pytestmark = pytest.mark.rtl


@pytest.mark.parametrize("name", ["tiny_cnn", "tiny_rnn", "digits"])
def test_rtl_check_of_a_compiled_model_is_bit_and_cycle_exact(name, tiny_rtl, tmp_path, capsys):
    assert check_compiled_model(name, "tiny", tmp_path, capsys)["cycle_error"] == 0.0


def test_rtl_check_of_a_batch_of_lstm_sequences(tiny_rtl, tmp_path, capsys):
    """Batch 2 through one LSTM: every per-timestep chain steps its operands per sequence (inner strides)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from cli.main import main
    from compiler import compile_to_file

    rng = np.random.default_rng(4)
    T, B, I, H = 3, 2, 8, 8
    inits = [numpy_helper.from_array((rng.standard_normal(s) / np.sqrt(s[-1])).astype(np.float32), n)
             for n, s in (("W", (1, 4 * H, I)), ("R", (1, 4 * H, H)))]
    graph = helper.make_graph([helper.make_node("LSTM", ["x", "W", "R"], ["Y", "Y_h"], hidden_size=H)], "lstm_b2",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [T, B, I])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [T, 1, B, H]),
                               helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [1, B, H])], inits)
    path = tmp_path / "lstm_b2.npu"
    compile_to_file(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path, config="tiny")
    capsys.readouterr()
    assert main(["rtl", "check", str(path), "--seed", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bit_exact"], result["first_mismatch"]
    assert result["rtl_cycles"] == result["sim_cycles"] > 0
