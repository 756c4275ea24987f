"""Errors the runtime raises for bad requests, unknown models and registry trouble.

They derive from :class:`npu.errors.NpuError`, so the command line prints them
without a traceback; the servers map them to status codes (InvalidRequest ->
INVALID_ARGUMENT / HTTP 400, ModelNotFound -> NOT_FOUND / HTTP 404).
"""
from __future__ import annotations

from npu.errors import NpuError


class InvalidRequest(NpuError, ValueError):
    """A request the model cannot take: wrong shape or dtype, unknown input, bad image.

    The message says what was expected.
    """


class ModelNotFound(NpuError, LookupError):
    """No model (or no such version) under that name; the message lists what exists."""


class RegistryError(NpuError):
    """The model store cannot do what was asked (compiler missing, store unwritable)."""
