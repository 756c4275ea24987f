"""Layout: NCHW tensors become pixel-major native vectors.

A tensor on the NPU is a grid of pixels, each ``Ct = ceil(C / N)`` native
vectors (pixel (y, x), tile t at ``((y + pt) * Wp + x + pl) * Ct + t``).  This
pass decides, for every tensor a windowed operation reads, how much padding
its buffer needs on each side and what the padding holds (0, or -inf before a
MaxPool whose input may be negative), so producers write straight into the
interior of their consumer's padded buffer.
"""
from __future__ import annotations

from compiler.ir import Graph
from compiler.lowering import PadReq
from compiler.ops import OPS


def plan_padding(g: Graph) -> dict[str, PadReq]:
    """{tensor: the padding (and its fill) its buffer needs}, merged over the windows of its NPU readers."""
    reqs: dict[str, PadReq] = {}
    for node in g.nodes.values():
        window = OPS[node.op].window if node.target == "npu" else None
        if window is not None:
            reqs.setdefault(node.inputs[0], PadReq()).merge(*window(g, node))
    return reqs


def plan_concat_groups(g: Graph, native_dim: int) -> dict:
    """Channel concatenations whose parts can be written straight into one shared buffer.

    DenseNet concatenates every earlier output of a block, one Concat per layer, each a prefix of
    the next.  Such a group gets one buffer holding the channels densely (not one whole tile per
    part): every part's producer adds its result into its lanes (``vv_add`` with the zero-cleared
    buffer, lanes of other parts are added 0), and each Concat is a prefix view, so no copies run.
    Returns ``{"parts": {tensor: (group, channel offset)}, "concats": {node: group}, "groups":
    {group: (H, W, C)}}``.
    """
    plan = {"parts": {}, "concats": {}, "groups": {}}
    concats = [n for n in g.nodes.values() if n.op == "Concat" and n.target == "npu"]
    by_first: dict[str, list] = {}
    for c in concats:
        shape = g.shape(c.outputs[0])
        if shape is None or len(shape) != 4 or shape[0] != 1 or c.attr("axis", 1) % 4 != 1:
            continue
        by_first.setdefault(c.inputs[0], []).append(c)
    for first, nodes in by_first.items():
        longest = max(nodes, key=lambda c: len(c.inputs))
        parts = longest.inputs
        if any(c.inputs != parts[:len(c.inputs)] for c in nodes) or len(set(parts)) != len(parts):
            continue
        ok = True
        offsets, off = {}, 0
        for t in parts:
            p = g.producer_of(t)
            shape = g.shape(t)
            if p is None or p.target != "npu" or t in plan["parts"] or shape is None or \
                    not OPS[p.op].concat_part or \
                    any(e.kind == "sigm" for e in p.epilogue) or g.shape(t)[2:] != g.shape(longest.outputs[0])[2:]:
                ok = False
                break
            offsets[t] = off
            off += shape[1]
        # a producer reading the shared buffer it writes into would read what earlier iterations of its own
        # chain wrote (the hardware does not forward inside a chain): such groups keep the copying Concat
        members = set(parts) | {c.outputs[0] for c in nodes}
        if not ok or any(i in members for t in parts for i in g.node_inputs(g.producer_of(t))):
            continue
        gid = longest.name
        _, C, H, W = g.shape(longest.outputs[0])
        plan["groups"][gid] = (H, W, C)
        for t, o in offsets.items():
            plan["parts"][t] = (gid, o)
        for c in nodes:
            plan["concats"][c.name] = gid
    return plan


def plan_pixel_groups(g: Graph, native_dim: int, concat_plan: dict | None = None, bfp_block: int = 1) -> dict[str, int]:
    """Narrow tensors between convolutions get G pixels per native vector.

    A 64-channel feature map on N = 128 would leave half of every vector (and
    three quarters of every weight tile) idle; with G = N // C pixels side by
    side in one vector (lanes ``(x % G) * N/G + c``) a 3x3 convolution produces
    G output pixels per mv_mul.  Only tensors made and read by convolutions
    (groups 1, no dilation) qualify, with widths divisible by G and by each reader's block
    of output pixels, and only when a BFP block (``bfp_block`` elements sharing
    an exponent) stays inside one pixel's lanes: pixels that shared an exponent
    would lose precision (ms-fp8/9 share one per vector).  A first convolution
    fed from the host (im2col) may write grouped pixels.  Depthwise
    convolutions keep the native layout: the MFUs compute them in fp16 lane by
    lane (compiler/ops/conv.py).  On MobileNetV2's 32-channel first block, four
    pixels per vector and a dense mv_mul would be 15 % faster (2.67 against
    3.13 ms modeled on brainslice-128) but cost its input-sensitive cosine
    0.906 -> 0.854 at 64x64 (msfp16 activations of one pixel's 32 channels
    share exponents).  Returns ``{tensor: G}``.
    """
    import math

    groups: dict[str, int] = {}
    parts = (concat_plan or {}).get("parts", {})

    def block(G_out: int, G_in: int, stride: int) -> int:
        return math.lcm(G_out, G_in // math.gcd(stride, G_in))

    def plain_conv(n) -> bool:
        return (n.op == "Conv" and n.target == "npu" and int(n.attr("group", 1)) == 1
                and all(d == 1 for d in (n.attr("dilations") or [1, 1])) and n.attr("auto_pad", "NOTSET") == "NOTSET")

    def from_host(node) -> bool:
        """A first convolution: lowering feeds it im2col vectors (passes/lower.py's rule)."""
        x = node.inputs[0]
        shape = g.shape(x)
        return x not in g.outputs and shape is not None and len(shape) == 4 and shape[1] < native_dim and \
            [u.name for u in g.consumers_of(x)] == [node.name] and g.node_inputs(node).count(x) == 1

    for node in g.topo():
        if not plain_conv(node) or not node.inputs:
            continue  # (a node without inputs, RandomNormal say, has no producer to ask about)
        producer = g.producer_of(node.inputs[0])
        if (producer is None or producer.target != "npu") and not from_host(node):
            continue  # a conv fed from outside the NPU gets im2col or plain vectors
        t = node.outputs[0]
        shape = g.shape(t)
        users = g.consumers_of(t)
        if shape is None or len(shape) != 4 or t in g.outputs or t in parts or not users or \
                any(e.tensor is not None for e in node.epilogue) or \
                not all(plain_conv(u) and g.node_inputs(u).count(t) == 1 and u.inputs[0] == t for u in users):
            continue
        C, W = shape[1], shape[3]
        G_in = groups.get(node.inputs[0], 1)
        sw = (node.attr("strides") or [1, 1])[1]
        for G in (8, 4, 2):
            if C * G > native_dim or W % G or (native_dim // G) % bfp_block:
                continue
            if W % block(G, G_in, sw):
                continue
            # every reader must be able to walk G-pixel units with its stride (its own output plain), and
            # write whole pixels: a concatenation part's pixels are not adjacent in its group's buffer, so a
            # block of several output pixels per iteration would run into its neighbours' lanes (GoogLeNet's
            # branch convolutions: "iteration hazard ... reads asvrf address ...")
            if all(g.shape(u.outputs[0])[3] % block(1, G, (u.attr("strides") or [1, 1])[1]) == 0
                   and u.outputs[0] not in parts for u in users):
                groups[t] = G
                break
    return groups
