"""The sweep spec: a TOML file naming the models, the formats, the base configuration and the space.

    [sweep]
    base = "brainslice-128"                 # preset name, or a .toml/.json configuration file
    formats = ["msfp16", "msfp12"]          # or {weight = "msfp12", act = "msfp16"}
    constraints = ["macs_per_cycle <= 20000"]
    fidelity = 0                            # K random inputs compared with onnxruntime per point (0: off)
    rtl_check = 0                           # N random programs on the RTL per small point (0: off)

    [[models]]
    zoo = "resnet50"
    input_size = 64

    [[models]]
    onnx = "models/kws.onnx"
    input_shapes = { input = [1, 49, 10] }

    [space]
    native_dim = [64, 128, 256]                        # a grid
    tile_engines = { start = 1, stop = 8 }             # a range, stop included (step 1)
    dpe_lanes = { start = 8, stop = 64, factor = 2 }   # 8, 16, 32, 64
    mrf_tiles = { low = 64, high = 4096, log = true }  # sampled: needs [sample]
    latencies.mvm = [6, 8]

    [sample]
    method = "lhs"                          # or "random"
    count = 20
    seed = 1

:func:`load_spec` checks everything that can be checked before a run and raises :class:`SpecError` naming the
file, the table and the key.  docs/sweep.md describes every key.
"""
from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from npu.config import NpuConfig, get_config
from npu.errors import ConfigError, NpuError
from npu.numerics import get_bfp_format
from sweep import expr, facts, space
from sweep.errors import SpecError

SWEEP_KEYS = ("name", "base", "formats", "constraints", "fidelity", "rtl_check", "rtl_when", "seed")
ZOO_KEYS = ("zoo", "input_size", "params", "seed", "label")
ONNX_KEYS = ("onnx", "input_shapes", "label")
SAMPLE_KEYS = ("method", "count", "seed")
RANGE_KEYS = ("start", "stop", "step", "factor")
SAMPLED_KEYS = ("low", "high", "log", "choices")
#: Points that may run `rtl check --random` when rtl_check is on: what Verilator builds in about a minute.
DEFAULT_RTL_WHEN = "macs_per_cycle <= 512 and native_dim <= 32"
MAX_RANGE = 10_000


@dataclass(frozen=True)
class ModelSpec:
    """One model of a sweep: a zoo network (name, input size, parameters, seed) or an ONNX file."""

    label: str
    zoo: str | None = None
    input_size: int | None = None
    params: dict = field(default_factory=dict)
    seed: int = 0
    onnx: str | None = None
    onnx_sha256: str | None = None
    input_shapes: dict | None = None

    def identity(self) -> dict:
        """What the model's content depends on: a zoo network's recipe (it is built from a seed), or an
        ONNX file's bytes (by hash) and the input shapes given."""
        if self.zoo is not None:
            return {"zoo": self.zoo, "input_size": self.input_size, "params": self.params, "seed": self.seed}
        return {"onnx_sha256": self.onnx_sha256, "input_shapes": self.input_shapes}


@dataclass(frozen=True)
class Spec:
    source: str
    name: str
    base: NpuConfig
    formats: tuple[tuple[str, str], ...]
    models: tuple[ModelSpec, ...]
    grid: tuple[space.Grid, ...]
    sampled: tuple[space.Sampled, ...]
    sampling: space.Sampling | None
    constraints: tuple[expr.Expression, ...]
    fidelity: int = 0
    rtl_check: int = 0
    rtl_when: expr.Expression = field(default_factory=lambda: expr.parse(DEFAULT_RTL_WHEN))
    seed: int = 0

    def points(self) -> list[space.Point]:
        """The design points, constraints applied."""
        try:
            return space.points(self.base, list(self.formats), list(self.grid), list(self.sampled), self.sampling,
                                list(self.constraints), prefix=self.name)
        except expr.ExpressionError as exc:
            raise SpecError(self.source, "sweep", "constraints", str(exc)) from None


