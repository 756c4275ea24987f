"""The read sequencer: a chain's reads, from the two-level hardware loop to the vectors they return."""
from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from npu.config import NpuConfig, bits_for
from npu.spaces import Space
from rtl.layout import MemoryMap
from rtl.step import (BufferCredit, StepPort, address, beat_stream, check_config, check_memmap, check_positive,
                      cost_bits, layouts_for, space_table, write_cost)


def advance(m, ex, width, i, j, v, runpos, runbase, done=None) -> None:
    """One read issued: the next vector of the iteration (through the window's runs), else the next inner and
    outer iteration; with ``done``, the last iteration's last read sets it (else the outer count runs on)."""
    with m.If(v == width - 1):
        m.d.sync += [v.eq(0), runpos.eq(0), runbase.eq(0)]
        with m.If(j == ex.ii - 1):
            m.d.sync += j.eq(0)
            if done is None:
                m.d.sync += i.eq(i + 1)
            else:
                with m.If(i == ex.io - 1):
                    m.d.sync += done.eq(1)
                with m.Else():
                    m.d.sync += i.eq(i + 1)
        with m.Else():
            m.d.sync += j.eq(j + 1)
    with m.Else():
        m.d.sync += v.eq(v + 1)
        with m.If((ex.read.run != 0) & (runpos == ex.read.run - 1)):
            m.d.sync += [runpos.eq(0), runbase.eq(runbase + ex.read.pitch)]
        with m.Else():
            m.d.sync += runpos.eq(runpos + 1)


