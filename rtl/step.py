"""Step descriptors and the interfaces that join the NPU's components (rtl/npu.py wires them).

The front end (rtl/frontend.py) decodes the program into *step descriptors*:
a chain or a DMA transfer, with every operand and scalar register it needs
(:class:`Layouts`).  The executor (rtl/executor.py) takes one at a time from
the front end's queue and hands it to the components that run it, each
through a :class:`StepPort` of its own.  Within a chain, vectors flow from the
read sequencer through the MVM and the MFU stages to the write stage as
*beats* (one native vector with its row and loop indices) on
``amaranth.lib.stream`` interfaces that are always ready: a chain is a
fixed-latency pipeline and nothing in it ever waits.

Every width comes from the configuration, through
:attr:`npu.isa.Encoding.kind_bits`; the MFU stages, their operation codes
and the memory a binary stage reads come from the ISA table
(:data:`npu.isa.STAGE_OPS`, :data:`npu.isa.STAGE_CODES`,
:attr:`npu.isa.InstrDef.vrf`).
"""
from __future__ import annotations

from functools import lru_cache

from amaranth.hdl import Mux, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from npu.config import MFU_STAGES, NpuConfig, bits_for
from npu.isa import BY_MNEMONIC, STAGE_OPS, Kind, encoding_for
from npu.spaces import Space
from rtl.layout import MemoryMap
from rtl.units import stage_op_bits


class StepKind(enum.Enum, shape=1):
    """What a step descriptor describes."""

    CHAIN = 0  # v_rd .. end_chain
    DMA = 1    # m_rd or m_wr


def stage_vrf(stage: str) -> Space | None:
    """The vector memory space an MFU stage's operations read their second operand from (None: unary)."""
    spaces = {BY_MNEMONIC[mn].vrf for mn in STAGE_OPS[stage]}
    assert len(spaces) == 1, (stage, spaces)  # one operand memory per stage: its unit has one read port
    return spaces.pop()


