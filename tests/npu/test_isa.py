from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npu.asm import assemble, disassemble, format_instruction, parse_line
from npu.config import PRESETS, get_config
from npu.errors import AssemblyError, EncodingError
from npu.isa import INSTRUCTIONS, OPCODES, Instruction, encoding_for

CONFIGS = list(PRESETS.values())


@st.composite
def instructions(draw, config):
    enc = encoding_for(config)
    d = draw(st.sampled_from(INSTRUCTIONS))
    values = {name: draw(st.integers(0, (1 << width) - 1)) for name, _, width in enc.layout[d.mnemonic]}
    return Instruction.make(d.mnemonic, **values)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name)
def test_opcodes_are_table_positions_and_words_fit(config):
    enc = encoding_for(config)
    assert [d.opcode for d in INSTRUCTIONS] == list(range(len(INSTRUCTIONS)))
    for d in INSTRUCTIONS:
        fields = enc.layout[d.mnemonic]
        end = fields[-1][1] + fields[-1][2] if fields else enc.opcode_bits
        assert end <= enc.word_bits
        # fields are contiguous and non-overlapping, right after the opcode
        off = enc.opcode_bits
        for _, o, w in fields:
            assert o == off
            off += w


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_encode_decode_round_trip(data):
    config = data.draw(st.sampled_from(CONFIGS))
    ins = data.draw(instructions(config))
    enc = encoding_for(config)
    assert enc.decode(enc.encode(ins)) == ins


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_asm_disasm_round_trip_and_vectorized_decode(data):
    config = data.draw(st.sampled_from(CONFIGS))
    prog = data.draw(st.lists(instructions(config), min_size=1, max_size=30))
    text = disassemble(prog)
    assert assemble(text) == prog
    enc = encoding_for(config)
    cols = enc.decode_columns(enc.to_bytes(prog))
    for k, ins in enumerate(prog):
        assert cols["op"][k] == OPCODES[ins.mnemonic]
        for name, value in ins.fields:
            assert cols[name][k] == value


def test_field_range_error_names_field_and_width():
    enc = encoding_for(get_config("tiny"))
    with pytest.raises(EncodingError, match=r"field 'addr': value 5000 doesn't fit in 10 bits"):
        enc.encode(Instruction.make("v_rd", space=1, addr=5000))


def test_unknown_opcode_is_an_encoding_error():
    enc = encoding_for(get_config("tiny"))
    with pytest.raises(EncodingError, match="unknown opcode"):
        enc.decode(0x1F)


def test_assembler_syntax():
    assert parse_line("v_rd dram 16 si=2  # comment") == Instruction.make("v_rd", space=1, addr=16, si=2)
    assert parse_line("s_wr iter_outer, 0x10") == Instruction.make("s_wr", reg=2, imm=16)
    assert parse_line("; only a comment") is None
    assert format_instruction(Instruction.make("vv_add", addr=3, mfu=1)) == "vv_add 3 mfu=1"


@pytest.mark.parametrize("line, words", [
    ("v_foo 1", "unknown instruction 'v_foo'"),
    ("v_rd sram 1", "unknown space 'sram'"),
    ("mv_mul", "missing operand 'mrf'"),
    ("mv_mul 1 2", "at most 1 operands"),
    ("vv_add 1 bogus=2", "no operand 'bogus'"),
])
def test_assembler_errors_name_line(line, words):
    with pytest.raises(AssemblyError) as err:
        assemble("nop\n" + line, "prog.s")
    assert "prog.s:2:" in str(err.value) and words in str(err.value)


def test_docs_isa_md_is_generated_from_the_table():
    from pathlib import Path

    from npu.isadoc import isa_markdown

    doc = Path(__file__).parents[2] / "docs" / "isa.md"
    assert doc.read_text() == isa_markdown(), "docs/isa.md is stale: run `npu isa --markdown > docs/isa.md`"


def test_c_header_is_generated_from_the_table():
    from npu.isadoc import isa_c_header
    from sim._kernels import MFU_CODES

    header = Path(__file__).resolve().parents[2] / "sim" / "_isa.h"
    assert header.read_text() == isa_c_header(), "sim/_isa.h is stale: run `npu isa --c-header > sim/_isa.h`"
    assert MFU_CODES == {m: OPCODES[m] for m in MFU_CODES}, "the built kernels use other opcodes: pip install -e ."
