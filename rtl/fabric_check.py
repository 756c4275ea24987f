"""Runs a compiled multi-NPU model on the RTL fabric (rtl/fabric.py) and checks it against the simulator.

:func:`build_fabric` Verilates ``fabric_top`` (N instances of one configuration's NPU, cached like rtl/cosim.py's
builds); :func:`fabric_job` turns a model file's plan into the fabric's tables, memory images and host
tensors; :func:`check_model` runs K requests through the RTL fabric and compares, against the simulator:

* the outputs of every request, bit for bit (the simulator's executor, one machine per NPU, tensors crossing
  through the host);
* every NPU step's start and end cycle and every link transfer's start and arrival cycle, against the events
  of :func:`sim.fabric.schedule` for the same requests (the step cycles the simulator measured).

The RTL fabric runs plans whose NPUs each run one program per request, whose host steps only read the model's
inputs or produce its outputs (no host step between NPUs), and whose tensors cross in the layout both sides
share (the compiler's row and stage splits give such plans); :class:`FabricUnsupported` names what does not fit.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from npu.config import NpuConfig
from npu.errors import NpuError
from npu.fabric import Fabric
from rtl.cosim import (CONTROL_FILE_VERSION, IMPORTED_SOURCE_HASH, VERILATOR_ARGS, CosimError, _lock, cache_root,
                       run_job, source_hash)
from rtl.fabric import (FABRIC_TOPLEVEL, MAX_SEGMENT_VECTORS, MAX_TRANSFER_BYTES, SCALAR_LINKS, SCALAR_PORT,
                        SCALAR_PROG_LEN, SCALAR_RECV, SCALAR_REQUESTS, SCALAR_ROUTE, write_fabric_verilog)
from rtl.generate import TOPLEVEL, RtlParams
from rtl.toolchain import ToolchainError, verilator_env

#: the fabric's buffer sizes (part of the build's key)
SIZES = {"table_depth": 16, "rx_depth": 512, "host_depth": 2048, "hop_depth": 16}


class FabricUnsupported(NpuError):
    """The plan is one the RTL fabric does not run (the message says which step or tensor)."""


# ---------------------------------------------------------------------------------------------------- build
@dataclass
class FabricBuild:
    config: NpuConfig
    devices: int
    params: RtlParams
    directory: Path
    build_seconds: float  # 0.0 when it came from the cache
    # what rtl.cosim.run_job reads of a build
    toplevel = FABRIC_TOPLEVEL
    test_module = "rtl.fabric_bench"
    trace = False

    @property
    def binary(self) -> Path:
        return self.directory / "sim" / FABRIC_TOPLEVEL


def fabric_source_hash() -> str:
    """rtl/fabric.py's hash (rtl/cosim.py leaves it out of the one-NPU builds' key; the fabric's key adds it)."""
    return hashlib.sha256((Path(__file__).parent / "fabric.py").read_bytes()).hexdigest()[:12]


IMPORTED_FABRIC_HASH = fabric_source_hash()


def fabric_build_dir(config: NpuConfig, devices: int, params: RtlParams = RtlParams()) -> Path:
    key = hashlib.sha256(json.dumps(["fabric", config.fingerprint(), devices, asdict(params), SIZES, source_hash(),
                                     fabric_source_hash(),
                                     VERILATOR_ARGS, CONTROL_FILE_VERSION]).encode())
    return cache_root() / f"fabric{devices}-{config.name}-{key.hexdigest()[:16]}"


def _control_file(vfile: Path) -> Path:
    """Only the fabric's ports are visible to cocotb; the NPU and its units are never inlined (one NPU module,
    compiled once, instantiated N times)."""
    import re

    from rtl.units import UNIT_NAMES

    text = vfile.read_text()
    head = text[text.index(f"module {FABRIC_TOPLEVEL}("):]
    head = head[:head.index(");")]
    ports = re.findall(r"[A-Za-z_][A-Za-z0-9_$]*", head[len(f"module {FABRIC_TOPLEVEL}("):])
    lines = ["`verilator_config"] + [f'public_flat_rw -module "{FABRIC_TOPLEVEL}" -var "{p}"' for p in ports]
    lines += [f'no_inline -module "{name}"' for name in [*UNIT_NAMES.values(), TOPLEVEL]]
    path = vfile.with_suffix(".vlt")
    path.write_text("\n".join(lines) + "\n")
    return path


