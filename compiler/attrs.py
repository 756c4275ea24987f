"""Typed attributes of the operations the NPU maps, decoded once from the ONNX attributes.

:func:`window` (Conv and pools) and :func:`rnn` (LSTM, GRU) return the
dataclass of a node's attributes; the lowering reads fields, never attribute strings.
"""
from __future__ import annotations

from dataclasses import dataclass

from compiler.ir import Node


@dataclass(frozen=True)
class WindowAttrs:
    """Conv and pooling windows (2-D)."""

    kernel: tuple[int, int] | None       # None for Conv: taken from the weight shape
    strides: tuple[int, int] = (1, 1)
    dilations: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    auto_pad: str = "NOTSET"
    group: int = 1
    ceil_mode: bool = False
    count_include_pad: bool = False


@dataclass(frozen=True)
class RnnAttrs:
    hidden_size: int | None
    direction: str = "forward"
    linear_before_reset: bool = False
    activations: tuple[str, ...] | None = None
    clip: float | None = None
    input_forget: bool = False


def _pair(v, default) -> tuple[int, int]:
    return tuple(int(x) for x in v) if v else default


def window(node: Node) -> WindowAttrs:
    pads = node.attr("pads") or [0, 0, 0, 0]
    ks = node.attr("kernel_shape")
    return WindowAttrs(
        kernel=_pair(ks, None) if ks else None,
        strides=_pair(node.attr("strides"), (1, 1)),
        dilations=_pair(node.attr("dilations"), (1, 1)),
        pads=(int(pads[0]), int(pads[1]), int(pads[2]), int(pads[3])),
        auto_pad=str(node.attr("auto_pad", "NOTSET")),
        group=int(node.attr("group", 1)),
        ceil_mode=bool(node.attr("ceil_mode", 0)),
        count_include_pad=bool(node.attr("count_include_pad", 0)))


def rnn(node: Node) -> RnnAttrs:
    acts = node.attr("activations")
    return RnnAttrs(hidden_size=node.attr("hidden_size"), direction=str(node.attr("direction", "forward")),
                    linear_before_reset=bool(node.attr("linear_before_reset", 0)),
                    activations=tuple(a.lower() for a in acts) if acts else None, clip=node.attr("clip"),
                    input_forget=bool(node.attr("input_forget", 0)))