def load_spec(spec: str | Path | dict | Spec) -> Spec:
    """A spec from a file path, TOML text or a dictionary (paths in it relative to the file's folder, else to
    the working directory)."""
    if isinstance(spec, Spec):
        return spec
    if isinstance(spec, dict):
        return _parse(spec, "<dict>", Path.cwd(), "sweep")
    text = str(spec)
    looks_like_path = isinstance(spec, Path) or ("\n" not in text and "=" not in text)
    if looks_like_path:
        path = Path(text)
        try:
            text = path.read_text()
        except OSError as exc:
            raise SpecError(str(path), None, None, f"cannot read the spec: {exc.strerror or exc}") from None
        source, base_dir, name = str(path), path.resolve().parent, path.stem
    else:
        source, base_dir, name = "<string>", Path.cwd(), "sweep"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(source, None, None, f"not valid TOML: {exc}") from None
    return _parse(data, source, base_dir, name)


# ---------------------------------------------------------------------- parsing
def _parse(data: dict, source: str, base_dir: Path, default_name: str) -> Spec:
    def fail(table, key, message):
        raise SpecError(source, table, key, message)

    _known(data, ("sweep", "models", "space", "sample"), fail, None, "table")
    top = data.get("sweep", {})
    if not isinstance(top, dict):
        fail("sweep", None, "must be a table")
    _known(top, SWEEP_KEYS, fail, "sweep", "key")
    name = _typed(top, "name", str, default_name, fail, "sweep")
    base_name = _typed(top, "base", str, "brainslice-128", fail, "sweep")
    if base_name.endswith((".toml", ".json")) and not Path(base_name).is_absolute():
        base_name = str(base_dir / base_name)
    try:
        base = get_config(base_name)
    except ConfigError as exc:
        fail("sweep", "base", str(exc))
    formats = _formats(top.get("formats"), base, fail)
    constraints = [_expression(text, fail, "sweep", f"constraints[{i}]")
                   for i, text in enumerate(_typed(top, "constraints", list, [], fail, "sweep"))]
    counts = {k: _typed(top, k, int, 0, fail, "sweep") for k in ("fidelity", "rtl_check", "seed")}
    for k in ("fidelity", "rtl_check"):
        if counts[k] < 0:
            fail("sweep", k, f"must be 0 (off) or a positive count, not {counts[k]}")
    rtl_when = _expression(_typed(top, "rtl_when", str, DEFAULT_RTL_WHEN, fail, "sweep"), fail, "sweep", "rtl_when")
    models = _models(data.get("models"), base_dir, fail)
    grid, sampled = _space(data.get("space", {}), base, fail)
    sampling = _sampling(data.get("sample"), sampled, fail)
    n = space.grid_size(grid, formats) * (sampling.count if sampling else 1)
    if n > space.MAX_POINTS:
        fail("space", None, f"{n:,} points; at most {space.MAX_POINTS:,} (sample instead of a full grid)")
    return Spec(source, name, base, tuple(formats), tuple(models), tuple(grid), tuple(sampled), sampling,
                tuple(constraints), counts["fidelity"], counts["rtl_check"], rtl_when, counts["seed"])


def _known(table: dict, keys, fail, where: str | None, what: str) -> None:
    for k in table:
        if k not in keys:
            fail(where, k, f"unknown {what}; known: {', '.join(keys)}")


def _typed(table: dict, key: str, kind: type, default, fail, where: str):
    value = table.get(key, default)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        fail(where, key, f"must be {_KIND_NAMES[kind]}, not {value!r}")
    return value


_KIND_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "a table", bool: "true or false"}


def _expression(text, fail, table: str, key: str) -> expr.Expression:
    try:
        e = expr.parse(text)
    except expr.ExpressionError as exc:
        fail(table, key, str(exc))
    known = set(space.FIELDS) | set(facts.NAMES)
    unknown = sorted(e.names - known)
    if unknown:
        fail(table, key, f"{text!r}: unknown name {unknown[0]!r}; known: configuration fields "
                         f"({', '.join(space.FIELDS)}) and derived facts ({', '.join(facts.NAMES)})")
    return e


def _formats(raw, base: NpuConfig, fail) -> list[tuple[str, str]]:
    if raw is None:
        return [(base.weight_format, base.act_format)]
    if not isinstance(raw, list) or not raw:
        fail("sweep", "formats", f"must be a non-empty list of format names or {{weight, act}} tables, not {raw!r}")
    out = []
    for i, item in enumerate(raw):
        key = f"formats[{i}]"
        if isinstance(item, str):
            pair = (item, item)
        elif isinstance(item, dict) and set(item) == {"weight", "act"}:
            pair = (item["weight"], item["act"])
        else:
            fail("sweep", key, f"must be a format name or a table {{weight = ..., act = ...}}, not {item!r}")
        for f in pair:
            try:
                get_bfp_format(f)
            except (ValueError, NpuError) as exc:
                fail("sweep", key, str(exc))
        if pair in out:
            fail("sweep", key, f"{item!r} is listed twice")
        out.append(pair)
    return out