class ReadSequencer(wiring.Component):
    """Issues a chain's reads and delivers the vectors they return.

    The two-level hardware loop runs outer ``i`` and inner ``j``; each
    iteration reads ``cols`` vectors (with ``mv_mul``) or ``rows`` (without)
    at ``addr + i*so + j*si``, gathered in windows of ``run`` vectors ``pitch``
    apart when ``run`` > 0.  One read issues per slot of ``p`` cycles, ``p`` the
    slowest per-vector cost of the chain's ports (the write ports' too when the
    chain has no MVM to decouple them), and only while the source has the
    vector (the input queue holds more than the pops in flight) and the MVM's
    buffer has room.  A request travels down a delay line and reads its memory
    ``latency - 1`` cycles after issue (the memory's or queue's latency,
    :meth:`npu.config.NpuConfig.read_latency`); the consumer registers the
    vector, so it is the chain's at ``latency``.

    Parameters
    ----------
    config : NpuConfig
        The architecture.
    memmap : MemoryMap
        The memories: every vector memory is read through a port of ``vrf``.
    queue_depth : int
        Native vectors the input queue holds.

    Members
    -------
    step : In(StepPort(Layouts.chain))
        The running chain.
    inq : In(stream.Signature(16 * N))
        The network input queue; a vector is taken when its read arrives.
    inq_level : In(range(queue_depth + 1))
        Vectors in the input queue.
    vrf : In(MemoryMap.read_ports(every vector memory))
        Read ports of the vector memories.
    mvm : Out(BufferCredit)
        Room in the MVM's input buffer.
    vec : Out(stream.Signature(Layouts.vec, always_ready=True))
        The vectors read, in the cycle their memory delivers them; ``valid`` never in a step's first cycle.
    """

    def __init__(self, *, config: NpuConfig, memmap: MemoryMap, queue_depth: int):
        lay = self._bind(config, memmap, queue_depth)
        super().__init__({
            "step": In(StepPort(lay.chain)),
            "inq": In(stream.Signature(16 * config.native_dim)),
            "inq_level": In(range(queue_depth + 1)),
            "vrf": In(memmap.read_ports(self._vrfs)),
            "mvm": Out(BufferCredit()),
            "vec": Out(beat_stream(lay.vec)),
        })

    def _bind(self, config: NpuConfig, memmap: MemoryMap, queue_depth: int):
        """Check the parameters and keep what elaboration needs (this and the pipelined sequencer); the layouts."""
        check_config(config)
        check_memmap(memmap, config)
        check_positive("queue_depth", queue_depth)
        self.config = config
        self.memmap = memmap
        self._layouts = layouts_for(config)
        self._vrfs = [name for names in memmap.vector_memories.values() for name in names]
        return self._layouts

    def elaborate(self, platform):
        m = Module()
        ex, start = self.step.desc, self.step.start
        lay = self._layouts
        width = Signal(lay.imm)  # vectors per iteration
        m.d.comb += width.eq(Mux(ex.mvm, ex.cols, ex.rows))
        netq = ex.read.space == Space.NETQ
        inflight = Signal(range(256))  # input-queue reads issued, not yet arrived
        can_issue = Signal()
        m.d.comb += can_issue.eq(Mux(netq, self.inq_level > inflight, 1) & Mux(ex.mvm, self.mvm.room, 1))
        req0 = self._loop(m, width, can_issue)
        req = self._delay_line(m, req0)
        pop = Signal()
        # In a step's first cycle the tap may still hold a request of the previous chain (the line is cleared
        # at the end of that cycle): it must not pop the new chain's input.
        m.d.comb += [pop.eq(req.valid & netq & ~start), self.inq.ready.eq(pop)]
        with m.If(start):
            m.d.sync += inflight.eq(0)
        with m.Else():
            m.d.sync += inflight.eq(inflight + (self.mvm.take & netq) - pop)
        v = self.vec.payload
        m.d.comb += [self.vec.valid.eq(req.valid & ~start), v.r.eq(req.r), v.i.eq(req.i), v.j.eq(req.j),
                     v.last.eq(req.last), v.data.eq(self._read_data(m, req.addr))]
        return m

    def _request(self) -> data.StructLayout:
        lay = self._layouts
        return data.StructLayout({"valid": 1, "addr": lay.vaddr, "r": lay.imm, "i": lay.imm, "j": lay.imm,
                                  "last": 1})

    def _loop(self, m, width, can_issue):
        """The hardware loop and the slots: the request issued this cycle (``valid`` when one is)."""
        ex, start, active = self.step.desc, self.step.start, self.step.active
        imm, vaddr = self._layouts.imm, self._layouts.vaddr
        p_read = space_table(m, ex.read.space, {s: self.config.port_cost(s) for s in Space},
                             cost_bits(self.config), "p_read")
        p_write = write_cost(m, self.config, ex.write, "p_write")
        period = Signal.like(p_read)
        m.d.comb += period.eq(Mux(ex.mvm, p_read, Mux(p_write > p_read, p_write, p_read)))
        i, j, v = Signal(imm), Signal(imm), Signal(imm)  # outer, inner iteration; vector within it
        runpos, runbase = Signal(imm), Signal(vaddr + imm)  # position in the window run; the run's offset
        done = Signal()
        slot = Signal.like(period)
        issue = self.mvm.take
        m.d.comb += issue.eq(active & ~start & ~done & (slot == period - 1) & can_issue)
        with m.If(start):
            m.d.sync += [i.eq(0), j.eq(0), v.eq(0), runpos.eq(0), runbase.eq(0), done.eq(0), slot.eq(0)]
        with m.Elif(active & ~done):
            with m.If(slot != period - 1):
                m.d.sync += slot.eq(slot + 1)
            with m.Elif(can_issue):
                m.d.sync += slot.eq(0)
                advance(m, ex, width, i, j, v, runpos, runbase, done)
        req = Signal(self._request())
        m.d.comb += [req.valid.eq(issue), req.addr.eq(address(ex.read, i, j, vaddr) + runbase + runpos),
                     req.r.eq(v), req.i.eq(i), req.j.eq(j), req.last.eq(v == width - 1)]
        return req

    def _delay_line(self, m, req0):
        """The request that reads its memory in this cycle: ``latency - 1`` cycles after its issue."""
        latency = {s: self.config.read_latency(s) for s in Space}
        lmax = max(latency.values())
        line = [req0]
        for k in range(lmax - 1):
            nxt = Signal(self._request(), name=f"req{k + 1}")
            m.d.sync += nxt.eq(line[-1])
            line.append(nxt)
        with m.If(self.step.start):
            m.d.sync += [s.valid.eq(0) for s in line[1:]]
        tap = space_table(m, self.step.desc.read.space, {s: v - 1 for s, v in latency.items()},
                          bits_for(lmax + 1), "tap")
        req = Signal(self._request())
        m.d.comb += req.eq(Array(line)[tap])
        return req

    def _read_data(self, m, addr):
        """The vector at ``addr`` of the chain's source (the queue's head for NETQ, zeros for ZERO)."""
        ex = self.step.desc
        rdata = Signal(16 * self.config.native_dim)
        for name in self._vrfs:
            m.d.comb += getattr(self.vrf, name).addr.eq(addr)
        with m.Switch(ex.read.space):
            for space, names in self.memmap.vector_memories.items():
                with m.Case(int(space)):
                    ports = [getattr(self.vrf, name).data for name in names]
                    m.d.comb += rdata.eq(ports[0] if len(ports) == 1 else Array(ports)[ex.read.mfu])
            with m.Case(int(Space.NETQ)):
                m.d.comb += rdata.eq(self.inq.payload)
            with m.Default():
                m.d.comb += rdata.eq(0)
        return rdata