def _runner(b: FabricBuild, vfile: Path, *, always: bool, log: Path):
    from cocotb_tools.runner import Verilator

    class _Verilator(Verilator):
        def _build_command(self):
            cmds = super()._build_command()
            cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
            return cmds

    runner = _Verilator()
    vlt = vfile.with_suffix(".vlt")
    runner.build(sources=[vfile], hdl_toplevel=FABRIC_TOPLEVEL, build_dir=b.directory / "sim",
                 build_args=[*VERILATOR_ARGS, str(vlt)], always=always, log_file=log)
    return runner


def build_fabric(config: NpuConfig, devices: int, params: RtlParams = RtlParams(), *, progress=None) -> FabricBuild:
    """Generate and Verilate the fabric of ``devices`` NPUs of ``config`` (cached under $NPU_RTL_CACHE)."""
    if source_hash() != IMPORTED_SOURCE_HASH or fabric_source_hash() != IMPORTED_FABRIC_HASH:
        raise CosimError("rtl/ or npu/ changed on disk since this process imported them; restart it to build "
                         "the changed RTL")
    verilator_env()
    say = progress or (lambda message: None)
    d = fabric_build_dir(config, devices, params)
    with _lock(d.with_suffix(".lock")):
        b = FabricBuild(config, devices, params, d, 0.0)
        if b.binary.exists():
            say(f"using the cached fabric of {devices} x {config.name} in {d}")
            return b
        t0 = time.perf_counter()
        d.mkdir(parents=True, exist_ok=True)
        say(f"building the fabric of {devices} x {config.name} in {d}: generating Verilog")
        vfile = write_fabric_verilog(config, devices, d / "verilog", params, **SIZES)
        _control_file(vfile)
        try:
            import cocotb_tools.runner  # noqa: F401 - the build needs it; say so before Verilator starts
        except ImportError:
            raise ToolchainError("cocotb is not installed: `pip install cocotb==2.1.0`") from None
        log = d / "build.log"
        say(f"building the fabric of {devices} x {config.name}: Verilator and the C++ compiler")
        try:
            _runner(b, vfile, always=True, log=log)
        except (SystemExit, Exception) as exc:
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise CosimError(f"Verilator build of the fabric failed ({exc}); see {log}\n{tail}") from None
        b.build_seconds = time.perf_counter() - t0
        (d / "build.json").write_text(json.dumps({"seconds": b.build_seconds, "config": config.name,
                                                  "devices": devices}))
        say(f"built the fabric in {b.build_seconds:.0f} s")
        return b


def run_fabric_job(b: FabricBuild, job: dict) -> dict:
    """One job on the fabric (rtl/fabric_bench.py), in a simulator process of its own."""
    return run_job(b, job, runner=_runner)


# ---------------------------------------------------------------------------------------------------- the plan
@dataclass
class DeviceTables:
    """What one NPU of the fabric does per request (see rtl/fabric.py for the fields' meaning)."""

    step: int | None = None                                       # its plan step (None: idle)
    recv: list[tuple[int, int, str]] = field(default_factory=list)    # (source: 0 host, 1 + s NPU s; vectors; tensor)
    route: list[tuple[int, int, str]] = field(default_factory=list)   # (vectors, mask, tensor)
    port: list[tuple[int, int, str]] = field(default_factory=list)    # (destination, bytes, tensor)
    links: list[int] = field(default_factory=list)                    # transfers per request from each NPU


