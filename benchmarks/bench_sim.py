"""Simulator throughput: one whole-layer convolution chain per configuration, against numpy's float32 GEMM.

Prints, for each case, the simulated chain's wall time (functional + timing), the same MACs as one plain
float32 numpy matmul of the im2col matrix (the peer: what any numpy model of the layer costs at least),
their ratio, and the timing model's scheduling rate on a long program.

    python benchmarks/bench_sim.py [--repeat 5]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from npu.asm import assemble
from npu.config import get_config
from npu.isa import Space
from npu.program import Program
from npu.weights import tile_matrix
from sim.machine import Machine

CASES = [  # (config, H=W, input channels, output channels, kernel)
    ("brainslice-128", 56, 64, 64, 3),
    ("brainslice-128", 28, 128, 128, 3),
    ("brainslice-128", 56, 256, 64, 1),
    ("brainwave-s10", 14, 400, 400, 3),
    ("small", 16, 32, 64, 3),
]


def conv_case(config_name, hw, cin, cout, k, rng):
    cfg = get_config(config_name)
    n = cfg.native_dim
    ct, rt = -(-cin // n), -(-cout // n)
    pad = k // 2
    wp = hw + 2 * pad
    m = Machine(cfg)
    w = rng.normal(size=(rt * n, k * k * ct * n)) * 0.05
    image, rows, cols = tile_matrix(w, cfg)
    m.load_mrf(image)
    m.load_vectors(Space.IVRF, 0, np.maximum(rng.normal(size=((hw + 2 * pad) * wp * ct, n)), 0))
    text = (f"s_wr rows {rt}\ns_wr cols {k * k * ct}\ns_wr iter_outer {hw}\ns_wr iter_inner {hw}\n"
            f"s_wr win_run {k * ct}\ns_wr win_pitch {wp * ct}\nv_rd ivrf 0 so={wp * ct} si={ct}\nmv_mul 0\n"
            f"vv_add 0\nv_relu mfu=1\nv_wr asvrf 0 mfu=1 so={hw * rt} si={rt}\nend_chain\n")
    return m, Program(cfg, assemble(text)), hw * hw, k * k * ct * n, rt * n


def best(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'config':15} {'layer':22} {'MMACs':>8} {'sim ms':>8} {'numpy f32 ms':>12} {'sim/numpy':>9} {'sim GMAC/s':>10}")
    for cfg, hw, cin, cout, k in CASES:
        m, prog, M, K, R = conv_case(cfg, hw, cin, cout, k, rng)
        sim_t = best(lambda: m.run(prog), args.repeat)
        a = rng.random((M, K), dtype=np.float32)
        b = rng.random((K, R), dtype=np.float32)
        np_t = best(lambda: a @ b, args.repeat)
        macs = M * K * R
        print(f"{cfg:15} {f'{hw}x{hw}x{cin}->{cout} k{k}':22} {macs / 1e6:8.1f} {sim_t * 1e3:8.2f} {np_t * 1e3:12.2f} "
              f"{sim_t / np_t:9.2f} {macs / sim_t / 1e9:10.2f}")
    # timing model alone: a long program of small chains
    cfg = get_config("tiny")
    text = "s_wr rows 2\n" + "v_rd ivrf 0\nvv_add 0\nv_relu mfu=1\nv_wr asvrf 8 mfu=1\nend_chain\n" * 20000
    prog = Program(cfg, assemble(text))
    m = Machine(cfg)
    steps = m.steps_of(prog)
    t = best(lambda: m.timing.schedule(steps, len(prog)), 3)
    print(f"\ntiming model: {len(steps):,} chains scheduled in {t * 1e3:.1f} ms ({len(steps) / t / 1e6:.2f} M chains/s)")


if __name__ == "__main__":
    main()