class PipelinedReadSequencer(ReadSequencer):
    """The read sequencer of the pipelined machine (docs/pipeline.md): one chain at a time, the previous
    chain's requests still in flight.

    Reads issue one per slot of ``p`` cycles, the first slot starting in the
    chain's first cycle (``start``); a slot starts in the cycle after the
    previous read issued.  The first read of an iteration of an ``mv_mul``
    chain starts its slot only when the MVM's buffer has ``cols`` free slots
    (as counted in the cycle before), and reserves them (iteration-level
    credit: the model's ``rs``).  Every request carries its chain's tag, its
    memory and the cycle it reads that memory (``latency - 1`` after issue),
    so the requests of the previous chain, which may have a longer latency,
    keep their own; the issue rules keep returns in order.

    The network queues are FIFOs beside compute (rtl/link.py): a queue read
    takes a slot of one cycle (:meth:`npu.config.NpuConfig.slot_cost`) and
    issues only once its vector has arrived (``link_in``); a chain that writes
    the output queue reserves room in the output FIFO for what it will write
    (``out_reserve``): one vector per read issued, or an ``mv_mul``
    iteration's ``rows`` with its buffer slots, so a read (an iteration's
    first slot) also waits for that room (``out_free``).

    Members (beside ReadSequencer's ``inq``, ``inq_level``, ``vrf``, ``vec``)
    -------
    link_in : In(1), in_take : Out(1)
        An input vector has arrived that no read has taken; a queue read issues.
    out_free : In(range(netq_fifo + 1)), out_reserve : Out(imm)
        Output-FIFO room no reservation holds; room reserved in this cycle.
    desc : In(Layouts.chain), tag : In(tag), start : In(1)
        The chain to run and the pulse of its first cycle.
    free : In(range(mvm_buffer + 1))
        Free slots of the MVM's buffer.
    reserve : Out(1), reserve_n : Out(imm)
        An iteration reserves ``reserve_n`` slots in this cycle.
    issue, iter_end, first_iter, chain_end : Out(1)
        A read issues; it is an iteration's last; of the chain's first iteration; the chain's last read.
    """

    def __init__(self, *, config: NpuConfig, memmap: MemoryMap, queue_depth: int):
        lay = self._bind(config, memmap, queue_depth)
        wiring.Component.__init__(self, {
            "desc": In(lay.chain),
            "tag": In(lay.tag),
            "start": In(1),
            "inq": In(stream.Signature(16 * config.native_dim)),
            "inq_level": In(range(queue_depth + 1)),
            "vrf": In(memmap.read_ports(self._vrfs)),
            "free": In(range(config.mvm_buffer + 1)),
            "reserve": Out(1),
            "reserve_n": Out(lay.imm),
            "issue": Out(1),
            "iter_end": Out(1),
            "first_iter": Out(1),
            "chain_end": Out(1),
            "vec": Out(beat_stream(lay.vec)),
            "link_in": In(1),
            "in_take": Out(1),
            "out_free": In(range(config.netq_fifo + 1)),
            "out_reserve": Out(lay.imm),
        })

    def _request(self) -> data.StructLayout:
        lay = self._layouts
        lmax = max(self.config.read_latency(s) for s in Space)
        return data.StructLayout({"valid": 1, "addr": lay.vaddr, "r": lay.imm, "i": lay.imm, "j": lay.imm,
                                  "last": 1, "tag": lay.tag, "space": len(self.desc.read.space),
                                  "mfu": len(self.desc.read.mfu), "mvm": 1, "tap": bits_for(lmax + 1)})

    def elaborate(self, platform):
        m = Module()
        ex, start = self.desc, self.start
        lay = self._layouts
        c = self.config
        width = Signal(lay.imm)
        m.d.comb += width.eq(Mux(ex.mvm, ex.cols, ex.rows))
        p_read = space_table(m, ex.read.space, {s: c.slot_cost(s) for s in Space}, cost_bits(c), "p_read")
        p_write = write_cost(m, c, ex.write, "p_write")
        period = Signal.like(p_read)
        m.d.comb += period.eq(Mux(ex.mvm, p_read, Mux(p_write > p_read, p_write, p_read)))
        netq = ex.read.space == Space.NETQ
        to_netq = Signal()  # the chain writes the output queue
        m.d.comb += to_netq.eq(Cat(*(w.valid & (w.space == Space.NETQ) for w in ex.write)).any())
        inflight = Signal(range(256))  # input-queue reads issued, not yet arrived
        i, j, v = Signal(lay.imm), Signal(lay.imm), Signal(lay.imm)
        runpos, runbase = Signal(lay.imm), Signal(lay.vaddr + lay.imm)
        in_slot, slot = Signal(), Signal.like(period)
        waiting = Signal()  # the next read's slot waits for buffer room
        last_read = (v == width - 1) & (j == ex.ii - 1) & (i == ex.io - 1)
        issue = self.issue
        m.d.comb += issue.eq(in_slot & (slot == period - 1) & Mux(netq, (self.inq_level > inflight) & self.link_in, 1)
                             & (ex.mvm | ~to_netq | (self.out_free != 0)))
        m.d.comb += [self.iter_end.eq(issue & (v == width - 1)), self.first_iter.eq((i == 0) & (j == 0)),
                     self.chain_end.eq(issue & last_read)]
        # where a slot may start: the first cycle, after an issue with reads left, or while waiting for room
        boundary = Signal()
        first_of_iter = Signal()
        m.d.comb += [boundary.eq(start | (issue & ~last_read) | waiting),
                     first_of_iter.eq(start | waiting | (issue & (v == width - 1)))]
        room = Signal()
        m.d.comb += [room.eq(~ex.mvm | ~first_of_iter
                             | ((self.free >= ex.cols) & (~to_netq | (self.out_free >= ex.rows)))),
                     self.reserve.eq(boundary & room & ex.mvm & first_of_iter), self.reserve_n.eq(ex.cols),
                     self.in_take.eq(issue & netq),
                     self.out_reserve.eq(Mux(ex.mvm, Mux(self.reserve & to_netq, ex.rows, 0), issue & to_netq))]
        with m.If(in_slot & (slot != period - 1)):
            m.d.sync += slot.eq(slot + 1)
        with m.If(issue):
            m.d.sync += in_slot.eq(0)
        with m.If(boundary):
            m.d.sync += [in_slot.eq(room), slot.eq(0), waiting.eq(~room)]
        with m.If(start):
            m.d.sync += [i.eq(0), j.eq(0), v.eq(0), runpos.eq(0), runbase.eq(0)]
        with m.Elif(issue):
            advance(m, ex, width, i, j, v, runpos, runbase)
        lmax = max(c.read_latency(s) for s in Space)
        req0 = Signal(self._request())
        tap = space_table(m, ex.read.space, {s: c.read_latency(s) - 1 for s in Space}, bits_for(lmax + 1), "tap")
        m.d.comb += [req0.valid.eq(issue), req0.addr.eq(address(ex.read, i, j, lay.vaddr) + runbase + runpos),
                     req0.r.eq(v), req0.i.eq(i), req0.j.eq(j), req0.last.eq(v == width - 1), req0.tag.eq(self.tag),
                     req0.space.eq(ex.read.space), req0.mfu.eq(ex.read.mfu), req0.mvm.eq(ex.mvm), req0.tap.eq(tap)]
        # the delay line: each request reads its memory when it reaches its own tap
        line = [req0]
        for k in range(lmax - 1):
            nxt = Signal(self._request(), name=f"req{k + 1}")
            m.d.sync += nxt.eq(line[-1])
            line.append(nxt)
        req = Signal(self._request())
        hits = [r.valid & (r.tap == k) for k, r in enumerate(line)]
        with m.Switch(Cat(*hits)):  # at most one request reads in a cycle (returns are in order)
            for k, r in enumerate(line):
                with m.Case("-" * (len(line) - 1 - k) + "1" + "0" * k):
                    m.d.comb += req.eq(r)
        pop = Signal()
        m.d.comb += [pop.eq(req.valid & (req.space == Space.NETQ)), self.inq.ready.eq(pop)]
        m.d.sync += inflight.eq(inflight + (issue & netq) - pop)
        rdata = Signal(16 * c.native_dim)
        for name in self._vrfs:
            m.d.comb += getattr(self.vrf, name).addr.eq(req.addr)
        with m.Switch(req.space):
            for space, names in self.memmap.vector_memories.items():
                with m.Case(int(space)):
                    ports = [getattr(self.vrf, name).data for name in names]
                    m.d.comb += rdata.eq(ports[0] if len(ports) == 1 else Array(ports)[req.mfu])
            with m.Case(int(Space.NETQ)):
                m.d.comb += rdata.eq(self.inq.payload)
            with m.Default():
                m.d.comb += rdata.eq(0)
        vec = self.vec.payload
        m.d.comb += [self.vec.valid.eq(req.valid), vec.r.eq(req.r), vec.i.eq(req.i), vec.j.eq(req.j),
                     vec.last.eq(req.last), vec.tag.eq(req.tag), vec.mvm.eq(req.mvm), vec.data.eq(rdata)]
        return m
