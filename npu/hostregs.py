"""The host interface's register map: one table for the FPGA shell (rtl/shell.py), the host driver
(rtl/axi_host.py) and docs/rtl.md (:func:`host_regs_markdown`).

The shell is an AXI4-Lite slave with 32-bit registers at byte offsets (:data:`REGISTERS`) and, from
:data:`STAGE_OFFSET`, the *staging window*: ``stage_words(data_bits)`` 32-bit words of one staging buffer as wide
as the widest memory word.  The host moves data through the staging buffer with ``LD_CMD`` commands: write it
to word ``LD_ADDR`` of memory ``LD_SEL`` (rtl.layout.MemoryMap's ids; memory 0 is the program memory, so a
program is loaded like any data), read that word into it, push it onto the network input queue, pop the output
queue into it.  Word ``k`` of the window holds bits ``32k .. 32k+31`` of the buffer.  The *bulk loader*
(``DMA_*``) moves blocks of words between external memory and the memories through the same buffer, over an
AXI4 master of :data:`BUS_BITS` data bits: word ``k`` of a block lies at ``DMA_ADDR + k * word_stride(bits)``,
its low bits first (little-endian).

Access kinds: ``RO`` read-only, ``RW`` read-write, ``W1C`` write 1 to clear, ``WO`` write-only (reads 0; a
write is a command).  Fields not listed read 0 and ignore writes.
"""
from __future__ import annotations

from dataclasses import dataclass

#: Bits of every register and of the AXI4-Lite data bus.
REG_BITS = 32

#: Address bits of the AXI4-Lite slave (a 64 KiB window).
ADDR_BITS = 16

#: Byte offset of the staging window.
STAGE_OFFSET = 0x100

#: Data bits of the AXI4 master through which the bulk loader moves memory words (one burst per word).
BUS_BITS = 64

#: Address bits of the AXI4 master.
BUS_ADDR_BITS = 32

#: Value of the ID register: "NPU" and the register map's version (bump it when the map changes).
ID_VALUE = 0x4E505501


@dataclass(frozen=True)
class Field:
    name: str
    lsb: int
    width: int
    doc: str

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lsb


@dataclass(frozen=True)
class Register:
    name: str
    offset: int
    access: str              # "RO" | "RW" | "W1C" | "WO"
    doc: str
    fields: tuple[Field, ...] = ()

    def field(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)

    def bits(self, **values: int) -> int:
        """The register value with the named fields set (``CTRL.bits(START=1, IRQ_EN=1)``)."""
        out = 0
        for name, v in values.items():
            f = self.field(name)
            if not 0 <= v < 1 << f.width:
                raise ValueError(f"{self.name}.{name} is {f.width} bits wide, not {v!r}")
            out |= v << f.lsb
        return out

    def get(self, value: int, name: str) -> int:
        f = self.field(name)
        return (value >> f.lsb) & ((1 << f.width) - 1)


