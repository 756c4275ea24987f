"""What `npu sim` and `npu rtl run|check` load into a machine before running a program file.

Both commands take the same files: ``--mrf W.npy`` (a float matrix [out, in], quantized and cut into
tiles pinned at MRF tile 0), ``--vrf SPACE:MFU:ADDR=FILE.npy`` (vectors preloaded into a vector
memory), ``--input X.npy`` (values pushed on the input queue, flattened and zero-padded to whole
native vectors).
"""
from __future__ import annotations

import argparse

import numpy as np

from npu.errors import NpuError
from npu.isa import Space
from npu.program import Chain, Program, analyze
from npu.weights import tile_matrix

EPILOG = """\
--mrf takes a float matrix [out, in] (.npy), quantized and tiled into the MRF at tile 0;
--vrf SPACE:MFU:ADDR=FILE.npy preloads vectors (e.g. asvrf:0:0=bias.npy);
--input X.npy is pushed on the input queue (flattened, zero-padded to whole native vectors)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mrf", metavar="W.npy", help="weight matrix [out, in] to pin in the MRF at tile 0")
    p.add_argument("--vrf", metavar="SPACE:MFU:ADDR=FILE", action="append", default=[],
                   help="preload vectors into a vector memory (repeatable)")
    p.add_argument("--input", metavar="X.npy", help="values to push on the input queue (flattened)")


def load_npy(path: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise NpuError(f"{path}: cannot read .npy: {exc}") from None


def load(machine, program: Program, args) -> None:
    """Load --mrf, --vrf and --input into ``machine`` (a sim.Machine or an rtl RtlMachine)."""
    config = program.config
    mvm = [s for s in analyze(program) if isinstance(s, Chain) and s.mrf is not None]
    if args.mrf:
        w = load_npy(args.mrf)
        if w.ndim != 2 or w.dtype.kind != "f":
            raise NpuError(f"--mrf {args.mrf}: expected a float matrix [out, in], got {w.dtype} {list(w.shape)}")
        image, _, _ = tile_matrix(w, config)
        if image.tiles > config.mrf_tiles:
            raise NpuError(f"--mrf {args.mrf}: {image.tiles} tiles do not fit the {config.mrf_tiles}-tile MRF")
        machine.load_mrf(image)
    elif mvm:
        s = mvm[0]
        raise NpuError(f"the program multiplies by MRF tiles (mv_mul at pc {s.pc + 1}) but no --mrf weights were "
                       f"given: the MRF would hold zeros; pass --mrf W.npy (a float matrix [out, in])")
    for spec in args.vrf:
        try:
            where, path = spec.split("=", 1)
            space, mfu, addr = where.split(":")
            space = Space[space.upper()]
            mfu, addr = int(mfu), int(addr, 0)
        except (ValueError, KeyError):
            raise NpuError(f"--vrf {spec!r}: expected SPACE:MFU:ADDR=FILE.npy, e.g. asvrf:0:0=bias.npy") from None
        machine.load_vectors(space, addr, np.asarray(load_npy(path), np.float32).reshape(-1, config.native_dim), mfu)
    if args.input:
        x = load_npy(args.input).ravel()
        machine.push_input(np.pad(x, (0, -len(x) % config.native_dim)))
