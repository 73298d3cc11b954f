"""etcd's concurrency recipes: Session, Lock (a mutex) and Election.

Theory of operation (as etcd's clientv3/concurrency, with one gap closed)
-------------------------------------------------------------------------
A Session is a lease kept alive in the background; closing it revokes the
lease, so every key it owns disappears. If the keep-alive stops (the lease
expired), `session.done` is set.

Lock(session, name): the key is name/<lease id in hex>, created with the
session's lease in a txn that only creates it if absent. The holder is the
key with the smallest create revision under name/. A waiter watches only the
delete of the key just before its own (by create revision), so a release
wakes one waiter, never the whole herd. Before reporting the lock acquired,
a txn checks that our key still exists with our create revision — if the
lease expired while we waited, the key is gone and LockLostError is raised
instead. (That is the gap Jepsen found in etcd's lock: it could report a lock
whose lease had already expired.) The key and its create revision are the
lock's fencing token: guard writes with
`Compare.create_revision(lock.key) == lock.revision`.

Election(session, name): campaign waits like a lock, then holds leadership with
the proposal as the key's value; proclaim changes the value only while still
leader; leader() reads the current leader; observe() yields the leader's value
each time it changes; resign() deletes the key.
"""

from __future__ import annotations

import threading
import time

from cairn.requests import Compare, Op, prefix_range_end, to_bytes
from transport.errors import CairnError, ElectionNotLeaderError, LockLostError
from transport.messages import EVENT_DELETE


# How often a waiter looks at its session and deadline while no event comes.
WAIT_POLL_S = 0.25


class Session:
    def __init__(self, client, ttl: int = 60, lease: int = 0):
        self.client = client
        self.lease = lease or client.lease_grant(ttl).id
        self._keepalive = client.lease_keepalive(self.lease)
        self.done = self._keepalive.stopped

    @property
    def alive(self) -> bool:
        return not self.done.is_set()

    def close(self) -> None:
        """Stop keeping the lease alive and revoke it: its keys are deleted."""
        self._keepalive.close()
        try:
            self.client.lease_revoke(self.lease)
        except CairnError:
            pass  # already expired or revoked

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _prefix(name) -> bytes:
    name = to_bytes(name)
    return name if name.endswith(b"/") else name + b"/"


def _create_and_find_owner(client, key: bytes, prefix: bytes, value: bytes, lease: int):
    """(our key's create revision, the current owner's, whether we created the
    key now) — the owner holds the smallest create revision."""
    owner = Op.get(prefix, prefix=True, sort_target="create", sort_order="ascend", limit=1)
    response = client.txn(
        compare=[Compare.create_revision(key) == 0],
        success=[Op.put(key, value, lease=lease), owner],
        failure=[Op.get(key), owner],
    )
    mine = response.header.revision if response.succeeded else response.responses[0].kvs[0].create_revision
    owners = response.responses[1].kvs
    return mine, owners[0].create_revision if owners else mine, response.succeeded


def _wait_for_predecessors(client, prefix: bytes, my_revision: int, session: Session, deadline: float | None) -> None:
    """Until no key under prefix was created before ours: watch only the newest
    predecessor's delete each time (no thundering herd)."""
    while True:
        before = client.get(prefix, prefix=True, max_create_revision=my_revision - 1, sort_target="create",
                            sort_order="descend", limit=1)
        if not before.kvs:
            return
        predecessor = before.kvs[0].key
        with client.watch(predecessor, start_revision=before.header.revision + 1) as watch:
            while True:
                response = watch.get(timeout=WAIT_POLL_S)
                if response is not None and any(event.type == EVENT_DELETE for event in response.events):
                    break
                if watch.ended:
                    break  # canceled (e.g. compacted): look again from the top
                if session.done.is_set():
                    raise LockLostError("session lease expired while waiting")
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError("lock not acquired in time")


def _still_ours(client, key: bytes, revision: int) -> bool:
    """Linearizable check, through the log, that our key survived the wait."""
    response = client.txn(compare=[Compare.create_revision(key) == revision], success=[Op.get(key)], failure=[])
    return response.succeeded


def _acquire(session: Session, key: bytes, prefix: bytes, value: bytes, deadline: float | None) -> tuple[int, bool]:
    """Queue for ownership of prefix and wait for it: (our create revision,
    whether our key was created now). Raises LockLostError if our lease
    expired meanwhile; on any failure our queued key is removed."""
    client = session.client
    mine, owner, created = _create_and_find_owner(client, key, prefix, value, session.lease)
    try:
        if owner != mine:
            _wait_for_predecessors(client, prefix, mine, session, deadline)
        if not _still_ours(client, key, mine):
            raise LockLostError("our key is gone: the session's lease expired while waiting")
    except BaseException:
        try:
            client.delete(key)
        except CairnError:
            pass
        raise
    return mine, created


class _QueuedKey:
    """A Lock's or an Election's place in its queue: the key prefix + the
    session's lease id, and the revision it was created at (0 while not held)."""

    def __init__(self, session: Session, name):
        self.session = session
        self.client = session.client
        self.prefix = _prefix(name)
        self.key = self.prefix + f"{session.lease:x}".encode()
        self.revision = 0


class Lock(_QueuedKey):
    def acquire(self, timeout: float | None = None) -> "Lock":
        deadline = time.monotonic() + timeout if timeout is not None else None
        self.revision, _ = _acquire(self.session, self.key, self.prefix, b"", deadline)
        return self

    def release(self) -> None:
        self.client.delete(self.key)
        self.revision = 0

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()


class Election(_QueuedKey):
    def campaign(self, value, timeout: float | None = None) -> None:
        """Block until elected leader with this value."""
        deadline = time.monotonic() + timeout if timeout is not None else None
        value = to_bytes(value)
        self.revision, created = _acquire(self.session, self.key, self.prefix, value, deadline)
        if not created:
            self.proclaim(value)  # our key was there from an earlier campaign: give it this value

    def proclaim(self, value) -> None:
        response = self.client.txn(compare=[Compare.create_revision(self.key) == self.revision],
                                   success=[Op.put(self.key, value, lease=self.session.lease)], failure=[])
        if not self.revision or not response.succeeded:
            raise ElectionNotLeaderError("not the leader of this election")

    def resign(self) -> None:
        if self.revision:
            self.client.txn(compare=[Compare.create_revision(self.key) == self.revision],
                            success=[Op.delete(self.key)], failure=[])
            self.revision = 0

    def leader(self):
        """The leader's KeyValue (its value is the proposal), or None."""
        response = self.client.get(self.prefix, prefix=True, sort_target="create", sort_order="ascend", limit=1)
        return response.kvs[0] if response.kvs else None

    def observe(self, stop: threading.Event | None = None):
        """Yield the leader's KeyValue each time the leader or its value changes."""
        last = None
        while stop is None or not stop.is_set():
            current = self.client.get(self.prefix, prefix=True, sort_target="create", sort_order="ascend", limit=1)
            kv = current.kvs[0] if current.kvs else None
            if kv is not None and (last is None or (kv.key, kv.value) != (last.key, last.value)):
                last = kv
                yield kv
            with self.client.watch(self.prefix, range_end=prefix_range_end(self.prefix),
                                   start_revision=current.header.revision + 1) as watch:
                for _ in watch:
                    break  # anything changed under the prefix: look again
