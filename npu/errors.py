"""The project's exception hierarchy.

Every error a user can provoke with bad input derives from :class:`NpuError`;
the command line prints its message without a traceback.  ``assert`` is kept
for internal invariants only.
"""
from __future__ import annotations


class NpuError(Exception):
    """Base class of every user-facing error of the toolkit."""


class ConfigError(NpuError, ValueError):
    """An architecture configuration field breaks a rule.

    The message names the field and the rule, e.g.
    ``native_dim: must be a multiple of the activation BFP block (16), not 100``.
    """

    def __init__(self, field: str, rule: str):
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")


class FormatError(NpuError, ValueError):
    """An unknown or malformed number format."""


class EncodingError(NpuError, ValueError):
    """An instruction cannot be encoded or decoded (field out of range, bad opcode)."""


class AssemblyError(NpuError, ValueError):
    """Assembly text that does not parse; names the file and line."""

    def __init__(self, message: str, line: int | None = None, source: str = "<asm>"):
        self.line = line
        self.source = source
        where = f"{source}:{line}: " if line is not None else f"{source}: "
        super().__init__(where + message)


class ProgramError(NpuError, ValueError):
    """A program breaks a static rule (malformed chain, out-of-range address).

    Names the pc, the instruction and the rule.
    """

    def __init__(self, pc: int, instruction: str, rule: str):
        self.pc = pc
        self.instruction = instruction
        self.rule = rule
        super().__init__(f"pc {pc}: `{instruction}`: {rule}")


class SimulationError(ProgramError):
    """A program fails while executing (empty queue, MRF overflow, hazard)."""


class ModelFileError(NpuError, ValueError):
    """A `.npu` model file that is truncated, tampered with, or of another version."""


class CompileError(NpuError):
    """An ONNX model the compiler cannot translate; names the node, op and reason."""

    def __init__(self, message: str, node: str | None = None, op: str | None = None, hint: str | None = None):
        self.node = node
        self.op = op
        self.hint = hint
        where = ""
        if node is not None or op is not None:
            where = f"node {node!r} ({op}): " if node is not None else f"{op}: "
        text = where + message
        if hint:
            text += f"\n  hint: {hint}"
        super().__init__(text)
