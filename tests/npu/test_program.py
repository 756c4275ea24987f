import pytest

from npu.asm import assemble
from npu.config import get_config
from npu.errors import EncodingError, ProgramError
from npu.program import Program, analyze


def prog(text, config="tiny"):
    return Program(get_config(config), assemble(text))


def test_program_file_round_trip_and_truncation(tmp_path):
    p = prog("s_wr rows 2\nv_rd netq 0\nv_wr dram 4 si=2\nend_chain\nm_rd 3 5 2")
    path = tmp_path / "p.bin"
    p.save(path)
    q = Program.load(path)
    assert q.instructions == p.instructions and q.config == p.config
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(EncodingError, match="truncated"):
        Program.load(path)
    path.write_bytes(b"hello")
    with pytest.raises(EncodingError, match="not an NPU program"):
        Program.load(path)


@pytest.mark.parametrize("text, pc, words", [
    ("vv_add 0\n", 0, "outside a chain"),
    ("v_rd netq 0\nv_rd netq 0\n", 1, "missing end_chain"),
    ("v_rd netq 0\nend_chain\n", 1, "at least one v_wr"),
    ("v_rd netq 0\nv_relu\nvv_add 0\nv_wr netq 0\nend_chain\n", 2, "pipeline order"),
    ("v_rd netq 0\nv_wr netq 0\nv_relu\nend_chain\n", 2, "after v_wr"),
    ("v_rd netq 0\nv_relu\nmv_mul 0\nv_wr netq 0\nend_chain\n", 2, "directly follow v_rd"),
    ("s_wr rows 8\ns_wr cols 9\nv_rd ivrf 0\nmv_mul 0\nv_wr netq 0\nend_chain\n", 3, "MRF overflow"),
    ("m_rd 0 60 8\n", 0, "MRF overflow"),
    ("s_wr iter_outer 100\nv_rd ivrf 0 so=8\nv_wr netq 0\nend_chain\n", 1, "address out of range"),
    ("v_rd netq 0\nv_wr zero 0\nend_chain\n", 0, "cannot be written"),
    ("v_rd netq 0\nv_wr asvrf 0 mfu=1\nend_chain\nv_rd netq 0\nvv_add 0 mfu=1\nvv_add 1 mfu=1\nv_wr netq 0\nend_chain", 5,
     "pipeline order"),
    ("s_wr rows 0\n", 0, "at least 1"),
    ("v_rd netq 0\nv_wr netq 0\n", 0, "ends before end_chain"),
])
def test_static_rules_name_pc_and_rule(text, pc, words):
    with pytest.raises(ProgramError) as err:
        analyze(prog(text))
    assert err.value.pc == pc, str(err.value)
    assert words in err.value.rule
    assert f"pc {pc}: `" in str(err.value)


def test_window_and_register_tracking():
    steps = analyze(prog("s_wr cols 6\ns_wr win_run 2\ns_wr win_pitch 10\ns_wr iter_inner 3\n"
                         "v_rd ivrf 0 si=1\nmv_mul 0\nv_wr netq 0\nend_chain"))
    (c,) = steps
    assert c.read_offsets().tolist() == [0, 1, 10, 11, 20, 21]
    assert (c.cols, c.rows, c.iter_inner, c.mrf) == (6, 1, 3, 0)


@pytest.mark.parametrize("text, words", [
    # a later row of the same iteration reads what an earlier row wrote (the v_rd of a chain without mv_mul)
    ("s_wr rows 4\nv_rd ivrf 0\nv_wr ivrf 1\nend_chain", "row 1 of iteration 0 reads ivrf address 1, which row 0"),
    # ... through an MFU operand
    ("s_wr rows 3\ns_wr iter_outer 2\nv_rd ivrf 40 so=3\nvv_add 10 so=3\nv_wr asvrf 12 so=3\nend_chain",
     "row 2 of iteration 0 reads asvrf address 12, which row 0"),
    # an mv_mul chain reads a whole iteration before its first row comes out: only earlier iterations count
    ("s_wr rows 2\ns_wr cols 2\ns_wr iter_outer 2\nv_rd ivrf 0 so=2\nmv_mul 0\nv_wr ivrf 2\nend_chain",
     "iteration hazard: iteration 1 reads ivrf address 2"),
    # two destinations of one chain overlapping in one memory
    ("s_wr rows 4\nv_rd netq 0\nv_wr ivrf 0\nv_wr ivrf 3\nend_chain",
     "v_wr 1 and v_wr 2 of this chain both write ivrf address 3"),
    ("v_rd netq 0\nv_wr asvrf 5 mfu=1\nv_wr asvrf 5 mfu=1\nend_chain", "both write asvrf address 5"),
])
def test_a_chain_may_not_read_or_write_over_its_own_results(text, words):
    with pytest.raises(ProgramError, match=words):
        analyze(prog(text))


@pytest.mark.parametrize("text", [
    "s_wr rows 4\nv_rd ivrf 0\nv_wr ivrf 0\nend_chain",                          # in place, row by row
    "s_wr rows 4\nv_rd ivrf 1\nv_wr ivrf 0\nend_chain",                          # reads ahead of its writes
    "s_wr rows 2\ns_wr cols 2\nv_rd ivrf 0\nmv_mul 0\nv_wr ivrf 0\nend_chain",   # mv_mul reads all before rows
    "s_wr rows 4\nv_rd netq 0\nv_wr ivrf 0\nv_wr asvrf 0\nend_chain",            # same addresses, other memories
    "v_rd netq 0\nv_wr asvrf 5 mfu=0\nv_wr asvrf 5 mfu=1\nend_chain",            # one address of two MFUs
    "s_wr rows 2\ns_wr iter_outer 3\nv_rd netq 0\nv_wr ivrf 0 so=0\nend_chain",  # one v_wr rewriting its rows
])
def test_what_a_chain_may_do_with_its_own_results(text):
    analyze(prog(text))
