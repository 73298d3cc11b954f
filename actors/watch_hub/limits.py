"""Every bound of the watch hub, in one place, each with its reason."""

from __future__ import annotations

from transport.limits import holds, limit, limits


@limits(
    holds(lambda l: l.window_responses >= 4, "the client acks every quarter window"),
    holds(lambda l: l.buffer_bytes_max >= l.max_response_bytes, "a buffer must hold one full response"),
    holds(lambda l: l.catch_up_events <= l.buffer_events_max, "one catch-up read must fit a buffer"),
    holds(lambda l: l.keepalive_interval_s_min <= l.keepalive_interval_s <= l.keepalive_interval_s_max,
          "the assumed keep-alive interval is one a client may state"),
    holds(lambda l: l.idle_intervals >= 2, "one late keep-alive must not drop a connection"),
)
class HubLimits:
    """Every bound of the hub, each with its reason; tests shrink them."""

    max_response_bytes: int = limit(
        1024 * 1024,
        "One response's events, in bytes (etcd splits at its max request size, 1.5 MiB; a round 1 MiB keeps each "
        "frame well under the client's limit).")
    window_responses: int = limit(
        32,
        "Units sent and not yet acknowledged per watch. The client acks every quarter window "
        "(cairn.watch.ACK_EVERY_RESPONSES), so a consumer that keeps up never waits; one that stops holds at most "
        "this many responses.")
    buffer_events_max: int = limit(
        4096,
        "A watcher's unsent backlog, in events, before it is dropped and the watcher reads the store instead: bounds "
        "the hub's memory per slow watcher.")
    buffer_bytes_max: int = limit(
        2 * 1024 * 1024,
        "The same backlog's bound in bytes, for large events.")
    total_buffer_bytes_max: int = limit(
        256 * 1024 * 1024,
        "All watchers' backlogs together: past it the largest backlog is dropped.")
    catch_up_events: int = limit(
        1000,
        "Events per catch-up read (whole revisions): one read transaction is held briefly.")
    catch_up_records: int = limit(
        10000,
        "Stored records one catch-up read may scan: a narrow watch over a long history holds the read txn briefly.")
    catch_up_reads_per_turn: int = limit(
        8,
        "Catch-up reads per loop turn (one read transaction holds them all), so live events and client requests are "
        "never held up long.")
    progress_notify_s: float = limit(
        10.0,
        "etcd's progress notification interval is 10 minutes; 10 s keeps a progress_notify watch's client well "
        "informed at a negligible cost.")
    keepalive_interval_s: float = limit(
        2.0,
        "Keep-alive interval assumed until a client states its own.")
    keepalive_interval_s_min: float = limit(
        0.1,
        "The shortest interval a client may state: more often would be the hub's work, not the client's.")
    keepalive_interval_s_max: float = limit(
        60.0,
        "The longest interval a client may state: a dead client's watches go within a few minutes.")
    idle_intervals: int = limit(
        3,
        "Silent keep-alive intervals after which a connection's watches are dropped.")
    max_watches_per_connection: int = limit(
        1000,
        "Watches per connection: each costs index entries and, when slow, a bounded backlog; a limit turns a runaway "
        "client into an error. The actor derives the one it uses from the frontend's high-water mark "
        "(actors/watch.py, hub_limits), so credit alone keeps the ROUTER from dropping.")
    max_watchers: int = limit(
        100000,
        "Watches per member, for the same reasons, over all connections.")
