"""A matrix-vector product with bias and ReLU, hand-written in NPU assembly.

Runs examples/matvec_bias_relu.s on the simulator and compares with numpy.  W, b and x are the
.npy files beside it, the same ones `npu sim --help` names.
Usage: python examples/matvec_bias_relu.py
"""
from pathlib import Path

import numpy as np

from npu.asm import assemble
from npu.config import get_config
from npu.isa import Space
from npu.program import Program
from npu.weights import tile_matrix
from sim.machine import Machine

here = Path(__file__).parent
config = get_config("tiny")
W, b, x = (np.load(here / f"matvec_{name}.npy").astype(np.float64) for name in ("w", "b", "x"))

program = Program(config, assemble((here / "matvec_bias_relu.s").read_text()))
machine = Machine(config)
image, rows, cols = tile_matrix(W, config)
machine.load_mrf(image)
machine.load_vectors(Space.ASVRF, 0, b.reshape(-1, config.native_dim), mfu=0)
machine.push_input(x)
result = machine.run(program)
y = machine.pop_output().astype(np.float64).ravel()

reference = np.maximum(W @ x + b, 0)
# msfp16-like weights and activations: 7 mantissa bits, so about 2**-7 relative per product.
err = np.abs(y - reference).max()
bound = 2 ** -6 * (np.abs(W) @ np.abs(x)).max() + 2 ** -10 * np.abs(reference).max()
print(f"y = {np.round(y, 3)}")
print(f"max |y - numpy| = {err:.4g} (bound {bound:.4g}); {result.cycles} cycles, "
      f"{result.latency_us:.2f} us, tile utilization {100 * result.tile_utilization:.1f} %")
assert err <= bound, "NPU result differs from numpy beyond the format's error bound"
