"""Making the keyspace durable off the apply actor's reply path.

Theory of operation
-------------------
The keyspace environment does not sync on commit (store/environment.py says
what a crash then does). The apply actor commits a batch, answers it, and
tells this syncer the index it committed (`committed`). A thread of the apply
process then calls `env.sync()` (one fdatasync of the keyspace file, which
flushes every commit written before it started) when SYNC_PERIOD_S has passed
or SYNC_ENTRIES entries are waiting, and publishes the index it made durable
(`durable`): the index committed before the sync began. The actor reads it
once a loop turn and reports it to raft, which never compacts its log past it.

The thread holds `lock` while it syncs; the actor takes it (`paused`) to
close, replace or reopen the environment, so a sync never meets a closed
handle. py-lmdb releases the GIL inside mdb_env_sync, so the loop keeps
applying while the disk works. A sync that fails is kept in `error`: the
actor raises it at its next turn and the supervisor restarts it, which
recovers from the log like any restart.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

# etcd's backend commits every 100 ms or 10,000 writes (defaultBatchInterval,
# defaultBatchLimit). The period bounds what an OS crash undoes and how far
# the raft log's compaction lags behind apply; at one fdatasync per period
# the disk's cost is a fraction of a percent of its time.
SYNC_PERIOD_S = 0.1
# Entries committed since the last sync that wake the thread before the
# period ends: under a burst, the log retained for re-apply stays this short.
SYNC_ENTRIES = 10000


class KeyspaceSyncer:
    def __init__(self, env, durable_index: int, period_s: float = SYNC_PERIOD_S, entries: int = SYNC_ENTRIES):
        """period_s 0: the environment syncs on every commit itself
        (member.keyspace_sync_ms: 0), so every commit is durable and no thread runs."""
        assert period_s >= 0 and entries > 0
        self.env = env
        self.period_s = period_s
        self.entries = entries
        self.lock = threading.Lock()
        self.durable = durable_index  # every commit up to this applied index is on disk
        self.error: BaseException | None = None
        self._committed = durable_index
        self._wake = threading.Event()
        self._stopping = False
        self._thread = None
        if period_s:
            self._thread = threading.Thread(target=self._run, name="keyspace-sync", daemon=True)
            self._thread.start()

    def committed(self, index: int) -> None:
        """The actor committed everything up to `index` (called after the commit)."""
        self._committed = index
        if self._thread is None:
            self.durable = index  # synced by the commit itself
            return
        if index - self.durable >= self.entries:
            self._wake.set()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self.period_s)
            self._wake.clear()
            try:
                self.sync()
            except BaseException as error:  # handed to the actor's loop, which raises it
                self.error = error
                return

    def sync(self) -> int:
        """Sync now if anything was committed since the last sync; returns the durable index."""
        with self.lock:
            target = self._committed
            if target > self.durable and not self._stopping:
                self.env.sync(True)
                self.durable = target
        return self.durable

    @contextmanager
    def paused(self):
        """Hold off the thread while the actor closes, replaces or reopens the environment."""
        with self.lock:
            yield

    def replaced(self, env, durable_index: int) -> None:
        """The actor swapped in env (a defragmented copy, synced by its maker), holding `paused`."""
        self.env = env
        self._committed = self.durable = durable_index

    def close(self) -> int:
        """Stop the thread and make everything committed durable; returns the durable index."""
        self.sync()
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        return self.durable