def _models(raw, base_dir: Path, fail) -> list[ModelSpec]:
    from compiler.zoo import registry

    if not isinstance(raw, list) or not raw or not all(isinstance(m, dict) for m in raw):
        fail("models", None, "give at least one [[models]] table (zoo = \"resnet50\" or onnx = \"model.onnx\")")
    out: list[ModelSpec] = []
    for i, m in enumerate(raw):
        where = f"models #{i + 1}"
        if ("zoo" in m) == ("onnx" in m):
            fail(where, None, "needs exactly one of zoo = NAME or onnx = PATH")
        label = _typed(m, "label", str, "", fail, where)
        if "zoo" in m:
            _known(m, ZOO_KEYS, fail, where, "key for a zoo model")
            name = _typed(m, "zoo", str, "", fail, where)
            params = _typed(m, "params", dict, {}, fail, where)
            seed = _typed(m, "seed", int, 0, fail, where)
            try:
                entry, size, full = registry.resolve(name, m.get("input_size"), **params)
            except NpuError as exc:
                fail(where, "zoo" if "unknown model" in str(exc) else
                     "input_size" if "input size" in str(exc) else "params", str(exc))
            label = label or (entry.name if size == entry.input_size else f"{entry.name}-{size}")
            out.append(ModelSpec(label, zoo=entry.name, input_size=size, params=full, seed=seed))
        else:
            _known(m, ONNX_KEYS, fail, where, "key for an ONNX model")
            path = base_dir / _typed(m, "onnx", str, "", fail, where)  # an absolute path stays itself
            try:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError as exc:
                fail(where, "onnx", f"cannot read {path}: {exc.strerror or exc}")
            shapes = m.get("input_shapes")
            if shapes is not None and not (isinstance(shapes, dict) and all(
                    isinstance(v, list) and v and all(isinstance(d, int) and d > 0 for d in v)
                    for v in shapes.values())):
                fail(where, "input_shapes", f"must be a table NAME = [D1, D2, ...] of positive integers, "
                                            f"not {shapes!r}")
            out.append(ModelSpec(label or path.stem, onnx=str(path), onnx_sha256=digest,
                                 input_shapes=shapes))
        if [x.label for x in out].count(out[-1].label) > 1:
            fail(where, "label", f"{out[-1].label!r} names two models; give one a label = \"...\"")
    return out


def _space(raw, base: NpuConfig, fail) -> tuple[list[space.Grid], list[space.Sampled]]:
    if not isinstance(raw, dict):
        fail("space", None, "must be a table of configuration fields")
    entries: list[tuple[str, Any]] = []
    for k, v in raw.items():
        if k == "latencies" and isinstance(v, dict):
            entries += [(f"latencies.{k2}", v2) for k2, v2 in v.items()]
        else:
            entries.append((k, v))
    base_flat = space.flatten(base.to_dict())
    grid, sampled = [], []
    for k, v in entries:
        if k in ("weight_format", "act_format"):
            fail("space", k, "formats are swept by [sweep] formats = [...] (each a format or {weight, act})")
        if k in space.IDENTITY_EXEMPT or k not in base_flat:
            fail("space", k, f"not a configuration field that can be swept; fields: "
                             f"{', '.join(f for f in space.FIELDS if f not in space.IDENTITY_EXEMPT)}")
        dim = _dimension(k, v, base_flat[k], lambda message, k=k: fail("space", k, message))
        (sampled if isinstance(dim, space.Sampled) else grid).append(dim)
    return grid, sampled


