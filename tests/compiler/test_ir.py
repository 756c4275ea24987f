"""The IR as text, the IR verifier between passes, and compile time that grows linearly with the graph."""
from __future__ import annotations

import time

import numpy as np
import pytest
from onnx import helper

from compiler import driver
from compiler.frontend import load_model, to_graph
from compiler.ir import Node
from compiler.verify import verify
from helpers import make_model
from npu.errors import CompileError


def conv_relu_softmax():
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Softmax", ["r"], ["y"], axis=1, name="softmax")]
    return make_model(nodes, {"x": [1, 3, 6, 6]}, {"y": None}, {"W": w})


def test_dump_after_a_pass_shows_nodes_shapes_targets_epilogues_and_reasons():
    dumps = []
    driver.compile_graph(conv_relu_softmax(), "tiny", dump_after=["fuse_epilogues"], dump=dumps.append)
    assert dumps[0] == "# IR after fuse_epilogues"
    lines = dumps[1].splitlines()
    assert lines[0] == "graph (opset 17): inputs x:1x3x6x6; outputs y:1x4x6x6"
    assert lines[1] == "  conv  Conv  x:1x3x6x6, W:4x3x3x3=const -> r:1x4x6x6  npu  [relu]  fused: relu"
    assert lines[2] == "  softmax  Softmax  r:1x4x6x6 -> y:1x4x6x6  host  (Softmax is not an NPU operation)"
    assert len(lines) == 3


def test_dump_after_all_covers_every_pass_and_str_is_the_dump():
    dumps = []
    c = driver.compile_graph(conv_relu_softmax(), "tiny", dump_after=["all"], dump=dumps.append)
    assert [d for d in dumps if d.startswith("# IR after")] == [f"# IR after {p}" for p in driver.PASS_NAMES]
    assert str(c.graph) == c.graph.dump() and "segment 0 (npu)" in dumps[-1]
    with pytest.raises(CompileError, match="no pass named fuse"):
        driver.compile_graph(conv_relu_softmax(), "tiny", dump_after=["fuse"])


def graph():
    return to_graph(load_model(conv_relu_softmax()))


def test_verifier_names_the_pass_and_the_node():
    g = graph()
    verify(g, "to_graph")
    g.remove("conv")  # relu now reads a tensor nobody writes
    with pytest.raises(CompileError, match="after pass 'surgery'.*reads 'c', which no node produces") as exc:
        verify(g, "surgery")
    assert exc.value.node == "relu"


def test_verifier_finds_edits_made_behind_the_graphs_back():
    g = graph()
    g.nodes["relu"].inputs = ["x"]  # not inside g.edit(): the consumer maps still say relu reads c
    with pytest.raises(CompileError, match="maps disagree.*outside Graph.edit"):
        verify(g, "sloppy")
    with g.edit(g.nodes["softmax"]):
        pass
    g.rebuild()
    verify(g, "sloppy")


def test_verifier_rules_after_partitioning():
    g = graph()
    with pytest.raises(CompileError, match="target is None after partitioning"):
        verify(g, "partition", partitioned=True)
    g.add(Node("loop", "Relu", ["y"], ["c2"]))
    with g.edit(g.nodes["conv"]):
        g.nodes["conv"].inputs[0] = "c2"
    with pytest.raises(CompileError, match="after pass 'cyclic': the graph has a cycle"):
        verify(g, "cyclic")


def test_the_driver_runs_the_verifier_after_each_pass(monkeypatch):
    def breaks_the_graph(c):
        c.graph.nodes["softmax"].inputs = ["x"]

    passes = tuple(driver.Pass(p.name, breaks_the_graph) if p.name == "plan_padding" else p for p in driver.PASSES)
    monkeypatch.setattr(driver, "PASSES", passes)
    with pytest.raises(CompileError, match="after pass 'plan_padding'"):
        driver.compile_graph(conv_relu_softmax(), "tiny", verify=True)
    driver.compile_graph(conv_relu_softmax(), "tiny", verify=False)  # off: nothing looks


def test_compile_time_grows_linearly_with_the_graph(monkeypatch):
    """Four times the nodes, about four times the time (a pass doing whole-graph work per node makes it 16x:
    a 10,000-node chain took a minute; benchmarks/bench_compile.py times it). The bound sits halfway (in
    ratios) between linear and quadratic so a loaded machine's noise does not trip it."""
    from compiler import compile_model
    from test_benchmarks import load

    elementwise_chain = load("bench_compile").elementwise_chain
    monkeypatch.setenv("NPU_VERIFY_IR", "0")  # the compiler's own time

    def seconds(n: int) -> float:
        model = elementwise_chain(n)
        best = float("inf")
        for _ in range(3):  # the best of three: a loaded machine inflates single runs
            t = time.process_time()
            compile_model(model, config="tiny")
            best = min(best, time.process_time() - t)
        return best

    compile_model(elementwise_chain(50), config="tiny")  # imports and first-call costs out of the way
    small, large = seconds(1000), seconds(4000)
    assert large / small < 8.0, (small, large)
