"""The engine: everything that touches pysyncobj (the Raft store and its runner, the peer
transport with its replication corrections, durability, the journal and snapshot files, the
read index, the proposer).  The rest of the node uses it through the runner and the proposer;
no module outside this package imports pysyncobj.  docs/pysyncobj.md explains the engine's
behaviour and our corrections.
"""
