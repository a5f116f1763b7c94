"""The node daemon.

Owns: the engine (``engine/``, the only package that imports pysyncobj, behind its ``Engine``
façade), request semantics (``service``, ``validate``, ``reads``), the client ports (``api`` and
``http_front`` for HTTP, ``native``), sessions' leases (``leases``), watches (``watch``) and
lifecycle and the embedded API (``server.Node``).  Builds on ``consensus_store.api``; never
imports ``client/``.  Clients and the CLI never import this package.
"""
from consensus_store.node.server import Node

__all__ = ["Node"]
