"""The engine: everything that touches pysyncobj, behind ``Engine`` (facade.py).

The rest of the node uses Raft only through ``Engine`` (propose and write, read barrier,
applied index, who leads, status, a read view of the state machine) and ``error_for`` (the one
mapping of pysyncobj's failure reasons to our errors); no module outside this package imports
pysyncobj or reaches into the store.  Inside: runner.py drives pysyncobj on the node's asyncio
loop (loop_poller.py; heap.py keeps garbage collections of a large state short), raft.py
configures and extends ``SyncObj``, replication.py corrects its replication, read_index.py
serves linearizable reads, proposer.py batches and retries writes, durability.py / journal.py /
storage.py / snapshots.py / repair.py keep the data dir, and peer_frames.py /
peer_connection.py / peer_messages.py are the raft port.  docs/pysyncobj.md explains the
engine's behaviour and our corrections.
"""
from consensus_store.node.engine.facade import Engine
from consensus_store.node.engine.failures import error_for
from consensus_store.node.engine.runner import RaftStatus

__all__ = ["Engine", "RaftStatus", "error_for"]
