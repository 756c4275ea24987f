"""rtl/fabric.py: compiled multi-NPU models on N Verilated NPUs joined by the modeled link, bit- and cycle-exact
against the simulator (outputs, every step's start and end, every transfer's start and arrival)."""
import numpy as np
import pytest

from compiler import driver, zoo
from compiler.check import random_feeds
from npu.config import get_config
from npu.fabric import Fabric
from npu.modelfile import model_bytes, read_model

pytestmark = pytest.mark.rtl


def compiled(onnx, config, devices):
    c = driver.compile_graph(onnx, config, devices=devices)
    return read_model(model_bytes(*driver.package(c)))


def check(model, feeds, build, **kw):
    """The model's requests on the RTL fabric against the simulator's executor and fabric schedule."""
    from rtl.fabric_check import check_model
    from runtime.executor import Executor

    return check_model(model, feeds, Executor(model, "sim"), build=build, **kw)


def assert_exact(chk):
    assert chk.outputs_exact, chk.mismatches
    assert chk.events_exact, chk.mismatches
    assert not chk.late and not chk.error and not chk.hung
    assert chk.exact


def assert_input_dependent(chk):
    """Different requests give different outputs (else equal outputs would prove little)."""
    first, second = chk.outputs[0], chk.outputs[1]
    assert any(not np.array_equal(first[k], second[k]) for k in first)


@pytest.fixture(scope="module")
def tiny2():
    from rtl.fabric_check import build_fabric

    return build_fabric(get_config("tiny"), 2)


@pytest.fixture(scope="module")
def tiny_mlp():
    onnx = zoo.build("mlp", seed=0, input_size=64, hidden=[64, 64])
    return onnx, compiled(onnx, "tiny", 2)


def test_tiny_two_npus_one_request_and_a_stream(tiny2, tiny_mlp):
    onnx, model = tiny_mlp
    feeds = random_feeds(onnx, 3, seed=1)
    one = check(model, feeds[:1], tiny2)
    assert_exact(one)
    # a step on each NPU and one transfer between them, the receiver starting the cycle after the arrival
    (to, send, arrival), = [v for k, v in one.rtl_events.items() if k[0] == "link"]
    assert to == 1 and send == one.rtl_events["npu", 0, 0][1]
    assert one.rtl_events["npu", 0, 1][0] == arrival + 1
    stream = check(model, feeds, tiny2)
    assert_exact(stream)
    assert_input_dependent(stream)
    # pipelined: request 1 runs on NPU 0 while request 0 crosses the link or runs on NPU 1
    assert stream.rtl_events["npu", 1, 0][0] < stream.rtl_events["npu", 0, 1][1]
    assert stream.sim_makespan < 3 * one.sim_latency


def test_a_perturbed_link_fails_the_check(tiny2, tiny_mlp):
    onnx, model = tiny_mlp
    feeds = random_feeds(onnx, 2, seed=2)
    link = Fabric.from_dict(model.manifest["fabric"])
    for wrong in (link.replace(hop_cycles=link.hop_cycles + 1), link.replace(link_bytes_per_cycle=1)):
        chk = check(model, feeds, tiny2, fabric=wrong)   # the RTL runs ``wrong``, the schedule ``link``
        assert chk.outputs_exact and not chk.events_exact and not chk.exact
        assert any("link" in m for m in chk.mismatches)


def test_plans_the_fabric_cannot_run_are_refused():
    from rtl.fabric_check import FabricUnsupported

    onnx = zoo.build("mlp", seed=0, input_size=64, hidden=[64, 64])
    one_npu = read_model(model_bytes(*driver.package(driver.compile_graph(onnx, "tiny"))))
    with pytest.raises(FabricUnsupported, match="one NPU"):
        check(one_npu, random_feeds(onnx, 1, seed=0), None)


# ------------------------------------------------------------------------------------------------ slow
def conv_model(cin=16, cout=32, size=6, seed=0):
    """Conv 3x3 cin->cout, Relu, Conv 3x3 cout->8: on tiny the first conv needs 72 tiles, more than one MRF
    (as tests/compiler/test_devices.py's)."""
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.2, (cout, cin, 3, 3)).astype(np.float32)
    b1 = rng.normal(0, 0.1, cout).astype(np.float32)
    w2 = rng.normal(0, 0.2, (8, cout, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["y"], pads=[1, 1, 1, 1])]
    g = helper.make_graph(nodes, "convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, size, size])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, size, size])],
                          [helper.make_tensor(n, TensorProto.FLOAT, a.shape, a.ravel()) for n, a in
                           (("w1", w1), ("b1", b1), ("w2", w2))])
    return helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def tiny4():
    """Four tiny NPUs: runs the 2-, 3- and 4-NPU models (spare NPUs stay idle)."""
    from rtl.fabric_check import build_fabric

    return build_fabric(get_config("tiny"), 4)


