"""The design space: configuration fields, the dimensions a spec sweeps, and their expansion into points.

A point is the base configuration with some fields replaced.  Grid dimensions (lists and ranges) multiply;
sampled dimensions (``{low, high}`` or ``{choices}``) are drawn ``count`` times, at random or as a Latin
hypercube, and the samples multiply the grid.  Constraints drop points; a configuration that
:class:`~npu.config.NpuConfig` rejects stays, as an invalid point carrying the message.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from npu.config import Latencies, NpuConfig
from npu.errors import ConfigError
from sweep.expr import Expression, UnknownName
from sweep.facts import facts

#: Fields that name a configuration rather than describe it: left out of a point's identity.
IDENTITY_EXEMPT = ("name", "source")
MAX_POINTS = 100_000


def flatten(config: dict[str, Any]) -> dict[str, Any]:
    """A configuration dictionary with ``latencies`` spread into ``latencies.<stage>`` keys."""
    flat = {k: v for k, v in config.items() if k != "latencies"}
    for k, v in (config.get("latencies") or {}).items():
        flat[f"latencies.{k}"] = v
    return flat


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {k: v for k, v in flat.items() if not k.startswith("latencies.")}
    config["latencies"] = {k.split(".", 1)[1]: v for k, v in flat.items() if k.startswith("latencies.")}
    return config


#: Every configuration field, flattened, in declaration order: the configuration columns of a results table.
FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(NpuConfig) if f.name != "latencies") + \
    tuple(f"latencies.{f.name}" for f in dataclasses.fields(Latencies))


@dataclass(frozen=True)
class Grid:
    """A field taking each of ``values`` in turn (a list or a range in the spec)."""

    field: str
    values: tuple


@dataclass(frozen=True)
class Sampled:
    """A field drawn from ``[low, high]`` (integers when both bounds are; ``log`` spaces draws
    geometrically) or from ``choices``."""

    field: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple | None = None

    def value(self, u: float):
        """The value at quantile ``u`` in [0, 1)."""
        if self.choices is not None:
            return self.choices[min(int(u * len(self.choices)), len(self.choices) - 1)]
        integer = isinstance(self.low, int) and isinstance(self.high, int)
        hi = self.high + 1 if integer else self.high  # integers: every value gets an equal share of [0, 1)
        if self.log:
            x = math.exp(math.log(self.low) + u * (math.log(hi) - math.log(self.low)))
        else:
            x = self.low + u * (hi - self.low)
        return max(self.low, min(int(math.floor(x)), self.high)) if integer else min(float(x), self.high)


@dataclass(frozen=True)
class Sampling:
    method: str  # "random" or "lhs"
    count: int
    seed: int = 0

    def quantiles(self, dims: int) -> np.ndarray:
        """``count`` x ``dims`` quantiles in [0, 1): independent uniforms, or a Latin hypercube (each
        dimension's ``count`` strata hit once, in an independent random order)."""
        rng = np.random.default_rng(self.seed)
        if self.method == "random":
            return rng.random((self.count, dims))
        strata = np.stack([rng.permutation(self.count) for _ in range(dims)], axis=1)
        return (strata + rng.random((self.count, dims))) / self.count


@dataclass(frozen=True)
class Point:
    """One design point: its index in the sweep, every configuration field (flattened), the ones that differ
    from the base, and the configuration (None, with ``error`` set, when NpuConfig rejects it)."""

    index: int
    fields: dict
    changes: dict
    config: NpuConfig | None
    error: str | None
    key: str


def point_key(flat: dict) -> str:
    """A short content hash of a configuration, its name and source left out."""
    ident = {k: v for k, v in flat.items() if k not in IDENTITY_EXEMPT}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]


def grid_size(grid: list[Grid], formats: list) -> int:
    return math.prod(len(g.values) for g in grid) * len(formats)


def points(base: NpuConfig, formats: list[tuple[str, str]], grid: list[Grid], sampled: list[Sampled],
           sampling: Sampling | None, constraints: list[Expression], prefix: str = "sweep") -> list[Point]:
    """Expand a space into points, in a stable order: the grid (formats last) crossed with the samples.

    Constraints read the fields and, for a valid configuration, its derived facts; a constraint over a fact
    of a configuration NpuConfig rejects cannot be decided, and the invalid point is kept.  Duplicate
    configurations (samples that land on the same values) are kept once.  ExpressionError propagates from a
    constraint that cannot be computed."""
    base_flat = flatten(base.to_dict())
    samples = [{}]
    if sampled:
        q = sampling.quantiles(len(sampled))
        samples = [{d.field: d.value(float(u)) for d, u in zip(sampled, row)} for row in q]
    axes = [[(g.field, v) for v in g.values] for g in grid]
    axes.append([(("weight_format", "act_format"), f) for f in formats])
    out: list[Point] = []
    seen: set[str] = set()
    for combo in itertools.product(*axes):
        for sample in samples:
            flat = dict(base_flat)
            for field, value in combo:
                flat.update(zip(field, value) if isinstance(field, tuple) else [(field, value)])
            flat.update(sample)
            flat.pop("name")
            key = point_key(flat)
            if key in seen:
                continue
            seen.add(key)
            flat["name"] = f"{prefix}-{key}"
            try:
                config, error = NpuConfig.from_dict(unflatten(flat)), None
            except ConfigError as exc:
                config, error = None, str(exc)
            values = dict(flat, **(facts(config) if config is not None else {}))
            if not all(_holds(c, values) for c in constraints):
                continue
            changes = {k: v for k, v in flat.items() if k != "name" and v != base_flat[k]}
            out.append(Point(len(out), flat, changes, config, error, key))
    return out


def _holds(constraint: Expression, values: dict) -> bool:
    try:
        return constraint(values)
    except UnknownName:
        return True  # a fact of an invalid configuration: keep the point, which reports why it is invalid