def plan_tables(model, config: NpuConfig, devices: int) -> list[DeviceTables]:
    """The fabric's tables for a model file's plan; :class:`FabricUnsupported` when it does not fit the RTL."""
    plan = model.manifest["plan"]
    vb = config.native_dim * 2
    tabs = [DeviceTables(links=[0] * devices) for _ in range(devices)]
    producer: dict[str, tuple[int, dict]] = {}          # tensor -> (device, output spec)
    host_made_from_npu: set[str] = set()
    host_reads: set[str] = set()
    model_outputs = {s.name for s in model.outputs}
    for k, step in enumerate(plan):
        if step["kind"] == "host":
            if any(t in producer or t in host_made_from_npu for t in step["inputs"]):
                host_made_from_npu.update(step["outputs"])
            host_reads.update(step["inputs"])
            continue
        d = int(step.get("device", 0))
        if not 0 <= d < devices:
            raise FabricUnsupported(f"plan step {k} runs on NPU {d}; the RTL fabric has {devices}")
        if tabs[d].step is not None:
            raise FabricUnsupported(f"NPU {d} runs plan steps {tabs[d].step} and {k}: the RTL fabric runs one "
                                    "program per NPU per request")
        tabs[d].step = k
        seen = set()
        for spec in step["inputs"]:
            t = spec["tensor"]
            if t in host_made_from_npu:
                raise FabricUnsupported(f"plan step {k} reads {t!r}, which a host step computes from NPU results: "
                                        "the RTL fabric has no host between NPUs")
            if t in producer:
                p, out = producer[t]
                if p == d:
                    raise FabricUnsupported(f"plan step {k} reads {t!r} from its own NPU")
                if t in seen:
                    raise FabricUnsupported(f"plan step {k} reads {t!r} twice")
                if spec["kind"] != "stream" or spec["vectors"] != out["vectors"] or \
                        not np.array_equal(model.array(spec["emap"]), model.array(out["emap"])):
                    raise FabricUnsupported(f"{t!r} crosses from NPU {p} to NPU {d} in another layout: the RTL "
                                            "link forwards the sender's vectors as they are")
                seen.add(t)
                tabs[d].recv.append((1 + p, spec["vectors"], t))
            else:
                tabs[d].recv.append((0, spec["vectors"], t))
        for spec in step["outputs"]:
            producer[spec["tensor"]] = (d, spec)
    # routes: every NPU output to the NPUs that read it and/or the host
    readers: dict[str, list[int]] = {}
    for step in plan:
        if step["kind"] == "npu":
            for spec in step["inputs"]:
                readers.setdefault(spec["tensor"], []).append(int(step.get("device", 0)))
    for d, tab in enumerate(tabs):
        if tab.step is None:
            continue
        for spec in plan[tab.step]["outputs"]:
            t = spec["tensor"]
            npus = sorted(set(readers.get(t, [])) - {d})
            host = t in model_outputs or t in host_reads or not npus
            tab.route.append((spec["vectors"], int(host) | sum(1 << (1 + e) for e in npus), t))
    # ports: transfers in the order sim/fabric.schedule sends them (the readers' plan order, then read order)
    crossed = set()
    for step in plan:
        if step["kind"] != "npu":
            continue
        e = int(step.get("device", 0))
        for spec in step["inputs"]:
            t = spec["tensor"]
            if t in producer and producer[t][0] != e and (t, e) not in crossed:
                crossed.add((t, e))
                s = producer[t][0]
                tabs[s].port.append((e, producer[t][1]["vectors"] * vb, t))
                tabs[e].links[s] += 1
    for d, tab in enumerate(tabs):
        for name, rows in (("receive", tab.recv), ("route", tab.route), ("port", tab.port)):
            if len(rows) > SIZES["table_depth"]:
                raise FabricUnsupported(f"NPU {d} needs {len(rows)} {name} entries; the RTL fabric's tables hold "
                                        f"{SIZES['table_depth']}")
        too_big = [t for _, v, t in tab.recv if v > MAX_SEGMENT_VECTORS] + \
            [t for v, _, t in tab.route if v > MAX_SEGMENT_VECTORS] + \
            [t for _, b, t in tab.port if b > MAX_TRANSFER_BYTES]
        if too_big:
            raise FabricUnsupported(f"NPU {d}: {too_big[0]!r} is too large for the RTL fabric's tables "
                                    f"({MAX_SEGMENT_VECTORS} vectors, {MAX_TRANSFER_BYTES} bytes a transfer)")
    return tabs


