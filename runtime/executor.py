"""Runs a compiled model file: NPU segments on a machine, host segments on onnxruntime.

    from npu.modelfile import read_model
    from runtime.executor import Executor
    ex = Executor(read_model("resnet50.npu"))           # backend="sim" or "rtl"
    outputs, stats = ex.run({"input": x})

The machine is built once, and the weights (pinned in the MRF or placed in
the weight region of DRAM) and constant vectors are loaded once.  Every
segment's program clears what it reads before it reads it, so running twice
gives identical results.

A model compiled for several NPUs (``npu compile --devices N``; the manifest's
``fabric``) gets one machine per NPU, each loaded with its own weights and
constants; each NPU step runs on the machine of its ``device``, and the run's
latency is one request through the stages with the link hops (sim/fabric.py).
:meth:`Executor.stream` gives the timing of K requests pipelined through them.
"""
from __future__ import annotations

import time

import numpy as np

from npu.errors import NpuError
from npu.isa import Space
from npu.modelfile import ModelFile, RunStats, TensorSpec
from npu.plan import im2col, stream_vectors, unstream
from runtime.backends import make_machine, make_machines


def _host_session(onnx_bytes: bytes, host_steps: int):
    """An onnxruntime session of a host segment (its ONNX was checked to name no file when the model was read).

    Each session has its own intra-op thread pool; a plan of many small host segments (a long chain
    alternating NPU and host) gets one thread per session, or the threads alone would cost gigabytes.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if host_steps > 4:
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.enable_cpu_mem_arena = False
    return ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])


def _as_spec(value, spec: TensorSpec):
    """NPU results come back as float32; a float16/float64 output is returned in its declared type."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "f" and spec.dtype in ("float16", "float64"):
        return value.astype(spec.dtype)
    return value if not isinstance(value, np.ndarray) else np.asarray(value)


