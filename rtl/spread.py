"""The closed form of the spread MAC rounds' count (docs/pipeline.md unit 6, sim/timing.py ``_spread_rounds``) as
hardware: what the issue unit predicts of a spread chain's MAC schedule (rtl/issue.py; the MVM itself walks the
rounds one by one, rtl/mvm.py)."""
from __future__ import annotations

from amaranth.hdl import Signal

from npu.config import NpuConfig
from rtl.step import layouts_for


def spread_period(cols: int, config: NpuConfig) -> tuple[int, int] | None:
    """For a ``cols`` at which the row-slot limit cuts rounds short (``tile_engines > (mvm_row_slots - 1) x
    cols + 1``), the greedy rounds repeat from every aligned start: (row tiles, rounds) of one period; None
    where every round but the last takes ``tile_engines`` tiles."""
    T, S = config.tile_engines, config.mvm_row_slots
    if T <= (S - 1) * cols + 1:
        return None
    p, rounds = 0, 0
    while True:
        p = min(p + T, (p // cols + S) * cols)
        rounds += 1
        if p % cols == 0:
            return p // cols, rounds


def spread_rounds(m, config: NpuConfig, rows, cols, name: str):
    """MAC rounds of one iteration of ``rows`` x ``cols`` tiles in spread mode, and how many row tiles beyond
    the first the last round completes (they leave the MVM one per cycle after it), as signals: the closed
    form of sim.timing._spread_rounds' greedy rule.  Every round but the last takes ``tile_engines`` tiles
    unless the row-slot limit bites, which happens only at ``cols`` below ``tile_engines`` (spread_period):
    there the rounds repeat per period and the rest is a table of the model's own rule."""
    from sim.timing import _spread_rounds

    c = config
    T, S, cpt = c.tile_engines, c.mvm_row_slots, c.cycles_per_tile
    imm = layouts_for(c).imm
    rounds, spill = Signal(2 * imm + 1, name=f"{name}_srounds"), Signal(range(S), name=f"{name}_sspill")
    total, take = Signal(2 * imm, name=f"{name}_stotal"), Signal(range(T + 1), name=f"{name}_stake")
    m.d.comb += [total.eq(rows * cols), take.eq((total - 1) % T + 1 if T > 1 else 1)]

    def last_rows(r, k):
        _, done = _spread_rounds(r, k, T, S, cpt)
        return sum(d == max(done) for d in done) - 1

    with m.Switch(cols):
        for k in range(1, T):
            per = spread_period(k, c)
            if per is None:
                continue
            rho, n_rounds = per
            with m.Case(k):
                q, rem = rows // rho, rows % rho
                with m.Switch(rem):
                    for rr in range(rho):
                        with m.Case(rr):
                            extra = _spread_rounds(rr, k, T, S, cpt)[0] if rr else 0
                            m.d.comb += [rounds.eq(q * n_rounds + extra),
                                         spill.eq(last_rows(rr if rr else rho, k))]
        with m.Default():  # every round takes tile_engines tiles but the last (`take` tiles)
            m.d.comb += [rounds.eq((total + (T - 1)) // T if T > 1 else total),
                         spill.eq(sum(((u * cols) < take).as_unsigned() for u in range(1, S)))]
    return rounds, spill
