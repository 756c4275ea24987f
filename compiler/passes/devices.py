"""Devices: one model across several NPUs of one configuration, as pipeline stages (issue 12).

Brainwave pinned a model too large for one FPGA across several, each FPGA a
stage that takes its input from the network and sends its output on.  Here:

* :func:`split_rows` (before partitioning) cuts a convolution or linear layer whose
  weights need more tiles than one NPU's MRF into parts over slices of its output
  channels (rows of its weight matrix, whole native tiles each) and a channel
  ``Concat`` that joins them on the NPU that reads the result.  Every output
  element is computed from the same inputs, weights and column groups as before, so
  the values are the same bits.
* :func:`assign_devices` (after fusion) walks the NPU nodes in the order the plan
  runs them and cuts that order into at most N contiguous stages: each stage's
  weights fit one MRF (when they can) and the slowest stage is as fast as it can be
  (a binary search on the bottleneck, each candidate checked by a greedy fill, which
  is exact for contiguous cuts).  The cost of a node is its modeled cycles (measured
  on a first compilation; before that its MACs at the peak rate).
* :func:`lower_on_devices` lowers each NPU segment of the partitioned graph as one
  segment per run of nodes on one device, each device with its own weight chunks and
  constants (its own MRF and vector memories).

``devices="auto"`` takes the fewest NPUs that pin every weight; a layer that cannot
be made to fit (a recurrent layer, or one row of tiles wider than the MRF) is then a
:class:`CompileError` naming it, so ``auto`` never makes a stage whose weights stream.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from compiler.ir import Graph, Node, Tensor
from compiler.lowering import Shared
from compiler.ops import OPS, node_macs
from npu.config import NpuConfig
from npu.errors import CompileError

AUTO = "auto"


def ct(x: int, n: int) -> int:
    return -(-int(x) // n)


def node_tiles(g: Graph, node: Node, n: int) -> int:
    d = OPS.get(node.op)
    return int(d.tiles(g, node, n)) if d is not None and d.tiles is not None else 0


# ------------------------------------------------------------------------------------------ row splitting
def _splittable(g: Graph, node: Node) -> bool:
    if node.op == "Conv":
        w = g.value(node.inputs[1]) if len(node.inputs) > 1 else None
        return w is not None and w.ndim == 4 and int(node.attr("group", 1)) == 1 and \
            (len(node.inputs) < 3 or not node.inputs[2] or g.value(node.inputs[2]) is not None)
    if node.op == "Gemm" and node.attr("_canonical"):
        return g.value(node.inputs[1]) is not None and (len(node.inputs) < 3 or g.value(node.inputs[2]) is not None)
    return False


def split_rows(g: Graph, config: NpuConfig, budget: int | None = None, wide_parts: int = 1) -> dict[str, list[str]]:
    """Split every Conv (group 1) and canonical Gemm whose weights need more than ``budget`` tiles (default: the
    MRF) into parts over output channels, each at most ``budget`` tiles where a row of tiles allows; returns
    {original node: [part nodes..., the Concat]}.

    A layer one row of whose tiles is wider than ``budget`` cannot be pinned by any such split; with
    ``wide_parts`` > 1 it is cut into that many parts anyway (at most one per row of tiles), which stream their
    shares of its weights on NPUs of their own, side by side."""
    n = config.native_dim
    budget = budget or config.mrf_tiles
    done: dict[str, list[str]] = {}
    for node in list(g.nodes.values()):
        tiles = node_tiles(g, node, n)
        if tiles <= budget or not _splittable(g, node):
            continue
        w = g.value(node.inputs[1])
        rows = ct(w.shape[0], n)
        per_row = tiles // rows
        if rows < 2 or (per_row > budget and wide_parts < 2):
            continue  # one row of tiles is wider than the MRF: the stage streams (or auto refuses)
        if per_row > budget:
            k = min(wide_parts, rows)
        else:
            k = max(ct(tiles, budget), ct(rows, max(1, budget // per_row)))
        sizes = [rows // k + (i < rows % k) for i in range(k)]
        bias = g.value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
        # the parts may land on different NPUs: each reads its input through a view of its own, so the view's
        # input crosses in its own layout to each of them (see assign_devices)
        view = g.producer_of(node.inputs[0])
        if view is not None and not (OPS.get(view.op) and OPS[view.op].view and view.inputs):
            view = None
        out = node.outputs[0]
        shape = g.shape(out)
        dtype = g.tensors[out].dtype
        parts, r0 = [], 0
        g.remove(node.name)
        for i, size in enumerate(sizes):
            c0, c1 = r0 * n, min((r0 + size) * n, w.shape[0])
            r0 += size
            name = f"{node.name}.rows{i}"
            wname = g.fresh_name(f"{name}.weight")
            g.const(wname, np.ascontiguousarray(w[c0:c1]))
            x = node.inputs[0]
            if view is not None:
                x = g.fresh_name(f"{x}.rows{i}")
                g.tensors[x] = Tensor(x, g.shape(node.inputs[0]), g.tensors[node.inputs[0]].dtype)
                g.add(Node(f"{view.name}.rows{i}", view.op, list(view.inputs), [x], dict(view.attrs), view.domain,
                           fused=list(view.fused) or [view.name]))
            inputs = [x, wname]
            if bias is not None:
                bname = g.fresh_name(f"{name}.bias")
                g.const(bname, np.ascontiguousarray(np.asarray(bias).reshape(-1)[c0:c1]))
                inputs.append(bname)
            oname = g.fresh_name(f"{out}.rows{i}")
            g.tensors[oname] = Tensor(oname, tuple(shape[:1]) + (c1 - c0,) + tuple(shape[2:]), dtype)
            part = g.add(Node(name, node.op, inputs, [oname], dict(node.attrs), node.domain,
                              fused=list(node.fused) or [node.name]))
            parts.append(part.name)
        cat = g.add(Node(f"{node.name}.concat", "Concat", [g.nodes[p].outputs[0] for p in parts], [out],
                         {"axis": 1}, fused=[node.name]))
        if view is not None and not g.consumers.get(view.outputs[0]) and view.outputs[0] not in g.outputs:
            g.remove(view.name)
        done[node.name] = parts + [cat.name]
    return done


# ------------------------------------------------------------------------------------------ stage assignment
@dataclass
class Assignment:
    """Which device runs each NPU node, and what each device holds."""

    device_of: dict[str, int]
    devices: int
    tiles: list[int]                      # estimated weight tiles per device
    cost: list[float]                     # cost (cycles) per device
    streaming: list[bool] = field(default_factory=list)   # a device whose weights exceed its MRF
    pinned_count: int = 1                 # the fewest stages that pin every layer that fits an MRF
    too_big: list[str] = field(default_factory=list)      # layers no MRF holds (a stage each, streaming)


class _Cuts:
    """Stage costs of contiguous cuts of the order: the nodes' cycles, plus the boundary.

    A stage reads what crosses its first cut from its input queue and writes what crosses its last cut to its
    output queue (``netq`` cycles a vector each), and its port sends the latter over the link (``link`` cycles
    a vector): both make a stage slower than its nodes alone, most of all early in a CNN."""

    def __init__(self, costs, tiles, crossing, netq: float, link: float):
        self.costs, self.tiles, self.crossing = costs, tiles, crossing
        self.netq, self.link = netq, link
        self.prefix = [0.0]
        for c in costs:
            self.prefix.append(self.prefix[-1] + c)

    def cost(self, a: int, b: int) -> float:
        """Cycles of the stage holding items [a, b): compute and queues, or its port, whichever is longer."""
        inner = self.prefix[b] - self.prefix[a] + self.netq * (self.crossing[a] + self.crossing[b])
        return max(inner, self.link * self.crossing[b])

    def greedy(self, limit: float, budget: int | None) -> list[int] | None:
        """Stage of each item: each stage ends at the furthest cut within ``limit`` (and the tile ``budget``);
        None when some item cannot be placed within the limit."""
        n, out, a, stage = len(self.costs), [], 0, 0
        while a < n:
            best, held = None, 0
            for b in range(a + 1, n + 1):
                held += self.tiles[b - 1]
                # an item without weights never needs a new NPU for them (it may follow a layer no MRF holds)
                over = budget is not None and self.tiles[b - 1] > 0 and held > budget
                if b > a + 1 and (over or self.prefix[b] - self.prefix[a] > limit):
                    break
                if self.cost(a, b) <= limit:
                    best = b
            if best is None:
                return None
            out += [stage] * (best - a)
            a, stage = best, stage + 1
        return out


def _balance(cuts: _Cuts, devices: int, budget: int | None) -> list[int]:
    """The contiguous cut into at most ``devices`` stages (each within ``budget`` tiles when given) whose largest
    stage cost is smallest: binary search on that cost."""
    hi = max(cuts.cost(0, len(cuts.costs)), 1.0)
    while True:   # a limit every item fits under, one stage each
        first = cuts.greedy(hi, budget)
        if first is not None:
            break
        hi *= 2
    best, lo = first, 0.0
    for _ in range(60):
        if hi - lo <= max(1.0, 1e-4 * hi):
            break
        mid = (lo + hi) / 2
        cut = cuts.greedy(mid, budget)
        if cut is not None and (cut[-1] + 1 if cut else 0) <= devices:
            best, hi = cut, mid
        else:
            lo = mid
    return best


def _vectors(g: Graph, tensor: str, n: int) -> int:
    from compiler.chain_ir import standard_grid

    shape = g.shape(tensor)
    grid = standard_grid(tuple(shape)) if shape else None
    return grid[0] * grid[1] * ct(grid[2], n) if grid else 0


def crossing_vectors(g: Graph, order: list[Node], n: int) -> list[int]:
    """Vectors of the tensors live across each cut 0..len(order) (cut i is before order[i]); cut 0 holds what the
    first node reads from outside the order, the last cut what leaves it."""
    pos = {node.name: i for i, node in enumerate(order)}
    delta = [0] * (len(order) + 2)
    for i, node in enumerate(order):
        for t in dict.fromkeys(o for o in node.outputs if o):
            users = [pos.get(c.name, len(order)) for c in g.consumers_of(t)]
            last = max(users + ([len(order)] if t in g.outputs else []), default=i)
            if last > i:
                v = _vectors(g, t, n)
                delta[i + 1] += v
                delta[last + 1] -= v
        for t in dict.fromkeys(Graph.node_inputs(node)):
            p = g.producer_of(t)
            if g.value(t) is None and (p is None or p.name not in pos):
                v = _vectors(g, t, n)
                delta[0] += v
                delta[i + 1] -= v
    out, run = [], 0
    for i in range(len(order) + 1):
        run += delta[i]
        out.append(max(0, run))
    return out


def internal_crossing(g: Graph, order: list[Node], n: int) -> list[int]:
    """:func:`crossing_vectors` with the two ends at 0: the model's inputs and outputs cross no link (the host
    sends and takes them whatever the cut), so only the cuts between stages cost."""
    out = crossing_vectors(g, order, n)
    out[0] = out[-1] = 0
    return out


def assign_devices(g: Graph, order: list[Node], config: NpuConfig, devices, cycles: dict[str, float] | None = None,
                   budget: int | None = None, fabric=None, measured_tiles: dict[str, int] | None = None) -> Assignment:
    """Cut ``order`` (the NPU nodes in plan order) into stages, one per device; see the module doc.

    ``cycles`` and ``measured_tiles`` are each node's modeled cycles and weight tiles from a first compilation
    (before it: MACs at the peak rate, and each operator's tile estimate)."""
    from npu.fabric import default_fabric

    n = config.native_dim
    budget = budget or config.mrf_tiles
    fabric = fabric or default_fabric(config, 2)
    measured_tiles = measured_tiles or {}
    tiles = [measured_tiles.get(node.name, node_tiles(g, node, n)) for node in order]
    cycles = cycles or {}
    costs = [float(cycles.get(node.name, node_macs(g, node) / config.macs_per_cycle)) + 1.0 for node in order]
    if not order:
        return Assignment({}, 1, [0], [0.0], [False])
    vector_bytes = n * 2
    cuts = _Cuts(costs, tiles, internal_crossing(g, order, n), vector_bytes / config.netq_bytes_per_cycle,
                 vector_bytes / fabric.link_bytes_per_cycle)
    pinned = cuts.greedy(float("inf"), budget)
    pinned_count = pinned[-1] + 1
    too_big = [(node.name, t) for node, t in zip(order, tiles) if t > budget]
    if devices == AUTO:
        if too_big:
            name, t = too_big[0]
            err = CompileError(f"--devices auto: layer needs {t} weight tiles, more than one NPU's MRF of {budget}, "
                               "and cannot be split by rows (a recurrent layer, or one row of tiles wider than "
                               "the MRF)", node=name,
                               hint=f"--devices {pinned_count} pins every other layer and streams this one's weights")
            err.devices = pinned_count
            raise err
        devices = pinned_count
    if not isinstance(devices, int) or devices < 1:
        raise CompileError(f"--devices must be a positive integer or 'auto', not {devices!r}")
    fits = pinned_count <= devices       # a layer larger than the MRF is then a stage of its own, streaming
    cut = _balance(cuts, devices, budget if fits else None)
    # A view (Reshape, Flatten ...) is a way of reading its input's buffer, so it goes where it is read: with its
    # first reader, and the tensor crosses a link in its own layout, read on the far side as on one NPU (a wide
    # layer then sums the same column groups).  An input with no native layout (an LSTM's [T, 1, 1, H] Y) cannot
    # cross: that view stays with its producer.
    from compiler.chain_ir import standard_grid

    pos = {node.name: i for i, node in enumerate(order)}
    for i in reversed(range(len(order))):
        node = order[i]
        if not (OPS[node.op].view and node.inputs):
            continue
        shape = g.shape(node.inputs[0])
        p = g.producer_of(node.inputs[0])
        readers = [pos[c.name] for o in node.outputs if o for c in g.consumers_of(o) if c.name in pos]
        if shape and standard_grid(tuple(shape)) is not None and readers:
            cut[i] = min(cut[r] for r in readers)
        elif p is not None and p.name in pos:
            cut[i] = cut[pos[p.name]]
    dense = {s: k for k, s in enumerate(sorted(set(cut)))}   # a stage left holding only a view is gone
    cut = [dense[s] for s in cut]
    used = len(dense)
    dev_tiles, dev_cost = [0] * used, [0.0] * used
    for s, t, c in zip(cut, tiles, costs):
        dev_tiles[s] += t
        dev_cost[s] += c
    return Assignment({node.name: s for node, s in zip(order, cut)}, used, dev_tiles, dev_cost,
                      [t > budget for t in dev_tiles], pinned_count, [name for name, _ in too_big])


def wide_parts(g: Graph, order: list[Node], config: NpuConfig, devices: int, cycles: dict[str, float],
               budget: int, fabric, measured_tiles: dict[str, int], too_big: list[str]) -> int:
    """How many row parts each layer no MRF holds should get on ``devices`` NPUs: the count whose predicted
    bottleneck -- the largest of a part's cycles (the layer's, shared) and the slowest stage of the other layers
    balanced on the NPUs left -- is smallest."""
    n = config.native_dim
    wide = set(too_big)
    rest = [node for node in order if node.name not in wide]
    costs = [float(cycles.get(node.name, node_macs(g, node) / config.macs_per_cycle)) + 1.0 for node in rest]
    tiles = [measured_tiles.get(node.name, node_tiles(g, node, n)) for node in rest]
    vector_bytes = n * 2
    cuts = _Cuts(costs, tiles, internal_crossing(g, rest, n), vector_bytes / config.netq_bytes_per_cycle,
                 vector_bytes / fabric.link_bytes_per_cycle)
    need = (cuts.greedy(float("inf"), budget)[-1] + 1) if rest else 0
    heaviest = max(float(cycles.get(name, 0.0)) for name in too_big)
    best, best_k = float("inf"), 1
    for k in range(1, devices + 1):
        left = devices - k * len(too_big)
        if left < need:
            break
        if rest:
            cut = _balance(cuts, left, budget)
            bottleneck = max(cuts.cost(cut.index(s), len(cut) - cut[::-1].index(s)) for s in set(cut))
        else:
            bottleneck = 0.0
        predicted = max(heaviest / k, bottleneck)
        if predicted < best * 0.999:
            best, best_k = predicted, k
    return best_k


# ------------------------------------------------------------------------------------------ lowering per device
@dataclass
class DeviceImage:
    """What one NPU of the fabric holds: its weight chunks and constants, and where they went."""

    index: int
    streaming: bool = False
    shared: Shared = field(default_factory=Shared)
    constants: list = field(default_factory=list)
    vrf_base: dict = field(default_factory=dict)
    weights: object = None                   # npu.weights.WeightImage


def local_plans(g: Graph, device_of: dict[str, int], concat_groups: dict | None, pixel_groups: dict) -> tuple:
    """The concatenation groups and pixel groups whose tensors stay on one device (a tensor crossing a link
    arrives in the plain layout, and a group's parts must be written by one NPU)."""
    def dev(tensor):
        p = g.producer_of(tensor)
        return device_of.get(p.name) if p is not None else None

    def local(tensor):
        d = dev(tensor)
        return d is not None and all(device_of.get(c.name, d) == d for c in g.consumers_of(tensor))

    groups = None
    if concat_groups is not None:
        bad = {gid for t, (gid, _) in concat_groups["parts"].items() if not local(t)}
        bad |= {gid for c, gid in concat_groups["concats"].items()
                if any(dev(t) != device_of.get(c) for t in g.nodes[c].inputs)}
        groups = {"parts": {t: v for t, v in concat_groups["parts"].items() if v[0] not in bad},
                  "concats": {c: gid for c, gid in concat_groups["concats"].items() if gid not in bad},
                  "groups": {gid: v for gid, v in concat_groups["groups"].items() if gid not in bad}}
    pixels = {t: G for t, G in (pixel_groups or {}).items() if local(t)}
    return groups, pixels


def device_runs(nodes: list[Node], device_of: dict[str, int]) -> list[tuple[int, list[Node]]]:
    """An NPU segment's nodes cut into maximal runs on one device."""
    runs: list[tuple[int, list[Node]]] = []
    for node in nodes:
        d = device_of[node.name]
        if not runs or runs[-1][0] != d:
            runs.append((d, []))
        runs[-1][1].append(node)
    return runs


def npu_order(g: Graph) -> list[Node]:
    """The NPU nodes in the order the plan runs them (segments of compiler/passes/partition.py)."""
    from compiler.passes.partition import segments

    return [node for target, nodes in segments(g) if target == "npu" for node in nodes]


def lower_on_devices(g: Graph, cfg: NpuConfig, images: list[DeviceImage], device_of: dict[str, int], pads,
                     capacity: int, progress=None, concat_groups=None, pixel_groups=None) -> tuple[list, dict]:
    """Segments like compiler/passes/lower.py ``lower_graph``, an NPU segment per run of nodes on one device;
    returns (segments, {segment index: device})."""
    from compiler.passes.lower import HostSegment, lower_npu_segment, node_ticker, segment_io
    from compiler.passes.partition import segments

    groups, pixels = local_plans(g, device_of, concat_groups, pixel_groups)
    out, where = [], {}
    parts = segments(g)
    tick = node_ticker(progress, sum(len(nodes) for _, nodes in parts))

    for target, nodes in parts:
        if target != "npu":
            ins, outs = segment_io(g, nodes)
            out.append(HostSegment(len(out), nodes, ins, outs))
            tick(len(nodes))
            continue
        for d, run in device_runs(nodes, device_of):
            k = len(out)
            out.append(lower_npu_segment(g, k, run, cfg, images[d].shared, pads, capacity, tick, groups, pixels))
            where[k] = d
    return out, where


def routes(plan: list[dict]) -> list[dict]:
    """The transfers between NPUs a plan makes: for every NPU step reading a tensor that an NPU step on another
    device wrote, ``{"tensor", "from", "to", "vectors"}`` (once per tensor and receiving device)."""
    made: dict[str, tuple[int, int]] = {}
    out, seen = [], set()
    for step in plan:
        if step["kind"] != "npu":
            for t in step["outputs"]:
                made.pop(t, None)
            continue
        d = step.get("device", 0)
        for spec in step["inputs"]:
            src = made.get(spec["tensor"])
            if src is not None and src[0] != d and (spec["tensor"], d) not in seen:
                seen.add((spec["tensor"], d))
                out.append({"tensor": spec["tensor"], "from": src[0], "to": d, "vectors": src[1]})
        for spec in step["outputs"]:
            made[spec["tensor"]] = (d, spec["vectors"])
    return out
