"""Lowering of NPU nodes to chains, one module per kind of operation.

:class:`compiler.lowering.core.Lowering` holds the state (steps, buffers,
placements, constants, weight chunks); each ``lower_*`` function appends the
chains of one node.  :data:`LOWERINGS` maps ONNX op types to them.
"""
