"""Architecture configuration: every synthesis-time parameter of an NPU instance.

The compiler, the simulator and the RTL generator all read an :class:`NpuConfig`;
nothing else in the project types in a dimension, a depth or a latency.  Field
widths of the ISA (npu/isa.py) are computed from it.

A configuration is frozen and validated on construction: a bad value raises
:class:`npu.errors.ConfigError` naming the field and the rule.  Named presets
live in :data:`PRESETS`; configurations round-trip through JSON and TOML.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import tomli_w

from npu.errors import ConfigError
from npu.numerics import MFU_FORMATS, BfpFormat, get_bfp_format
from npu.spaces import Space


class MfuUnit(str, Enum):
    """The stages of a multifunction unit, in pipeline order (the order of this enum)."""

    ADDSUB = "addsub"  # vv_add, vv_a_sub_b, vv_b_sub_a, vv_max, vv_min
    MUL = "mul"        # vv_mul
    ACT = "act"        # v_relu, v_lrelu, v_sigm, v_tanh


#: MFU stage names in pipeline order: a chain uses them in this order within one MFU.
MFU_STAGES: tuple[str, ...] = tuple(u.value for u in MfuUnit)


@dataclass(frozen=True)
class Latencies:
    """Pipeline latencies in cycles (fill time of each stage)."""

    decode: int = 2        # from a step's last instruction decoded (queued) to the step's start
    vrf_read: int = 2      # VRF read port to the chain
    mvm: int = 8           # MVM pipeline depth: BFP convert, multiplier tree, accumulator
    mvm_reduce: int = 3    # cross-tile-engine reduction and fp16 conversion
    mfu_stage: int = 3     # one MFU stage (add/sub, mul or activation)
    vrf_write: int = 1     # chain result into a VRF
    chain_setup: int = 2   # bubble between one step's completion and the next step's start
    drain: int = 2         # from the last step's completion to the end of the run (executor and run flag)


@dataclass(frozen=True)
class NpuConfig:
    """A complete NPU instance.

    Vector memories are measured in *native vectors* (``native_dim`` fp16
    elements); the MRF and the weight image in *native tiles*
    (``native_dim`` x ``native_dim`` BFP weights).
    """

    name: str
    native_dim: int                 # N: elements of a native vector, rows/cols of a tile
    tile_engines: int               # MVM tile engines working on tiles in parallel
    dpe_lanes: int                  # multipliers per dot-product engine (N engines per tile engine)
    mrf_tiles: int                  # matrix register file capacity, native tiles
    ivrf_depth: int                 # MVM initial VRF, native vectors
    asvrf_depth: int                # each MFU's add/sub VRF, native vectors
    mulvrf_depth: int               # each MFU's multiply VRF, native vectors
    dram_vectors: int               # vector DRAM, native vectors
    dram_tiles: int                 # weight image region of DRAM, native tiles
    mfus: tuple[tuple[str, ...], ...] = (("addsub", "mul", "act"), ("addsub", "mul", "act"))
    weight_format: str = "msfp16"   # BFP format of MRF weights (npu/numerics.py)
    act_format: str = "msfp16"      # BFP format the MVM converts its input vector to
    mfu_format: str = "fp16"        # MFU arithmetic and the format of every vector memory
    dram_bytes_per_cycle: int = 64  # DRAM bandwidth
    dram_latency: int = 100         # DRAM access latency, cycles
    netq_bytes_per_cycle: int = 16  # network input/output queue bandwidth
    netq_latency: int = 20          # network queue latency, cycles
    vrf_ports: int = 1              # native vectors per cycle per VRF read or write port
    step_queue: int = 4             # step descriptors (chains, DMA) the front end decodes ahead of execution
    write_slots: int = 3            # v_wr destinations one chain may have
    mvm_buffer: int = 256           # native vectors of the MVM's circular input buffer; cols <= half of it
    # The pipelined machine of docs/pipeline.md.  1 and 1: one step at a time, MAC rounds within one row tile.  The
    # RTL implements both (rtl/issue.py, rtl/mvm.py), cycle for cycle with the model.
    scoreboard_entries: int = 1     # steps (chains, DMA) issued and not yet complete: the steps in flight
    mvm_row_slots: int = 1          # output row tiles one MAC round may touch (spreads narrow matrices over engines)
    netq_fifo: int = 64             # native vectors the output FIFO to the network link holds (pipelined machine)
    # MVM-only chains (mv_mul, no MFU operation, every destination a VRF) write through the MVM's bypass write port
    # and take no part in the MFU order (docs/pipeline.md unit 11); the pipelined machine only
    mvm_bypass: bool = False
    clock_mhz: float = 250.0
    latencies: Latencies = field(default_factory=Latencies)
    source: str = ""                # where the numbers come from

    def __post_init__(self) -> None:
        # Normalise containers that JSON/TOML hand back as lists.
        object.__setattr__(self, "mfus", tuple(tuple(str(u) for u in m) for m in self.mfus))
        if isinstance(self.latencies, dict):
            unknown = sorted(set(self.latencies) - {f.name for f in dataclasses.fields(Latencies)})
            if unknown:
                raise ConfigError(f"latencies.{unknown[0]}", "unknown latency")
            object.__setattr__(self, "latencies", Latencies(**self.latencies))
        elif not isinstance(self.latencies, Latencies):
            raise ConfigError("latencies", f"must be a table of cycle counts, not {self.latencies!r}")
        self._validate()

    # ------------------------------------------------------------------ rules
    def _validate(self) -> None:
        for name in ("native_dim", "tile_engines", "dpe_lanes", "mrf_tiles", "ivrf_depth", "asvrf_depth",
                     "mulvrf_depth", "dram_vectors", "dram_tiles", "dram_bytes_per_cycle",
                     "netq_bytes_per_cycle", "vrf_ports", "step_queue", "write_slots", "mvm_buffer",
                     "scoreboard_entries", "mvm_row_slots", "netq_fifo"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(name, f"must be a positive integer, not {value!r}")
        if not isinstance(self.mvm_bypass, bool):
            raise ConfigError("mvm_bypass", f"must be true or false, not {self.mvm_bypass!r}")
        if self.mvm_bypass and not self.pipelined:
            raise ConfigError("mvm_bypass", "the bypass write port is part of the pipelined machine (scoreboard_entries "
                                            "> 1 or mvm_row_slots > 1)")
        for name in ("dram_latency", "netq_latency"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(name, f"must be a non-negative integer, not {value!r}")
        for f in dataclasses.fields(Latencies):
            value = getattr(self.latencies, f.name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"latencies.{f.name}", f"must be a non-negative integer, not {value!r}")
        if not (isinstance(self.clock_mhz, (int, float)) and self.clock_mhz > 0):
            raise ConfigError("clock_mhz", f"must be a positive number, not {self.clock_mhz!r}")
        if self.mvm_buffer & (self.mvm_buffer - 1) or self.mvm_buffer < 4:
            raise ConfigError("mvm_buffer", f"must be a power of two of at least 4, not {self.mvm_buffer}")
        if self.native_dim % self.dpe_lanes == 0 and self.mvm_row_slots > self.native_dim // self.dpe_lanes:
            raise ConfigError("mvm_row_slots", f"must be at most cycles_per_tile ({self.native_dim // self.dpe_lanes}): "
                                               f"the rows one round completes leave the MVM one per cycle before the "
                                               f"next round ends, not {self.mvm_row_slots}")
        if self.native_dim % self.dpe_lanes:
            raise ConfigError("dpe_lanes", f"must divide native_dim ({self.native_dim}), not {self.dpe_lanes}")
        if not self.mfus:
            raise ConfigError("mfus", "needs at least one MFU")
        valid_units = {u.value for u in MfuUnit}
        for i, units in enumerate(self.mfus):
            bad = [u for u in units if u not in valid_units]
            if bad or not units:
                raise ConfigError(f"mfus[{i}]", f"units must be a non-empty subset of {sorted(valid_units)}, not {list(units)}")
        if self.mfu_format not in MFU_FORMATS:
            raise ConfigError("mfu_format", f"unknown format {self.mfu_format!r}; known: {sorted(MFU_FORMATS)}")
        for name in ("weight_format", "act_format"):
            try:
                fmt = get_bfp_format(getattr(self, name))
            except ValueError as exc:
                raise ConfigError(name, str(exc)) from None
            block = fmt.block_size(self.native_dim)
            if self.native_dim % block:
                raise ConfigError("native_dim", f"must be a multiple of the {name} BFP block ({block}), not {self.native_dim}")
        w, a = self.weight_fmt, self.act_fmt
        if w.block_size(self.native_dim) != a.block_size(self.native_dim):
            raise ConfigError("act_format", f"block size ({a.block_size(self.native_dim)}) must equal weight_format's "
                              f"({w.block_size(self.native_dim)}): the MVM multiplies block by block")
        if w.exp_bits != a.exp_bits:
            raise ConfigError("act_format", f"shared-exponent width ({a.exp_bits}) must equal weight_format's ({w.exp_bits})")

    # ------------------------------------------------------------ derived facts
    @property
    def weight_fmt(self) -> BfpFormat:
        return get_bfp_format(self.weight_format)

    @property
    def act_fmt(self) -> BfpFormat:
        return get_bfp_format(self.act_format)

    @property
    def block(self) -> int:
        """Elements sharing one exponent along the dot-product dimension."""
        return self.weight_fmt.block_size(self.native_dim)

    @property
    def n_mfus(self) -> int:
        return len(self.mfus)

    @property
    def macs_per_cycle(self) -> int:
        """Peak multiply-accumulates per cycle: tile engines x N dot-product engines x lanes."""
        return self.tile_engines * self.native_dim * self.dpe_lanes

    def utilization(self, macs: int, cycles: int) -> float:
        """THE utilization of this project: MACs over what the MVM could do at peak in the same cycles.

        Pass the graph's MACs (the ONNX computation, as the compiler counts them) for a model, or the
        MACs the MVM performed on whole native tiles for a hand-written program, which has no graph;
        the latter figure is reported under the name *tile utilization*."""
        return macs / (cycles * self.macs_per_cycle) if cycles else 0.0

    @property
    def peak_tops(self) -> float:
        """Peak tera-operations per second (2 operations per MAC)."""
        return 2 * self.macs_per_cycle * self.clock_mhz * 1e6 / 1e12

    @property
    def cycles_per_tile(self) -> int:
        """Cycles one tile engine needs for one N x N tile-vector product."""
        return self.native_dim // self.dpe_lanes

    @property
    def pipelined(self) -> bool:
        """Whether steps overlap (docs/pipeline.md) rather than run one at a time."""
        return self.scoreboard_entries > 1 or self.mvm_row_slots > 1

    @property
    def max_cols(self) -> int:
        """Input native vectors (tile columns) one mv_mul iteration may read: half the MVM buffer."""
        return self.mvm_buffer // 2

    @property
    def vector_bytes(self) -> int:
        """Bytes of one native vector of fp16."""
        return 2 * self.native_dim

    @property
    def tile_bytes(self) -> int:
        """Bytes of one weight tile in DRAM: sign + mantissa per weight, one exponent per block."""
        n_el = self.native_dim * self.native_dim
        wf = self.weight_fmt
        return -(-(n_el * (1 + wf.mant_bits) + (n_el // self.block) * wf.exp_bits) // 8)

    def vector_space_depth(self, space: Space) -> int:
        """Depth in native vectors of a vector memory space (0 for the queues and ZERO)."""
        return {
            Space.IVRF: self.ivrf_depth,
            Space.ASVRF: self.asvrf_depth,
            Space.MULVRF: self.mulvrf_depth,
            Space.DRAM: self.dram_vectors,
        }.get(Space(space), 0)

    def port_cost(self, space: Space) -> int:
        """Cycles per native vector through a space's port: the slot period a chain's port imposes."""
        space = Space(space)
        if space == Space.DRAM:
            return -(-self.vector_bytes // self.dram_bytes_per_cycle)
        if space == Space.NETQ:
            return -(-self.vector_bytes // self.netq_bytes_per_cycle)
        return -(-1 // self.vrf_ports)

    def slot_cost(self, space: Space) -> int:
        """Cycles per native vector a chain's read or write slot takes at a space's port.

        On the pipelined machine the network queues are FIFOs beside compute (docs/pipeline.md): a queue read
        or write takes one cycle once its vector has arrived (or while the output FIFO, ``netq_fifo`` vectors,
        has room), and the link fills and drains the FIFOs at ``port_cost(NETQ)`` cycles a vector.  On the
        one-step machine every slot costs :meth:`port_cost`.
        """
        if self.pipelined and Space(space) == Space.NETQ:
            return 1
        return self.port_cost(space)

    def read_latency(self, space: Space) -> int:
        """Cycles from a read's issue to its data: the memory's or queue's latency."""
        space = Space(space)
        if space == Space.DRAM:
            return self.dram_latency
        if space == Space.NETQ:
            return self.netq_latency
        return self.latencies.vrf_read

    def mfu_has(self, mfu: int, unit: MfuUnit | str) -> bool:
        return 0 <= mfu < self.n_mfus and MfuUnit(unit).value in self.mfus[mfu]

    # ------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mfus"] = [list(m) for m in self.mfus]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NpuConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(unknown[0], f"unknown configuration field; known fields: {sorted(known)}")
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.name not in d and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ConfigError(missing[0], "required field is missing")
        d = dict(d)
        if "latencies" in d and isinstance(d["latencies"], dict):
            lat_known = {f.name for f in dataclasses.fields(Latencies)}
            bad = sorted(set(d["latencies"]) - lat_known)
            if bad:
                raise ConfigError(f"latencies.{bad[0]}", f"unknown latency; known: {sorted(lat_known)}")
            d["latencies"] = Latencies(**d["latencies"])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def save(self, path: str | Path) -> None:
        """Write ``.toml`` or ``.json`` (by the suffix) with the file's stem as the name, so an edited copy of a
        preset does not pass for the preset."""
        path = Path(path)
        named = self.replace(name=path.stem)
        path.write_text(named.to_toml() if path.suffix == ".toml" else named.to_json() + "\n")

    def replace(self, **changes) -> "NpuConfig":
        return dataclasses.replace(self, **changes)

    def with_scoreboard(self, entries: int) -> "NpuConfig":
        """This configuration with ``entries`` scoreboard entries (the pipelined machine of docs/pipeline.md as
        far as the RTL builds it), named ``<name>-sb<entries>`` so its builds and programs are its own."""
        return self.replace(name=f"{self.name}-sb{entries}", scoreboard_entries=entries)

    def as_pipelined(self, **design) -> "NpuConfig":
        """This configuration as the pipelined machine: :data:`PIPELINED_DESIGN` updated by ``design``, its row
        slots capped at :attr:`cycles_per_tile` (the most this configuration allows), named
        ``<name>-pipelined`` so its builds and programs are its own (a preset's name stays the preset's)."""
        d = {**PIPELINED_DESIGN, **design}
        d["mvm_row_slots"] = min(d["mvm_row_slots"], max(1, self.cycles_per_tile))
        return self.replace(name=f"{self.name}-pipelined", **d)

    def fingerprint(self) -> str:
        """A short stable hash of every field: programs record it.  Fields added later are left out while they
        hold their default (:data:`_LATER_FIELDS`), so earlier configurations keep their fingerprints."""
        d = self.to_dict()
        for name, default in _LATER_FIELDS.items():
            if d[name] == default:
                del d[name]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


