"""The manifest of a `.npu` model file: its schema, declared once, and the checks every reader applies.

A model file is data, never instructions.  :data:`MANIFEST` declares every field the compiler's
writer (``compiler/driver.py`` ``package``) puts into ``manifest.json``, with its type and range;
:func:`validate` checks a parsed manifest against it and then the cross-references no single field
shows (members named by the plan exist, tensors are produced before they are read, element maps
fit the vectors they index, the weights mode agrees with the programs, the configuration's memories
fit the limits).  Every violation raises :class:`npu.errors.ModelFileError` naming the field, e.g.
``manifest.plan[1].outputs[0].vectors: must be an integer in [0, 16777216], not -3``.

A rule is a small object with ``check(value, path)``; the schema is a tree of them, so the fields,
their ranges and the documentation in :mod:`npu.modelfile` come from one place.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from npu.errors import ModelFileError

DTYPES = ("float32", "float16", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
          "uint64", "bool", "object")
MAX_DIM = 1 << 31          # a declared tensor dimension
MAX_COUNT = 1 << 24        # vectors, regions, plan steps ...
MAX_RANK = 16
MAX_BATCH = 4096           # samples a model's plan runs one by one (``batch.size``)
SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Member names: relative POSIX paths of safe characters, no "..", no absolute or drive paths.
MEMBER_NAME = re.compile(r"^(?!.*(?:^|/)\.\.?(?:/|$))[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*$")


@dataclass(frozen=True)
class Limits:
    """What a reader accepts before it reads (or allocates) anything more.

    ``max_machine_bytes`` bounds the memories the configuration declares (the simulator allocates them);
    the largest preset, brainwave-s10, declares about 6 GB, most of it never touched.
    """

    max_file_bytes: int = 8 << 30
    max_members: int = 200_000
    max_member_bytes: int = 4 << 30
    max_manifest_bytes: int = 256 << 20
    max_json_depth: int = 64
    max_machine_bytes: int = 16 << 30
    max_tensor_elements: int = 1 << 31


DEFAULT_LIMITS = Limits()


def fail(path: str, rule: str):
    raise ModelFileError(f"{path}: {rule}")


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- rules ----------------------------------------------------------------------------

class Int:
    def __init__(self, lo: int = 0, hi: int = MAX_COUNT):
        self.lo, self.hi = lo, hi

    def check(self, value, path):
        if not isinstance(value, int) or isinstance(value, bool) or not self.lo <= value <= self.hi:
            fail(path, f"must be an integer in [{self.lo}, {self.hi}], not {_show(value)}")
        return value


class Number:
    def __init__(self, lo: float = -math.inf, hi: float = math.inf):
        self.lo, self.hi = lo, hi

    def check(self, value, path):
        if (not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
                or not self.lo <= value <= self.hi):
            fail(path, f"must be a finite number in [{self.lo}, {self.hi}], not {_show(value)}")
        return value


class Str:
    def __init__(self, max_len: int = 1024, pattern: re.Pattern | None = None, what: str = "a string"):
        self.max_len, self.pattern, self.what = max_len, pattern, what

    def check(self, value, path):
        if (not isinstance(value, str) or not 0 < len(value) <= self.max_len
                or (self.pattern is not None and not self.pattern.match(value))):
            fail(path, f"must be {self.what} of 1 to {self.max_len} characters, not {_show(value)}")
        return value


class Bool:
    def check(self, value, path):
        if not isinstance(value, bool):
            fail(path, f"must be true or false, not {_show(value)}")
        return value


class OneOf:
    def __init__(self, *values):
        self.values = values

    def check(self, value, path):
        if isinstance(value, (bool, list, dict)) or value not in self.values:
            fail(path, f"must be one of {', '.join(map(repr, self.values))}, not {_show(value)}")
        return value


class ListOf:
    def __init__(self, item, min_len: int = 0, max_len: int = MAX_COUNT):
        self.item, self.min_len, self.max_len = item, min_len, max_len

    def check(self, value, path):
        if not isinstance(value, list) or not self.min_len <= len(value) <= self.max_len:
            fail(path, f"must be a list of {self.min_len} to {self.max_len} items, not {_show(value)}")
        for i, v in enumerate(value):
            self.item.check(v, f"{path}[{i}]")
        return value


class Tuple:
    """A list of fixed length whose items have their own rules (``regions``' ``[first, last, name]``)."""

    def __init__(self, *items):
        self.items = items

    def check(self, value, path):
        if not isinstance(value, list) or len(value) != len(self.items):
            fail(path, f"must be a list of {len(self.items)} items, not {_show(value)}")
        for i, (rule, v) in enumerate(zip(self.items, value)):
            rule.check(v, f"{path}[{i}]")
        return value


class MapOf:
    def __init__(self, key, value, max_len: int = MAX_COUNT):
        self.key, self.value, self.max_len = key, value, max_len

    def check(self, value, path):
        if not isinstance(value, dict) or len(value) > self.max_len:
            fail(path, f"must be an object of at most {self.max_len} entries, not {_show(value)}")
        for k, v in value.items():
            self.key.check(k, f"{path} key")
            self.value.check(v, f"{path}[{k!r}]")
        return value


class Obj:
    """A JSON object with ``required`` and ``optional`` fields; any other key is an error."""

    def __init__(self, required: dict | None = None, optional: dict | None = None, open: bool = False):  # noqa: A002
        self.required, self.optional, self.open = required or {}, optional or {}, open

    def check(self, value, path):
        if not isinstance(value, dict):
            fail(path, f"must be an object, not {_show(value)}")
        for key, rule in self.required.items():
            if key not in value:
                fail(f"{path}.{key}", "required field is missing")
            rule.check(value[key], f"{path}.{key}")
        for key, rule in self.optional.items():
            if key in value:
                rule.check(value[key], f"{path}.{key}")
        if not self.open:
            extra = sorted(set(value) - set(self.required) - set(self.optional))
            if extra:
                fail(f"{path}.{extra[0]}", f"unknown field; known: {sorted(set(self.required) | set(self.optional))}")
        return value


class Tagged:
    """An object whose ``kind`` picks its schema (plan steps, NPU segment inputs)."""

    def __init__(self, tag: str, choices: dict):
        self.tag, self.choices = tag, choices

    def check(self, value, path):
        tag = value.get(self.tag) if isinstance(value, dict) else None
        if not isinstance(tag, str) or tag not in self.choices:
            got = value.get(self.tag) if isinstance(value, dict) else value
            fail(f"{path}.{self.tag}", f"must be one of {', '.join(map(repr, self.choices))}, not {_show(got)}")
        return self.choices[value[self.tag]].check(value, path)


class Anything:
    """Free-form JSON (``compiler``): any value; its depth was bounded when the JSON was parsed."""

    def check(self, value, path):
        return value


# -- the schema --------------------------------------------------------------------------

NAME = Str(4096, what="a tensor name")
MEMBER = Str(1024, MEMBER_NAME, "a member name (a relative path of letters, digits, '_', '.', '-')")
SHAPE = ListOf(Int(-1, MAX_DIM), max_len=MAX_RANK)
FIXED_SHAPE = ListOf(Int(0, MAX_DIM), max_len=MAX_RANK)
TENSOR_SPEC = Obj({"name": NAME, "shape": SHAPE}, {"dtype": OneOf(*DTYPES)})
SMALL = Int(0, 1 << 16)
IM2COL = Obj({"pads": Tuple(SMALL, SMALL, SMALL, SMALL), "kh": Int(1, 1 << 16), "kw": Int(1, 1 << 16),
              "sh": Int(1, 1 << 16), "sw": Int(1, 1 << 16), "dh": Int(1, 1 << 16), "dw": Int(1, 1 << 16),
              "oh": Int(1, 1 << 20), "ow": Int(1, 1 << 20), "kt": Int(1, 1 << 20)},
             {"block": Int(1, 1 << 16), "union": Int(1, 1 << 16)})
NPU_INPUT = Tagged("kind", {
    "stream": Obj({"kind": OneOf("stream"), "tensor": NAME, "vectors": Int(), "emap": MEMBER, "shape": FIXED_SHAPE}),
    "im2col": Obj({"kind": OneOf("im2col"), "tensor": NAME, "vectors": Int(), "im2col": IM2COL}),
})
NPU_OUTPUT = Obj({"tensor": NAME, "shape": FIXED_SHAPE, "vectors": Int(), "emap": MEMBER})
NPU_STEP = Obj({"kind": OneOf("npu"), "program": MEMBER, "inputs": ListOf(NPU_INPUT), "outputs": ListOf(NPU_OUTPUT),
                "regions": ListOf(Tuple(Int(0, 1 << 32), Int(0, 1 << 32), Str(4096)))},
               {"memory": MapOf(Str(64), Int(0, 1 << 40)), "macs": Int(0, 1 << 62),
                "device": Int(0, 255)})        # format 2: the NPU of the fabric that runs it
HOST_STEP = Obj({"kind": OneOf("host"), "model": MEMBER, "inputs": ListOf(NAME), "outputs": ListOf(NAME, 1)})


class Labels:
    """``"imagenet"`` or a list of class names."""

    def check(self, value, path):
        if value == "imagenet":
            return value
        return ListOf(Str(1024, what="a label"), 1, 1 << 20).check(value, path)


PREPROCESSING = Obj({}, {
    "kind": OneOf("image", "none"), "layout": OneOf("NCHW", "NHWC"),
    "size": Tuple(Int(1, 1 << 14), Int(1, 1 << 14)), "resize": Int(1, 1 << 15),
    "mean": ListOf(Number(-1e6, 1e6), 1, 4), "std": ListOf(Number(1e-12, 1e6), 1, 4),
    "labels": Labels(),
})


def config_schema() -> Obj:
    """The ``config`` object's field types, read off :class:`npu.config.NpuConfig` (its own checks run after)."""
    import dataclasses

    from npu.config import NpuConfig

    by_type = {"int": Int(0, 1 << 40), "float": Number(0, 1e9), "str": Str(4096, what="a string"),
               "bool": Bool()}
    required, optional = {}, {}
    for f in dataclasses.fields(NpuConfig):
        if f.name == "mfus":
            rule = ListOf(ListOf(Str(16), 1, 8), 1, 64)
        elif f.name == "latencies":
            rule = MapOf(Str(64), Int(0, 1 << 20), 64)
        else:
            rule = by_type[str(f.type)]
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        (optional if has_default else required)[f.name] = rule
    return Obj(required, optional)


CONSTANT = Obj({"key": Str(256), "space": Int(0, 255), "mfu": Int(0, 255), "addr": Int(0, 1 << 40)})
WEIGHTS = Obj({"member": MEMBER, "mode": OneOf("pinned", "streaming"), "tiles": Int(0, 1 << 32)})
CONSTANTS = Obj({"member": MEMBER, "vectors": ListOf(CONSTANT)})
# Format 2: a model on several NPUs (npu/fabric.py).  ``fabric`` is the Fabric (devices and links), ``devices``
# each NPU's weights and constants (the top-level ``weights`` and ``constants`` are device 0's), ``routes`` every
# tensor an NPU step sends to a step on another NPU.
FABRIC = Obj({"devices": Int(1, 256), "hop_cycles": Int(0, 1 << 30), "link_bytes_per_cycle": Int(1, 1 << 20)},
             {"name": Str(256), "source": Str(4096)})
DEVICE_IMAGE = Obj({"weights": WEIGHTS, "constants": CONSTANTS})
ROUTE = Obj({"tensor": NAME, "from": Int(0, 255), "to": Int(0, 255), "vectors": Int()})
FORMAT_VERSIONS = (1, 2)
MANIFEST = Obj({
    "format": OneOf("npu-model"),
    "format_version": OneOf(*FORMAT_VERSIONS),
    "config": Obj(open=True),                 # config_schema(), then NpuConfig's own rules
    "inputs": ListOf(TENSOR_SPEC, 1, 4096),
    "outputs": ListOf(TENSOR_SPEC, 1, 4096),
    "plan": ListOf(Tagged("kind", {"npu": NPU_STEP, "host": HOST_STEP})),
    "weights": WEIGHTS,
    "constants": CONSTANTS,
    "members": MapOf(MEMBER, Str(64, SHA256, "a sha256 hex digest")),
}, {
    "fabric": FABRIC,
    "devices": ListOf(DEVICE_IMAGE, 1, 256),
    "routes": ListOf(ROUTE),
    "preprocessing": PREPROCESSING,
    "const_outputs": MapOf(NAME, MEMBER),
    # the plan runs one sample; inputs and outputs carry ``size`` samples on axis 0, run one by one
    "batch": Obj({"size": Int(2, MAX_BATCH)}),
    "compiler": Anything(),
})


def json_depth_ok(text: bytes | str, limit: int) -> bool:
    """True when no JSON array or object in ``text`` nests deeper than ``limit`` (strings skipped).

    Cheap enough for megabytes: strings are cut out with one regular expression, and the depth is
    the running sum of the remaining brackets.
    """
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogatepass")
    import numpy as np

    # Only brackets matter: translate deletes everything else at C speed, numpy sums the rest.
    brackets = np.frombuffer(_STRINGS.sub(b"", bytes(text)).translate(None, _NON_BRACKETS), np.uint8)
    if brackets.size <= limit:
        return True
    steps = np.where((brackets == 0x5B) | (brackets == 0x7B), 1, -1).astype(np.int32)
    return int(np.cumsum(steps).max()) <= limit


# Possessive quantifiers: the engine keeps no backtracking state (a plain `(?:[^"\\]|\\.)*` costs ~100 bytes a
# character of a long string).
_STRINGS = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.S)
_NON_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


