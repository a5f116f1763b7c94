"""Benchmark consensus_store against the raw pysyncobj engine and (optionally) etcd, in one run.

Method
    * Clusters: a local 3-node consensus_store cluster (separate processes, temp dir) unless
      ``--endpoints`` names a running one; a raw pysyncobj cluster (three processes running
      ``tools/benchmark/raw_node.py``); with ``--vs-etcd`` a 3-member etcd cluster.  Everything
      listens on 127.0.0.1 on free ports.  All clusters stay up for the whole run.
    * One load generator for every HTTP server: this process, one event loop (uvloop where
      installed, as in our nodes), one aiohttp ClientSession with keep-alive connections,
      pre-serialized bodies, ``concurrency`` workers each with one request in flight.  Ratios
      therefore compare servers, not clients.
    * Writes go to the leader's endpoint.  Reads go round-robin, request by request, to every
      node (a follower serves local/session reads itself and forwards a linearizable read's
      barrier to the leader; etcd members do the same with ReadIndex).
    * 16-byte keys (a pool of ``--keys``, written once before reads), 100-byte random printable
      values.  Session reads carry ``min_index`` = the index of the last prefill write.
    * Each point (system, op, concurrency) runs for at most ``--seconds`` and at most
      ``--max-ops`` requests after an unmeasured ``--warmup``; ops/s counts successful answers
      over the time until the last one returned; p50/p99 are per request.  ``--repeat`` rounds
      run every system in turn (interleaved, so drift hits all alike); the table shows medians
      and the min-max of ops/s.  Ratios are medians too, with the min-max of per-round ratios.
    * CPU per operation: utime+stime of the system's processes (/proc/PID/stat) and of this
      load generator over each measured run, divided by the answers counted.
    * Raw pysyncobj: ``ReplDict.set`` driven from inside the leader process (bounded in-flight
      commands, completion callbacks on pysyncobj's tick thread), pysyncobj's default
      configuration (``appendEntriesUseBatch=True``, 100 ms append period, memory journal, no
      encryption).  No HTTP is involved, so ours/raw is "product over engine defaults".
    * ``--embedded``: ``Node.get`` / ``Node.get_value`` calls in a tight, bounded loop on a node
      embedded in this process (its own small cluster).  ``--idle``: CPU of every cluster
      process over ``--idle-seconds`` (utime+stime from /proc/PID/stat, % of one core).
    * ``--scale``: only the large-state figures (``--scale-keys``, default 1M): RSS per node,
      snapshot time and leader changes while snapshots run under load, restart-to-serving
      time, and etcd's RSS on the same keys when etcd is installed (see ``scale``).

Caveats
    * One machine (2 cores here) runs servers and client: at high concurrency the Python client
      itself costs ~60 us of CPU per HTTP request, which weighs on every HTTP figure alike.
    * etcd fsyncs its WAL before acknowledging; so does consensus_store with its default
      ``durability = "fsync"`` (``--durability process`` measures the other mode).  Our peer
      traffic is also encrypted (peer secret, AES-GCM); etcd's here is not.
    * Single runs are noisy (+-10-15 %); compare ratios taken in one run.  Other work on the
      machine skews everything: the report says how much CPU other processes used meanwhile.
    * Only processes this script started are signalled, always by their PID.

Modules (tools/benchmark/): ``common`` (data, result types, polling, processes), ``load`` (the
load generator and targets), ``ours``, ``etcd``, ``raw`` (+ ``raw_node``, the raw pysyncobj
process), ``measure`` (points, ratios, CPU, embedded reads), ``scale``, ``report``, ``cli``.
"""
