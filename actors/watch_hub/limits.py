"""Every bound of the watch hub, in one place, each with its reason."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HubLimits:
    """Every bound of the hub, each with its reason; tests shrink them."""

    # One response's events, in bytes (etcd splits at its max request size,
    # 1.5 MiB; a round 1 MiB keeps each frame well under the client's limit).
    max_response_bytes: int = 1024 * 1024
    # Units sent and not yet acknowledged per watch. The client acks every
    # quarter window (cairn.watch.ACK_EVERY_RESPONSES), so a consumer that keeps
    # up never waits; one that stops holds at most this many responses.
    window_responses: int = 32
    # A watcher's unsent backlog before it is dropped and the watcher reads the
    # store instead: bounds the hub's memory per slow watcher.
    buffer_events_max: int = 4096
    buffer_bytes_max: int = 2 * 1024 * 1024
    # All watchers' backlogs together: past it the largest backlog is dropped.
    total_buffer_bytes_max: int = 256 * 1024 * 1024
    # Events per catch-up read (whole revisions), and stored records it may
    # scan: a narrow watch over a long history holds the read txn briefly.
    catch_up_events: int = 1000
    catch_up_records: int = 10000
    # Catch-up reads per loop turn (one read transaction holds them all), so
    # live events and client requests are never held up long.
    catch_up_reads_per_turn: int = 8
    # etcd's progress notification interval is 10 minutes; 10 s keeps a
    # progress_notify watch's client well informed at a negligible cost.
    progress_notify_s: float = 10.0
    # Keep-alive interval assumed until a client states its own, the range it
    # may state, and how many silent intervals drop a connection's watches.
    keepalive_interval_s: float = 2.0
    keepalive_interval_s_min: float = 0.1
    keepalive_interval_s_max: float = 60.0
    idle_intervals: int = 3
    # Watches per connection and per member: each costs index entries and, when
    # slow, a bounded backlog; a limit turns a runaway client into an error. The
    # actor derives the per-connection one from the frontend's high-water mark
    # (actors/watch.py, hub_limits), so credit alone keeps the ROUTER from dropping.
    max_watches_per_connection: int = 1000
    max_watchers: int = 100000

    def __post_init__(self):
        assert self.window_responses >= 4, "the client acks every quarter window"
        assert self.buffer_bytes_max >= self.max_response_bytes, "a buffer must hold one full response"
        assert self.catch_up_events <= self.buffer_events_max, "one catch-up read must fit a buffer"
        assert self.keepalive_interval_s_min <= self.keepalive_interval_s <= self.keepalive_interval_s_max
        assert self.idle_intervals >= 2, "one late keep-alive must not drop a connection"