REGISTERS: tuple[Register, ...] = (
    Register("ID", 0x00, "RO", f"constant {ID_VALUE:#010x}: 'NPU' and the register map's version"),
    Register("CONFIG", 0x04, "RO", "the first 32 bits of the configuration fingerprint (NpuConfig.fingerprint()): "
                                   "the driver checks it is talking to the architecture it compiled for"),
    Register("CTRL", 0x08, "RW", "control", (
        Field("START", 0, 1, "write 1: run the loaded program from pc 0 (reads 0); clears STATUS.DONE and the "
                             "error bits"),
        Field("IRQ_EN", 1, 1, "the interrupt output follows IRQ_STATUS"),
    )),
    Register("STATUS", 0x0C, "RO", "status", (
        Field("BUSY", 0, 1, "the program runs"),
        Field("DONE", 1, 1, "the program started last has completed"),
        Field("ERROR", 2, 2, "rtl.executor.ERR_UNSUPPORTED (1) | ERR_OVERFLOW (2), sticky until START"),
        Field("INQ_READY", 4, 1, "the network input queue takes a vector"),
        Field("OUTQ_VALID", 5, 1, "the network output queue holds a vector"),
        Field("DMA_ERROR", 6, 1, "a bulk transfer got an error response (SLVERR/DECERR); cleared by the next one"),
    )),
    Register("IRQ_STATUS", 0x10, "W1C", "interrupt causes; the interrupt output is (DONE | ERROR) & CTRL.IRQ_EN", (
        Field("DONE", 0, 1, "set when the program completes"),
        Field("ERROR", 1, 1, "set when an error bit rises"),
    )),
    Register("PROG_LEN", 0x14, "RW", "instructions in the program (the program memory's words 0 .. PROG_LEN-1)"),
    Register("CYCLES_LO", 0x18, "RO", "cycles since the last START, bits 0-31 (stop when the program completes)"),
    Register("CYCLES_HI", 0x1C, "RO", "cycles since the last START, bits 32-63"),
    Register("LD_SEL", 0x20, "RW", "memory id of LD_CMD's WRITE and READ (rtl.layout.MemoryMap.memories)"),
    Register("LD_ADDR", 0x24, "RW", "word address of LD_CMD's WRITE and READ"),
    Register("LD_CMD", 0x28, "WO", "staging buffer commands; the write's response comes when the command is done", (
        Field("WRITE", 0, 1, "the staging buffer to word LD_ADDR of memory LD_SEL"),
        Field("READ", 1, 1, "word LD_ADDR of memory LD_SEL to the staging buffer"),
        Field("PUSH", 2, 1, "the staging buffer's low 16 x N bits onto the input queue (waits while it is full)"),
        Field("POP", 3, 1, "the output queue's head to the staging buffer (waits while it is empty)"),
        Field("INC", 4, 1, "then LD_ADDR += 1"),
    )),
    Register("GEOMETRY", 0x2C, "RO", "what the driver needs to size its transfers", (
        Field("STAGE_WORDS", 0, 12, "32-bit words of the staging window"),
        Field("MEMORIES", 12, 8, "memories behind LD_SEL"),
        Field("ADDR_BITS", 20, 6, "bits of LD_ADDR"),
    )),
    Register("COMMITS", 0x30, "RO", "steps (chains and transfers) completed since the last START"),
    Register("DMA_ADDR", 0x40, "RW", "bulk loader: byte address in external memory of word LD_ADDR (aligned to "
                                     "the memory's word stride, :func:`word_stride`)"),
    Register("DMA_COUNT", 0x44, "RW", "bulk loader: words to move"),
    Register("DMA_CTRL", 0x48, "WO", "bulk loader commands over the AXI4 master, one INCR burst per word; the "
                                     "write's response comes when the transfer is done; LD_ADDR then points "
                                     "past the last word, the staging buffer holds it", (
        Field("IN", 0, 1, "DMA_COUNT words from external memory at DMA_ADDR to memory LD_SEL from word LD_ADDR"),
        Field("OUT", 1, 1, "DMA_COUNT words of memory LD_SEL from word LD_ADDR to external memory at DMA_ADDR"),
    )),
)

BY_NAME = {r.name: r for r in REGISTERS}


def stage_words(data_bits: int) -> int:
    """32-bit words of the staging window for memories ``data_bits`` wide."""
    return -(-data_bits // REG_BITS)


def bus_beats(bits: int) -> int:
    """Beats of the AXI4 master's burst that carries one ``bits``-wide memory word."""
    return -(-bits // BUS_BITS)


def word_stride(bits: int) -> int:
    """Bytes between consecutive ``bits``-wide words in external memory: the word's beats rounded up to a power of
    two, so that no burst crosses a 4 KiB boundary (AXI4 A3.4.1) once the first word is aligned to it (a word of
    more than 256 beats moves in bursts of 256, 2 KiB apart)."""
    return (BUS_BITS // 8) << max(0, bus_beats(bits) - 1).bit_length()


def check_map(data_bits: int) -> None:
    """The registers do not overlap and the staging window fits the address space."""
    ends = sorted((r.offset, r.name) for r in REGISTERS)
    for (a, x), (b, y) in zip(ends, ends[1:]):
        if b - a < 4:
            raise ValueError(f"registers {x} and {y} overlap")
    if ends[-1][0] + 4 > STAGE_OFFSET:
        raise ValueError("the registers run into the staging window")
    if STAGE_OFFSET + 4 * stage_words(data_bits) > 1 << ADDR_BITS:
        raise ValueError(f"a staging window of {stage_words(data_bits)} words does not fit {ADDR_BITS} address bits")
    if stage_words(data_bits) >= 1 << BY_NAME["GEOMETRY"].field("STAGE_WORDS").width:
        raise ValueError("GEOMETRY.STAGE_WORDS cannot hold the staging window's size")


def host_regs_markdown() -> str:
    """The register map as a Markdown table (docs/rtl.md's "Host and memory interfaces")."""
    lines = ["| offset | register | access | bits | meaning |", "|---|---|---|---|---|"]
    for r in REGISTERS:
        lines.append(f"| `{r.offset:#06x}` | `{r.name}` | {r.access} | 31:0 | {r.doc} |" if not r.fields else
                     f"| `{r.offset:#06x}` | `{r.name}` | {r.access} | | {r.doc} |")
        for f in r.fields:
            bits = f"{f.lsb}" if f.width == 1 else f"{f.lsb + f.width - 1}:{f.lsb}"
            lines.append(f"| | `{r.name}.{f.name}` | | {bits} | {f.doc} |")
    lines.append(f"| `{STAGE_OFFSET:#06x}` + 4k | `STAGE[k]` | RW | 31:0 | bits 32k .. 32k+31 of the staging buffer "
                 f"(k < GEOMETRY.STAGE_WORDS) |")
    return "\n".join(lines) + "\n"
