# amaranth: UnusedElaboratable=no
"""The NPU's components one by one: their parameter checks, and facts they must take from npu/ (the MFU
stages, operation codes and operand memories of the ISA table) rather than restate."""
import pytest
from amaranth.hdl import Shape

from npu.config import MFU_STAGES, PRESETS
from npu.isa import BY_MNEMONIC, STAGE_CODES, STAGE_OPS
from rtl.dma import Dma
from rtl.executor import Executor
from rtl.frontend import FrontEnd
from rtl.layout import MemoryMap, vector_memory
from rtl.mfu import MfuChain, MfuStage
from rtl.mvm import Mvm
from rtl.readseq import ReadSequencer
from rtl.step import layouts_for, stage_vrf
from rtl.units import MFU_UNITS, UNIT_NAMES, make_units
from rtl.write import WriteStage

TINY = PRESETS["tiny"]
MM = MemoryMap(TINY, 64)


def test_config_and_memmap_checked():
    with pytest.raises(TypeError, match="config must be an NpuConfig, not 'tiny'"):
        FrontEnd(config="tiny", memmap=MM)
    with pytest.raises(ValueError, match=r"memmap must be the MemoryMap of config 'tiny', not <rtl\.layout"):
        WriteStage(config=TINY, memmap=MemoryMap(PRESETS["small"], 64))
    with pytest.raises(ValueError, match="memmap must be the MemoryMap of config 'tiny', not None"):
        Dma(config=TINY, memmap=None)


def test_depths_checked():
    with pytest.raises(ValueError, match="program_depth must be a positive integer, not 0"):
        Executor(config=TINY, program_depth=0)
    with pytest.raises(ValueError, match="program_depth must be a positive integer, not True"):
        Executor(config=TINY, program_depth=True)
    with pytest.raises(ValueError, match="queue_depth must be a positive integer, not -1"):
        ReadSequencer(config=TINY, memmap=MM, queue_depth=-1)


def test_parameters_are_keyword_only():
    with pytest.raises(TypeError):
        WriteStage(TINY, MM)


def test_units_checked():
    units = make_units(TINY, MM)
    with pytest.raises(ValueError, match=r"units must hold npu_mvm_row, not only \['npu_bfp_block'\]"):
        Mvm(config=TINY, memmap=MM, units={"npu_bfp_block": units["npu_bfp_block"]})
    with pytest.raises(ValueError, match=r"units must hold npu_mfu_addsub, not only \[\]"):
        MfuChain(config=TINY, memmap=MM, units={})


def test_mfu_stage_checked():
    units = make_units(TINY, MM)
    act = units[UNIT_NAMES["act"]]
    with pytest.raises(ValueError, match="mfu must be an MFU index below 2, not 2"):
        MfuStage(config=TINY, memmap=MM, mfu=2, stage="act", unit=act)
    with pytest.raises(ValueError, match=r"stage must be one of MFU 0's \['addsub'\], not 'act'"):
        config = TINY.replace(mfus=(("addsub",),))
        MfuStage(config=config, memmap=MemoryMap(config, 64), mfu=0, stage="act", unit=act)
    with pytest.raises(TypeError, match="unit must be a MfuMul, not <rtl.units.MfuAct"):
        MfuStage(config=TINY, memmap=MM, mfu=0, stage="mul", unit=act)
    with pytest.raises(ValueError, match=r"the act stage reduces \(\['max', 'sum'\]\): reducers must hold"):
        MfuStage(config=TINY, memmap=MM, mfu=1, stage="act", unit=act)


def test_stage_codes_and_widths_come_from_the_isa_table():
    """The descriptor's op field of each stage holds every code of the stage, and is as wide as the unit's op
    port (an Instance port would silently truncate or pad a mismatch)."""
    lay = layouts_for(TINY)
    for stage in MFU_STAGES:
        width = Shape.cast(lay.stage[stage]["op"].shape).width
        assert max(STAGE_CODES[mn] for mn in STAGE_OPS[stage]) < 1 << width
        unit = MFU_UNITS[stage]()
        if "op" in unit.signature.members:
            assert Shape.cast(unit.signature.members["op"].shape).width == width
        else:
            assert len(STAGE_OPS[stage]) == 1
        assert ("opnd" in lay.stage[stage].members) == (stage_vrf(stage) is not None) == \
            ("b" in unit.signature.members)


def test_mfu_chain_follows_the_configuration_and_the_table():
    config = TINY.replace(mfus=(("act", "addsub"), ("mul",)))
    chain = MfuChain(config=config, memmap=MemoryMap(config, 64), units=make_units(config, MM))
    assert [(k, s) for k, s, _ in chain.stages] == [(0, "addsub"), (0, "act"), (1, "mul")]
    assert [vrf for _, _, vrf in chain.stages] == [vector_memory(BY_MNEMONIC["vv_add"].vrf, 0), None,
                                                   vector_memory(BY_MNEMONIC["vv_mul"].vrf, 1)]
    assert list(chain.vrf.signature.members) == ["asvrf0", "mulvrf1"]