class Executor:
    """Executes the manifest's ``plan`` of a :class:`~npu.modelfile.ModelFile`."""

    def __init__(self, model: ModelFile, backend: str = "sim"):
        self.model = model
        self.manifest = model.manifest
        self.backend = backend
        if "plan" not in self.manifest:
            raise NpuError(f"{model.path or '<model>'}: the model file has no execution plan")
        self.config = model.config
        self.fabric = None
        if "fabric" in self.manifest:
            from npu.fabric import Fabric

            self.fabric = Fabric.from_dict(self.manifest["fabric"])
            self.machines = make_machines(self.config, self.fabric.devices, backend)
        else:
            self.machines = [make_machine(self.config, backend)]
        self.machine = self.machines[0]
        steps = self.manifest["plan"]
        self._sessions = {}
        self._programs = {}
        self._emaps = {}
        host_steps = sum(step["kind"] == "host" for step in steps)
        for step in steps:
            if step["kind"] == "npu":
                self._programs[step["program"]] = model.program(step["program"])
                for spec in step["inputs"] + step["outputs"]:
                    if "emap" in spec:
                        self._emaps[spec["emap"]] = model.array(spec["emap"])
            else:
                self._sessions[step["model"]] = _host_session(model.member(step["model"]), host_steps)
        images = self.manifest.get("devices") or [{"weights": self.manifest["weights"],
                                                   "constants": self.manifest["constants"]}]
        for machine, image in zip(self.machines, images):
            weights = model.weights(image["weights"]["member"])
            if weights.tiles:
                if image["weights"]["mode"] == "pinned":
                    machine.load_mrf(weights, 0)
                else:
                    machine.load_weight_dram(weights, 0)
            consts = image["constants"]
            arrays = model.arrays(consts["member"])
            for c in consts["vectors"]:
                machine.load_vectors(Space(c["space"]), c["addr"], arrays[c["key"]], c["mfu"])
        self._cycles: dict[int, int] = {}   # plan step -> modeled cycles of its last run
        self._const_outputs = {k: np.array(model.array(v)) for k, v in self.manifest.get("const_outputs", {}).items()}

    def layers(self, results) -> list[dict]:
        """Per layer of the NPU segments' run results (``trace`` of :meth:`run`): modeled cycles, the layer's
        graph MACs (from the compile report) and its utilization (NpuConfig.utilization)."""
        report = (self.manifest.get("compiler") or {}).get("report") or {}
        graph_macs = {L["name"]: int(L.get("macs", 0)) for L in report.get("layers", [])}
        out = []
        for r in results:
            for region in r.regions() if hasattr(r, "regions") else []:
                macs = graph_macs.get(region["name"], 0)
                out.append({"layer": region["name"], "cycles": int(region["cycles"]), "macs": macs,
                            "utilization": round(self.config.utilization(macs, region["cycles"]), 4),
                            "tile_macs": int(region["tile_macs"]),
                            "tile_utilization": round(region["tile_utilization"], 4)})
        return out

    @property
    def inputs(self) -> list[TensorSpec]:
        return self.model.inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self.model.outputs

    # ------------------------------------------------------------------ running
    def run(self, feeds: dict[str, np.ndarray], *, trace: list | None = None) -> tuple[dict[str, np.ndarray], RunStats]:
        """Run one inference; ``trace`` (a list) receives each NPU segment's RunResult."""
        t0 = time.perf_counter()
        env: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            if spec.name not in feeds:
                raise NpuError(f"missing input {spec.name!r}; the model takes "
                               f"{', '.join(s.name for s in self.inputs)}")
            x = np.asarray(feeds[spec.name])
            if spec.shape and tuple(x.shape) != tuple(spec.shape):
                raise NpuError(f"input {spec.name!r} has shape {list(x.shape)}, the model expects {list(spec.shape)}")
            env[spec.name] = x.astype(spec.dtype, copy=False)
        # NaN and inf are legal inputs with defined results (docs/numerics.md: the MVM reads NaN as 0 and inf as
        # the largest finite magnitude), which differ from onnxruntime's, so a run says it met them
        nonfinite = {name: int(np.size(x) - np.count_nonzero(np.isfinite(x))) for name, x in env.items()
                     if np.asarray(x).dtype.kind == "f"}
        batch = (self.manifest.get("batch") or {}).get("size", 1)
        stats = RunStats()
        if batch > 1:  # the plan runs one sample (compiler/passes/batch.py): the samples go one by one
            parts = [self._run_plan({k: v[i:i + 1] for k, v in env.items()}, stats, trace) for i in range(batch)]
            outs = {s.name: np.concatenate([np.asarray(p[s.name]) for p in parts], axis=0) for s in self.outputs}
        else:
            outs = self._run_plan(env, stats, trace)
        outputs = {s.name: _as_spec(outs[s.name], s) for s in self.outputs}
        stats.extra = {"backend": self.backend, "config": self.config.name}
        if batch > 1:
            stats.extra["batch"] = batch
        peak = 1
        if self.fabric is not None:
            # one request through the NPUs: stages in sequence, link hops included; utilization of all the NPUs.
            # A batch's samples follow each other through the stages, pipelined
            sched = self.stream(batch)
            stats.npu_cycles = sched.latency_cycles if batch == 1 else sched.makespan
            peak = self.fabric.devices
            stats.extra["fabric"] = sched.summary()
        stats.latency_us = stats.npu_cycles / self.config.clock_mhz
        stats.utilization = self.config.utilization(stats.macs, stats.npu_cycles * peak)
        stats.tile_utilization = self.config.utilization(stats.tile_macs, stats.npu_cycles * peak)
        stats.wall_time_s = time.perf_counter() - t0
        if any(nonfinite.values()):
            stats.extra["nonfinite_inputs"] = {name: count for name, count in nonfinite.items() if count}
        return outputs, stats

    def _run_plan(self, env: dict, stats: RunStats, trace: list | None) -> dict:
        """The plan once on ``env`` (inputs by name); adds its NPU cycles, MACs and host time to ``stats``."""
        env = dict(env)
        for k, step in enumerate(self.manifest["plan"]):
            if step["kind"] == "host":
                th = time.perf_counter()
                sess = self._sessions[step["model"]]
                names = [i.name for i in sess.get_inputs()]
                outs = sess.run(step["outputs"], {k: env[k] for k in names})
                env.update(zip(step["outputs"], outs))
                stats.host_time_s += time.perf_counter() - th
            else:
                result = self._run_npu(step, env)
                self._cycles[k] = result.cycles
                stats.npu_cycles += result.cycles
                stats.tile_macs += result.tile_macs
                # graph MACs as the compiler counted them (files from before they were recorded: the tile MACs)
                stats.macs += int(step.get("macs", result.tile_macs))
                stats.instructions += getattr(result, "instructions", 0) or len(self._programs[step["program"]])
                if trace is not None:
                    trace.append(result)
        env.update(self._const_outputs)
        return env

    def stream(self, requests: int = 1):
        """The timing of ``requests`` requests through the model's NPUs (a sim.fabric.FabricSchedule), from the
        cycles of the last :meth:`run` (the cycle model is data-independent); a one-NPU model is a fabric of one."""
        from npu.fabric import default_fabric
        from sim.fabric import plan_steps, schedule

        if not self._cycles and any(s["kind"] == "npu" for s in self.manifest["plan"]):
            raise NpuError("stream() needs a run() first: it times the programs that run measured")
        fabric = self.fabric or default_fabric(self.config, 1)
        return schedule(plan_steps(self.manifest["plan"], self._cycles), fabric, self.config, requests)

    def _run_npu(self, step: dict, env: dict):
        n = self.config.native_dim
        m = self.machines[step.get("device", 0)]
        for spec in step["inputs"]:
            x = np.asarray(env[spec["tensor"]], np.float32)
            if spec["kind"] == "im2col":
                vectors = im2col(x, spec["im2col"], n)
            else:
                vectors = stream_vectors(x, self._emaps[spec["emap"]], spec["vectors"], n)
            m.push_input(vectors)
        program = self._programs[step["program"]]
        result = m.run(program, regions=[tuple(r) for r in step["regions"]])
        out = m.pop_output()
        at = 0
        for spec in step["outputs"]:
            count = spec["vectors"]
            env[spec["tensor"]] = unstream(out[at:at + count], self._emaps[spec["emap"]], spec["shape"])
            at += count
        if at != len(out):
            raise NpuError(f"{step['program']}: the program wrote {len(out)} output vectors, the plan expects {at}")
        return result
