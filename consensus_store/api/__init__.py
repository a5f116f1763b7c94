"""The API layer shared by the network clients and the embedded ``Node``.

What it owns: the KV calls (``kv``), the coordination calls (``coordination``), the cluster
operator's calls (``cluster``: leadership transfer) and the recipes
built on them (``session``, ``lock``, ``groups``, ``election``, ``replicas``, ``watching``), all
over one small protocol, ``Requester`` (``requester``): ``request(op, body, timeout)`` and a
``default_consistency``.  The op names are those of ``consensus_store.protocol``.

What it must not import: ``client`` (how requests travel), ``node`` and ``state`` (how they are
served), ``cli``, ``testing``.  It imports ``models``, ``errors``, ``protocol`` and itself only,
so ``client`` builds on it and ``node`` does too without importing ``client``.
"""
from consensus_store.api.cluster import AsyncClusterAdminApi, ClusterAdminApi, LeaderTransfer
from consensus_store.api.coordination import DEFAULT_SESSION_TTL_S, CoordinationApi
from consensus_store.api.election import Election
from consensus_store.api.groups import Groups, rendezvous
from consensus_store.api.kv import AsyncKVApi, Call, KVApi
from consensus_store.api.lock import Lock, trans
from consensus_store.api.replicas import Replicas
from consensus_store.api.requester import AsyncRequester, Requester, level_of, resolve_level
from consensus_store.api.session import Session
from consensus_store.api.watching import wait_for_change

__all__ = [
    "DEFAULT_SESSION_TTL_S", "AsyncClusterAdminApi", "AsyncKVApi", "AsyncRequester", "Call",
    "ClusterAdminApi", "CoordinationApi", "Election", "Groups", "KVApi", "LeaderTransfer",
    "Lock", "Replicas", "Requester", "Session", "level_of",
    "rendezvous", "resolve_level", "trans", "wait_for_change",
]