@pytest.mark.slow
def test_tiny_row_split_convolution_on_three_npus(tiny4):
    onnx = conv_model()
    model = compiled(onnx, "tiny", "auto")
    routes = model.manifest["routes"]
    # the first convolution's rows are split: part 0 crosses to the NPU that computes part 1 and joins them
    assert model.manifest["fabric"]["devices"] == 3 and any(".rows" in r["tensor"] for r in routes)
    chk = check(model, random_feeds(onnx, 3, seed=3), tiny4)
    assert_exact(chk)
    assert_input_dependent(chk)


@pytest.mark.slow
def test_tiny_lstm_and_its_head_on_two_npus(tiny4):
    onnx = zoo.build("tiny_rnn", seed=0)
    model = compiled(onnx, "tiny", 2)
    for k in (1, 3):
        chk = check(model, random_feeds(onnx, k, seed=4), tiny4)   # a 4-NPU build runs a 2-NPU model
        assert_exact(chk)


@pytest.mark.slow
def test_tiny_one_tensor_to_two_npus_and_two_parts_into_one(tiny4):
    onnx = zoo.build("mlp", seed=0, input_size=16, hidden=[80, 80])
    model = compiled(onnx, "tiny", "auto")
    routes = [(r["from"], r["to"]) for r in model.manifest["routes"]]
    # NPU 0's activation goes to NPUs 1 and 2 (its port sends it twice), each computes half of the 80 x 80
    # layer's rows, and NPU 3 joins the parts
    assert routes == [(0, 1), (0, 2), (1, 3), (2, 3)]
    chk = check(model, random_feeds(onnx, 3, seed=8), tiny4)
    assert_exact(chk)
    assert_input_dependent(chk)
    assert chk.rtl_events["link", 0, 0, 1][1] == chk.rtl_events["link", 0, 0, 0][1] + 4   # 160 bytes at 50 a cycle


@pytest.fixture(scope="module")
def small3():
    from rtl.fabric_check import build_fabric

    return build_fabric(get_config("small"), 3)


@pytest.mark.slow
def test_small_row_parts_combined_on_a_third_npu(small3):
    onnx = zoo.build("mlp", seed=0, input_size=320, hidden=[320, 64])
    model = compiled(onnx, "small", "auto")
    # two NPUs each compute half the rows of the 320 x 320 layer; the third joins them and runs the rest
    assert model.manifest["fabric"]["devices"] == 3 and {r["to"] for r in model.manifest["routes"]} == {2}
    for k in (1, 3):
        chk = check(model, random_feeds(onnx, k, seed=5), small3)
        assert_exact(chk)
    assert_input_dependent(chk)
    # two row parts leaving one port back to back (the port serializes them)
    two = compiled(onnx, "small", 2)
    assert [r["from"] for r in two.manifest["routes"]] == [0, 0]
    chk = check(two, random_feeds(onnx, 2, seed=6), small3)
    assert_exact(chk)
    assert chk.rtl_events["link", 0, 0, 1][1] > chk.rtl_events["link", 0, 0, 0][1]


@pytest.mark.slow
def test_small_two_layer_lstm_on_two_npus(small3):
    onnx = zoo.build("lstm2", seed=0, input_size=64, hidden_size=96, timesteps=3)
    model = compiled(onnx, "small", 2)
    chk = check(model, random_feeds(onnx, 2, seed=7), small3)
    assert_exact(chk)
    assert_input_dependent(chk)


def test_cli_checks_a_model_on_the_fabric(tiny2, tiny_mlp, tmp_path, capsys):
    import json

    from cli.main import main

    onnx, model = tiny_mlp
    path = tmp_path / "mlp2.npu"
    path.write_bytes(model_bytes(*driver.package(driver.compile_graph(onnx, "tiny", devices=2))))
    assert main(["rtl", "check", str(path), "--fabric", "--requests", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["exact"] and res["requests"] == 2 and res["rtl_cycles"] == res["sim_cycles"] > 0
    assert main(["rtl", "check", str(path), "--fabric", "--requests", "0"]) != 0
