"""Compile time per zoo model, against onnxruntime's session creation (graph optimization) on the same ONNX.

    python benchmarks/bench_compile.py                    # every zoo model, default sizes, brainslice-128
    python benchmarks/bench_compile.py --models resnet50 resnet152 --config brainwave-s10
    python benchmarks/bench_compile.py --models --chain 10000   # only the 10,000-node elementwise chain

Targets: resnet50 < 10 s and resnet152 < 20 s on 2 cores; a chain of 10,000 elementwise nodes
(``elementwise_chain``, compile time linear in graph size) < 10 s.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TARGETS = {"resnet50": 10.0, "resnet152": 20.0, "chain": 10.0}


def elementwise_chain(n: int):
    """x -> Add(c) -> Relu -> Mul(c) -> Tanh -> Add(c) ... on [1, 64]: n nodes that fuse into one Eltwise."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    ops = ["Add", "Relu", "Mul", "Tanh"]
    nodes, prev = [], "x"
    for k in range(n):
        out = f"t{k}" if k < n - 1 else "y"
        op = ops[k % 4]
        nodes.append(helper.make_node(op, [prev, "c"] if op in ("Add", "Mul") else [prev], [out], name=f"n{k}"))
        prev = out
    graph = helper.make_graph(nodes, f"chain{n}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
                              initializer=[numpy_helper.from_array(np.array(0.5, np.float32), "c")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def main(argv=None) -> int:
    import onnxruntime as ort

    from compiler import compile_model, zoo

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=[m.name for m in zoo.list_models()])
    ap.add_argument("--config", default="brainslice-128")
    ap.add_argument("--input-size", type=int, default=None, help="override every CNN's input size")
    ap.add_argument("--chain", type=int, default=10_000, help="nodes of the elementwise chain (0: none)")
    args = ap.parse_args(argv)
    print(f"compile time, config {args.config}, {os.cpu_count()} cores; peer: onnxruntime InferenceSession "
          f"creation (ORT_ENABLE_ALL) on the same model")
    print(f"{'model':<13} {'npu compile s':>13} {'ort session s':>13} {'ratio':>7} {'target':>8}  result")
    failed = False
    for name in args.models + ([f"chain{args.chain}"] if args.chain else []):
        if name.startswith("chain"):
            model = elementwise_chain(args.chain)
        else:
            kw = {}
            if args.input_size and zoo.get(name).kind != "rnn" and name not in ("digits", "mlp"):
                kw["input_size"] = args.input_size
            model = zoo.build(name, seed=0, **kw)
        data = model.SerializeToString()
        t0 = time.perf_counter()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        t_ort = time.perf_counter() - t0
        t0 = time.perf_counter()
        try:
            compile_model(model, config=args.config)
            t_npu = time.perf_counter() - t0
            target = TARGETS.get("chain" if name.startswith("chain") else name)
            ok = target is None or t_npu < target
            failed |= not ok
            print(f"{name:<13} {t_npu:>13.2f} {t_ort:>13.2f} {t_npu / t_ort:>6.1f}x "
                  f"{(f'<{target:g}s' if target else '-'):>8}  {'ok' if ok else 'MISSED'}", flush=True)
        except Exception as exc:  # report and go on
            failed = True
            print(f"{name:<13} {'error':>13} {t_ort:>13.2f} {'':>7} {'':>8}  {type(exc).__name__}: {exc}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
