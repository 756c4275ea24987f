"""npu/fabric.py: the fabric's fields, the published link figures converted at a clock, named presets."""
import pytest

from npu.config import get_config
from npu.errors import ConfigError
from npu.fabric import Fabric, default_fabric, get_fabric, parse_fabric


def test_default_links_are_the_published_figures_at_the_clock():
    cfg = get_config("brainslice-128")        # 300 MHz
    f = default_fabric(cfg, 4)
    # MICRO 2016: round trip under 3 us in a rack -> 1.5 us one way = 450 cycles at 300 MHz
    assert f.hop_cycles == 450
    # 40 Gb/s = 5e9 bytes/s = 16.67 bytes a cycle at 300 MHz, whole bytes
    assert f.link_bytes_per_cycle == 16
    assert f.devices == 4 and f.name == "brainslice-128x4" and "MICRO 2016" in f.source
    tiny = default_fabric(get_config("tiny"), 2)   # 100 MHz: 150 cycles, 50 bytes a cycle
    assert (tiny.hop_cycles, tiny.link_bytes_per_cycle) == (150, 50)


def test_link_cycles_are_serialization_plus_one_hop():
    f = Fabric(2, hop_cycles=10, link_bytes_per_cycle=16)
    assert f.transfer_cycles(33) == 3 and f.link_cycles(33) == 13 and f.link_cycles(0) == 10


@pytest.mark.parametrize("name,expected", [("brainslice-128x4", ("brainslice-128", 4)),
                                           ("brainslice-128 x4", ("brainslice-128", 4)),
                                           ("tiny x 3", ("tiny", 3))])
def test_fabric_names(name, expected):
    assert parse_fabric(name) == expected


def test_get_fabric_and_bad_names():
    cfg, f = get_fabric("brainslice-128 x2")
    assert cfg.name == "brainslice-128" and f.devices == 2
    with pytest.raises(ConfigError, match="fabric"):
        parse_fabric("brainslice-128")
    with pytest.raises(ConfigError, match="devices"):
        Fabric(0)
    with pytest.raises(ConfigError, match="link_bytes_per_cycle"):
        Fabric(2, link_bytes_per_cycle=0)
    with pytest.raises(ConfigError, match="unknown field"):
        Fabric.from_dict({"devices": 2, "speed": 1})
    assert Fabric.from_dict(Fabric(3, 5, 7).to_dict()) == Fabric(3, 5, 7)