def fabric_job(model, config: NpuConfig, fabric: Fabric, tabs: list[DeviceTables], requests_env: list[dict],
               devices: int, params: RtlParams = RtlParams(), *, max_cycles: int = 10_000_000) -> dict:
    """The bench's job: per NPU its memory image and program, tables and host tensors for every request."""
    from npu.plan import im2col, stream_vectors
    from rtl.backend import RtlMachine, _merge_loads
    from rtl.layout import MemoryMap

    class _Image(RtlMachine):
        """An RtlMachine's shadow memories alone (no build, no simulator): what to load into one NPU."""

        def __init__(self):
            self.config, self.params = config, params
            self.memmap = MemoryMap(config, params.program_depth, params.max_word_bits)
            self.shadow = {m.name: {} for m in self.memmap.memories}
            self.inq, self.outq = [], []

    from npu.isa import Space

    plan = model.manifest["plan"]
    images = model.manifest.get("devices") or [{"weights": model.manifest["weights"],
                                                "constants": model.manifest["constants"]}]
    n = config.native_dim
    job = {"devices": devices, "loads": [], "tables": [], "host_inputs": [], "hop_cycles": fabric.hop_cycles,
           "link_bpc": fabric.link_bytes_per_cycle, "max_cycles": max_cycles}
    for d in range(devices):
        tab = tabs[d]
        img = _Image()
        loads = []
        if tab.step is not None:
            image = images[d]
            weights = model.weights(image["weights"]["member"])
            if weights.tiles:
                (img.load_mrf if image["weights"]["mode"] == "pinned" else img.load_weight_dram)(weights, 0)
            arrays = model.arrays(image["constants"]["member"])
            for cst in image["constants"]["vectors"]:
                img.load_vectors(Space(cst["space"]), cst["addr"], arrays[cst["key"]], cst["mfu"])
            words = img._program_words(model.program(plan[tab.step]["program"]))
            mm = img.memmap
            loads = [(mm.by_name["prog"].id, 0, words)]
            for name, mem in img.shadow.items():
                for addr in sorted(mem):
                    loads.append((mm.by_name[name].id, addr, [mem[addr]]))
            loads = _merge_loads(loads)
        job["loads"].append(loads)
        host = []
        if tab.step is not None:
            specs = {s["tensor"]: s for s in plan[tab.step]["inputs"]}
            for env in requests_env:
                for source, vectors, t in tab.recv:
                    if source:
                        continue
                    spec = specs[t]
                    x = np.asarray(env[t], np.float32)
                    v = im2col(x, spec["im2col"], n) if spec["kind"] == "im2col" else \
                        stream_vectors(x, model.array(spec["emap"]), spec["vectors"], n)
                    host.extend(img.memmap.vector_words(np.asarray(v).astype(np.float16).reshape(-1, n)))
        if len(host) > SIZES["host_depth"]:
            raise FabricUnsupported(f"NPU {d} takes {len(host)} vectors from the host for {len(requests_env)} "
                                    f"requests; its host FIFO holds {SIZES['host_depth']}")
        out_vectors = len(requests_env) * sum(v for v, mask, _ in tab.route if mask & 1)
        if out_vectors > SIZES["host_depth"]:
            raise FabricUnsupported(f"NPU {d} sends {out_vectors} vectors to the host; its host FIFO holds "
                                    f"{SIZES['host_depth']}")
        job["host_inputs"].append(host)
        prog_len = len(model.program(plan[tab.step]["program"])) if tab.step is not None else 0
        scalars = {SCALAR_REQUESTS: len(requests_env) if tab.step is not None else 0, SCALAR_RECV: len(tab.recv),
                   SCALAR_ROUTE: len(tab.route), SCALAR_PORT: len(tab.port), SCALAR_PROG_LEN: prog_len}
        scalars.update({SCALAR_LINKS + s: tab.links[s] for s in range(devices)})
        job["tables"].append({"recv": [v | src << 16 for src, v, _ in tab.recv],
                              "route": [v | mask << 16 for v, mask, _ in tab.route],
                              "port": [nbytes | dest << 24 for dest, nbytes, _ in tab.port],
                              "scalars": scalars})
    return job


