"""Allocation: MRF/DRAM tiles for weight chunks, addresses for constants and activation buffers.

Weights are *pinned* (loaded into the MRF once, before the first run) when
every chunk fits the MRF together; otherwise they stay in the weight region
of DRAM and schedule.py streams them with ``m_rd`` into two MRF halves.
Activation buffers get first-fit addresses over their lifetimes (chain index
of first and last use), in the memory an MFU operand requires or else the
IVRF, spilling to DRAM.
"""
from __future__ import annotations

from compiler.chain_ir import Buffer, CapacityError, ChainSpec, DmaSpec, Ref, WeightChunk
from npu.config import NpuConfig
from npu.isa import Space


def allocate_weights(chunks: list[WeightChunk], config: NpuConfig, streaming: bool) -> None:
    if not streaming:
        at = 0
        for c in chunks:
            c.mrf, at = at, at + c.tiles
        assert at <= config.mrf_tiles
        return
    at = 0
    for c in chunks:
        c.tile, at = at, at + c.tiles
    if at > config.dram_tiles:
        per: dict[str, int] = {}
        for c in chunks:
            per[c.owner] = per.get(c.owner, 0) + c.tiles
        biggest = max(per, key=per.get)
        # the largest layers, as many as it takes, go to the host together
        excess, spill = at - config.dram_tiles, []
        for owner in sorted(per, key=per.get, reverse=True):
            if excess <= 0:
                break
            spill.append(owner)
            excess -= per[owner]
        err = CapacityError(f"the weights need {at} tiles but the weight region of DRAM holds {config.dram_tiles} "
                            f"(configuration {config.name!r}); the largest layer has {per[biggest]}",
                            node=biggest, hint="use a configuration with more dram_tiles")
        err.nodes = spill
        raise err


def _spaces_key(space: Space, mfu: int) -> tuple[int, int]:
    return int(space), (mfu if space in (Space.ASVRF, Space.MULVRF) else 0)


def allocate_constants(consts: list[Buffer], config: NpuConfig) -> dict[tuple[int, int], int]:
    """Constants sit at the bottom of their memory; returns the first free address per memory."""
    top: dict[tuple[int, int], int] = {}
    for b in consts:
        key = _spaces_key(b.space, b.mfu)
        b.addr = top.get(key, 0)
        top[key] = b.addr + b.size
        if top[key] > config.vector_space_depth(b.space):
            raise CapacityError(f"constants overflow {b.space.name}[{b.mfu}] ({top[key]} > "
                                f"{config.vector_space_depth(b.space)} vectors)", node=b.owner or None)
    return top


def step_refs(step) -> list[Ref]:
    if isinstance(step, DmaSpec):
        return []
    refs = [step.read] + [o.ref for o in step.ops if o.ref is not None] + list(step.writes)
    return refs


def liveness(steps: list) -> list[Buffer]:
    seen: dict[int, Buffer] = {}
    for i, step in enumerate(steps):
        for r in step_refs(step):
            b = r.buf
            if b is None or b.const is not None:
                continue
            b.first = min(b.first, i)
            b.last = max(b.last, i)
            seen[id(b)] = b
    return list(seen.values())


def allocate_buffers(steps: list, config: NpuConfig, base: dict[tuple[int, int], int]) -> dict[str, int]:
    """First-fit by lifetime; returns the high-water mark per memory name."""
    buffers = sorted(liveness(steps), key=lambda b: (b.first, -b.size))
    placed: dict[tuple[int, int], list[Buffer]] = {}
    high: dict[str, int] = {}
    for b in buffers:
        candidates = [(b.space, b.mfu)] if b.space is not None else [(Space.IVRF, 0), (Space.DRAM, 0)]
        for space, mfu in candidates:
            key = _spaces_key(space, mfu)
            depth = config.vector_space_depth(space)
            # buffers come in order of their first use: one that died before this one starts is dead for
            # every later one too, so the lists hold only what is live (this keeps allocation linear)
            placed[key] = [o for o in placed.get(key, []) if o.last >= b.first]
            live = sorted((o for o in placed[key] if o.first <= b.last), key=lambda o: o.addr)
            addr = base.get(key, 0)
            for o in live:
                if addr + b.size <= o.addr:
                    break
                addr = max(addr, o.addr + o.size)
            if addr + b.size <= depth:
                b.space, b.mfu, b.addr = Space(space), mfu, addr
                placed.setdefault(key, []).append(b)
                name = f"{Space(space).name.lower()}{mfu if space in (Space.ASVRF, Space.MULVRF) else ''}"
                high[name] = max(high.get(name, 0), addr + b.size)
                break
        else:
            where = " or ".join(f"{Space(s).name}" for s, _ in candidates)
            culprits = _culprits(b, steps)
            err = CapacityError(f"out of vector memory: buffer {b.name} ({b.size} vectors) does not fit {where} "
                                f"(configuration {config.name!r})",
                                node=culprits[0] if culprits else None,
                                hint="use a smaller input size or a configuration with deeper VRFs/DRAM")
            err.nodes = culprits[:1]
            raise err
    return high


def _culprits(b: Buffer, steps: list) -> list[str]:
    """The nodes that could run on the host when buffer `b` does not fit, best first: those whose chains
    read it as an MFU operand (they are why it must sit in an ASVRF/MULVRF), then the node that made it,
    then every other node whose chains touch it.  Never empty while some chain uses the buffer, so the driver can always
    fall back to the host instead of aborting (a segment's input buffer has no owner node)."""
    mfu_readers, others = [], []
    for step in steps:
        if isinstance(step, DmaSpec) or not step.region or " " in step.region:
            continue  # regions "input x" / "output y" name the segment's transfers, not nodes
        if any(o.ref is not None and o.ref.buf is b for o in step.ops):
            mfu_readers.append(step.region)
        elif any(r.buf is b for r in step_refs(step)):
            others.append(step.region)
    first = mfu_readers if b.space in (Space.ASVRF, Space.MULVRF) else []
    return list(dict.fromkeys(first + ([b.owner] if b.owner else []) + mfu_readers + others))


__all__ = ["allocate_weights", "allocate_constants", "allocate_buffers", "liveness", "ChainSpec"]
