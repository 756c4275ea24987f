"""Protocol checks of AXI4-Lite (and any valid/ready channel) for the cocotb benches: rules as plain Python
classes fed one sample per clock cycle, and a cocotb monitor that feeds them from a DUT's ports.

* :class:`HandshakeRule` -- per channel: once VALID is high it stays high until READY (AXI4 A3.2.1: "once
  VALID is asserted it must remain asserted until the handshake occurs"), and the payload does not change
  while VALID is high and READY low.
* :class:`ResponseRule` -- per direction: no write response before both the address and the data of its write
  were taken, no read data before its address was taken (AXI4 A3.3.1's dependencies).

* :class:`BurstRule` -- AXI4 bursts: WLAST on exactly the last beat of its burst (AWLEN + 1 beats), RLAST
  likewise (ARLEN + 1), and no burst crossing a 4 KiB boundary (A3.4.1).

Both sides of a bus are checked: on the host's AXI4-Lite bus the master's AW, W and AR channels (cocotbext-axi's
AxiLiteMaster) and the slave's B and R channels (rtl/shell.py); on the bulk loader's AXI4 bus the shell's
AW, W, AR and cocotbext-axi's AxiRam's B and R.  A rule keeps every violation as text naming the channel and
the cycle; :func:`monitor` runs a checker on a prefixed port set until cancelled.
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


#: AXI4 channels as the bulk loader uses them (one ID; no optional sideband signals).
AXI4_CHANNELS = {
    "aw": ("awvalid", "awready", ("awid", "awaddr", "awlen", "awsize", "awburst")),
    "w": ("wvalid", "wready", ("wdata", "wstrb", "wlast")),
    "b": ("bvalid", "bready", ("bid", "bresp")),
    "ar": ("arvalid", "arready", ("arid", "araddr", "arlen", "arsize", "arburst")),
    "r": ("rvalid", "rready", ("rid", "rdata", "rresp", "rlast")),
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


class BurstRule:
    """AXI4 bursts: the LAST flag on exactly the (LEN + 1)-th beat, and no burst across a 4 KiB boundary."""

    def __init__(self):
        self.violations: list[str] = []
        self.bursts = {"w": [], "r": []}   # LEN + 1 of each burst whose address was taken, oldest first
        self.beats = {"w": 0, "r": 0}      # beats of the oldest burst so far

    def address(self, cycle: int, ch: str, addr: int, length: int, size: int) -> None:
        """An AW (``ch="w"``) or AR (``"r"``) handshake."""
        nbytes = (length + 1) << size
        if addr % 4096 + nbytes > 4096:
            self.violations.append(f"a{ch}: a burst of {nbytes} bytes at {addr:#x} in cycle {cycle} crosses a 4 KiB "
                                   f"boundary")
        self.bursts[ch].append(length + 1)

    def beat(self, cycle: int, ch: str, last: bool) -> None:
        """A W or R handshake (a W beat may come before its address: it then counts against the next burst)."""
        self.beats[ch] += 1
        want = self.bursts[ch][0] if self.bursts[ch] else None
        if want is not None and (last != (self.beats[ch] == want)):
            self.violations.append(f"{ch}: {ch.upper()}LAST {'set' if last else 'clear'} on beat {self.beats[ch]} "
                                   f"of a {want}-beat burst in cycle {cycle}")
        if last:
            if self.bursts[ch]:
                self.bursts[ch].pop(0)
            self.beats[ch] = 0


class AxiLiteChecker:
    """Every rule of one AXI4-Lite port set (with ``axi4``: of an AXI4 port set, bursts too)."""

    def __init__(self, axi4: bool = False):
        self.channels = AXI4_CHANNELS if axi4 else AXIL_CHANNELS
        self.rules = {k: HandshakeRule(k) for k in self.channels}
        self.responses = ResponseRule()
        self.bursts = BurstRule() if axi4 else None
        self.write_bursts = self.read_bursts = 0
        self.cycles = 0

    def sample(self, values: dict[str, int]) -> None:
        """One cycle: ``values`` maps every signal name of the channels (no prefix) to its value."""
        for k, (valid, ready, payload) in self.channels.items():
            self.rules[k].sample(self.cycles, bool(values[valid]), bool(values[ready]),
                                 tuple(values[p] for p in payload))
        if self.bursts is not None:
            self.write_bursts += bool(values["wvalid"] and values["wready"] and values["wlast"])
            self.read_bursts += bool(values["rvalid"] and values["rready"] and values["rlast"])
            for ch in ("w", "r"):
                if values[f"a{ch}valid"] and values[f"a{ch}ready"]:
                    self.bursts.address(self.cycles, ch, values[f"a{ch}addr"], values[f"a{ch}len"],
                                        values[f"a{ch}size"])
                if values[f"{ch}valid"] and values[f"{ch}ready"]:
                    self.bursts.beat(self.cycles, ch, bool(values[f"{ch}last"]))
        # AXI4: a write response answers a whole burst and a read's data is a burst, so bursts (the beats with
        # LAST) are counted, not beats
        self.responses.check(self.cycles, self.rules if self.bursts is None else
                             {**self.rules, "w": _Count(self.write_bursts), "r": _Count(self.read_bursts)})
        self.cycles += 1

    def reset(self) -> None:
        """In reset: nothing is waiting and nothing is outstanding."""
        for r in self.rules.values():
            r.reset()
            r.transfers = 0
        self.responses.seen = {k: 0 for k in self.responses.seen}
        self.write_bursts = self.read_bursts = 0
        if self.bursts is not None:
            self.bursts.bursts = {"w": [], "r": []}
            self.bursts.beats = {"w": 0, "r": 0}

    @property
    def violations(self) -> list[str]:
        return ([v for r in self.rules.values() for v in r.violations] + self.responses.violations
                + (self.bursts.violations if self.bursts is not None else []))

    def take(self) -> list[str]:
        """The violations so far, forgetting them."""
        out = self.violations
        for r in self.rules.values():
            r.violations = []
        self.responses.violations = []
        if self.bursts is not None:
            self.bursts.violations = []
        return out


class _Count:
    """A stand-in rule with only a transfer count (the ResponseRule reads ``transfers``)."""

    def __init__(self, transfers: int):
        self.transfers = transfers


async def monitor(dut, prefix: str, checker: AxiLiteChecker, reset=None) -> None:
    """Samples ``{prefix}_*`` at every falling clock edge (half a cycle from the rising edge where both sides
    change them) into ``checker``; cycles with ``reset`` high reset it instead.  Runs until cancelled."""
    from cocotb.triggers import FallingEdge

    handles = {name: getattr(dut, f"{prefix}_{name}")
               for valid, ready, payload in checker.channels.values() for name in (valid, ready, *payload)}
    while True:
        await FallingEdge(dut.clk)
        if reset is not None and int(reset.value):
            checker.reset()
            continue
        checker.sample({name: int(h.value) for name, h in handles.items()})