# ---------------------------------------------------------------------------------------------------- the check
@dataclass
class FabricCheck:
    """What :func:`check_model` found."""

    requests: int
    devices: int
    outputs_exact: bool
    events_exact: bool
    mismatches: list[str]
    rtl_events: dict                 # ("npu", request, device) -> (start, end); ("link", request, from, k) -> ...
    sim_events: dict
    rtl_cycles: int                  # the fabric's clock when it was done (the makespan + 1)
    sim_makespan: int
    sim_latency: int
    late: int
    error: int
    hung: bool
    wall_s: float = 0.0
    sim_s: float = 0.0
    outputs: list[dict] = field(default_factory=list)    # per request, the model's outputs from the RTL fabric

    @property
    def rtl_makespan(self) -> int:
        """The cycle the RTL's last step ended (the simulator's makespan, when exact)."""
        return max((v[1] for k, v in self.rtl_events.items() if k[0] == "npu" and v[1] is not None), default=0)

    @property
    def exact(self) -> bool:
        return self.outputs_exact and self.events_exact and not self.late and not self.error and not self.hung

    def summary(self) -> dict:
        return {"requests": self.requests, "devices": self.devices, "exact": self.exact,
                "outputs_exact": self.outputs_exact, "events_exact": self.events_exact,
                "events": len(self.sim_events), "latency_cycles": self.sim_latency,
                "makespan_cycles": self.sim_makespan, "rtl_cycles": self.rtl_makespan,
                "mismatches": self.mismatches[:20], "late": self.late, "error": self.error, "hung": self.hung,
                "wall_s": round(self.wall_s, 3), "rtl_sim_s": round(self.sim_s, 3)}


def rtl_events(res: dict, tabs: list[DeviceTables]) -> dict:
    """The bench's event log as ``{("npu", request, device): (start, end), ("link", request, from, k): (to,
    start, arrival)}``: a step starts in the cycle after its controller asserts ``start`` (the NPU registers it)."""
    out = {}
    starts: dict[int, list[int]] = {}
    ends: dict[int, list[int]] = {}
    sends: dict[int, list[tuple[int, int]]] = {}
    arrivals: dict[int, list[tuple[int, int]]] = {}
    for now, kind, d, dest in res["events"]:
        {"start": starts, "end": ends}.get(kind, {}).setdefault(d, []).append(now + 1 if kind == "start" else now)
        if kind == "send":
            sends.setdefault(d, []).append((now, dest))
        elif kind == "arrive":
            arrivals.setdefault(d, []).append((now, dest))
    for d in set(starts) | set(ends):
        s, e = starts.get(d, []), ends.get(d, [])
        for r in range(max(len(s), len(e))):
            out["npu", r, d] = (s[r] if r < len(s) else None, e[r] if r < len(e) else None)
    for d in set(sends) | set(arrivals):
        per = max(1, len(tabs[d].port))
        s, a = sends.get(d, []), arrivals.get(d, [])
        for i in range(max(len(s), len(a))):
            to = s[i][1] if i < len(s) else a[i][1]
            out["link", i // per, d, i % per] = (to, s[i][0] if i < len(s) else None, a[i][0] if i < len(a) else None)
    return out


def sim_events(sched) -> dict:
    out, count = {}, {}
    for ev in sched.events:
        if ev.kind == "npu":
            out["npu", ev.request, ev.where] = (ev.start, ev.end)
        else:
            k = count.get((ev.request, ev.where), 0)
            count[ev.request, ev.where] = k + 1
            out["link", ev.request, ev.where, k] = (ev.to, ev.start, ev.end)
    return out


def _host_session(model, step: dict):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model.member(step["model"]), opts, providers=["CPUExecutionProvider"])


def _run_host(sessions: dict, model, step: dict, env: dict) -> None:
    sess = sessions.get(step["model"])
    if sess is None:
        sess = sessions[step["model"]] = _host_session(model, step)
    names = [i.name for i in sess.get_inputs()]
    env.update(zip(step["outputs"], sess.run(step["outputs"], {k: env[k] for k in names})))


