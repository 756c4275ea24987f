"""The RTL fabric: N NPU instances whose network queues are joined by modeled links (issue 12, docs/multinpu.md).

:class:`FabricTop` instantiates the Verilog module ``npu_top`` of one configuration (rtl/generate.py, byte for
byte the one-NPU design) ``devices`` times and adds what a fabric of them needs, per NPU ``d``:

* a **router** that drains NPU d's output queue, one vector a cycle, into the receive buffers of the NPUs each
  of its vectors goes to and/or the host's output FIFO (its *route table*: segments of ``count`` vectors and a
  destination mask, one request's worth, repeated for every request);
* a **network port** that times the transfers leaving NPU d, as sim/fabric.py models them: when NPU d's step
  ends, the transfers of that request (its *port table*: destination and bytes, in the order the model sends
  them) leave one after the other; a transfer occupies the port ``ceil(bytes / link_bytes_per_cycle)`` cycles
  (it sends ``link_bytes_per_cycle`` bytes a cycle) and arrives ``hop_cycles`` after its last cycle (a delay
  queue of arrival times, so transfers follow each other on the hop).  Both figures are inputs of the top,
  driven from the model's :class:`npu.fabric.Fabric`, so one build serves every link;
* a **sequencer** that fills NPU d's input queue in the order its program reads it (its *receive table*:
  segments of ``count`` vectors from the host's input FIFO or from the receive buffer of a sending NPU);
* a **controller** that starts NPU d's program for the next request once the NPU is free and every transfer
  that request reads has arrived (per sending NPU, a count of arrivals against ``(request + 1) x`` the
  transfers per request).  It registers ``start``, so the program's first cycle is the cycle after; the step
  ends in the first cycle ``busy`` is low again (a run of ``C`` cycles: start asserted in cycle ``t``, the step
  runs ``t + 1 .. t + C``, ends at ``t + C + 1``).

Data and timing are separate paths, as in a store-and-forward link whose payload is written into the
receiver's buffer as it is produced: the vectors move through the routers and receive buffers one a cycle
while the sender writes them, and the *arrival* (what releases the receiver) is the modeled one.  The
controller also checks that the data is there when the timing says so: a step whose transfers have arrived but
whose input vectors are not all in its queue sets its ``late`` bit (the modeled link would be optimistic).

Clock ``now`` counts from 0 in the first cycle after ``go``.  The tables and the per-NPU scalars (requests,
table lengths, program length, transfers per request from each NPU) are written through the ``tab_*`` port;
memories of each NPU through the shared load port (``ld_dev`` selects the NPU).
"""
from __future__ import annotations

from amaranth.hdl import Array, Cat, ClockSignal, Const, Instance, Module, Mux, ResetSignal, Signal, unsigned
from amaranth.lib import fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from npu.config import NpuConfig
from npu.errors import ConfigError
from rtl.generate import TOPLEVEL, RtlParams, make_top

#: Verilog module name of the fabric.
FABRIC_TOPLEVEL = "fabric_top"

#: tab_kind values
TAB_RECV, TAB_ROUTE, TAB_PORT, TAB_SCALAR = 0, 1, 2, 3
#: scalar addresses (TAB_SCALAR); the transfers per request from NPU s at SCALAR_LINKS + s
SCALAR_REQUESTS, SCALAR_RECV, SCALAR_ROUTE, SCALAR_PORT, SCALAR_PROG_LEN, SCALAR_LINKS = 0, 1, 2, 3, 4, 8
#: entry fields: receive (count[15:0], source[23:16]: 0 the host, 1 + s NPU s); route (count[15:0],
#: mask[31:16]: bit 0 the host, bit 1 + e NPU e); port (bytes[23:0], destination[31:24])
MAX_DEVICES = 15
MAX_TRANSFER_BYTES = (1 << 24) - 1
MAX_SEGMENT_VECTORS = (1 << 16) - 1


