"""Membership changes, one at a time, through pysyncobj's MEMBERSHIP log entries.

pysyncobj (with ``dynamicMembershipChange``) changes its set of voters when a leader appends an
``['add' | 'rem', address, address]`` entry, on every node as the entry is appended (Raft's
single-server change, thesis section 4.1), and restores the set from a snapshot over the
configured peers.  It knows nodes by raft address only, so each of our entries carries a fourth
item pysyncobj ignores: the whole member table after the change (id, raft/api/native address,
``membership``).  ``ReplicatedStore`` keeps the last one applied in ``members``, an attribute
that snapshots carry: the live membership survives restarts and reaches a new node with the
snapshot it installs.  ``None`` there means no change was ever made: the config is the truth.

Rules the leader enforces here (pysyncobj 0.3.17 never sets its own pending-change index):
its term's no-op is applied (waited for), no other membership entry is unapplied in its log,
the id and raft address of a new member are unused, a removed id exists and is not the leader
itself (hand leadership over first: ``leader transfer``).  Everything runs on the loop thread.

Private pysyncobj names used here: ``_applyCommand``, ``_SyncObj__otherNodes``,
``_SyncObj__getEntries``, ``_SyncObj__noopIDx``, ``_SyncObj__raftMatchIndex``,
``_SyncObj__raftLog``.
"""
from __future__ import annotations

import asyncio
import logging
import pickle
import time
from typing import Any, Callable

from consensus_store.config import NodeConfig
from consensus_store.errors import InvalidRequest, NotLeader, Timeout, Unavailable
from consensus_store.node.engine.failures import SUCCESS, error_for
from consensus_store.node.engine.peer_messages import MEMBERSHIP

CHANGE_KINDS = ("add", "rem")
MEMBER_KEYS = ("id", "raft_address", "api_address", "native_address", "membership")
MEMBERSHIPS = ("voter", "replica")
POLL_S = 0.01

log = logging.getLogger("consensus_store.raft")

Member = dict[str, Any]


# ---- the table and the entry (pure) ------------------------------------------------------------
def member(member_id: str, raft: Any, api: Any, native: Any | None,
           membership: str = "voter") -> Member:
    return {"id": member_id, "raft_address": str(raft), "api_address": str(api),
            "native_address": str(native) if native is not None else None,
            "membership": membership}


def configured_table(config: NodeConfig) -> list[Member]:
    """The members as this node's config names them, this node first."""
    own = "replica" if getattr(config, "is_replica", False) else "voter"
    table = [member(config.id, config.raft_address, config.api_address, config.native_address,
                    own)]
    table.extend(member(p.id, p.raft_address, p.api_address, p.native_address)
                 for p in config.peers)
    return table


def encode_change(kind: str, address: str, table: list[Member]) -> bytes:
    """The log command: pysyncobj reads the first three items, ``ReplicatedStore`` the table."""
    return bytes([MEMBERSHIP]) + pickle.dumps([kind, address, address, table], protocol=2)


def is_valid_change(request: Any) -> bool:
    """Whether an unpickled MEMBERSHIP command has the shape ``encode_change`` writes (the raft
    port refuses any other: peer_messages.py)."""
    if not (isinstance(request, list) and len(request) == 4 and request[0] in CHANGE_KINDS
            and isinstance(request[1], str) and request[1] == request[2]
            and isinstance(request[3], list)):
        return False
    for entry in request[3]:
        if not (isinstance(entry, dict) and tuple(entry) == MEMBER_KEYS
                and all(isinstance(entry[k], str) for k in MEMBER_KEYS if k != "native_address")
                and (entry["native_address"] is None or isinstance(entry["native_address"], str))
                and entry["membership"] in MEMBERSHIPS):
            return False
    return True


def decode_change(command: bytes) -> list[Any] | None:
    """The request of a MEMBERSHIP log command, or None for any other command."""
    if command[:1] != bytes([MEMBERSHIP]):
        return None
    try:
        request = pickle.loads(command[1:])
    except Exception:  # noqa: BLE001 - only our own (checked) entries reach the log
        return None
    return request if isinstance(request, list) and len(request) >= 3 else None


def table_after(request: list[Any]) -> list[Member] | None:
    """The member table an applied change carries (None: an entry without one)."""
    return request[3] if len(request) >= 4 and isinstance(request[3], list) else None


