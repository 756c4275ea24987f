"""An iteration hazard through an MFU operand is caught even when the chain reads the queue or ZERO.

Found by the RTL differential tests: the pipelined RTL reads an MFU operand
after an earlier iteration wrote it, while the simulator's whole-array
execution read the old value; the program is illegal and must be rejected,
statically, by the one program checker (npu.program.analyze) that the
compiler, the simulator and the RTL backend all run.
"""
import numpy as np
import pytest

from npu.asm import assemble
from npu.config import PRESETS
from npu.errors import ProgramError
from npu.program import Program, analyze
from sim.machine import Machine


@pytest.mark.parametrize("source", ["zero", "netq"])
def test_mfu_operand_hazard_rejected(source):
    c = PRESETS["tiny"]
    prog = Program(c, assemble(f"s_wr iter_inner 2\nv_rd {source} 0\nvv_mul 1 si=1\nv_wr mulvrf 2 si=1\nend_chain\n"))
    m = Machine(c)
    m.push_input(np.ones((2, c.native_dim)))
    with pytest.raises(ProgramError, match="iteration hazard"):
        analyze(prog)
    with pytest.raises(ProgramError, match="iteration hazard"):
        m.run(prog)