class Layouts:
    """The layouts of step descriptors and beats for one configuration.

    Attributes
    ----------
    imm, vaddr : int
        Bits of a scalar register value and of a vector address.
    operand : StructLayout
        A strided memory operand: ``addr``, ``so``, ``si`` (address ``addr + i*so + j*si``).
    read : StructLayout
        The chain's ``v_rd``: ``space``, ``mfu``, the operand, and the window registers ``run``, ``pitch``.
    stage : dict[str, StructLayout]
        Per MFU stage (:data:`npu.config.MFU_STAGES`): ``op``, the operation's code within the stage
        (:data:`npu.isa.STAGE_CODES`, 0: bypassed), and ``opnd`` for a stage that reads a memory.
    write_slot : StructLayout
        One ``v_wr``: ``valid``, ``space``, ``mfu`` and the operand.
    chain : StructLayout
        A chain: the registers ``rows``, ``cols``, ``io``, ``ii``, ``alpha``; ``read``; ``mvm`` (the chain
        has an ``mv_mul``) and its ``mrf`` tile; ``mfu``, per MFU the ``stage`` layouts by name; ``write``,
        ``write_slots`` of ``write_slot``.
    dma : StructLayout
        A transfer: ``to_mrf`` (``m_rd``; else ``m_wr``), ``tile``, ``count``, ``mrf``.
    tag : int
        Bits of a chain's tag (its entry in the pipelined machine's chain table; 0 on the one-step machine).
    beat : StructLayout
        One vector of a chain: ``r`` (row within the iteration), ``i``, ``j`` (outer, inner iteration),
        ``tag`` (its chain's) and ``data`` (N fp16 elements).
    vec : StructLayout
        A vector read by the read sequencer: the beat's fields, ``last``, the iteration's last read, and
        ``mvm``, its chain multiplies (the pipelined MVM buffers it; else it passes by).
    """

    def __init__(self, config: NpuConfig):
        kb = encoding_for(config).kind_bits
        self.imm, self.vaddr = kb[Kind.IMM], kb[Kind.VADDR]
        self.operand = data.StructLayout({"addr": kb[Kind.VADDR], "so": kb[Kind.STRIDE], "si": kb[Kind.STRIDE]})
        self.read = data.StructLayout({"space": kb[Kind.SPACE], "mfu": kb[Kind.MFU], "addr": kb[Kind.VADDR],
                                       "so": kb[Kind.STRIDE], "si": kb[Kind.STRIDE],
                                       "run": self.imm, "pitch": self.imm})
        self.stage = {}
        for stage in MFU_STAGES:
            fields = {"op": stage_op_bits(stage)}
            if stage_vrf(stage) is not None:
                fields["opnd"] = self.operand
            self.stage[stage] = data.StructLayout(fields)
        self.write_slot = data.StructLayout({"valid": 1, "space": kb[Kind.SPACE], "mfu": kb[Kind.MFU],
                                             "addr": kb[Kind.VADDR], "so": kb[Kind.STRIDE], "si": kb[Kind.STRIDE]})
        imm = self.imm
        self.chain = data.StructLayout({
            "rows": imm, "cols": imm, "io": imm, "ii": imm, "alpha": 16,
            "read": self.read, "mvm": 1, "mrf": kb[Kind.MRF],
            "mfu": data.ArrayLayout(data.StructLayout(self.stage), config.n_mfus),
            "write": data.ArrayLayout(self.write_slot, config.write_slots),
        })
        self.dma = data.StructLayout({"to_mrf": 1, "tile": kb[Kind.TILE], "count": kb[Kind.COUNT],
                                      "mrf": kb[Kind.MRF]})
        #: bits of a chain's tag: its entry in the pipelined machine's chain table (rtl/issue.py)
        self.tag = bits_for(config.scoreboard_entries)
        self.beat = data.StructLayout({"r": imm, "i": imm, "j": imm, "tag": self.tag, "data": 16 * config.native_dim})
        self.vec = data.StructLayout({"r": imm, "i": imm, "j": imm, "last": 1, "tag": self.tag, "mvm": 1,
                                      "data": 16 * config.native_dim})

    def step(self, program_depth: int) -> data.StructLayout:
        """A queued step: its ``kind``, the ``pc`` of its last instruction, and the ``chain`` and ``dma``
        descriptors (a step of one kind carries the other's fields too, unused)."""
        return data.StructLayout({"kind": StepKind, "pc": bits_for(program_depth), "chain": self.chain,
                                  "dma": self.dma})


@lru_cache(maxsize=16)
def layouts_for(config: NpuConfig) -> Layouts:
    return Layouts(config)


def beat_stream(layout: data.StructLayout) -> stream.Signature:
    """A chain's flow of beats: no back-pressure (a chain is a fixed-latency pipeline), so always ready."""
    return stream.Signature(layout, always_ready=True)


class StepPort(wiring.Signature):
    """The step a component runs, as the executor hands it over (the executor's side; a component has an
    ``In`` member of this signature).

    Parameters
    ----------
    layout : StructLayout
        The descriptor: :attr:`Layouts.chain` or :attr:`Layouts.dma`.

    Members
    -------
    desc : Out(layout)
        The current step's descriptor, from its first cycle until the next step's.
    start : Out(1)
        High in the first cycle of every step, of either kind: each component clears its per-step state
        then (one step runs at a time, so a DMA step also clears the chain components' state, as stale
        requests in the read sequencer's delay line require).
    active : Out(1)
        High from the first cycle of a step of this port's kind through the cycle the step completes.
    """

    def __init__(self, layout: data.StructLayout):
        super().__init__({"desc": Out(layout), "start": Out(1), "active": Out(1)})


