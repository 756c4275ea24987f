"""An iteration hazard through an MFU operand is caught even when the chain reads the queue or ZERO.

Found by the RTL differential tests: the pipelined RTL reads an MFU operand
after an earlier iteration wrote it, while the simulator's whole-array
execution read the old value; the program is illegal and must be rejected.
"""
import numpy as np
import pytest

from npu.asm import assemble
from npu.config import PRESETS
from npu.errors import SimulationError
from npu.program import Program
from sim.machine import Machine


@pytest.mark.parametrize("source", ["zero", "netq"])
def test_mfu_operand_hazard_rejected(source):
    c = PRESETS["tiny"]
    prog = Program(c, assemble(f"s_wr iter_inner 2\nv_rd {source} 0\nvv_mul 1 si=1\nv_wr mulvrf 2 si=1\nend_chain\n"))
    m = Machine(c)
    m.push_input(np.ones((2, c.native_dim)))
    with pytest.raises(SimulationError, match="iteration hazard"):
        m.run(prog)
