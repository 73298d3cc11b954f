"""Progress notifications: etcd's progress_notify and RequestProgress.

A progress notification is a response without events whose header revision
tells the watch it is complete up to there. It is a unit of its own in the
watcher's buffer, never merged, queued behind what the watch has pending so
it never claims a revision whose events are still to come: a synced watch is
complete up to the hub's revision once its buffer is sent, an unsynced one
only up to what it has queued.
"""

from __future__ import annotations

from actors.watch_hub.credit import Credit
from actors.watch_hub.limits import HubLimits
from actors.watch_hub.units import Unit
from actors.watch_hub.watchers import Connection, Registry, Watcher
from transport.watch_wire import FRAME_OVERHEAD_BYTES


class Progress:
    def __init__(self, limits: HubLimits, registry: Registry, credit: Credit, now: float):
        self.limits = limits
        self.registry = registry
        self.credit = credit
        self.next_at = now + limits.progress_notify_s
        # identity -> store revision to reach: progress requests waiting for the
        # live stream (one per connection; the gap check bounds the wait).
        self.pending: dict[bytes, int] = {}

    def request(self, connection: Connection, store_revision: int, revision: int) -> None:
        """etcd's RequestProgress: a progress notification on every watch of the
        connection. It waits until the live stream (at `revision`) has reached
        the store's revision (store_revision, as the shell just read it): a
        client that wrote, then asked, learns a revision at least as new as its
        write."""
        if store_revision > revision:
            self.pending[connection.identity] = max(store_revision, self.pending.get(connection.identity, 0))
            return
        for watcher in connection.watchers.values():
            self._append(watcher, revision)

    def answer_pending(self, revision: int) -> None:
        """The live stream has reached `revision`: answer the requests that waited for it."""
        for identity, target in list(self.pending.items()):
            if target > revision:
                continue
            del self.pending[identity]
            connection = self.registry.connections.get(identity)
            if connection is not None:
                for watcher in connection.watchers.values():
                    self._append(watcher, revision)

    def tick(self, now: float, revision: int) -> None:
        """etcd's progress_notify: every progress_notify_s, a watch that is
        synced and was sent no events since the last round gets an empty
        response with the current revision."""
        if now < self.next_at:
            return
        self.next_at = now + self.limits.progress_notify_s
        for watcher in self.registry.progress_watchers:
            if watcher.synced and not watcher.buffer and self.credit.window_open(watcher) and not watcher.events_since_progress:
                self._append(watcher, revision)
            watcher.events_since_progress = False

    def _append(self, watcher: Watcher, revision: int) -> None:
        covered = max(watcher.queued_revision, revision) if watcher.synced else watcher.queued_revision
        header_revision = revision if watcher.synced else watcher.queued_revision
        unit = Unit([[]], watcher.queued_revision + 1, covered, FRAME_OVERHEAD_BYTES, progress=True, header_revision=header_revision)
        self.credit.append_progress(watcher, unit)