def _dimension(name: str, value, base_value, fail):
    kind = _value_kind(base_value)
    numeric = kind in ("integer", "number")

    def check(v, what="values"):
        if not _is_kind(v, kind):
            fail(f"{what} must be {'lists of MFU unit lists' if kind == 'mfus' else kind + 's'}, not {v!r}")
        return v

    if isinstance(value, dict) and set(value) <= set(RANGE_KEYS) and {"start", "stop"} <= set(value):
        if not numeric:
            fail("a range {start, stop, step} needs a numeric field")
        start, stop = check(value["start"], "start and stop"), check(value["stop"], "start and stop")
        if "step" in value and "factor" in value:
            fail("give step or factor, not both")
        if stop < start:
            fail(f"stop ({stop}) is below start ({start})")
        values = []
        if "factor" in value:
            factor = check(value["factor"], "factor")
            if not factor > 1 or start <= 0:
                fail("a geometric range needs factor > 1 and start > 0")
            x = start
            while x <= stop * (1 + 1e-12) and len(values) <= MAX_RANGE:
                values.append(x)
                x *= factor
        else:
            step = check(value.get("step", 1), "step")
            if not step > 0:
                fail(f"step must be positive, not {step}")
            count = int((stop - start) / step + 1e-9) + 1
            if count > MAX_RANGE:
                fail(f"{count:,} values; at most {MAX_RANGE:,}")
            values = [start + i * step if kind == "integer" else round(start + i * step, 12) for i in range(count)]
        return space.Grid(name, tuple(values))
    if isinstance(value, dict) and set(value) <= set(SAMPLED_KEYS) and value:
        if "choices" in value:
            if set(value) != {"choices"} or not isinstance(value["choices"], list) or not value["choices"]:
                fail("a sampled choice is {choices = [...]} with a non-empty list")
            return space.Sampled(name, choices=tuple(check(c) for c in value["choices"]))
        if not numeric or not {"low", "high"} <= set(value):
            fail("a sampled range {low, high[, log]} needs a numeric field and both bounds")
        low, high = check(value["low"], "low and high"), check(value["high"], "low and high")
        log = value.get("log", False)
        if not isinstance(log, bool):
            fail(f"log must be true or false, not {log!r}")
        if high < low or (log and low <= 0):
            fail(f"needs low <= high{' and low > 0 for log' if log else ''}, not [{low}, {high}]")
        return space.Sampled(name, low, high, log)
    if isinstance(value, dict):
        fail(f"a table here is a range {{start, stop[, step | factor]}} or a sample {{low, high[, log]}} or "
             f"{{choices = [...]}}, not keys {sorted(value)}")
    if kind == "mfus" or isinstance(value, list):
        if not isinstance(value, list) or not value:
            fail(f"a grid is a non-empty list of values, not {value!r}")
        if len(set(map(repr, value))) != len(value):
            fail("a value is listed twice")
        return space.Grid(name, tuple(check(v) for v in value))
    return space.Grid(name, (check(value, "a value"),))


def _value_kind(base_value) -> str:
    if isinstance(base_value, bool):
        return "boolean"
    if isinstance(base_value, int):
        return "integer"
    if isinstance(base_value, float):
        return "number"
    if isinstance(base_value, str):
        return "string"
    return "mfus"


def _is_kind(v, kind: str) -> bool:
    if isinstance(v, bool):
        return kind == "boolean"
    if kind == "integer":
        return isinstance(v, int)
    if kind == "number":
        return isinstance(v, (int, float))
    if kind == "string":
        return isinstance(v, str)
    return isinstance(v, list) and bool(v) and all(isinstance(m, list) and all(isinstance(u, str) for u in m)
                                                   for m in v)


def _sampling(raw, sampled: list, fail) -> space.Sampling | None:
    if raw is None:
        if sampled:
            fail("sample", None, f"[space] {sampled[0].field} is sampled ({{low, high}} or {{choices}}); "
                                 "add [sample] with method = \"random\" or \"lhs\" and a count")
        return None
    if not isinstance(raw, dict):
        fail("sample", None, "must be a table")
    _known(raw, SAMPLE_KEYS, fail, "sample", "key")
    if not sampled:
        fail("sample", None, "no [space] field is sampled: give one as {low, high} or {choices = [...]}")
    method = raw.get("method", "lhs")
    if method not in ("random", "lhs"):
        fail("sample", "method", f"must be \"random\" or \"lhs\" (Latin hypercube), not {method!r}")
    count, seed = _typed(raw, "count", int, 0, fail, "sample"), _typed(raw, "seed", int, 0, fail, "sample")
    if count < 1:
        fail("sample", "count", f"must be a positive integer, not {raw.get('count')!r}")
    return space.Sampling(method, count, seed)