def check_model(model, feeds: list[dict], reference, *, fabric: Fabric | None = None,
                build: FabricBuild | None = None, params: RtlParams = RtlParams(), progress=None,
                max_cycles: int = 10_000_000) -> FabricCheck:
    """Run ``len(feeds)`` requests of a multi-NPU model file on the RTL fabric and compare them with the simulator
    (see the module doc).  ``reference`` runs the model on the simulator: a ``runtime.executor.Executor`` of it
    (``run(feed) -> (outputs, stats)``, then ``stream(K)``: sim/fabric.py's schedule of K requests for the cycles
    those runs measured); it is the caller's, as runtime/ sits above rtl/.  ``fabric`` overrides the link the RTL
    runs with (the schedule keeps the model's: a way to see the check fail); ``build`` reuses a fabric build with
    enough NPUs."""

    t0 = time.perf_counter()
    if "fabric" not in model.manifest:
        raise FabricUnsupported("the model runs on one NPU (compile it with --devices N for the fabric)")
    model_fabric = Fabric.from_dict(model.manifest["fabric"])
    config = model.config
    devices = model_fabric.devices if build is None else build.devices
    if devices < model_fabric.devices:
        raise FabricUnsupported(f"the model needs {model_fabric.devices} NPUs; the fabric build has {devices}")
    tabs = plan_tables(model, config, devices)
    # the simulator: reference outputs, and each step's cycles
    want = [reference.run(feed)[0] for feed in feeds]
    sched = reference.stream(len(feeds))
    sessions: dict = {}
    # the host's part before the NPUs: the model's inputs and host steps on them
    plan = model.manifest["plan"]
    envs = []
    for feed in feeds:
        env = {s.name: np.asarray(feed[s.name]).astype(s.dtype, copy=False) for s in model.inputs}
        for step in plan:
            if step["kind"] == "host" and all(t in env for t in step["inputs"]):
                _run_host(sessions, model, step, env)
        envs.append(env)
    if build is None:
        build = build_fabric(config, devices, params, progress=progress)
    job = fabric_job(model, config, fabric or model_fabric, tabs, envs, devices, params, max_cycles=max_cycles)
    res = run_fabric_job(build, job)
    # the host's part after: unstream what the NPUs sent, run the remaining host steps
    from npu.plan import unstream
    from rtl.layout import MemoryMap

    mm = MemoryMap(config, params.program_depth, params.max_word_bits)
    got = []
    at = [0] * devices
    for r, env in enumerate(envs):
        env = dict(env)
        for d, tab in enumerate(tabs):
            if tab.step is None:
                continue
            specs = {s["tensor"]: s for s in plan[tab.step]["outputs"]}
            for vectors, mask, t in tab.route:
                if mask & 1:
                    words = res["outputs"][d][at[d]:at[d] + vectors]
                    at[d] += vectors
                    if len(words) == vectors:
                        env[t] = unstream(mm.words_vectors(words), model.array(specs[t]["emap"]), specs[t]["shape"])
        for step in plan:
            if step["kind"] == "host" and not all(t in env for t in step["outputs"]) and \
                    all(t in env for t in step["inputs"]):
                _run_host(sessions, model, step, env)
        env.update({k: np.array(model.array(v)) for k, v in model.manifest.get("const_outputs", {}).items()})
        got.append(env)
    mismatches = []
    outputs_exact = True
    for r, (w, g) in enumerate(zip(want, got)):
        for spec in model.outputs:
            if spec.name not in g or not np.array_equal(np.asarray(w[spec.name]),
                                                        np.asarray(g[spec.name]).astype(np.asarray(w[spec.name]).dtype)):
                outputs_exact = False
                mismatches.append(f"request {r}: output {spec.name!r} differs")
    rev, sev = rtl_events(res, tabs), sim_events(sched)
    for key in sorted(set(rev) | set(sev), key=str):
        if rev.get(key) != sev.get(key):
            mismatches.append(f"{key}: rtl {rev.get(key)} sim {sev.get(key)}")
    events_exact = rev == sev
    return FabricCheck(len(feeds), model_fabric.devices, outputs_exact, events_exact, mismatches, rev, sev,
                       res["cycles"], sched.makespan, sched.latency_cycles, res["late"], res["error"], res["hung"],
                       time.perf_counter() - t0, res["sim_s"],
                       [{spec.name: g.get(spec.name) for spec in model.outputs} for g in got])
