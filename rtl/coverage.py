"""Functional coverage of RTL-vs-simulator checking: defined bins, counted per run, reported as hit or not.

The bins are defined up front from the configuration and the ISA table (npu.isa), so a bin no program reaches
shows as a hole in the report rather than as nothing.  Each checked case is sampled from its program's steps
(npu.program.analyze), the simulator's run (its step records: when each step started and completed) and its
data; error programs by their kind.  Groups:

* ``instruction``: every instruction with every memory space it can name (v_rd, v_wr), every MFU operation on
  every MFU that has its stage, mv_mul, m_rd, m_wr, s_wr of every register;
* ``hazard``: RAW, WAR and WAW between two steps whose operand intervals overlap in one memory, by distance in
  steps (1, 2, 3, 4-7, 8-15, 16+), and a transfer writing MRF tiles a later chain multiplies with;
* ``stride``: outer and inner strides that are zero, overlap (< width), are contiguous (= width) or leave gaps,
  and operands whose last iteration ends on the last word of their memory;
* ``limits``: rows, cols and both loop counts from 1 to large, windowed reads, chains moving more vectors than
  the queue FIFOs hold (the bench streams them: back-pressure, a queue that runs dry);
* ``length``: program steps 1-4, 5-15, 16-63, 64+;
* ``stall``: a step waiting for the previous one, one waiting for its decoding, decoding stalled by a full
  step queue, transfers back to back and a chain after a transfer;
* ``error``: every error kind of rtl.randprog.ERROR_KINDS (the simulator and the RTL agreeing on it);
* ``bypass`` (configurations with ``mvm_bypass``, docs/pipeline.md unit 11): MVM-only chains writing through the
  bypass write port, with two destinations, a later chain completing before one, a bypass chain completing in
  the cycle another chain does, RAW/WAR/WAW on a bypass chain's intervals, a chain issuing into the entry a
  bypass chain frees while fewer steps than the entries are in flight;
* ``value``: fp16 special values (inf, -inf, NaN, subnormal, -0, the largest finite) in what the program wrote
  (output queue and written words); stimulus profiles of the data and the weights (rtl.randprog's
  DATA_MODES and WEIGHT_MODES).

cocotb-coverage's CoverPoint/CoverCross decorators sample inside the cocotb process; here every sample comes
from the host's view of a case (the program and the simulator's run), so a plain bin counter does.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from npu.config import MFU_STAGES, NpuConfig
from npu.isa import STAGE_OPS, Reg, Space
from npu.program import Chain, Dma

DISTANCES = ("1", "2", "3", "4-7", "8-15", "16+")
#: longest step distance sampled for hazards (pairs further apart count as 16+ only up to this)
MAX_DISTANCE = 48


def _distance(d: int) -> str:
    return DISTANCES[min(d, 3) - 1] if d <= 3 else "4-7" if d < 8 else "8-15" if d < 16 else "16+"


def _bucket(v: int, edges: tuple[int, ...], names: tuple[str, ...]) -> str:
    for edge, name in zip(edges, names):
        if v <= edge:
            return name
    return names[-1]


ROWS = ((1, 7, 1 << 30), ("1", "2-7", "8+"))
COLS = ((1, 4, 1 << 30), ("1", "2-4", "5+"))
LOOPS = ((1, 3, 1 << 30), ("1", "2-3", "4+"))
LENGTHS = ((4, 15, 63, 1 << 30), ("1-4", "5-15", "16-63", "64+"))


def defined_bins(config: NpuConfig) -> dict[str, list[str]]:
    """Every bin, by group."""
    from rtl.randprog import DATA_MODES, ERROR_KINDS, WEIGHT_MODES

    spaces = {"v_rd": ("netq", "dram", "ivrf", "asvrf", "mulvrf", "zero"),
              "v_wr": ("netq", "dram", "ivrf", "asvrf", "mulvrf")}
    ins = [f"{m} {sp}" for m, sps in spaces.items() for sp in sps]
    ins += [f"{op} mfu{k}" for k in range(config.n_mfus) for stage in MFU_STAGES if config.mfu_has(k, stage)
            for op in STAGE_OPS[stage]]
    ins += ["mv_mul", "m_rd", "m_wr"] + [f"s_wr {r.name.lower()}" for r in Reg]
    hazard = [f"{h} @{d}" for h in ("RAW", "WAR", "WAW") for d in DISTANCES] + ["DMA->mv_mul tiles"]
    stride = [f"{w} {c}" for w in ("so", "si") for c in ("zero", "overlap", "contiguous", "gapped")]
    stride += ["ends on the last word"]
    limits = ([f"rows {b}" for b in ROWS[1]] + [f"cols {b}" for b in COLS[1]]
              + [f"iter_outer {b}" for b in LOOPS[1]] + [f"iter_inner {b}" for b in LOOPS[1]]
              + ["windowed read", "inputs beyond the FIFO", "outputs beyond the FIFO"])
    stall = ["waits for the previous step", "waits for decoding", "step queue full", "DMA after DMA",
             "chain after DMA"]
    value = [f"wrote {v}" for v in ("inf", "-inf", "nan", "subnormal", "-0", "max finite")]
    value += [f"data {m}" for m in DATA_MODES] + [f"weights {m}" for m in WEIGHT_MODES]
    groups = {"instruction": ins, "hazard": hazard, "stride": stride, "limits": limits,
              "length": [f"steps {b}" for b in LENGTHS[1]], "stall": stall, "error": sorted(ERROR_KINDS),
              "value": value}
    if config.mvm_bypass:
        groups["bypass"] = BYPASS_BINS
    return groups


BYPASS_BINS = ["bypass chain", "bypass chain, two destinations", "completes after a later chain",
               "completes with another chain", "RAW on a bypass chain", "WAR on a bypass chain",
               "WAW on a bypass chain", "entry held by a bypass chain"]


def _operands(step: Chain):
    """(reads, writes) of a chain as (memory key, lo, hi)."""
    def key(op):
        return (op.space, op.mfu if op.space in (Space.ASVRF, Space.MULVRF) else 0)

    reads, writes = [], []
    if step.read.space not in (Space.NETQ, Space.ZERO):
        reads.append((key(step.read), *step.span(step.read, int(step.read_offsets().max()) + 1)))
    for op in step.ops:
        if op.operand is not None:
            reads.append((key(op.operand), *step.span(op.operand, step.rows)))
    for w in step.writes:
        if w.space not in (Space.NETQ, Space.ZERO):
            writes.append((key(w), *step.span(w, step.rows)))
    return reads, writes


def _overlap(a, b) -> bool:
    return a[0] == b[0] and a[1] <= b[2] and b[1] <= a[2]


class Coverage:
    """Bin counters of one configuration (or several: :meth:`merge`)."""

    def __init__(self, config: NpuConfig, queue_depth: int = 512):
        self.config = config
        self.queue_depth = queue_depth
        self.groups = defined_bins(config)
        self.hits: Counter = Counter()
        self.cases = 0

    def hit(self, group: str, name: str, n: int = 1) -> None:
        if name in self.groups.get(group, ()):
            self.hits[(group, name)] += n

    # ------------------------------------------------------------------ sampling
    def sample(self, case, steps, sres, sim=None, outputs: np.ndarray | None = None) -> None:
        """One legal case: its program's ``steps``, the simulator's run ``sres`` (and the simulator machine
        after it, for the written values), the output queue it produced."""
        self.cases += 1
        config = self.config
        for ins in case.program.instructions:
            m = ins.mnemonic
            if m in ("v_rd", "v_wr"):
                self.hit("instruction", f"{m} {Space(ins['space']).name.lower()}")
            elif m == "s_wr":
                self.hit("instruction", f"s_wr {Reg(ins['reg']).name.lower()}")
            elif m in ("mv_mul", "m_rd", "m_wr"):
                self.hit("instruction", m)
            elif m != "end_chain":
                self.hit("instruction", f"{m} mfu{ins['mfu']}")
        self.hit("length", f"steps {_bucket(len(steps), *LENGTHS)}")
        ops = [(_operands(s) if isinstance(s, Chain) else None) for s in steps]
        for j, s in enumerate(steps):
            if isinstance(s, Chain):
                self._chain(s)
                rj, wj = ops[j]
                for i in range(max(0, j - MAX_DISTANCE), j):
                    prev = steps[i]
                    d = _distance(j - i)
                    if ops[i] is None:
                        if (s.mrf is not None and prev.to_mrf
                                and prev.mrf <= s.mrf + s.rows * s.cols - 1 and s.mrf <= prev.mrf + prev.count - 1):
                            self.hit("hazard", "DMA->mv_mul tiles")
                        continue
                    ri, wi = ops[i]
                    if any(_overlap(a, b) for a in wi for b in rj):
                        self.hit("hazard", f"RAW @{d}")
                    if any(_overlap(a, b) for a in ri for b in wj):
                        self.hit("hazard", f"WAR @{d}")
                    if any(_overlap(a, b) for a in wi for b in wj):
                        self.hit("hazard", f"WAW @{d}")
            elif j and isinstance(steps[j - 1], Dma):
                self.hit("stall", "DMA after DMA")
            if isinstance(s, Chain) and j and isinstance(steps[j - 1], Dma):
                self.hit("stall", "chain after DMA")
        self._stalls(sres, steps)
        if config.mvm_bypass:
            self._bypass(steps, sres, ops)
        self._values(case, steps, sim, outputs)

    def _bypass(self, steps, sres, ops) -> None:
        from sim.timing import TimingModel

        tm = TimingModel(self.config)
        recs = sres.steps
        chains = [k for k, s in enumerate(steps) if isinstance(s, Chain)]
        K = self.config.scoreboard_entries
        for n, j in enumerate(chains):
            s = steps[j]
            if not tm.bypasses(s):
                continue
            self.hit("bypass", "bypass chain")
            if len(s.writes) > 1:
                self.hit("bypass", "bypass chain, two destinations")
            later = chains[n + 1:]
            if any(recs[k].end < recs[j].end for k in later):
                self.hit("bypass", "completes after a later chain")
            if any(recs[k].end == recs[j].end for k in chains if k != j):
                self.hit("bypass", "completes with another chain")
            rj, wj = ops[j]
            for k in later[:MAX_DISTANCE]:
                rk, wk = ops[k]
                if recs[k].start >= recs[j].end and recs[k].start <= recs[j].end + 1:
                    if any(_overlap(a, b) for a in wj for b in rk):
                        self.hit("bypass", "RAW on a bypass chain")
                    if any(_overlap(a, b) for a in rj for b in wk):
                        self.hit("bypass", "WAR on a bypass chain")
                    if any(_overlap(a, b) for a in wj for b in wk):
                        self.hit("bypass", "WAW on a bypass chain")
            if n + K < len(chains):  # the chain that takes its entry next issues when it completes
                k = chains[n + K]
                in_flight = sum(1 for r in recs if r.start < recs[k].start < r.end)
                if recs[k].start == recs[j].end and in_flight < K:
                    self.hit("bypass", "entry held by a bypass chain")

    def _chain(self, s: Chain) -> None:
        config = self.config
        self.hit("limits", f"rows {_bucket(s.rows, *ROWS)}")
        if s.mrf is not None:
            self.hit("limits", f"cols {_bucket(s.cols, *COLS)}")
        self.hit("limits", f"iter_outer {_bucket(s.iter_outer, *LOOPS)}")
        self.hit("limits", f"iter_inner {_bucket(s.iter_inner, *LOOPS)}")
        if s.win_run:
            self.hit("limits", "windowed read")
        limit = self.queue_depth - 2
        if s.read.space == Space.NETQ and s.iterations * len(s.read_offsets()) > limit:
            self.hit("limits", "inputs beyond the FIFO")
        if any(w.space == Space.NETQ for w in s.writes) and s.iterations * s.rows > limit:
            self.hit("limits", "outputs beyond the FIFO")
        operands = [(s.read, int(s.read_offsets().max()) + 1)] if s.read.space not in (Space.NETQ, Space.ZERO) else []
        operands += [(op.operand, s.rows) for op in s.ops if op.operand is not None]
        operands += [(w, s.rows) for w in s.writes if w.space not in (Space.NETQ, Space.ZERO)]
        for op, width in operands:
            for name, stride, n in (("so", op.so, s.iter_outer), ("si", op.si, s.iter_inner)):
                if n > 1:
                    cls = ("zero" if stride == 0 else "overlap" if stride < width else
                           "contiguous" if stride == width else "gapped")
                    self.hit("stride", f"{name} {cls}")
            if s.span(op, width)[1] == config.vector_space_depth(op.space) - 1:
                self.hit("stride", "ends on the last word")

    def _stalls(self, sres, steps) -> None:
        lat = self.config.latencies
        recs = sres.steps
        q = self.config.step_queue
        pipelined = self.config.scoreboard_entries > 1
        for k, r in enumerate(recs):
            decoded = r.end_pc + 1  # the cycle its last instruction decodes when decoding never stalls
            if k >= q and recs[k - q].start >= decoded:
                self.hit("stall", "step queue full")
            if pipelined:
                continue
            if k and r.start == recs[k - 1].end + lat.chain_setup:
                self.hit("stall", "waits for the previous step")
            elif r.start > decoded + lat.decode - 1 and (not k or r.start > recs[k - 1].end + lat.chain_setup):
                self.hit("stall", "waits for decoding")
        if pipelined:  # steps in flight together: issue is decided by the scoreboard, not one-at-a-time
            for k in range(1, len(recs)):
                if recs[k].start < recs[k - 1].end:
                    self.hit("stall", "waits for decoding")
                else:
                    self.hit("stall", "waits for the previous step")

    def _values(self, case, steps, sim, outputs) -> None:
        notes = getattr(case, "notes", {}) or {}
        if "data" in notes:
            self.hit("value", f"data {notes['data']}")
        if "weights" in notes:
            self.hit("value", f"weights {notes['weights']}")
        arrays = [] if outputs is None else [np.asarray(outputs, np.float16).ravel()]
        if sim is not None:
            for s in steps:
                if isinstance(s, Chain):
                    for w in s.writes:
                        if w.space not in (Space.NETQ, Space.ZERO):
                            lo, hi = s.span(w, s.rows)
                            arrays.append(sim.state.memory(w.space, w.mfu)[lo:hi + 1].ravel())
        if not arrays:
            return
        v = np.concatenate(arrays)
        bits = v.view(np.uint16)
        for name, found in (("inf", np.any(bits == 0x7C00)), ("-inf", np.any(bits == 0xFC00)),
                            ("nan", np.any(np.isnan(v))), ("-0", np.any(bits == 0x8000)),
                            ("subnormal", np.any(((bits & 0x7C00) == 0) & ((bits & 0x3FF) != 0))),
                            ("max finite", np.any((bits & 0x7FFF) == 0x7BFF))):
            if found:
                self.hit("value", f"wrote {name}")

    def sample_error(self, kind: str, agreed: bool) -> None:
        self.cases += 1
        if agreed:
            self.hit("error", kind)

    # ------------------------------------------------------------------ report
    def merge(self, other: "Coverage") -> None:
        self.hits.update(other.hits)
        self.cases += other.cases

    def report(self) -> dict:
        groups = {g: {b: self.hits[(g, b)] for b in bins} for g, bins in self.groups.items()}
        total = sum(len(b) for b in self.groups.values())
        hit = sum(1 for g, bins in groups.items() for n in bins.values() if n)
        return {"config": self.config.name, "cases": self.cases, "bins": total, "hit": hit,
                "percent": round(100.0 * hit / total, 2) if total else 100.0, "groups": groups,
                "holes": [f"{g}: {b}" for g, bins in groups.items() for b, n in bins.items() if not n]}

    def table(self) -> str:
        return report_table(self.report())


def report_table(rep: dict) -> str:
    """A :meth:`Coverage.report` as text: per group the bins hit, each bin's count, then the holes."""
    lines = [f"coverage of {rep['config']}: {rep['hit']}/{rep['bins']} bins ({rep['percent']:.1f} %) "
             f"over {rep['cases']} cases"]
    for g, bins in rep["groups"].items():
        n = sum(1 for v in bins.values() if v)
        lines.append(f"  {g:12s} {n:3d}/{len(bins):3d}  " + ", ".join(f"{b}={v}" for b, v in bins.items()))
    if rep["holes"]:
        lines.append("  holes: " + "; ".join(rep["holes"]))
    return "\n".join(lines)
