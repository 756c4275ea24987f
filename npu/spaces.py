"""The memory spaces a vector operand can name: the NPU's vector memories and its two queues.

Defined below the configuration (whose depths and port costs are per space) and
the ISA (whose ``space`` operand field encodes one).
"""
from __future__ import annotations

from enum import IntEnum


class Space(IntEnum):
    """Memory spaces a vector operand can name (the value is the ``space`` field's encoding)."""

    NETQ = 0    # network input queue (v_rd) / output queue (v_wr); addresses ignored
    DRAM = 1    # vector DRAM
    IVRF = 2    # the MVM's initial VRF
    ASVRF = 3   # add/sub VRF of MFU `mfu`
    MULVRF = 4  # multiply VRF of MFU `mfu`
    ZERO = 5    # read-only: reads as +0 (clears buffers, pads)


READ_SPACES = frozenset(Space)
WRITE_SPACES = frozenset(Space) - {Space.ZERO}
#: Spaces that exist once per MFU (the operand's ``mfu`` field selects one).
PER_MFU_SPACES = frozenset({Space.ASVRF, Space.MULVRF})
#: Spaces with addresses and contents (not the queues, not ZERO).
ADDRESSED_SPACES = frozenset({Space.DRAM, Space.IVRF, Space.ASVRF, Space.MULVRF})