class FetchControl(wiring.Signature):
    """Run control between the executor and the front end (the executor's side).

    Members
    -------
    start : Out(1)
        A run starts: pc 0, scalar registers at their reset values, no chain open.
    running : Out(1)
        The run is on: the front end decodes while it is high.
    drained : In(1)
        Every instruction is fetched, no chain is open and no step is queued.
    unsupported : In(1)
        A chain with more ``v_wr`` than ``write_slots`` was decoded (a pulse).
    """

    def __init__(self):
        super().__init__({"start": Out(1), "running": Out(1), "drained": In(1), "unsupported": In(1)})


class ChainEnd(wiring.Signature):
    """What the write stage reports about the running chain (the write stage's side).

    Members
    -------
    done : Out(1)
        Every vector of the chain is written (the step completes in this cycle).
    overflow : Out(1)
        A vector for the output queue found it full and was lost (a pulse).
    unsupported : Out(1)
        The chain writes the output queue from two slots, which the RTL does not implement (a pulse).
    """

    def __init__(self):
        super().__init__({"done": Out(1), "overflow": Out(1), "unsupported": Out(1)})


class BufferCredit(wiring.Signature):
    """Room in the MVM's input buffer, as the read sequencer sees it.

    Members
    -------
    take : Out(1)
        A read was issued this cycle (the MVM counts it when the chain has an ``mv_mul``).
    room : In(1)
        The buffer can take one more vector, counting the reads in flight.
    """

    def __init__(self):
        super().__init__({"take": Out(1), "room": In(1)})


# ---------------------------------------------------------------- helpers for the components' logic
def address(operand, i, j, width: int):
    """``addr + i*so + j*si`` of an operand (a view with those fields), wrapped to ``width`` bits."""
    return (operand.addr + i * operand.so + j * operand.si)[:width]


def space_table(m, space, table: dict, width: int, name: str) -> Signal:
    """A signal holding ``table[space]`` for the space selector ``space`` (0 for a space not in it)."""
    out = Signal(width, name=name)
    with m.Switch(space):
        for s, v in table.items():
            with m.Case(int(s)):
                m.d.comb += out.eq(v)
    return out


def cost_bits(config: NpuConfig) -> int:
    """Bits of a port's per-vector cost (:meth:`npu.config.NpuConfig.port_cost`)."""
    return max(bits_for(max(config.port_cost(s) for s in Space) + 1), 2)


def write_cost(m, config: NpuConfig, slots, name: str) -> Signal:
    """The per-vector cost of a chain's slowest write port (1 when it writes nowhere): how many cycles
    apart the write stage can take vectors (:meth:`npu.config.NpuConfig.slot_cost`).  ``slots`` is the chain's ``write`` array."""
    cost = {s: config.slot_cost(s) for s in Space}
    width = cost_bits(config)
    costs = [Mux(slots[k].valid, space_table(m, slots[k].space, cost, width, f"{name}{k}"), 1)
             for k in range(len(slots))]
    slowest = costs[0]
    for c in costs[1:]:
        slowest = Mux(c > slowest, c, slowest)
    out = Signal(width, name=name)
    m.d.comb += out.eq(slowest)
    return out


def delay(m, valid, payload, cycles: int, name: str):
    """A beat (``valid`` and its ``payload`` view) through ``cycles`` registers; returns the last pair."""
    for k in range(cycles):
        v = Signal(name=f"{name}{k}_valid")
        p = Signal(payload.shape(), name=f"{name}{k}")
        m.d.sync += [v.eq(valid), p.eq(payload)]
        valid, payload = v, p
    return valid, payload


# ---------------------------------------------------------------- parameter checks shared by the components
def check_config(config) -> None:
    if not isinstance(config, NpuConfig):
        raise TypeError(f"config must be an NpuConfig, not {config!r}")


def check_memmap(memmap, config: NpuConfig) -> None:
    if not isinstance(memmap, MemoryMap) or memmap.config != config:
        raise ValueError(f"memmap must be the MemoryMap of config {config.name!r}, not {memmap!r}")


def check_positive(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
