"""One unit of a sweep's work, as a worker runs it: compile and time a model, check its fidelity against
onnxruntime, or check random programs on the RTL against the simulator.

:func:`evaluate` never raises for a failure of the design point: it returns a record with ``status`` "failed"
and a one-line ``error``, so a sweep goes on.  It runs the same in-process (serial mode) and in a Ray worker.
"""
from __future__ import annotations

import json
import socket
import sys
import time
from dataclasses import dataclass, field

from npu.config import NpuConfig
from sweep.spec import ModelSpec

_MODELS: dict[str, object] = {}  # a worker's built or read models, by identity
_MODELS_KEPT = 4


@dataclass(frozen=True)
class Unit:
    """What a worker needs: the kind of work, the point's configuration (a dict), the model (None for
    ``rtl``), the options of the kind, and the cache key."""

    kind: str
    point: int
    config: dict
    model: ModelSpec | None
    options: dict = field(default_factory=dict)
    key: str = ""


def evaluate(unit: Unit, model_data: bytes | None = None) -> dict:
    """The record of one unit: ``status``, ``error``, the kind's metrics, and where and how long it ran.

    ``model_data`` is an ONNX file's bytes when the worker cannot read the file itself (another machine)."""
    t0 = time.perf_counter()
    record = record_of(unit, node_id=node_id(), hostname=socket.gethostname())
    try:
        config = NpuConfig.from_dict(unit.config)
        record.update(_WORK[unit.kind](unit, config, model_data))
    except Exception as exc:  # noqa: BLE001 - any failure of a point is that point's result
        # an out-of-memory or I/O failure may pass on a second try; anything else is the point's own
        record.update(status="failed", error=one_line(exc), cacheable=not isinstance(exc, (MemoryError, OSError)))
    record["eval_time_s"] = round(time.perf_counter() - t0, 3)
    return record


def record_of(unit: Unit, **fields) -> dict:
    """A unit's record: what every kind has, then ``fields``."""
    record = {"key": unit.key, "kind": unit.kind, "point": unit.point, "status": "ok", "error": None,
              "node_id": None, "hostname": None, "cacheable": True, "eval_time_s": None}
    record.update(fields)
    return record


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def node_id() -> str:
    """The Ray node running this process, or "local" outside Ray."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return ray.get_runtime_context().get_node_id()
    return "local"


def has_model(model: ModelSpec) -> bool:
    return _identity(model) in _MODELS


def load_model(model: ModelSpec, data: bytes | None = None):
    """The model as a ModelProto (zoo, built from its recipe) or bytes (ONNX file), kept for the next unit."""
    ident = _identity(model)
    if ident not in _MODELS:
        if model.zoo is not None:
            from compiler.zoo import registry

            loaded = registry.build(model.zoo, seed=model.seed, input_size=model.input_size, **model.params)
        else:
            loaded = data if data is not None else open(model.onnx, "rb").read()
        while len(_MODELS) >= _MODELS_KEPT:
            _MODELS.pop(next(iter(_MODELS)))
        _MODELS[ident] = loaded
    return _MODELS[ident]


def _identity(model: ModelSpec) -> str:
    return json.dumps(model.identity(), sort_keys=True)


def timing(unit: Unit, config: NpuConfig, data) -> dict:
    """Compile and run the cycle model: latency, throughput, utilization, NPU share of MACs, per layer."""
    from compiler import compile_report

    rep = compile_report(load_model(unit.model, data), config=config, input_shapes=unit.model.input_shapes)
    return {
        "total_cycles": rep.total_cycles, "latency_us": rep.latency_us,
        "throughput_ips": 1e6 / rep.latency_us if rep.latency_us else None,
        "utilization": rep.utilization, "npu_mac_share": rep.npu_mac_share, "macs_npu": rep.macs_npu,
        "macs_host": rep.macs_host, "instructions": rep.instructions, "weight_tiles": rep.weight_tiles,
        "weight_mode": rep.weight_mode, "compile_time_s": rep.compile_time_s,
        "layers": [{"layer": L.name, "op": L.op, "target": L.target, "macs": L.macs, "tiles": L.tiles,
                    "cycles": L.cycles, "utilization": L.utilization} for L in rep.layers],
    }


def fidelity(unit: Unit, config: NpuConfig, data) -> dict:
    """The simulator against onnxruntime on ``inputs`` seeded random inputs."""
    from compiler.check import check_model

    res = check_model(load_model(unit.model, data), config=config, inputs=unit.options["inputs"],
                      seed=unit.options["seed"], input_shapes=unit.model.input_shapes)
    return {"cosine_min": res.cosine_min, "max_abs_err": res.max_abs_err, "max_rel_err": res.max_rel_err,
            "top1_agreement": res.top1_agreement, "top5_agreement": res.top5_agreement}


def rtl(unit: Unit, config: NpuConfig, data) -> dict:
    """`npu rtl check --random N`: random programs on the RTL (Verilator) and the simulator, bits and cycles."""
    from rtl.backend import RtlMachine
    from rtl.check import compare
    from rtl.cosim import build
    from rtl.randprog import random_case

    build(config)
    machine = RtlMachine(config)
    seed, n = unit.options["seed"], unit.options["programs"]
    results = [compare(random_case(config, s), machine).summary() for s in range(seed, seed + n)]
    errors = [abs(r["cycle_error"]) for r in results]
    return {"rtl_programs": n, "rtl_bit_exact": all(r["bit_exact"] for r in results),
            "rtl_max_cycle_error": max(errors), "rtl_mean_cycle_error": sum(errors) / n}


_WORK = {"timing": timing, "fidelity": fidelity, "rtl": rtl}
