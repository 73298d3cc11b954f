"""When the leader proposes a compaction on its own (etcd's --auto-compaction-mode).

mode "revision": keep the last `retention` revisions; compact to
current - retention whenever that has moved by a tenth of the retention, so a
busy cluster compacts in regular steps and an idle one not at all.
mode "periodic": keep `retention` seconds of history; sample the revision every
tenth of the period and compact to the revision sampled one period ago, as etcd's
periodic compactor does.

Pure logic: time and revision come in, a revision to compact to (or None) goes
out. The raft actor asks only while it leads and turns the answer into a
CompactionRequest through the log like any client's.
"""

from __future__ import annotations

from collections import deque


class AutoCompactor:
    def __init__(self, mode: str, retention: int):
        assert mode in ("off", "revision", "periodic"), mode
        self.mode = mode
        self.retention = retention
        self.compacted_to = 0
        self.samples: deque[tuple[float, int]] = deque()  # (time, revision), periodic mode

    def next_target(self, now: float, revision: int) -> int | None:
        if self.mode == "off" or self.retention <= 0:
            return None
        if self.mode == "revision":
            return self._revision_target(revision)
        return self._periodic_target(now, revision)

    def _revision_target(self, revision: int) -> int | None:
        target = revision - self.retention
        step = max(1, self.retention // 10)
        if target <= 0 or target - self.compacted_to < step:
            return None
        self.compacted_to = target
        return target

    def _periodic_target(self, now: float, revision: int) -> int | None:
        interval = self.retention / 10
        if not self.samples or now - self.samples[-1][0] >= interval:
            self.samples.append((now, revision))
        target = None
        while self.samples and now - self.samples[0][0] >= self.retention:
            target = self.samples.popleft()[1]
        if target is None or target <= self.compacted_to or target <= 1:
            return None
        self.compacted_to = target
        return target
