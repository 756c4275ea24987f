"""One GRU cell step, hand-written in NPU assembly (examples/gru_cell.s), against numpy.

Usage: python examples/gru_cell.py
"""
from pathlib import Path

import numpy as np

from npu.asm import assemble
from npu.config import get_config
from npu.isa import Space
from npu.program import Program
from npu.weights import WeightImage, tile_matrix
from sim.machine import Machine

config = get_config("tiny")
H = config.native_dim
rng = np.random.default_rng(3)
Wz, Wr, Wn, Uz, Ur, Un = (rng.normal(0, 0.4, size=(H, H)) for _ in range(6))
bz, br, bn, bhn = (rng.normal(0, 0.2, size=H) for _ in range(4))
x, h = rng.normal(0, 1, size=H), rng.normal(0, 0.5, size=H)


def sigm(v):
    return 1 / (1 + np.exp(-v))


z, r = sigm(Wz @ x + Uz @ h + bz), sigm(Wr @ x + Ur @ h + br)
n = np.tanh(Wn @ x + bn + r * (Un @ h + bhn))
reference = n + z * (h - n)

machine = Machine(config)
gates, _, _ = tile_matrix(np.block([[Wz, Uz], [Wr, Ur]]), config)
machine.load_mrf(WeightImage.concat([gates, tile_matrix(Un, config)[0], tile_matrix(Wn, config)[0]]))
machine.load_vectors(Space.IVRF, 0, np.stack([x, h]))
machine.load_vectors(Space.ASVRF, 0, np.stack([bz, br, bhn, bn]), mfu=0)
program = Program(config, assemble((Path(__file__).parent / "gru_cell.s").read_text()))
result = machine.run(program)
y = machine.pop_output().astype(np.float64).ravel()

err = np.abs(y - reference).max()
print(f"h' = {np.round(y, 3)}")
print(f"max |h' - numpy| = {err:.4g}; {result.chains} chains, {result.cycles} cycles, {result.latency_us:.2f} us")
# Gates pass through 7-bit BFP products, fp16 and PWL activations: 2e-2 absolute is the format's bound here.
assert err < 2e-2, "NPU GRU step differs from numpy beyond the format's error bound"
