"""The runtime: load compiled `.npu` models, keep them in a registry, serve them.

>>> import runtime
>>> session = runtime.load("resnet50.npu")          # or "resnet50:2" from the registry
>>> outputs = session.run({"images": batch})
>>> session.last_stats.npu_cycles

Modules: session (Session, SessionPool, load), registry, preprocess, labels,
server (+ grpc_server, http_server, service, metrics), client, commands.
"""
from __future__ import annotations

from runtime.session import Session, SessionPool, load

__all__ = ["Session", "SessionPool", "load"]
