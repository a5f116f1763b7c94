"""The node daemon: the only layer that imports pysyncobj.

Owns: the raft adapter (``raft``), the asyncio bridge (``proposer``), request semantics
(``service``), the HTTP API (``api``) and lifecycle (``server.Node``).  Clients and the CLI never
import this package.
"""
from consensus_store.node.server import Node

__all__ = ["Node"]
