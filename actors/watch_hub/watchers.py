"""Who watches what: connections, watchers, selectors, and the index of them.

A Connection is one client connection (a ROUTER identity) and its watches; a
Watcher is one watch and where it stands: the revisions it has been given,
queued and sent, its buffer of units and its credit. Watchers that want the
same events in the same form share a Selector, the unit a live event is
matched against (fanout.py). The Registry holds them all: connections by
identity, selectors by what they select, single-key selectors indexed by key
and range selectors in an interval index (ranges.py), and the watches that
asked for progress notifications. It also decides which creates are refused
and which connections are dead.

Dead clients. ZeroMQ does not report a vanished client here, so every frame
from a connection counts as a sign of life, the client library sends a
WatchKeepAlive every interval_ms while it has watches, and a connection silent
for IDLE_INTERVALS intervals loses its watches. A keep-alive naming a watch the
hub does not hold (the member restarted its hub, or dropped an idle
connection) is answered with a canceled response whose reason is
WatchKeepAlive.UNKNOWN_WATCH, which the client library answers by re-creating
the watch from its last revision (Hub.keepalive).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from actors.watch_hub.limits import HubLimits
from actors.watch_hub.ranges import RangeIndex
from store.keys import bounds
from transport.messages import EVENT_PUT, WATCH_FILTER_NODELETE, WATCH_FILTER_NOPUT, Event, WatchCreateRequest

if TYPE_CHECKING:
    from actors.watch_hub.units import Unit

REASON_DUPLICATE_ID = "mvcc: duplicate watch ID provided on the WatchStream"
REASON_EMPTY_RANGE = "mvcc: watcher range is empty"
REASON_INVALID_ID = "etcdserver: watch ID must not be negative"
REASON_TOO_MANY = "etcdserver: too many watches"


class Connection:
    """One client connection (a ROUTER identity) and its watches."""

    __slots__ = ("identity", "watchers", "next_auto_id", "last_heard", "interval_s")

    def __init__(self, identity: bytes, now: float, interval_s: float):
        self.identity = identity
        self.watchers: dict[int, Watcher] = {}
        self.next_auto_id = 0  # etcd's watchStream hands out 0, 1, 2 ... skipping ids in use
        self.last_heard = now
        self.interval_s = interval_s

    def auto_id(self) -> int:
        while self.next_auto_id in self.watchers:
            self.next_auto_id += 1
        watch_id = self.next_auto_id
        self.next_auto_id += 1
        return watch_id


class Watcher:
    __slots__ = (
        "connection", "watch_id", "request_id", "key", "range_end", "start", "end", "no_put", "no_delete",
        "prev_kv", "fragment", "progress_notify", "synced", "next_revision", "queued_revision", "sent_revision",
        "buffer", "buffer_events", "buffer_bytes", "sent_units", "acked_units", "events_since_progress",
        "removed", "in_ready", "in_lagging", "grouped", "selector",
    )

    def __init__(self, connection: Connection, watch_id: int, request_id: int, request: WatchCreateRequest):
        self.connection = connection
        self.watch_id = watch_id
        self.request_id = request_id
        self.key = request.key or b"\0"  # etcd: an empty key means the smallest key
        self.range_end = request.range_end
        self.start, self.end = bounds(self.key, self.range_end)
        self.no_put = WATCH_FILTER_NOPUT in request.filters
        self.no_delete = WATCH_FILTER_NODELETE in request.filters
        self.prev_kv = request.prev_kv
        self.fragment = request.fragment
        self.progress_notify = request.progress_notify
        self.grouped = request.grouped
        self.selector: Selector | None = None
        self.synced = False
        self.next_revision = 0  # first revision not yet taken from either source
        self.queued_revision = 0  # complete up to here once the buffer is sent
        self.sent_revision = 0  # complete up to here on the wire
        self.buffer: deque[Unit] = deque()
        self.buffer_events = 0
        self.buffer_bytes = 0
        self.sent_units = 0
        self.acked_units = 0
        self.events_since_progress = False
        self.removed = False
        self.in_ready = False
        self.in_lagging = False

    @property
    def single_key(self) -> bool:
        return not self.range_end

    @property
    def selector_identity(self) -> tuple:
        return (self.start, self.end, self.no_put, self.no_delete, self.prev_kv, self.fragment)

    def wants(self, event: Event) -> bool:
        if event.type == EVENT_PUT:
            return not self.no_put
        return not self.no_delete


class Selector:
    """Watchers that want the same events in the same form: one key range,
    one filter set, prev_kv or not, fragments or not. A live event is matched
    once per selector, not once per watcher, and a batch's units are built
    once per selector and copied to each of its synced watchers."""

    __slots__ = ("identity", "start", "end", "key", "single_key", "no_put", "no_delete", "prev_kv", "fragment", "watchers")

    def __init__(self, identity: tuple, watcher: Watcher):
        self.identity = identity
        self.start, self.end, self.key = watcher.start, watcher.end, watcher.key
        self.single_key = watcher.single_key
        self.no_put, self.no_delete = watcher.no_put, watcher.no_delete
        self.prev_kv, self.fragment = watcher.prev_kv, watcher.fragment
        self.watchers: dict[Watcher, None] = {}  # insertion-ordered, for deterministic output

    def wants(self, event: Event) -> bool:
        if event.type == EVENT_PUT:
            return not self.no_put
        return not self.no_delete


class Registry:
    """Every connection and watcher of the hub, and the index live events are
    matched through."""

    def __init__(self, limits: HubLimits):
        self.limits = limits
        self.connections: dict[bytes, Connection] = {}
        self.selectors: dict[tuple, Selector] = {}
        self.by_key: dict[bytes, list[Selector]] = {}
        self.ranges: RangeIndex[Selector] = RangeIndex()
        self.count = 0
        self.progress_watchers: set[Watcher] = set()

    def heard(self, identity: bytes, now: float) -> Connection:
        connection = self.connections.get(identity)
        if connection is None:
            connection = Connection(identity, now, self.limits.keepalive_interval_s)
            self.connections[identity] = connection
        connection.last_heard = now
        return connection

    def refusal(self, connection: Connection, request: WatchCreateRequest) -> str:
        """Why etcd would refuse this create, or "" to accept it."""
        if request.watch_id < 0:
            return REASON_INVALID_ID
        if request.watch_id and request.watch_id in connection.watchers:
            return REASON_DUPLICATE_ID
        if request.range_end and request.range_end != b"\0" and (request.key or b"\0") >= request.range_end:
            return REASON_EMPTY_RANGE
        if len(connection.watchers) >= self.limits.max_watches_per_connection or self.count >= self.limits.max_watchers:
            return REASON_TOO_MANY
        return ""

    def add(self, watcher: Watcher) -> None:
        watcher.connection.watchers[watcher.watch_id] = watcher
        self.count += 1
        identity = watcher.selector_identity
        selector = self.selectors.get(identity)
        if selector is None:
            selector = self.selectors[identity] = Selector(identity, watcher)
            if selector.single_key:
                self.by_key.setdefault(selector.key, []).append(selector)
            else:
                self.ranges.add(selector)
        selector.watchers[watcher] = None
        watcher.selector = selector
        if watcher.progress_notify:
            self.progress_watchers.add(watcher)

    def remove(self, watcher: Watcher) -> None:
        """Forget a watcher that is not removed yet (its buffer is credit's)."""
        watcher.removed = True
        self.count -= 1
        connection = watcher.connection
        if connection.watchers.get(watcher.watch_id) is watcher:
            del connection.watchers[watcher.watch_id]
        selector = watcher.selector
        del selector.watchers[watcher]
        if not selector.watchers:
            del self.selectors[selector.identity]
            if selector.single_key:
                same_key = self.by_key[selector.key]
                same_key.remove(selector)
                if not same_key:
                    del self.by_key[selector.key]
            else:
                self.ranges.remove(selector)
        self.progress_watchers.discard(watcher)

    def matching(self, key: bytes):
        """The selectors whose range holds `key`: a dict lookup and an
        interval-tree stab, never a scan of every range."""
        single = self.by_key.get(key)
        if single:
            yield from single
        if self.ranges:
            yield from self.ranges.holding(key)

    def expire(self, now: float) -> list[Connection]:
        """Forget the connections silent for idle_intervals of their keep-alive
        interval; their watchers are still to be removed."""
        expired = []
        for identity, connection in list(self.connections.items()):
            if now - connection.last_heard <= self.limits.idle_intervals * connection.interval_s:
                continue
            del self.connections[identity]
            expired.append(connection)
        return expired

    def watchers(self):
        for connection in self.connections.values():
            yield from connection.watchers.values()
