"""The fabric: several NPUs serving one model, and the links between them (issue 12).

Brainwave ran a model too large for one FPGA as *hardware microservices*: the
layers pinned across several FPGAs, each passing its activations to the next
over the datacenter network (Catapult v2's FPGA-to-FPGA transport, LTL).  A
:class:`Fabric` says how many NPUs of one configuration serve a model and what a
link between two of them costs:

* ``hop_cycles``: the latency of one transfer, from the sender's output queue to
  the receiver's input queue, in NPU cycles;
* ``link_bytes_per_cycle``: the bandwidth of one link (each NPU has one port; a
  transfer of B bytes occupies its link for ``ceil(B / link_bytes_per_cycle)``
  cycles and arrives ``hop_cycles`` after that).

On a fabric of several NPUs each NPU's controller starts its program once the
NPU is free and its inputs have arrived; it registers the start, so the program
runs from the cycle after (:data:`START_CYCLES`, :attr:`Fabric.start_cycles`; the
RTL fabric of rtl/fabric.py does the same).  A model on one NPU is started by
its host, as ever, and counts from its first cycle.

Defaults (:func:`default_fabric`) come from the published figures below,
converted at the configuration's clock (the conversion is ours):

* :data:`LTL_ROUND_TRIP_US` -- Caulfield et al., "A Cloud-Scale Acceleration
  Architecture", MICRO 2016 (Catapult v2): "the average round-trip latencies
  observed in our measurements among 24, 1000, and 250,000 machines are under 3,
  9, and 20 microseconds".  A one-way hop inside one rack (24 machines) is taken
  as half the 3 us round trip (derived).
* :data:`LINK_GBPS` -- the same paper and Chung et al., "Serving DNNs in Real
  Time at Datacenter Scale with Project Brainwave", IEEE Micro 2018: each
  FPGA sits on the network through a 40 Gb/s port.

Named presets (:data:`PRESETS`, e.g. ``brainslice-128x4``) pair a configuration
preset with a device count; ``parse_fabric("brainslice-128 x4")`` accepts the
spaced form too.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from npu.errors import ConfigError

#: Average FPGA-to-FPGA round trip among 24 machines (one rack), MICRO 2016: "under 3" us.
LTL_ROUND_TRIP_US = 3.0
#: One network port per FPGA, Catapult v2 / Brainwave: 40 Gb/s.
LINK_GBPS = 40.0
SOURCE = ("Caulfield et al., MICRO 2016 (LTL round trip under 3 us among 24 machines; 40 Gb/s per FPGA); "
          "Chung et al., IEEE Micro 2018 (Brainwave hardware microservices). One-way hop = half the round "
          "trip, both converted at the configuration's clock (derived)")
MAX_DEVICES = 256
#: Cycles from a fabric NPU's inputs being there (and the NPU free) to its program's first cycle: the
#: controller asserts ``start`` and the NPU registers it (rtl/fabric.py).
START_CYCLES = 1


@dataclass(frozen=True)
class Fabric:
    """``devices`` NPUs of one configuration and the link between consecutive ones (see the module doc)."""

    devices: int = 1
    hop_cycles: int = 450
    link_bytes_per_cycle: int = 16
    name: str = ""
    source: str = ""

    def __post_init__(self):
        for field, lo, hi in (("devices", 1, MAX_DEVICES), ("hop_cycles", 0, 1 << 30),
                              ("link_bytes_per_cycle", 1, 1 << 20)):
            v = getattr(self, field)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ConfigError(f"fabric.{field}", f"must be an integer in [{lo}, {hi}], not {v!r}")

    def transfer_cycles(self, nbytes: int) -> int:
        """Cycles a transfer of ``nbytes`` occupies its link (serialization)."""
        return -(-int(nbytes) // self.link_bytes_per_cycle)

    def link_cycles(self, nbytes: int) -> int:
        """Cycles from the first byte leaving the sender to the last arriving: serialization + one hop."""
        return self.transfer_cycles(nbytes) + self.hop_cycles

    @property
    def start_cycles(self) -> int:
        """Cycles a step waits to start once its NPU is free and its inputs arrived: :data:`START_CYCLES` on a
        fabric of several NPUs, 0 for one NPU (its host starts it; one-NPU figures count from the first cycle)."""
        return START_CYCLES if self.devices > 1 else 0

    def replace(self, **kw) -> "Fabric":
        return Fabric(**dict(asdict(self), **kw))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Fabric":
        known = {"devices", "hop_cycles", "link_bytes_per_cycle", "name", "source"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"fabric.{unknown[0]}", f"unknown field; known: {sorted(known)}")
        return cls(**d)


def default_fabric(config, devices: int = 1) -> Fabric:
    """``devices`` NPUs of ``config`` on Catapult v2 links (the published figures at ``config.clock_mhz``)."""
    mhz = float(config.clock_mhz)
    hop = math.ceil(LTL_ROUND_TRIP_US / 2 * mhz)
    bytes_per_cycle = max(1, int(LINK_GBPS * 1e9 / 8 / (mhz * 1e6)))
    return Fabric(devices, hop, bytes_per_cycle, f"{config.name}x{devices}", SOURCE)


#: name -> (configuration preset, devices)
PRESETS = {f"{cfg}x{n}": (cfg, n) for cfg in ("brainslice-128", "brainwave-s10", "small", "tiny")
           for n in (2, 4, 8, 16)}
_NAME = re.compile(r"^\s*(?P<cfg>[A-Za-z0-9_.-]+?)\s*x\s*(?P<n>\d+)\s*$")


def parse_fabric(name: str) -> tuple[str, int]:
    """``"brainslice-128x4"`` or ``"brainslice-128 x4"`` -> (configuration name, devices)."""
    if name in PRESETS:
        return PRESETS[name]
    m = _NAME.match(name or "")
    if m is None:
        raise ConfigError("fabric", f"{name!r} is not a fabric name like 'brainslice-128x4' (configuration x "
                                    f"devices); presets: {', '.join(sorted(PRESETS))}")
    return m.group("cfg"), int(m.group("n"))


def get_fabric(name: str) -> tuple:
    """(NpuConfig, Fabric) of a fabric name: the configuration preset and its default links."""
    from npu.config import get_config

    cfg_name, n = parse_fabric(name)
    config = get_config(cfg_name)
    return config, default_fabric(config, n)
