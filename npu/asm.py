"""Text assembler and disassembler, derived from the instruction table.

Syntax: one instruction per line, ``mnemonic operand ...``; ``#`` or ``;``
start a comment.  Operands are given positionally in table order or as
``name=value``; optional operands (those with a default) may be left out.
Enumerated operands take their names (``dram``, ``asvrf``, ``rows``) and
numbers accept decimal, ``0x`` hex or ``0b`` binary.  Example::

    s_wr rows 2
    s_wr cols 3
    v_rd ivrf 0           # x: 3 native vectors
    mv_mul 0              # 2 x 3 tiles at MRF 0
    vv_add 0              # + bias from ASVRF of MFU 0, addresses 0..1
    v_relu mfu=1
    v_wr netq 0
    end_chain
"""
from __future__ import annotations

import re

from npu.errors import AssemblyError, EncodingError
from npu.isa import BY_MNEMONIC, Instruction, Kind, enum_for, format_instruction

_TOKEN = re.compile(r"[,\s]+")


def _parse_value(text: str, kind: Kind) -> int:
    enum = enum_for(kind)
    if enum is not None and not text[:1].isdigit():
        try:
            return int(enum[text.upper()])
        except KeyError:
            raise ValueError(f"unknown {kind.value} {text!r}; one of {[e.name.lower() for e in enum]}") from None
    return int(text, 0)


def parse_line(line: str) -> Instruction | None:
    """One line of assembly -> Instruction (None for blank/comment lines)."""
    code = re.split(r"[#;]", line, maxsplit=1)[0].strip()
    if not code:
        return None
    mnemonic, *operands = [t for t in _TOKEN.split(code) if t]
    mnemonic = mnemonic.lower()
    d = BY_MNEMONIC.get(mnemonic)
    if d is None:
        raise ValueError(f"unknown instruction {mnemonic!r}")
    values: dict[str, int] = {}
    position = 0
    for op in operands:
        if "=" in op:
            name, text = op.split("=", 1)
            name = name.lower()
            f = next((f for f in d.fields if f.name == name), None)
            if f is None:
                raise ValueError(f"{mnemonic} has no operand {name!r}; operands: {list(d.field_names)}")
        else:
            if position >= len(d.fields):
                raise ValueError(f"{mnemonic} takes at most {len(d.fields)} operands ({', '.join(d.field_names)})")
            f = d.fields[position]
            position += 1
            name, text = f.name, op
        if name in values:
            raise ValueError(f"{mnemonic}: operand {name!r} given twice")
        try:
            values[name] = _parse_value(text, f.kind)
        except ValueError as exc:
            raise ValueError(f"{mnemonic}: operand {name!r}: {exc}") from None
    return Instruction.make(mnemonic, **values)


def assemble(text: str, source: str = "<asm>") -> list[Instruction]:
    """Assembly text -> instructions; errors name the source and line."""
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        try:
            ins = parse_line(line)
        except (ValueError, EncodingError) as exc:
            raise AssemblyError(str(exc), lineno, source) from None
        if ins is not None:
            out.append(ins)
    return out


def disassemble(instructions, with_pc: bool = False) -> str:
    lines = []
    for pc, ins in enumerate(instructions):
        text = format_instruction(ins)
        lines.append(f"{pc:6d}  {text}" if with_pc else text)
    return "\n".join(lines) + ("\n" if lines else "")
