"""The MFU chain: the stages of every MFU, in pipeline order."""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from npu.config import MFU_STAGES, NpuConfig
from npu.isa import BY_MNEMONIC, REDUCTION_OPS, STAGE_CODES
from npu.numerics import reduction_tree
from rtl.layout import MemoryMap, vector_memory
from rtl.step import (StepPort, address, beat_stream, check_config, check_memmap, delay, layouts_for,
                      stage_vrf)
from rtl.units import MFU_UNITS, UNIT_NAMES, instance


def _tree(m: Module, xs: list, kind: str, name: str, node: wiring.Component):
    """The fp16 sum or maximum of ``xs`` in npu.numerics.reduction_tree's order, each node an instance of
    ``node`` (the rtl.units.Fp16Reduce of ``kind``)."""
    level = list(xs)
    for depth, pairs in enumerate(reduction_tree(len(xs))):
        nxt = []
        for k, (a, b) in enumerate(pairs):
            label = f"{name}_{depth}_{k}"
            y = Signal(16, name=label)
            m.submodules[label] = instance(node, UNIT_NAMES[f"reduce_{kind}"], a=level[a], b=level[b], y=y)
            nxt.append(y)
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


class MfuStage(wiring.Component):
    """One stage of one MFU: N elements of the stage's unit (rtl/units.py), ``mfu_stage`` cycles deep.

    A binary stage reads its second operand at ``addr + i*so + j*si + r``
    from its MFU's copy of the stage's memory (:attr:`npu.isa.InstrDef.vrf`).
    A bypassed stage (``op`` 0) passes beats on in the same cycle and holds
    none: the next chain may use it while the last beats of this one would
    still be in it (``mfu_stage`` > ``chain_setup``), and they would be
    written again.

    Parameters
    ----------
    config : NpuConfig
        The architecture.
    memmap : MemoryMap
        The memories: a binary stage reads its operand's memory through ``vrf``.
    mfu : int
        The MFU's index.
    stage : str
        The stage, one of the MFU's (``config.mfus[mfu]``).
    unit : wiring.Component
        The stage's unit (:data:`rtl.units.MFU_UNITS`), instantiated by its module name.

    Members
    -------
    ctl : In(Layouts.stage[stage])
        The chain's operation of this stage (``op``, 0: bypassed) and its memory operand (``opnd``).
    alpha : In(16)
        The leaky-ReLU slope (a stage whose unit takes one).
    vrf : In(MemoryMap.read_port(the operand's memory))
        Read port of the operand's memory (a binary stage).
    i : In(stream.Signature(Layouts.beat, always_ready=True))
        Beats in.
    o : Out(stream.Signature(Layouts.beat, always_ready=True))
        Beats out.
    """

    def __init__(self, *, config: NpuConfig, memmap: MemoryMap, mfu: int, stage: str, unit: wiring.Component,
                 reducers: dict | None = None):
        check_config(config)
        check_memmap(memmap, config)
        if not isinstance(mfu, int) or isinstance(mfu, bool) or not 0 <= mfu < config.n_mfus:
            raise ValueError(f"mfu must be an MFU index below {config.n_mfus}, not {mfu!r}")
        if stage not in config.mfus[mfu]:
            raise ValueError(f"stage must be one of MFU {mfu}'s {list(config.mfus[mfu])}, not {stage!r}")
        if not isinstance(unit, MFU_UNITS[stage]):
            raise TypeError(f"unit must be a {MFU_UNITS[stage].__name__}, not {unit!r}")
        kinds = {kind for mn, kind in REDUCTION_OPS.items() if BY_MNEMONIC[mn].stage == stage}
        if not kinds <= set(reducers or {}):
            raise ValueError(f"the {stage} stage reduces ({sorted(kinds)}): reducers must hold an "
                             f"rtl.units.Fp16Reduce of each, not {sorted(reducers or {})}")
        self.reducers = reducers or {}
        self.config = config
        self.mfu = mfu
        self.stage = stage
        self.unit = unit
        lay = layouts_for(config)
        members = {"ctl": In(lay.stage[stage])}
        if "alpha" in unit.signature.members:
            members["alpha"] = In(16)
        space = stage_vrf(stage)
        assert (space is None) == ("b" not in unit.signature.members), stage  # a unit reads b iff its ops do
        if space is not None:
            members["vrf"] = In(memmap.read_port(vector_memory(space, mfu)))
        members["i"] = In(beat_stream(lay.beat))
        members["o"] = Out(beat_stream(lay.beat))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        c = self.config
        op, beat = self.ctl.op, self.i.payload
        ports = self.unit.signature.members
        shared = {}  # what every element's unit takes besides its element
        if "op" in ports:
            shared["op"] = op
        if "alpha" in ports:
            shared["alpha"] = self.alpha
        if "b" in ports:
            m.d.comb += self.vrf.addr.eq(address(self.ctl.opnd, beat.i, beat.j, layouts_for(c).vaddr) + beat.r)
        ys = []
        k, early = getattr(self.unit, "lanes", 1), getattr(self.unit, "latency", 0)  # elements per unit, its cycles
        xs = Cat(beat.data, Const(0, 16 * (-c.native_dim % k)))  # N odd: the last pair's spare element idles
        for e in range(0, c.native_dim, k):
            y = Signal(16 * k, name=f"y{e}")
            element = {"x": xs[16 * e:16 * (e + k)], "y": y}
            if "b" in ports:
                element["b"] = self.vrf.data[16 * e:16 * (e + 1)]
            m.submodules[f"e{e}"] = instance(self.unit, UNIT_NAMES[self.stage], sync=early > 0, **element, **shared)
            ys.append(y)
        lanes_out = Cat(*ys)[:16 * c.native_dim]
        reductions = {mn: STAGE_CODES[mn] for mn in REDUCTION_OPS if BY_MNEMONIC[mn].stage == self.stage}
        if reductions:
            # the reductions across the lanes (npu.numerics.fp16_reduce): one pairwise tree per kind, broadcast
            xs = [beat.data[16 * e:16 * (e + 1)] for e in range(c.native_dim)]
            trees = {mn: _tree(m, xs, REDUCTION_OPS[mn], f"r{REDUCTION_OPS[mn]}", self.reducers[REDUCTION_OPS[mn]])
                     for mn in reductions}
            for mn, code in reductions.items():
                pick, tree = delay(m, op == code, trees[mn], early, f"r{code}_")  # as late as the units' results
                lanes_out = Mux(pick, Cat(*[tree] * c.native_dim), lanes_out)
        result = Signal(layouts_for(c).beat)
        m.d.comb += [result.r.eq(beat.r), result.i.eq(beat.i), result.j.eq(beat.j), result.tag.eq(beat.tag),
                     result.data.eq(lanes_out)]
        valid, out = delay(m, self.i.valid & (op != 0), result, c.latencies.mfu_stage, "s")
        if early:  # the unit's registers hold the data its first cycles: it joins the delay line that much later
            late, out = out, Signal(layouts_for(c).beat)
            m.d.comb += [out.eq(late), out.data.eq(delay(m, 0, lanes_out, c.latencies.mfu_stage - early, "sd")[1])]
        # a beat this stage processed leaves it; else a beat whose chain bypasses the stage passes in the same
        # cycle (``ctl`` is the operation of the beat coming in: on the pipelined machine the two may belong to
        # different chains, which the issue rules keep from meeting here)
        m.d.comb += [self.o.valid.eq(valid | (self.i.valid & (op == 0))),
                     self.o.payload.eq(Mux(valid, out.as_value(), beat.as_value()))]
        return m