# -- the checks ---------------------------------------------------------------------------------

def validate(manifest: Any, sizes: dict[str, int], limits: Limits = DEFAULT_LIMITS):
    """Check ``manifest`` (parsed JSON) field by field and its cross-references; returns its NpuConfig.

    ``sizes`` maps every member of the file (but the manifest) to its size in bytes.  Checks that
    need a member's content (element maps, programs, host models) are :mod:`npu.modelfile`'s.
    """
    from npu.config import NpuConfig
    from npu.errors import ConfigError

    MANIFEST.check(manifest, "manifest")
    config_schema().check(manifest["config"], "manifest.config")
    try:
        config = NpuConfig.from_dict(manifest["config"])
    except ConfigError as exc:
        fail(f"manifest.config.{exc.field}", exc.rule)
    except (TypeError, ValueError) as exc:
        fail("manifest.config", str(exc))
    machine = machine_bytes(config)
    if machine > limits.max_machine_bytes:
        fail("manifest.config", f"declares {machine} bytes of NPU memories, more than the limit of "
                                f"{limits.max_machine_bytes}")
    declared = set(manifest["members"])
    if declared != set(sizes):
        fail("manifest.members", f"does not match the file's members (missing {sorted(declared - set(sizes))[:5]}, "
                                 f"unexpected {sorted(set(sizes) - declared)[:5]})")

    def member(name: str, path: str, suffix: str):
        if name not in declared:
            fail(path, f"names member {name!r}, which the file does not have")
        if not name.endswith(suffix):
            fail(path, f"member {name!r} must be a {suffix} file")

    for spec_list in ("inputs", "outputs"):
        for i, spec in enumerate(manifest[spec_list]):
            _check_elements(spec["shape"], f"manifest.{spec_list}[{i}].shape", limits)
    names = [s["name"] for s in manifest["inputs"]]
    if len(set(names)) != len(names):
        fail("manifest.inputs", f"names an input twice: {names}")
    available = set(names)
    n = config.native_dim
    for k, step in enumerate(manifest["plan"]):
        where = f"manifest.plan[{k}]"
        if step["kind"] == "host":
            member(step["model"], f"{where}.model", ".onnx")
            for j, t in enumerate(step["inputs"]):
                if t not in available:
                    fail(f"{where}.inputs[{j}]", f"reads tensor {t!r} before any step produces it")
            available.update(step["outputs"])
            continue
        member(step["program"], f"{where}.program", ".bin")
        for j, spec in enumerate(step["inputs"]):
            p = f"{where}.inputs[{j}]"
            if spec["tensor"] not in available:
                fail(f"{p}.tensor", f"reads tensor {spec['tensor']!r} before any step produces it")
            if spec["kind"] == "stream":
                member(spec["emap"], f"{p}.emap", ".npy")
                _check_elements(spec["shape"], f"{p}.shape", limits)
                _check_vectors(spec["vectors"], n, f"{p}.vectors", limits)
            else:
                _check_im2col(spec, n, p, limits)
        for j, spec in enumerate(step["outputs"]):
            p = f"{where}.outputs[{j}]"
            member(spec["emap"], f"{p}.emap", ".npy")
            _check_elements(spec["shape"], f"{p}.shape", limits)
            _check_vectors(spec["vectors"], n, f"{p}.vectors", limits)
            available.add(spec["tensor"])
        for j, (first, last, _) in enumerate(step["regions"]):
            if first > last:
                fail(f"{where}.regions[{j}]", f"first pc {first} is after last pc {last}")
    for name, m in (manifest.get("const_outputs") or {}).items():
        member(m, f"manifest.const_outputs[{name!r}]", ".npy")
        available.add(name)
    for i, spec in enumerate(manifest["outputs"]):
        if spec["name"] not in available:
            fail(f"manifest.outputs[{i}].name", f"output {spec['name']!r} is produced by no step")
    for where, image in device_images(manifest):
        weights = image["weights"]
        member(weights["member"], f"{where}weights.member", ".bin")
        capacity = config.mrf_tiles if weights["mode"] == "pinned" else config.dram_tiles
        if weights["tiles"] > capacity:
            fail(f"{where}weights.tiles", f"{weights['tiles']} tiles do not fit the {weights['mode']} weight memory "
                                          f"of {capacity} tiles")
        consts = image["constants"]
        member(consts["member"], f"{where}constants.member", ".npz")
        for i, c in enumerate(consts["vectors"]):
            _check_constant(c, config, f"{where}constants.vectors[{i}]")
    _check_fabric(manifest)
    if "batch" in manifest:
        size = manifest["batch"]["size"]
        for spec_list in ("inputs", "outputs"):
            for i, spec in enumerate(manifest[spec_list]):
                if not spec["shape"] or spec["shape"][0] != size:
                    fail(f"manifest.{spec_list}[{i}].shape", f"must have the batch ({size}) on axis 0, not "
                                                            f"{spec['shape']}")
    return config


