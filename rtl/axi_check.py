"""Protocol checks of AXI4-Lite (and any valid/ready channel) for the cocotb benches: rules as plain Python
classes fed one sample per clock cycle, and a cocotb monitor that feeds them from a DUT's ports.

* :class:`HandshakeRule` -- per channel: once VALID is high it stays high until READY (AXI4 A3.2.1: "once
  VALID is asserted it must remain asserted until the handshake occurs"), and the payload does not change
  while VALID is high and READY low.
* :class:`ResponseRule` -- per direction: no write response before both the address and the data of its write
  were taken, no read data before its address was taken (AXI4 A3.3.1's dependencies).

Both sides of the bus are checked: the master's AW, W and AR channels (cocotbext-axi's AxiLiteMaster) and the
slave's B and R channels (rtl/shell.py).  A rule keeps every violation as text naming the channel and the
cycle; :func:`monitor` runs the rules of a prefixed AXI4-Lite port set until cancelled.
"""
from __future__ import annotations

#: AXI4-Lite channels: name -> (valid, ready, payload signals); the valid's source is the master for aw, w, ar.
AXIL_CHANNELS = {
    "aw": ("awvalid", "awready", ("awaddr", "awprot")),
    "w": ("wvalid", "wready", ("wdata", "wstrb")),
    "b": ("bvalid", "bready", ("bresp",)),
    "ar": ("arvalid", "arready", ("araddr", "arprot")),
    "r": ("rvalid", "rready", ("rdata", "rresp")),
}


class HandshakeRule:
    """VALID held until READY, payload stable while waiting; :meth:`sample` once per cycle."""

    def __init__(self, channel: str):
        self.channel = channel
        self.waiting: tuple | None = None  # the payload offered last cycle without READY
        self.violations: list[str] = []
        self.transfers = 0

    def sample(self, cycle: int, valid: bool, ready: bool, payload: tuple) -> None:
        if self.waiting is not None:
            if not valid:
                self.violations.append(f"{self.channel}: VALID fell in cycle {cycle} before READY")
            elif payload != self.waiting:
                self.violations.append(f"{self.channel}: payload changed in cycle {cycle} while waiting for READY "
                                       f"({self.waiting} -> {payload})")
        self.transfers += bool(valid and ready)
        self.waiting = payload if valid and not ready else None

    def reset(self) -> None:
        self.waiting = None


class ResponseRule:
    """No response before its request: B handshakes <= min(AW, W) handshakes, R <= AR (counted up to now)."""

    def __init__(self):
        self.violations: list[str] = []
        self.seen = {"b": 0, "r": 0}  # responses already judged

    def check(self, cycle: int, rules: dict[str, HandshakeRule]) -> None:
        n = {k: r.transfers for k, r in rules.items()}
        new = {k: n[k] > self.seen[k] for k in self.seen}
        self.seen = {k: n[k] for k in self.seen}
        if new["b"] and n["b"] > min(n["aw"], n["w"]):
            self.violations.append(f"b: write response {n['b']} in cycle {cycle} before its write "
                                   f"({n['aw']} addresses, {n['w']} data taken)")
        if new["r"] and n["r"] > n["ar"]:
            self.violations.append(f"r: read data {n['r']} in cycle {cycle} before its address ({n['ar']} taken)")


class AxiLiteChecker:
    """Every rule of one AXI4-Lite port set."""

    def __init__(self):
        self.rules = {k: HandshakeRule(k) for k in AXIL_CHANNELS}
        self.responses = ResponseRule()
        self.cycles = 0

    def sample(self, values: dict[str, int]) -> None:
        """One cycle: ``values`` maps every signal name of :data:`AXIL_CHANNELS` (no prefix) to its value."""
        for k, (valid, ready, payload) in AXIL_CHANNELS.items():
            self.rules[k].sample(self.cycles, bool(values[valid]), bool(values[ready]),
                                 tuple(values[p] for p in payload))
        self.responses.check(self.cycles, self.rules)
        self.cycles += 1

    def reset(self) -> None:
        """In reset: nothing is waiting and nothing is outstanding."""
        for r in self.rules.values():
            r.reset()
            r.transfers = 0
        self.responses.seen = {k: 0 for k in self.responses.seen}

    @property
    def violations(self) -> list[str]:
        return [v for r in self.rules.values() for v in r.violations] + self.responses.violations

    def take(self) -> list[str]:
        """The violations so far, forgetting them."""
        out = self.violations
        for r in self.rules.values():
            r.violations = []
        self.responses.violations = []
        return out


async def monitor(dut, prefix: str, checker: AxiLiteChecker, reset=None) -> None:
    """Samples ``{prefix}_*`` at every falling clock edge (half a cycle from the rising edge where both sides
    change them) into ``checker``; cycles with ``reset`` high reset it instead.  Runs until cancelled."""
    from cocotb.triggers import FallingEdge

    handles = {name: getattr(dut, f"{prefix}_{name}")
               for valid, ready, payload in AXIL_CHANNELS.values() for name in (valid, ready, *payload)}
    while True:
        await FallingEdge(dut.clk)
        if reset is not None and int(reset.value):
            checker.reset()
            continue
        checker.sample({name: int(h.value) for name, h in handles.items()})
