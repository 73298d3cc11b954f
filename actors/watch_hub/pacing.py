"""Pacing: how often the live stream is handed to the hub while it flows fast.

Fan-out costs per watcher per batch, on the hub and on every client (a
response to build, relay, decode and hand to each watch), whatever the
batch's size. At a thousand puts a second the shell's loop turns, and so the
batches, came ~100 times a second, and under that load the clients' share of
the CPU did not keep up (docs/PERFORMANCE.md, "Round 3"). So the shell holds
the AppliedEvents of quick successive turns and hands them over together
(Hub.on_event_batches joins those that continue each other): at most one
batch per interval_s while events keep coming, each no later than interval_s
after the last went. A batch after a quiet spell goes at once, so a lone put
is not delayed at all.

Pure: the shell passes the clock in.
"""

from __future__ import annotations


class Pacing:
    __slots__ = ("interval_s", "last_fed")

    def __init__(self, interval_s: float):
        assert interval_s >= 0
        self.interval_s = interval_s
        self.last_fed: float | None = None  # when the hub was last handed live batches

    def due(self, now: float) -> bool:
        """Whether batches held now may go to the hub."""
        return self.last_fed is None or now - self.last_fed >= self.interval_s

    def fed(self, now: float) -> None:
        self.last_fed = now

    def wait_s(self, now: float) -> float:
        """How long held batches still wait (0: due now)."""
        if self.last_fed is None:
            return 0.0
        return max(0.0, self.last_fed + self.interval_s - now)