class MfuChain(wiring.Component):
    """Every MFU's stages, MFU by MFU and each MFU's in the order of :data:`npu.config.MFU_STAGES`.

    Parameters
    ----------
    config : NpuConfig
        The architecture.
    memmap : MemoryMap
        The memories: the binary stages read theirs through ``vrf``.
    units : dict
        The unit components of :func:`rtl.units.make_units`, instantiated by their module names.

    Members
    -------
    step : In(StepPort(Layouts.chain))
        The running chain (its ``mfu`` operations and ``alpha``).
    vrf : In(MemoryMap.read_ports(the operand memory of every binary stage))
        Read ports of those memories.
    i : In(stream.Signature(Layouts.beat, always_ready=True))
        Beats in, from the MVM.
    o : Out(stream.Signature(Layouts.beat, always_ready=True))
        Beats out, to the write stage.
    """

    def _setup(self, config: NpuConfig, memmap: MemoryMap, units: dict):
        """What every MFU chain (this one and the pipelined one) keeps: the configuration, its stages, the units."""
        check_config(config)
        check_memmap(memmap, config)
        self.config = config
        self.memmap = memmap
        #: (mfu, stage, operand memory or None) of every stage, in pipeline order
        self.stages = [(k, stage, None if stage_vrf(stage) is None else vector_memory(stage_vrf(stage), k))
                       for k, present in enumerate(config.mfus) for stage in MFU_STAGES if stage in present]
        kinds = sorted(set(REDUCTION_OPS.values()))
        for name in [UNIT_NAMES[stage] for _, stage, _ in self.stages] + [UNIT_NAMES[f"reduce_{k}"] for k in kinds]:
            if name not in units:
                raise ValueError(f"units must hold {name}, not only {sorted(units)}")
        self._units = units
        #: the reduction trees' node units by kind (npu.isa.REDUCTION_OPS's values)
        self._reducers = {kind: units[UNIT_NAMES[f"reduce_{kind}"]] for kind in kinds}
        return layouts_for(config)

    def __init__(self, *, config: NpuConfig, memmap: MemoryMap, units: dict):
        lay = self._setup(config, memmap, units)
        super().__init__({
            "step": In(StepPort(lay.chain)),
            "vrf": In(memmap.read_ports([name for _, _, name in self.stages if name is not None])),
            "i": In(beat_stream(lay.beat)),
            "o": Out(beat_stream(lay.beat)),
        })

    def _stages(self, m: Module, desc_of) -> None:
        """Chain the MFU stages from ``i`` to ``o``; ``desc_of(unit)`` is the chain descriptor a stage takes its
        operation and operands from (the step's, or the one its beat's tag names)."""
        beats = wiring.flipped(self.i)
        for k, stage, vrf in self.stages:
            unit = MfuStage(config=self.config, memmap=self.memmap, mfu=k, stage=stage,
                            unit=self._units[UNIT_NAMES[stage]], reducers=self._reducers)
            m.submodules[f"mfu{k}_{stage}"] = unit
            ex = desc_of(unit)
            m.d.comb += unit.ctl.eq(ex.mfu[k][stage])
            if "alpha" in unit.signature.members:
                m.d.comb += unit.alpha.eq(ex.alpha)
            if vrf is not None:
                wiring.connect(m, wiring.flipped(getattr(self.vrf, vrf)), unit.vrf)
            wiring.connect(m, beats, unit.i)
            beats = unit.o
        wiring.connect(m, beats, wiring.flipped(self.o))

    def elaborate(self, platform):
        m = Module()
        self._stages(m, lambda unit: self.step.desc)
        return m


class PipelinedMfuChain(MfuChain):
    """The MFU chain of the pipelined machine: each stage takes the operation, operand and alpha of the beat
    coming in from the chain table, by the beat's tag (chains in flight may use different stages).

    Members: ``descs`` (In(ArrayLayout(Layouts.chain, entries)), the chain table) instead of ``step``;
    ``vrf``, ``i``, ``o`` as MfuChain's.
    """

    def __init__(self, *, config: NpuConfig, memmap: MemoryMap, units: dict):
        lay = self._setup(config, memmap, units)
        wiring.Component.__init__(self, {
            "descs": In(data.ArrayLayout(lay.chain, config.scoreboard_entries)),
            "vrf": In(memmap.read_ports([name for _, _, name in self.stages if name is not None])),
            "i": In(beat_stream(lay.beat)),
            "o": Out(beat_stream(lay.beat)),
        })

    def elaborate(self, platform):
        m = Module()
        self._stages(m, lambda unit: self.descs[unit.i.payload.tag])  # each stage by its beat's chain
        return m