class FabricTop(wiring.Component):
    """``devices`` NPUs of ``config`` and their links (see the module doc).

    Parameters
    ----------
    table_depth : int
        Entries each receive, route and port table holds (per request).
    rx_depth : int
        Vectors each receive buffer (one per ordered pair of NPUs) holds.
    host_depth : int
        Vectors each NPU's host input and host output FIFO holds.
    hop_depth : int
        Transfers one port may have on the hop at once.
    """

    def __init__(self, config: NpuConfig, devices: int, params: RtlParams = RtlParams(), *, table_depth: int = 16,
                 rx_depth: int = 512, host_depth: int = 2048, hop_depth: int = 16):
        if not 1 <= devices <= MAX_DEVICES:
            raise ConfigError("devices", f"the RTL fabric holds 1 to {MAX_DEVICES} NPUs, not {devices}")
        if config.pipelined:
            raise ConfigError("scoreboard_entries", "the RTL fabric runs the one-step machine (its NPU's queues are "
                                                    "filled before a step starts); the pipelined machine paces "
                                                    "its own link (rtl/link.py)")
        self.config, self.devices, self.params = config, devices, params
        self.table_depth, self.rx_depth, self.host_depth, self.hop_depth = table_depth, rx_depth, host_depth, hop_depth
        #: the NPU, for its signature (ports) and memory map; its Verilog comes from rtl/generate.py
        self.npu = make_top(config, params)
        for obj in [self.npu, *self.npu.units.values()]:
            obj._MustUse__silence = True     # only its signature and memory map are used here
        mm = self.npu.memmap
        w = 16 * config.native_dim
        n = devices
        members = {
            "arm": In(1), "go": In(1),
            "hop_cycles": In(32), "link_bpc": In(32),
            "now": Out(32), "running": Out(1), "done": Out(1),
            "ld_dev": In(range(n)), "ld_sel": In(range(len(mm.memories))), "ld_addr": In(mm.addr_bits),
            "ld_data": In(mm.data_bits), "ld_we": In(1), "ld_rdata": Out(mm.data_bits),
            "tab_dev": In(range(n)), "tab_kind": In(2), "tab_addr": In(8), "tab_data": In(32), "tab_we": In(1),
            "error": Out(2 * n), "late": Out(n), "hop_overflow": Out(n), "settled": Out(1),
            "ev_start": Out(n), "ev_end": Out(n), "ev_send": Out(n), "ev_arrive": Out(n),
            "send_dest": Out(4 * n), "arrive_dest": Out(4 * n), "event": Out(1),
        }
        for d in range(n):
            members[f"hin{d}"] = In(stream.Signature(w))
            members[f"hout{d}"] = Out(stream.Signature(w))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        c, n, T = self.config, self.devices, self.table_depth
        w = 16 * c.native_dim
        running = Signal()
        now = Signal(32)
        m.d.comb += [self.running.eq(running), self.now.eq(now)]
        with m.If(self.go):
            m.d.sync += [running.eq(1), now.eq(0)]
        with m.Elif(running):
            m.d.sync += now.eq(now + 1)

        # ---------------------------------------------------------------- the NPUs
        npus = []
        for d in range(n):
            sig = {}
            args = {"i_clk": ClockSignal(), "i_rst": ResetSignal()}
            for path, member in self.npu.signature.members.flatten():
                if not member.is_port:
                    continue
                name = "__".join(map(str, path))
                s = Signal(member.shape, name=f"npu{d}_{name}")
                sig[name] = s
                args[("i_" if member.flow == In else "o_") + name] = s
            m.submodules[f"npu{d}"] = Instance(TOPLEVEL, **args)
            m.d.comb += [sig["ld_sel"].eq(self.ld_sel), sig["ld_addr"].eq(self.ld_addr),
                         sig["ld_data"].eq(self.ld_data), sig["ld_we"].eq(self.ld_we & (self.ld_dev == d))]
            npus.append(sig)
        m.d.comb += self.ld_rdata.eq(Array(s["ld_rdata"] for s in npus)[self.ld_dev])
        m.d.comb += self.error.eq(Cat(s["error"] for s in npus))

        # ---------------------------------------------------------------- tables and scalars
        def table(d, kind):
            mem = memory.Memory(shape=unsigned(32), depth=T, init=[])
            m.submodules[f"tab{kind}_{d}"] = mem
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(self.tab_addr), wp.data.eq(self.tab_data),
                         wp.en.eq(self.tab_we & (self.tab_dev == d) & (self.tab_kind == kind))]
            return mem.read_port(domain="comb")

        def scalar(d, addr, name):
            s = Signal(32, name=f"{name}{d}")
            with m.If(self.tab_we & (self.tab_dev == d) & (self.tab_kind == TAB_SCALAR) & (self.tab_addr == addr)):
                m.d.sync += s.eq(self.tab_data)
            return s

        requests = [scalar(d, SCALAR_REQUESTS, "requests") for d in range(n)]
        n_recv = [scalar(d, SCALAR_RECV, "n_recv") for d in range(n)]
        n_route = [scalar(d, SCALAR_ROUTE, "n_route") for d in range(n)]
        n_port = [scalar(d, SCALAR_PORT, "n_port") for d in range(n)]
        links = [[scalar(e, SCALAR_LINKS + s, f"links{s}_") for s in range(n)] for e in range(n)]  # [e][s]
        for d in range(n):
            m.d.comb += npus[d]["prog_len"].eq(scalar(d, SCALAR_PROG_LEN, "prog_len"))

        # ---------------------------------------------------------------- buffers
        rx = {}
        for s in range(n):
            for e in range(n):
                if s != e:
                    rx[s, e] = q = fifo.SyncFIFOBuffered(width=w, depth=self.rx_depth)
                    m.submodules[f"rx{s}_{e}"] = q
        hin, hout = [], []
        for d in range(n):
            m.submodules[f"hin_fifo{d}"] = qi = fifo.SyncFIFOBuffered(width=w, depth=self.host_depth)
            m.submodules[f"hout_fifo{d}"] = qo = fifo.SyncFIFOBuffered(width=w, depth=self.host_depth)
            wiring.connect(m, wiring.flipped(getattr(self, f"hin{d}")), qi.w_stream)
            wiring.connect(m, qo.r_stream, wiring.flipped(getattr(self, f"hout{d}")))
            hin.append(qi)
            hout.append(qo)

        seq_req, route_req, ended, port_idle = [], [], [], []
        pops, pop_dest = [], []
        settled = []
        ev_start, ev_end, ev_send, ev_arrive, send_dest, arrive_dest = ([] for _ in range(6))
        for d in range(n):
            # ------------------------------------------------------------ the sequencer: sources -> input queue
            rp = table(d, TAB_RECV)
            idx, rem, src = Signal(range(T)), Signal(16), Signal(4)
            loaded, req = Signal(), Signal(32)
            m.d.comb += rp.addr.eq(idx)
            sources = [hin[d].r_stream] + [rx[s, d].r_stream if s != d else None for s in range(n)]
            valid = Array(q.valid if q is not None else Const(0) for q in sources)[src]
            payload = Array(q.payload if q is not None else Const(0, w) for q in sources)[src]
            inq = npus[d]
            take = Signal()
            m.d.comb += [take.eq(self.arm & loaded & valid & inq["inq__ready"]),
                         inq["inq__valid"].eq(self.arm & loaded & valid), inq["inq__payload"].eq(payload)]
            for k, q in enumerate(sources):
                if q is not None:
                    m.d.comb += q.ready.eq(take & (src == k))
            with m.If(self.arm & ~loaded & (req < requests[d]) & (n_recv[d] != 0)):
                m.d.sync += [rem.eq(rp.data[0:16]), src.eq(rp.data[16:24]), loaded.eq(1)]
            with m.If(take):
                m.d.sync += rem.eq(rem - 1)
                with m.If(rem == 1):
                    m.d.sync += loaded.eq(0)
                    with m.If(idx == n_recv[d] - 1):
                        m.d.sync += [idx.eq(0), req.eq(req + 1)]
                    with m.Else():
                        m.d.sync += idx.eq(idx + 1)
            seq_req.append(req)
            # settled: nothing to move now (done, or its source is empty, or the queue is full)
            settled.append(~(self.arm & loaded & valid & inq["inq__ready"]) &
                           ~(self.arm & ~loaded & (req < requests[d]) & (n_recv[d] != 0)))

            # ------------------------------------------------------------ the router: output queue -> destinations
            rt = table(d, TAB_ROUTE)
            ridx, rrem, mask = Signal(range(T)), Signal(16), Signal(16)
            rloaded, rreq = Signal(), Signal(32)
            m.d.comb += rt.addr.eq(ridx)
            dests = [hout[d].w_stream] + [rx[d, e].w_stream if e != d else None for e in range(n)]
            all_ready = Signal()
            m.d.comb += all_ready.eq(Cat(~mask[k] | (q.ready if q is not None else Const(0))
                                         for k, q in enumerate(dests)).all())
            out = npus[d]
            rtake = Signal()
            m.d.comb += [rtake.eq(rloaded & out["outq__valid"] & all_ready), out["outq__ready"].eq(rtake)]
            for k, q in enumerate(dests):
                if q is not None:
                    m.d.comb += [q.valid.eq(rtake & mask[k]), q.payload.eq(out["outq__payload"])]
            with m.If(self.arm & ~rloaded & (rreq < requests[d]) & (n_route[d] != 0)):
                m.d.sync += [rrem.eq(rt.data[0:16]), mask.eq(rt.data[16:32]), rloaded.eq(1)]
            with m.If(rtake):
                m.d.sync += rrem.eq(rrem - 1)
                with m.If(rrem == 1):
                    m.d.sync += rloaded.eq(0)
                    with m.If(ridx == n_route[d] - 1):
                        m.d.sync += [ridx.eq(0), rreq.eq(rreq + 1)]
                    with m.Else():
                        m.d.sync += ridx.eq(ridx + 1)
            route_req.append(Mux(n_route[d] == 0, requests[d], rreq))

            # ------------------------------------------------------------ the controller's end of step
            inflight = Signal(name=f"inflight{d}")
            end = Signal(name=f"ended{d}")
            m.d.comb += end.eq(inflight & ~npus[d]["busy"])
            ended.append((inflight, end))

        for d in range(n):
            # ------------------------------------------------------------ the network port: timing of transfers
            pt = table(d, TAB_PORT)
            pidx, prem, pdst = Signal(range(T)), Signal(32), Signal(4)
            active, pend = Signal(), Signal(32)
            m.d.comb += pt.addr.eq(pidx)
            has = n_port[d] != 0
            end = ended[d][1]
            cur_rem = Mux(active, prem, pt.data[0:24])
            cur_dst = Mux(active, pdst, pt.data[24:28])
            working = Signal()
            last = Signal()
            consumed = Signal()
            m.d.comb += [working.eq(active | (has & ((pend != 0) | end))), last.eq(cur_rem <= self.link_bpc)]
            m.submodules[f"hop{d}"] = hop = fifo.SyncFIFO(width=32 + 4, depth=self.hop_depth)
            overflow = Signal(name=f"hop_overflow{d}")
            with m.If(working):
                with m.If(last):
                    m.d.comb += [hop.w_en.eq(1), hop.w_data.eq(Cat((now + 1 + self.hop_cycles)[:32], cur_dst))]
                    m.d.sync += active.eq(0)
                    with m.If(pidx == n_port[d] - 1):
                        m.d.sync += pidx.eq(0)
                        m.d.comb += consumed.eq(1)
                    with m.Else():
                        m.d.sync += pidx.eq(pidx + 1)
                    with m.If(~hop.w_rdy):
                        m.d.sync += overflow.eq(1)
                with m.Else():
                    m.d.sync += [active.eq(1), prem.eq(cur_rem - self.link_bpc), pdst.eq(cur_dst)]
            m.d.sync += pend.eq(pend + (has & end) - consumed)
            # the hop: the head arrives when its time comes
            pop = Signal(name=f"arrive{d}")
            m.d.comb += [pop.eq(hop.r_rdy & (hop.r_data[0:32] <= now) & running), hop.r_en.eq(pop)]
            pops.append(pop)
            pop_dest.append(hop.r_data[32:36])
            port_idle.append(~active & (pend == 0) & ~hop.r_rdy)
            ev_send.append(working & ~active)
            send_dest.append(cur_dst)
            ev_arrive.append(pop)
            arrive_dest.append(hop.r_data[32:36])
            m.d.comb += self.hop_overflow[d].eq(overflow)

        started_all = []
        for e in range(n):
            # ------------------------------------------------------------ the controller: start when inputs are in
            inflight, end = ended[e]
            started = Signal(32, name=f"started{e}")
            ok = []
            for s in range(n):
                if s == e:
                    continue
                arrived = Signal(32, name=f"arrived{s}_{e}")
                hit = pops[s] & (pop_dest[s] == e)
                m.d.sync += arrived.eq(arrived + hit)
                ok.append((arrived + hit)[:32] >= ((started + 1) * links[e][s])[:32])
            links_ok = Cat(ok).all() if ok else Const(1)
            data_ok = (n_recv[e] == 0) | (seq_req[e] > started)
            free = ~(inflight & npus[e]["busy"])
            can = Signal(name=f"can_start{e}")
            m.d.comb += can.eq(running & (started < requests[e]) & free & links_ok & data_ok)
            m.d.comb += npus[e]["start"].eq(can)
            with m.If(can):
                m.d.sync += [inflight.eq(1), started.eq(started + 1)]
            with m.Elif(end):
                m.d.sync += inflight.eq(0)
            late = Signal(name=f"late{e}")
            with m.If(running & (started < requests[e]) & free & links_ok & ~data_ok):
                m.d.sync += late.eq(1)
            m.d.comb += self.late[e].eq(late)
            ev_start.append(can)
            ev_end.append(end)
            started_all.append((started == requests[e]) & ~inflight)

        m.d.comb += [self.ev_start.eq(Cat(ev_start)), self.ev_end.eq(Cat(ev_end)), self.ev_send.eq(Cat(ev_send)),
                     self.ev_arrive.eq(Cat(ev_arrive)),
                     self.send_dest.eq(Cat(x[:4] for x in send_dest)),
                     self.arrive_dest.eq(Cat(x[:4] for x in arrive_dest)),
                     self.event.eq(running & Cat(self.ev_start, self.ev_end, self.ev_send, self.ev_arrive).any()),
                     self.settled.eq(Cat(settled).all()),
                     self.done.eq(running & Cat(started_all).all() & Cat(port_idle).all() &
                                  Cat(r == q for r, q in zip(route_req, requests)).all())]
        return m


def write_fabric_verilog(config: NpuConfig, devices: int, outdir, params: RtlParams | None = None, **sizes):
    """Write ``fabric_top.v``: the one-NPU Verilog of rtl/generate.py (its units and ``npu_top``, unchanged),
    then the fabric around ``devices`` instances of it.  Returns the path."""
    from pathlib import Path

    from amaranth.back import verilog

    from rtl.generate import _no_zero_memory_init, write_verilog

    params = params or RtlParams()
    outdir = Path(outdir)
    npu_v = write_verilog(config, outdir / "npu", params)
    top = FabricTop(config, devices, params, **sizes)
    with _no_zero_memory_init():
        text = verilog.convert(top, name=FABRIC_TOPLEVEL, emit_src=False)
    path = outdir / f"{FABRIC_TOPLEVEL}.v"
    path.write_text(npu_v.read_text() + text)
    return path
