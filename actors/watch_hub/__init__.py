"""The watch hub's logic: etcd's watch guarantees as a pure state machine.

Theory of operation
-------------------
The watch actor (actors/watch.py) is a thin shell around a Hub: it feeds in
client requests, the apply actor's AppliedEvents and the clock, lends the hub a
history reader over a short LMDB read transaction, and sends whatever frames
the hub hands out. The hub itself does no I/O (no module here imports zmq,
lmdb, structlog, time, os or socket), so every rule is tested
deterministically (tests/unit/test_watch_hub.py).

Revisions are the only bookkeeping. Each watcher knows `next_revision`, the
first revision it has not yet been given; the live stream and the store are two
sources of the same totally ordered history, and a watcher takes each revision
from exactly one of them:

* synced: the watcher takes live events (AppliedEvents) of revision >=
  next_revision, and its coverage follows the hub's revision;
* unsynced: it ignores live events and reads the store from next_revision
  (Reader.events_since, whole revisions, a bounded batch per read). A read that
  reaches past the hub's live revision makes it synced again with next_revision
  = the read's end + 1, so live events the store already gave it are skipped
  (no duplicate) and every later one is taken (no gap). This is the seam of a
  watch created at a past revision, and of every catch-up after falling behind.

The parts, one job each, and where the rest of the theory is told:

* hub.py:       Hub, the coordinator the shell calls: client requests, the
                hub's revision and the live stream's duplicates and holes;
                one turn's batches that continue each other joined into one.
* watchers.py:  connections, watchers, selectors and their registry; refused
                creates; dead clients.
* ranges.py:    the interval index that finds the range selectors holding a
                key without a scan of every range.
* units.py:     a unit, one response (or one revision's fragments) of whole
                revisions, and how events are packed into units.
* fanout.py:    a live batch matched and built into units once per selector.
* credit.py:    flow control: buffers, the window, spill to the store; the
                ready and lagging queues.
* catch_up.py:  unsynced watchers read the store; compaction.
* progress.py:  progress notifications (progress_notify, RequestProgress).
* output.py:    control frames first, then one unit per ready watcher in turn;
                WatchResponses groups; requeue.
* limits.py:    HubLimits, every bound with its reason.
* pacing.py:    how often the shell hands the hub the live stream while it
                flows fast (the shell keeps the clock).

The frames themselves are spliced from events encoded once
(transport/watch_wire.py).
"""

from actors.watch_hub.hub import INVALID_WATCH_ID, REASON_COMPACTED, REASON_UNKNOWN, Hub
from actors.watch_hub.limits import HubLimits
from actors.watch_hub.output import Outgoing
from actors.watch_hub.watchers import REASON_DUPLICATE_ID, REASON_EMPTY_RANGE, REASON_INVALID_ID, REASON_TOO_MANY

__all__ = [
    "INVALID_WATCH_ID", "REASON_COMPACTED", "REASON_DUPLICATE_ID", "REASON_EMPTY_RANGE", "REASON_INVALID_ID",
    "REASON_TOO_MANY", "REASON_UNKNOWN", "Hub", "HubLimits", "Outgoing",
]
