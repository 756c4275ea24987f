"""Files generated from the instruction table: docs/isa.md and sim/_isa.h (the C kernels' opcodes).

Regenerate with ``npu isa --markdown > docs/isa.md`` and ``npu isa --c-header > sim/_isa.h``;
tests/npu/test_isa.py fails when either is stale.
"""
from __future__ import annotations

from npu.config import PRESETS
from npu.isa import INSTRUCTIONS, REG_RESET, Kind, Reg, Space, encoding_for

_KIND_RULES = {
    Kind.SPACE: "bits for the number of memory spaces",
    Kind.MFU: "bits for the number of MFUs",
    Kind.VADDR: "bits for the deepest vector memory (IVRF, ASVRF, MULVRF, DRAM)",
    Kind.STRIDE: "same as vaddr",
    Kind.MRF: "bits for mrf_tiles",
    Kind.TILE: "bits for dram_tiles",
    Kind.COUNT: "bits for mrf_tiles + 1",
    Kind.REG: "bits for the number of scalar registers",
    Kind.IMM: "max(vaddr + 1, 16): any address or loop count, or the 16 bits of an fp16",
}


def isa_markdown() -> str:
    lines = [
        "# NPU instruction set",
        "",
        "<!-- Generated from npu/isa.py by `npu isa --markdown`; do not edit by hand. -->",
        "",
        "A single-threaded stream of *chains*, as in Brainwave: `v_rd` → optional `mv_mul` → MFU operations →",
        "one or more `v_wr` → `end_chain`. A chain runs `iter_outer × iter_inner` iterations (a two-level",
        "hardware loop); in iteration (i, j) every memory operand is at `addr + i*so + j*si`. Scalar",
        "registers set by `s_wr` between chains hold the loop counts, the MVM shape and the read window.",
        "All vector memories hold IEEE fp16 native vectors; numerics are in [numerics.md](numerics.md).",
        "",
        "Rules (checked by `npu.program.analyze`, errors name the pc and the rule):",
        "",
        "- `mv_mul` directly follows `v_rd`; MFU operations follow in pipeline order: by MFU index, and within",
        "  an MFU add/sub → mul → act, each stage at most once; the MFU must hold that stage.",
        "- With `mv_mul`, `v_rd` reads `cols` vectors per iteration, otherwise `rows`; when `win_run > 0` the",
        "  read is gathered in runs of `win_run` contiguous vectors, `win_pitch` apart (a convolution window).",
        "- Every operand's last address stays inside its memory; `mv_mul`'s `rows × cols` tiles stay inside",
        "  the MRF; a dot product is at most 2^17 elements.",
        "- No iteration of a chain may read a vector that an earlier iteration of the same chain wrote",
        "  (the pipeline does not forward between iterations); the simulator reports such a hazard.",
        "- Chains see the writes of all earlier chains (sequential semantics); the hardware (and the timing",
        "  model, which equals it cycle for cycle) runs one chain or DMA step at a time, decoding ahead into",
        "  a small step queue, or, the pipelined machine (docs/pipeline.md), several in flight ordered by a",
        "  scoreboard of the addresses they read and write. There a chain with `mv_mul`, no MFU operation and",
        "  only IVRF/ASVRF/MULVRF destinations writes through the MVM's bypass port when the configuration has",
        "  `mvm_bypass` and may complete after later chains (the hardware decides; no instruction changes).",
        "- `NETQ` reads pop the input queue in iteration order, writes push the output queue; reading more",
        "  vectors than the queue holds is an error. `ZERO` reads +0.",
        "",
        "## Memory spaces",
        "",
        "| code | space | |",
        "|---|---|---|",
    ]
    space_doc = {
        Space.NETQ: "network input queue (read) / output queue (write); addresses ignored",
        Space.DRAM: "vector DRAM", Space.IVRF: "the MVM's initial VRF",
        Space.ASVRF: "add/sub VRF of MFU `mfu`", Space.MULVRF: "multiply VRF of MFU `mfu`",
        Space.ZERO: "read-only zeros",
    }
    lines += [f"| {s.value} | `{s.name.lower()}` | {space_doc[s]} |" for s in Space]
    lines += ["", "## Scalar registers", "", "| code | register | reset |", "|---|---|---|"]
    lines += [f"| {r.value} | `{r.name.lower()}` | {REG_RESET[r]} |" for r in Reg]
    lines += ["", "## Instructions", "", "| opcode | mnemonic | unit | operands | semantics |", "|---|---|---|---|---|"]
    for d in INSTRUCTIONS:
        ops = ", ".join(f"`{f.name}`" + ("" if f.default is None else f"={f.default}") for f in d.fields) or "—"
        unit = d.unit.value + (f" ({d.stage})" if d.stage else "")
        lines.append(f"| {d.opcode} | `{d.mnemonic}` | {unit} | {ops} | {d.semantics} |")
    lines += ["", "Operands written `name=default` are optional in assembly.", "",
              "## Encoding", "",
              "Each instruction is one little-endian word: the opcode in the low bits, then its operands in",
              "table order. Field widths are computed from the configuration; the word is the longest",
              "instruction rounded up to a multiple of 32 bits.", "",
              "| field kind | width rule | " + " | ".join(PRESETS) + " |",
              "|---|---|" + "---|" * len(PRESETS)]
    encs = [encoding_for(c) for c in PRESETS.values()]
    lines.append("| opcode | bits for the number of instructions | " + " | ".join(str(e.opcode_bits) for e in encs) + " |")
    for k in Kind:
        lines.append(f"| {k.value} | {_KIND_RULES[k]} | " + " | ".join(str(e.kind_bits[k]) for e in encs) + " |")
    lines.append("| word | | " + " | ".join(str(e.word_bits) for e in encs) + " |")
    lines += ["", "## Assembly", "",
              "One instruction per line, operands positional in table order or `name=value`; `#` or `;` start a",
              "comment; spaces and registers by name. `npu asm prog.s --config tiny -o prog.bin`,",
              "`npu disasm prog.bin`.", "", "```", "s_wr rows 2", "s_wr cols 3", "v_rd netq 0",
              "mv_mul 0", "vv_add 0", "v_relu mfu=1", "v_wr netq 0", "end_chain", "```", ""]
    return "\n".join(lines)


def isa_c_header() -> str:
    """sim/_isa.h: every instruction's opcode as a C enum constant ``NPU_OP_<MNEMONIC>``."""
    lines = ["/* Generated from npu/isa.py by `npu isa --c-header`; do not edit by hand. */",
             "#ifndef NPU_ISA_H", "#define NPU_ISA_H", "", "enum {"]
    lines += [f"    NPU_OP_{d.mnemonic.upper()} = {d.opcode}," for d in INSTRUCTIONS]
    lines += ["};", "", "#endif", ""]
    return "\n".join(lines)
