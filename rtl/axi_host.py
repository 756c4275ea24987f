"""The host's driver of the FPGA shell (rtl/shell.py) over AXI4-Lite, written against the register table of
npu/hostregs.py: what a host CPU's driver would do, here through cocotbext-axi's ``AxiLiteMaster``.

Writes that need no answer are queued back to back (``init_write``; AXI4-Lite keeps the order of writes) and
awaited together; a staging word the buffer already holds is not written again.
"""
from __future__ import annotations

from npu.hostregs import BUS_BITS, BY_NAME, REG_BITS, STAGE_OFFSET, bus_beats, stage_words, word_stride

CMD = BY_NAME["LD_CMD"]
DMA = BY_NAME["DMA_CTRL"]
WORD_BYTES = REG_BITS // 8


def _le(value: int) -> bytes:
    return int(value).to_bytes(WORD_BYTES, "little")


def external_image(words: list[int], bits: int) -> bytes:
    """``bits``-wide words as the bulk loader lays them out in external memory (npu.hostregs.word_stride apart,
    little-endian, padded with zeros)."""
    stride = word_stride(bits)
    return b"".join(int(w).to_bytes(stride, "little") for w in words)


def external_words(image: bytes, count: int, bits: int) -> list[int]:
    """Inverse of :func:`external_image` (the padding ignored)."""
    stride, used = word_stride(bits), bus_beats(bits) * BUS_BITS // 8
    mask = (1 << bits) - 1
    return [int.from_bytes(image[k * stride:k * stride + used], "little") & mask for k in range(count)]


class NpuHost:
    """Registers, loads, read-backs and queue transfers over ``axil`` (an ``AxiLiteMaster``)."""

    def __init__(self, axil):
        self.axil = axil
        self.stage_words = 0          # from GEOMETRY (:meth:`identify`)
        self._stage: list[int | None] = []  # what the staging buffer holds, word by word (None: unknown)
        self._last = None             # the event of the last write queued

    async def read_reg(self, name: str) -> int:
        """A register read, after every write queued before it (AXI4 orders neither channel against the other)."""
        await self.flush()
        resp = await self.axil.read(BY_NAME[name].offset, WORD_BYTES)
        return int.from_bytes(resp.data, "little")

    async def write_reg(self, name: str, value: int) -> None:
        """A register write, after every write queued before it, until its response."""
        await self.post(name, value).wait()

    def post(self, name: str, value: int):
        """Queue a register write without waiting for its response; returns its event.  Every write goes through
        ``init_write`` so that writes reach the bus in the order they were made."""
        return self._write(BY_NAME[name].offset, value)

    def _write(self, offset: int, value: int):
        self._last = self.axil.init_write(offset, _le(value))
        return self._last

    async def flush(self) -> None:
        """Until every queued write has its response (AXI4-Lite writes complete in order)."""
        if self._last is not None:
            await self._last.wait()

    async def identify(self) -> dict:
        """ID, CONFIG and GEOMETRY, decoded."""
        geo = BY_NAME["GEOMETRY"]
        g = await self.read_reg("GEOMETRY")
        self.stage_words = geo.get(g, "STAGE_WORDS")
        self._stage = [None] * self.stage_words
        return {"id": await self.read_reg("ID"), "config": await self.read_reg("CONFIG"),
                "stage_words": self.stage_words, "memories": geo.get(g, "MEMORIES"),
                "addr_bits": geo.get(g, "ADDR_BITS")}

    def forget_stage(self) -> None:
        self._stage = [None] * self.stage_words

    def _words(self, bits: int | None) -> int:
        return self.stage_words if bits is None else min(self.stage_words, stage_words(bits))

    def _post_stage(self, value: int, words: int) -> None:
        for k in range(words):
            w = (value >> (REG_BITS * k)) & 0xFFFF_FFFF
            if self._stage[k] != w:
                self._write(STAGE_OFFSET + WORD_BYTES * k, w)
                self._stage[k] = w

    async def _read_stage(self, words: int) -> int:
        await self.flush()
        resp = await self.axil.read(STAGE_OFFSET, WORD_BYTES * words)
        # a READ or POP replaced the whole buffer: the words not read back are unknown
        self._stage = [int.from_bytes(resp.data[WORD_BYTES * k:WORD_BYTES * (k + 1)], "little")
                       for k in range(words)] + [None] * (self.stage_words - words)
        return int.from_bytes(resp.data, "little")

    async def load(self, mem: int, addr: int, words: list[int], bits: int | None = None) -> None:
        """Words ``addr ..`` of memory ``mem`` (``bits`` wide: the staging words beyond are left as they are)."""
        n = self._words(bits)
        self.post("LD_SEL", mem)
        self.post("LD_ADDR", addr)
        go = CMD.bits(WRITE=1, INC=1)
        for w in words:
            self._post_stage(w, n)
            self.post("LD_CMD", go)
        await self.flush()

    async def read(self, mem: int, addr: int, count: int, bits: int | None = None) -> list[int]:
        n = self._words(bits)
        await self.flush()
        self.post("LD_SEL", mem)
        self.post("LD_ADDR", addr)
        out = []
        for _ in range(count):
            await self.write_reg("LD_CMD", CMD.bits(READ=1, INC=1))  # its response: the word is staged
            value = await self._read_stage(n)
            out.append(value & ((1 << bits) - 1) if bits else value)
        return out

    async def dma(self, direction: str, mem: int, addr: int, ext: int, count: int) -> int:
        """The bulk loader: ``count`` words between memory ``mem`` from word ``addr`` and external byte address
        ``ext`` (``direction`` "IN" to the memory, "OUT" from it); returns STATUS.DMA_ERROR."""
        self.post("LD_SEL", mem)
        self.post("LD_ADDR", addr)
        self.post("DMA_ADDR", ext)
        self.post("DMA_COUNT", count)
        await self.write_reg("DMA_CTRL", DMA.bits(**{direction: 1}))  # its response: the transfer is done
        self.forget_stage()  # the buffer holds the last word moved
        return BY_NAME["STATUS"].get(await self.read_reg("STATUS"), "DMA_ERROR")

    async def push(self, words: list[int], bits: int) -> None:
        """Vectors onto the input queue (each PUSH's response waits for room)."""
        n = self._words(bits)
        for w in words:
            self._post_stage(w, n)
            self.post("LD_CMD", CMD.bits(PUSH=1))
        await self.flush()

    async def pop(self, bits: int) -> int:
        """The output queue's head (waits for one)."""
        await self.write_reg("LD_CMD", CMD.bits(POP=1))
        value = await self._read_stage(self._words(bits))
        return value & ((1 << bits) - 1) if bits else value

    async def start(self, prog_len: int, irq: bool = True) -> None:
        self.post("PROG_LEN", prog_len)
        self.post("IRQ_STATUS", BY_NAME["IRQ_STATUS"].bits(DONE=1, ERROR=1))
        await self.write_reg("CTRL", BY_NAME["CTRL"].bits(START=1, IRQ_EN=int(irq)))

    async def status(self) -> dict:
        st = BY_NAME["STATUS"]
        s = await self.read_reg("STATUS")
        return {f.name.lower(): st.get(s, f.name) for f in st.fields}

    async def cycles(self) -> int:
        return await self.read_reg("CYCLES_LO") | await self.read_reg("CYCLES_HI") << REG_BITS