def check_new_member(fields: dict[str, Any], table: list[Member]) -> Member:
    """The member entry of an ``add`` request (InvalidRequest for bad or taken fields)."""
    from consensus_store.addresses import parse_address, parse_raft_address
    member_id = fields.get("id")
    if not isinstance(member_id, str) or not member_id or len(member_id) > 128:
        raise InvalidRequest("'member' must be the new node's id (1-128 characters)")
    addresses: dict[str, str | None] = {}
    for key in ("raft_address", "api_address", "native_address"):
        value = fields.get(key)
        if value is None and key == "native_address":
            addresses[key] = None
            continue
        if not isinstance(value, str):
            raise InvalidRequest(f"'{key}' must be HOST:PORT")
        parse = parse_raft_address if key == "raft_address" else parse_address
        addresses[key] = str(parse(value, lambda problem, k=key: InvalidRequest(
            f"'{k}': {problem}")))      # the raft address as pysyncobj and the table name it
    for existing in table:
        if existing["id"] == member_id:
            raise InvalidRequest(f"a member named {member_id!r} exists already (remove it "
                                 f"first to replace it)", reason="member_exists")
        if existing["raft_address"] == addresses["raft_address"]:
            raise InvalidRequest(f"member {existing['id']!r} has raft address "
                                 f"{addresses['raft_address']} already", reason="member_exists")
    return member(member_id, addresses["raft_address"], addresses["api_address"],
                  addresses["native_address"])