def device_images(manifest: dict) -> list[tuple[str, dict]]:
    """(field path prefix, {"weights", "constants"}) of every NPU: ``devices`` on several, else the top level."""
    if "devices" in manifest:
        return [(f"manifest.devices[{d}].", image) for d, image in enumerate(manifest["devices"])]
    return [("manifest.", {"weights": manifest["weights"], "constants": manifest["constants"]})]


def _check_fabric(manifest: dict) -> None:
    """Format 2's fields: all three of fabric, devices and routes or none; steps and routes on existing devices;
    the routes exactly the tensors an NPU step reads from an NPU step on another device."""
    keys = [k for k in ("fabric", "devices", "routes") if k in manifest]
    if not keys:
        for k, step in enumerate(manifest["plan"]):
            if step["kind"] == "npu" and step.get("device", 0) != 0:
                fail(f"manifest.plan[{k}].device", "names a device, but the model declares no fabric")
        return
    if manifest["format_version"] < 2:
        fail(f"manifest.{keys[0]}", "needs format_version 2")
    if len(keys) != 3:
        missing = sorted({"fabric", "devices", "routes"} - set(keys))
        fail(f"manifest.{missing[0]}", "required with a fabric (fabric, devices and routes go together)")
    n = manifest["fabric"]["devices"]
    if len(manifest["devices"]) != n:
        fail("manifest.devices", f"lists {len(manifest['devices'])} NPUs, the fabric has {n}")
    if manifest["devices"][0] != {"weights": manifest["weights"], "constants": manifest["constants"]}:
        fail("manifest.devices[0]", "must equal the top-level weights and constants (device 0's)")
    made: dict[str, tuple[int, int]] = {}
    expected = {}
    for k, step in enumerate(manifest["plan"]):
        if step["kind"] != "npu":
            for t in step["outputs"]:
                made.pop(t, None)
            continue
        if "device" not in step:
            fail(f"manifest.plan[{k}].device", "required field is missing (the model runs on several NPUs)")
        d = step["device"]
        if d >= n:
            fail(f"manifest.plan[{k}].device", f"{d} is not one of the fabric's {n} NPUs")
        for spec in step["inputs"]:
            src = made.get(spec["tensor"])
            if src is not None and src[0] != d:
                expected.setdefault((spec["tensor"], d), (src[0], src[1]))
        for spec in step["outputs"]:
            made[spec["tensor"]] = (d, spec["vectors"])
    seen = set()
    for i, r in enumerate(manifest["routes"]):
        key = (r["tensor"], r["to"])
        if key in seen:
            fail(f"manifest.routes[{i}]", f"routes tensor {r['tensor']!r} to NPU {r['to']} twice")
        seen.add(key)
        if key not in expected or expected[key] != (r["from"], r["vectors"]):
            want = expected.get(key)
            fail(f"manifest.routes[{i}]", f"no NPU step on NPU {r['to']} reads {r['tensor']!r} as {r['vectors']} "
                                          f"vectors from NPU {r['from']}" + (f" (the plan sends it from NPU {want[0]} as "
                                                                     f"{want[1]} vectors)" if want else ""))
    missing = sorted(set(expected) - seen)
    if missing:
        t, d = missing[0]
        fail("manifest.routes", f"has no route for tensor {t!r} to NPU {d}, which reads it from another NPU")