#: fields added after configurations were fingerprinted, with their defaults (NpuConfig.fingerprint)
_LATER_FIELDS = {"mvm_bypass": False}


def load_config(path: str | Path) -> NpuConfig:
    """Read a configuration from a ``.toml`` or ``.json`` file.

    Its ``name`` defaults to the file's stem.  A file may not claim a preset's name with other values: a
    program or model records the configuration's name, and two different machines must not share one."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read configuration file: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(str(path), f"not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), "a configuration file holds one table of fields")
    data.setdefault("name", path.stem)
    config = NpuConfig.from_dict(data)
    preset = PRESETS.get(config.name)
    if preset is not None and preset != config:
        changed = [f.name for f in dataclasses.fields(NpuConfig) if getattr(preset, f.name) != getattr(config, f.name)]
        raise ConfigError("name", f"{path} is named after the preset {config.name!r} but changes {', '.join(changed)}; "
                                  f"give the edited configuration its own name (for example name = \"{path.stem}\")")
    return config


# ---------------------------------------------------------------------- presets
PRESETS: dict[str, NpuConfig] = {}

#: The pipelined machine of docs/pipeline.md that the presets move to; the model and the RTL implement it
#: (``preset.replace(**PIPELINED_DESIGN)``), and the benchmarks print it beside the one-step presets. Four row
#: slots: ResNet-50 on brainslice-128 needs them for 50 % (2: 47.8 %, 4: 50.9 %; 8 gives nothing more).
PIPELINED_DESIGN = {"scoreboard_entries": 8, "mvm_row_slots": 4, "mvm_bypass": True}


def _preset(cfg: NpuConfig) -> NpuConfig:
    PRESETS[cfg.name] = cfg
    return cfg


# Fowers et al., "A Configurable Cloud-Scale DNN Processor for Real-Time AI",
# ISCA 2018, Table/Section 6: the Stratix 10 280 instance runs at 250 MHz with
# native dimension 400, 6 tile engines and 40 lanes per dot-product engine
# (6 x 400 x 40 = 96,000 MACs, 48 TFLOPS peak) in ms-fp8/ms-fp9 with a 5-bit
# exponent shared per native vector.  MRF and VRF depths are our assumptions,
# sized so the on-chip memories stay near the S10 280's ~30 MB of M20K.
BRAINWAVE_S10 = _preset(NpuConfig(
    name="brainwave-s10",
    native_dim=400,
    tile_engines=6,
    dpe_lanes=40,
    mrf_tiles=1152,
    ivrf_depth=16384,
    asvrf_depth=16384,
    mulvrf_depth=4096,
    # 262,144 vectors (200 MB of the board's DDR): SSD300's first two 300x300x64 activations live at once
    dram_vectors=1 << 18,
    dram_tiles=1 << 14,
    mfus=(("addsub", "mul", "act"), ("addsub", "mul", "act")),
    weight_format="ms-fp9",
    act_format="ms-fp9",
    dram_bytes_per_cycle=256,
    dram_latency=120,
    netq_bytes_per_cycle=64,
    clock_mhz=250.0,
    source="Fowers et al., ISCA 2018 (Stratix 10 280 build: N=400, 6 tile engines, 40 lanes, 250 MHz, ms-fp8/9); "
           "memory depths assumed",
))

# BrainSlice, the production soft NPU behind Azure's hardware-accelerated
# models (Chung et al., "Serving DNNs in Real Time at Datacenter Scale with
# Project Brainwave", IEEE Micro 2018; Microsoft's Arria 10 deployments):
# native dimension 128, MSFP weights, an MRF of 128 native tiles with weights
# streamed from DRAM when a model is larger (ResNet-50's 1,461 tiles).  Tile
# engines/lanes (4 x 128 x 16 = 8,192 MACs at 300 MHz) are our assumption,
# chosen to land near the ~2 ms batch-1 ResNet-50 latency Azure reported.
BRAINSLICE_128 = _preset(NpuConfig(
    name="brainslice-128",
    native_dim=128,
    tile_engines=4,
    dpe_lanes=16,
    mrf_tiles=128,
    ivrf_depth=32768,
    asvrf_depth=32768,
    mulvrf_depth=4096,
    # 262,144 fp16 vectors (64 MB): SSD300's first two 300x300x64 activations live at once
    dram_vectors=1 << 18,
    # 16,384 msfp16 tiles (about 270 MB of a board's GBs of DDR): room for every weight of VGG-16
    # (8,462 tiles, fc6 alone 6,272), the largest of the seed's models
    dram_tiles=1 << 14,
    mfus=(("addsub", "mul", "act"), ("addsub", "mul", "act")),
    weight_format="msfp16",
    act_format="msfp16",
    dram_bytes_per_cycle=64,
    dram_latency=100,
    netq_bytes_per_cycle=32,
    clock_mhz=300.0,
    source="Chung et al., IEEE Micro 2018 (BrainSlice: N=128, 128-tile MRF, weights streamed from DRAM, MSFP); "
           "engine count, lanes and clock assumed",
))

# Sizes the RTL simulates in CI.  Numbers are ours: small enough for a
# Verilator build in about a minute, large enough for the zoo's tiny models.
SMALL = _preset(NpuConfig(
    name="small",
    native_dim=32,
    tile_engines=2,
    dpe_lanes=8,
    mrf_tiles=64,
    ivrf_depth=1024,
    asvrf_depth=1024,
    mulvrf_depth=256,
    dram_vectors=4096,
    dram_tiles=256,
    weight_format="msfp16",
    act_format="msfp16",
    dram_bytes_per_cycle=32,
    dram_latency=20,
    netq_bytes_per_cycle=16,
    netq_latency=4,
    clock_mhz=200.0,
    source="project-defined RTL simulation size",
))

TINY = _preset(NpuConfig(
    name="tiny",
    native_dim=8,
    tile_engines=1,
    dpe_lanes=4,
    mrf_tiles=64,
    ivrf_depth=512,
    asvrf_depth=512,
    mulvrf_depth=64,
    dram_vectors=1024,
    dram_tiles=128,
    weight_format="bfp-e8m7b8",
    act_format="bfp-e8m7b8",
    dram_bytes_per_cycle=16,
    dram_latency=10,
    netq_bytes_per_cycle=16,
    netq_latency=2,
    clock_mhz=100.0,
    latencies=Latencies(decode=2, vrf_read=1, mvm=4, mvm_reduce=1, mfu_stage=2, vrf_write=1, chain_setup=2),
    source="project-defined RTL simulation size (msfp16-like, block 8 = N)",
))


def get_config(name_or_path: str | NpuConfig) -> NpuConfig:
    """A preset by name, or a configuration file (.toml/.json) by path."""
    if isinstance(name_or_path, NpuConfig):
        return name_or_path
    if name_or_path in PRESETS:
        return PRESETS[name_or_path]
    if name_or_path.endswith((".toml", ".json")):
        return load_config(name_or_path)
    raise ConfigError("config", f"unknown preset {name_or_path!r}; presets: {', '.join(PRESETS)} "
                                "(or give a .toml/.json file)")


def bits_for(count: int) -> int:
    """Bits to hold the values 0 .. count-1 (at least 1)."""
    return max(1, math.ceil(math.log2(count))) if count > 1 else 1