# ---- on the node's loop -----------------------------------------------------------------------
class MembershipChanges:
    """The live membership of one node, and (on the leader) changes to it."""

    def __init__(self, config: NodeConfig, store: Callable[[], Any],
                 request_tick: Callable[[], None]) -> None:
        self._config = config
        self._store = store
        self._request_tick = request_tick
        self._changing = False

    def table(self) -> list[Member]:
        """The live member table: the last applied change's, else the config's."""
        store = self._store()
        live = getattr(store, "members", None) if store is not None else None
        return [dict(m) for m in live] if live else configured_table(self._config)

    def report(self) -> list[Member]:
        """The table with this node's view of each member: voter, connected, match index
        (leader only)."""
        store = self._store()
        rows = self.table()
        if store is None:
            return rows
        voters = {n.address: n for n in store._SyncObj__otherNodes}
        own = store.selfNode.address if store.selfNode is not None else None
        leading = store._isLeader()
        match = store._SyncObj__raftMatchIndex
        last = store._SyncObj__raftLog[-1][1]
        for row in rows:
            address = row["raft_address"]
            node = voters.get(address)
            row["voter"] = address == own or node is not None
            row["connected"] = address == own or (node is not None
                                                 and store.isNodeConnected(node))
            if leading:
                row["match_index"] = last if address == own else (
                    match.get(node, 0) if node is not None else None)
        return rows

    # ---- changes (the leader) ---------------------------------------------------------------
    async def add(self, fields: dict[str, Any], timeout: float) -> dict[str, Any]:
        check_new_member(fields, [])   # bad input is 400 on any node
        self._require_leader()         # only the leader's table is current: others send on
        table = self.table()
        new = check_new_member(fields, table)
        table = sorted([*table, new], key=lambda m: m["id"])
        await self._change("add", new["raft_address"], table, timeout, lambda store:
                           self._check_quorum(store, new["id"], adding=True))
        log.info("membership: added %s (%s)", new["id"], new["raft_address"])
        return {"member": new, "members": self.report()}

    async def remove(self, member_id: Any, timeout: float) -> dict[str, Any]:
        if not isinstance(member_id, str) or not member_id:
            raise InvalidRequest("'member' must be a node id")
        self._require_leader()
        table = self.table()
        gone = next((m for m in table if m["id"] == member_id), None)
        if gone is None:
            raise InvalidRequest(f"no member named {member_id!r} (members: "
                                 f"{', '.join(m['id'] for m in table)})", reason="unknown_member")
        store = self._require_leader()
        if store.selfNode is not None and gone["raft_address"] == store.selfNode.address:
            raise InvalidRequest(f"{member_id} leads the cluster and cannot remove itself: move "
                                 f"leadership first (consensus-store leader transfer), then "
                                 f"remove it", reason="remove_leader")
        rest = [m for m in table if m["id"] != member_id]
        await self._change("rem", gone["raft_address"], rest, timeout, lambda store:
                           self._check_quorum(store, member_id, adding=False,
                                              address=gone["raft_address"]))
        log.info("membership: removed %s (%s)", member_id, gone["raft_address"])
        return {"removed": gone, "members": self.report()}

    def _require_leader(self) -> Any:
        store = self._store()
        if store is None:
            raise Unavailable("node is not running")
        if not store._isLeader():
            raise NotLeader("membership changes are made by the leader", retry="leader")
        return store

    def _check_quorum(self, store: Any, member_id: str, *, adding: bool,
                      address: str | None = None) -> None:
        """etcd's strict reconfiguration check: refuse a change after which the voters this
        leader is connected to (itself included) would be fewer than a majority.  A node being
        added is not connected yet (the raft port refuses a non-member)."""
        voters = list(store._SyncObj__otherNodes)
        connected = 1 + sum(1 for n in voters if store.isNodeConnected(n))
        size = len(voters) + 1 + (1 if adding else -1)
        if not adding and any(n.address == address and store.isNodeConnected(n)
                              for n in voters):
            connected -= 1
        needed = size // 2 + 1
        if adding and size == 2:
            return     # growing a single node, as etcd allows: it waits for the new one
        if connected < needed:
            what = f"adding {member_id}" if adding else f"removing {member_id}"
            raise InvalidRequest(
                f"{what} would leave {size} voters needing {needed} for a majority, and only "
                f"{connected} are connected to the leader: bring the others back (or start the "
                f"new node's peers) first", reason="quorum_at_risk")

    def _pending_change(self, store: Any) -> bool:
        """A membership entry in the log that is not applied yet (or one being proposed)."""
        if self._changing:
            return True
        tail = store._SyncObj__getEntries(store.raftLastApplied + 1)
        return any(decode_change(entry[0]) is not None for entry in tail)

    async def _change(self, kind: str, address: str, table: list[Member], timeout: float,
                      check: Callable[[Any], None]) -> None:
        store = self._require_leader()
        if self._pending_change(store):
            raise InvalidRequest("another membership change is not applied yet: one change at "
                                 "a time; retry once it is", reason="change_pending")
        check(store)
        deadline = time.monotonic() + timeout
        self._changing = True
        try:
            # pysyncobj refuses a change before the leader's no-op of its term is applied.
            while store.raftLastApplied < (store._SyncObj__noopIDx or 0):
                if time.monotonic() > deadline:
                    raise Timeout("the new leader has not applied its first entry yet")
                await asyncio.sleep(POLL_S)
                store = self._require_leader()
            loop = asyncio.get_running_loop()
            done: asyncio.Future[None] = loop.create_future()

            def applied(_result: Any, reason: int) -> None:
                if done.done():
                    return
                if reason == SUCCESS:
                    done.set_result(None)
                else:
                    done.set_exception(_change_error(reason))

            command = encode_change(kind, address, table)[1:]
            store._applyCommand(command, applied, MEMBERSHIP)
            self._request_tick()
            try:
                await asyncio.wait_for(done, max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise Timeout("the membership change was not committed in time; it may still "
                              "apply: check 'member list'") from None
        finally:
            self._changing = False

    # ---- start-up -------------------------------------------------------------------------------
    def report_mismatch(self) -> str | None:
        """At start: one warning line if the config's members differ from the live ones
        (snapshot and journal), which this node uses.  Returns the line."""
        store = self._store()
        if store is None:
            return None
        live = {n.address for n in store._SyncObj__otherNodes}
        if store.selfNode is not None:
            live.add(store.selfNode.address)
        table = getattr(store, "members", None)
        for entry in store._SyncObj__getEntries(store.raftLastApplied + 1):
            request = decode_change(entry[0])
            if request is None:
                continue
            (live.add if request[0] == "add" else live.discard)(request[1])
            table = table_after(request) or table
        configured = {m["raft_address"]: m["id"] for m in configured_table(self._config)
                      if m["membership"] == "voter"}
        names = dict(configured)
        names.update({m["raft_address"]: m["id"] for m in table or ()})
        if set(configured) == live:
            return None

        def listed(addresses: set[str]) -> str:
            return ", ".join(sorted(f"{names.get(a, '?')}={a}" for a in addresses))

        line = (f"membership: {self._config.path} lists voters [{listed(set(configured))}] but "
                f"the live membership (from the snapshot and journal) is [{listed(live)}]; "
                f"using the live membership (change it with 'consensus-store member add/"
                f"remove'; update the config's [[peers]] to silence this line)")
        log.warning("%s", line)
        return line


def _change_error(reason: int) -> Exception:
    from pysyncobj import FAIL_REASON
    if reason == FAIL_REASON.REQUEST_DENIED:
        return InvalidRequest("the leader refused the membership change (another change is "
                              "pending, or the member is already in that state); retry",
                              reason="change_pending")
    return error_for(reason)