def machine_bytes(config) -> int:
    """Bytes of the memories a configuration declares (vector memories in fp16, MRF and DRAM weight tiles)."""
    n = config.native_dim
    vectors = config.ivrf_depth + config.dram_vectors + config.n_mfus * (config.asvrf_depth + config.mulvrf_depth)
    tiles = config.mrf_tiles + config.dram_tiles
    return 2 * n * vectors + 2 * tiles * (n * n + n * n // max(1, config.block))


def _check_elements(shape, path, limits: Limits) -> None:
    if math.prod(max(1, d) for d in shape) > limits.max_tensor_elements:
        fail(path, f"{list(shape)} has more than {limits.max_tensor_elements} elements")


def _check_vectors(vectors: int, n: int, path: str, limits: Limits) -> None:
    if vectors * n > limits.max_tensor_elements:
        fail(path, f"{vectors} vectors of {n} elements exceed {limits.max_tensor_elements} elements")


def _check_im2col(spec: dict, n: int, path: str, limits: Limits) -> None:
    s = spec["im2col"]
    block = s.get("block", 1)
    if s["ow"] % block:
        fail(f"{path}.im2col.block", f"must divide ow ({s['ow']}), not {block}")
    union = s.get("union", s["kw"])
    if s["kh"] * (union if block > 1 else s["kw"]) > s["kt"] * n:
        fail(f"{path}.im2col.kt", f"{s['kt']} vectors of {n} cannot hold a {s['kh']}x{s['kw']} receptive field")
    vectors = s["oh"] * (s["ow"] // block) * s["kt"]
    if vectors != spec["vectors"]:
        fail(f"{path}.vectors", f"is {spec['vectors']}, the im2col spec gives {vectors}")
    _check_vectors(vectors, n, f"{path}.vectors", limits)


def _check_constant(c: dict, config, path: str) -> None:
    from npu.spaces import Space

    try:
        space = Space(c["space"])
    except ValueError:
        fail(f"{path}.space", f"{c['space']} is not a memory space ({', '.join(f'{s.value}: {s.name}' for s in Space)})")
    depth = config.vector_space_depth(space)
    if depth == 0:
        fail(f"{path}.space", f"{space.name} holds no constant vectors")
    if c["mfu"] >= config.n_mfus:
        fail(f"{path}.mfu", f"must be below the {config.n_mfus} MFUs of {config.name!r}, not {c['mfu']}")
    if c["addr"] >= depth:
        fail(f"{path}.addr", f"{c['addr']} is outside {space.name} ({depth} vectors)")
