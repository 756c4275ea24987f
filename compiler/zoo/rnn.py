"""Recurrent models: one ONNX LSTM or GRU layer (layout 0), as PyTorch exports ``nn.LSTM`` / ``nn.GRU``.

The input is the sequence ``[timesteps, 1, input_size]``.  Without a head the
output is the hidden state of every step, ``[timesteps, 1, hidden_size]`` (the
exporter's Squeeze of Y's direction axis, written here as a Reshape); with
``output_size > 0`` a Gemm maps the last hidden state to ``[1, output_size]``.

Weights are drawn like PyTorch's default, U(-1/sqrt(H), 1/sqrt(H)), in ONNX's
gate order (LSTM: i, o, f, c; GRU: z, r, h); B holds both bias vectors
(W-bias then R-bias), so the parameter count equals PyTorch's.  The GRU uses
``linear_before_reset=1``, which is PyTorch's formulation.

The defaults (hidden 512, input 512, 25 steps) are a DeepBench inference shape
(DeepBench's RNN kernels use input width = hidden width, batch 1 for inference).
"""
from __future__ import annotations

import math

import numpy as np
import onnx

from compiler.zoo.errors import ZooError
from compiler.zoo.layers import GraphBuilder

GATES = {"LSTM": 4, "GRU": 3}


def build(name: str, *, seed: int, input_size: int, cell: str = "lstm", hidden_size: int = 512,
          timesteps: int = 25, output_size: int = 0) -> onnx.ModelProto:
    op = cell.upper()
    if op not in GATES:
        raise ZooError(f"{name}: cell must be 'lstm' or 'gru', not {cell!r}")
    for field, value in (("hidden_size", hidden_size), ("input_size", input_size), ("timesteps", timesteps)):
        if value < 1:
            raise ZooError(f"{name}: {field} must be a positive integer, not {value}")
    b = GraphBuilder(name, seed=seed)
    x = b.input("input", (timesteps, 1, input_size))
    gates, h = GATES[op], hidden_size
    bound = 1.0 / math.sqrt(h)

    def uniform(*shape: int) -> np.ndarray:
        return b.rng.uniform(-bound, bound, shape).astype(np.float32)

    path = cell.lower()
    inputs = [x, b.param(f"{path}.W", uniform(1, gates * h, input_size)),
              b.param(f"{path}.R", uniform(1, gates * h, h)),
              b.param(f"{path}.B", uniform(1, 2 * gates * h))]
    attrs = {"hidden_size": h, "direction": "forward", "layout": 0}
    if op == "GRU":
        attrs["linear_before_reset"] = 1
    head = output_size > 0
    # Y is only produced when it is used: a head reads Y_h alone.
    y, y_h = b.multi_output_node(op, inputs, path, [None if head else (timesteps, 1, 1, h),
                                                     (1, 1, h) if head else None], **attrs)
    if head:
        last = b.reshape(y_h, (1, h), path)
        out = b.gemm(last, output_size, "fc", output="output")
    else:
        out = b.reshape(y, (timesteps, 1, h), path, output="output")
    return b.finish([out], doc=f"{name}: {op} hidden {h}, input {input_size}, {timesteps} steps"
                               + (f", Gemm head to {output_size}" if head else ""))


def build_stack(name: str, *, seed: int, input_size: int, hidden_size: int = 512, layers: int = 2,
                timesteps: int = 25) -> onnx.ModelProto:
    """``layers`` LSTM layers stacked as PyTorch's ``nn.LSTM(num_layers=layers)`` exports them: each layer's
    Y (squeezed to ``[timesteps, 1, hidden]``) is the next layer's input; the output is the last layer's Y.

    The default input width 256 makes the 2-layer, hidden-512 model of issue 12: 96 + 128 = 224 weight tiles
    on an N = 128 NPU, more than one 128-tile MRF, each layer within one."""
    for field, value in (("hidden_size", hidden_size), ("input_size", input_size), ("timesteps", timesteps),
                         ("layers", layers)):
        if value < 1:
            raise ZooError(f"{name}: {field} must be a positive integer, not {value}")
    if layers > 16:
        raise ZooError(f"{name}: at most 16 layers, not {layers}")
    b = GraphBuilder(name, seed=seed)
    x = b.input("input", (timesteps, 1, input_size))
    h = hidden_size
    bound = 1.0 / math.sqrt(h)

    def uniform(*shape: int) -> np.ndarray:
        return b.rng.uniform(-bound, bound, shape).astype(np.float32)

    width = input_size
    for k in range(layers):
        path = f"lstm{k}"
        inputs = [x, b.param(f"{path}.W", uniform(1, 4 * h, width)), b.param(f"{path}.R", uniform(1, 4 * h, h)),
                  b.param(f"{path}.B", uniform(1, 8 * h))]
        y, _ = b.multi_output_node("LSTM", inputs, path, [(timesteps, 1, 1, h), None], hidden_size=h,
                                   direction="forward", layout=0)
        x = b.reshape(y, (timesteps, 1, h), path, output="output" if k == layers - 1 else None)
        width = h
    return b.finish([x], doc=f"{name}: {layers} stacked LSTM layers, hidden {h}, input {input_size}, "
                             f"{timesteps} steps")
