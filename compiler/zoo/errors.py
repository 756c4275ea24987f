"""The zoo's user-facing error."""
from __future__ import annotations

from npu.errors import NpuError


class ZooError(NpuError, ValueError):
    """An unknown model name, an unknown parameter or an input size a model cannot take.

    The message names what was asked for and what is valid, e.g.
    ``unknown model 'resnet51'; valid names: densenet121, digits, ...``.
    """
