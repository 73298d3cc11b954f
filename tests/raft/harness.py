"""Small synchronous test harness for the Raft core (etcd raft_test.go's `network`).

`Cluster` plays the raft actor for every node: it drains each core's Readies, keeps a
per-node in-memory "disk" (persisted only when a Ready is processed, as the actor
does), applies committed entries to a per-node list, and queues outgoing messages.
`deliver()` hands queued messages to their recipients until the network is quiet,
honouring cut links and isolated nodes. Everything is deterministic.
"""

from __future__ import annotations

import random
from collections import deque

from actors.raft.core import LEADER, PersistedState, RaftConfig, RaftCore, Ready, ReadState
from transport.raft_messages import ENTRY_NORMAL, MSG_SNAP, Entry, HardState, RaftMessage, SnapshotMeta


def msg(type_: int, to: int, sender: int, term: int, **fields) -> RaftMessage:
    return RaftMessage(type=type_, to=to, sender=sender, term=term, **fields)


def ents(*terms: int, start: int = 1, data: bytes | None = None) -> tuple[Entry, ...]:
    """Entries with the given terms at consecutive indexes from `start`."""
    return tuple(
        Entry(start + i, t, data if data is not None else b"e%d-t%d" % (start + i, t)) for i, t in enumerate(terms)
    )


def new_core(
    node_id: int = 1,
    voters: tuple[int, ...] = (1, 2, 3),
    *,
    term: int = 0,
    vote: int = 0,
    commit: int = 0,
    entries: tuple[Entry, ...] = (),
    snapshot: SnapshotMeta | None = None,
    applied: int | None = None,
    seed: int = 0,
    **config,
) -> RaftCore:
    config.setdefault("pre_vote", False)
    config.setdefault("check_quorum", False)
    cfg = RaftConfig(id=node_id, voters=voters, **config)
    if applied is None:
        applied = commit
    persisted = PersistedState(HardState(term, vote, commit), snapshot, entries, applied)
    return RaftCore(cfg, persisted, random.Random(seed))


def drain(core: RaftCore) -> list[Ready]:
    """Take and advance every Ready, returning them."""
    out = []
    while core.has_ready():
        rd = core.ready()
        out.append(rd)
        core.advance(rd)
    return out


def drain_messages(core: RaftCore) -> list[RaftMessage]:
    return [m for rd in drain(core) for m in rd.messages]


def events_named(readies: list[Ready], name: str) -> list[dict]:
    return [fields for rd in readies for (n, fields) in rd.events if n == name]


class Disk:
    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snapshot: SnapshotMeta | None = None
        self.entries: list[Entry] = []
        self.applied = 0

    def persisted(self) -> PersistedState:
        return PersistedState(self.hard_state, self.snapshot, tuple(self.entries), self.applied)


class Cluster:
    def __init__(self, n: int = 3, seed: int = 0, spare: int = 0, **config) -> None:
        """n voters; `spare` more nodes (ids n+1..) run but are not members until a
        configuration change adds them (they start as learners of their own bootstrap
        configuration, as a member joining an existing cluster would)."""
        config.setdefault("pre_vote", False)
        config.setdefault("check_quorum", False)
        self.voters = tuple(range(1, n + 1))
        self.ids = tuple(range(1, n + spare + 1))
        self.config = config
        self.seed = seed
        self.disks = {i: Disk() for i in self.ids}
        self.cores: dict[int, RaftCore] = {}
        self.applied: dict[int, list[Entry]] = {i: [] for i in self.ids}
        self.read_states: dict[int, list[ReadState]] = {i: [] for i in self.ids}
        self.events: dict[int, list[tuple]] = {i: [] for i in self.ids}
        self.readies: dict[int, list[Ready]] = {i: [] for i in self.ids}
        self.queue: deque[RaftMessage] = deque()
        self.sent: list[RaftMessage] = []
        self.cut_links: set[tuple[int, int]] = set()
        self.dropped_types: set[int] = set()
        self.auto_report_snapshot = True
        for i in self.ids:
            self.start(i)

    def load(self, node_id: int, terms: tuple[int, ...], term: int, commit: int = 0) -> RaftCore:
        """Restart `node_id` with a disk holding entries of the given terms."""
        disk = self.disks[node_id]
        disk.entries = list(ents(*terms))
        disk.hard_state = HardState(term=term, vote=0, commit=commit)
        disk.snapshot = None
        disk.applied = commit
        return self.start(node_id)

    def log_terms(self, node_id: int) -> list[int]:
        core = self.cores[node_id]
        return [core.term_at(i) for i in range(core.first_index, core.last_index + 1)]

    # -- nodes -----------------------------------------------------------

    def start(self, node_id: int) -> RaftCore:
        learners = () if node_id in self.voters else (node_id,)
        cfg = RaftConfig(id=node_id, voters=self.voters, learners=learners, **self.config)
        core = RaftCore(cfg, self.disks[node_id].persisted(), random.Random(self.seed * 1000 + node_id))
        self.cores[node_id] = core
        self.process(node_id)
        return core

    def __getitem__(self, node_id: int) -> RaftCore:
        return self.cores[node_id]

    def leader(self) -> int:
        leaders = [i for i, c in self.cores.items() if c.role == LEADER]
        leaders.sort(key=lambda i: self.cores[i].term)
        return leaders[-1] if leaders else 0

    # -- the actor's part --------------------------------------------------

    def process(self, node_id: int) -> None:
        core = self.cores[node_id]
        disk = self.disks[node_id]
        while core.has_ready():
            rd = core.ready()
            self.readies[node_id].append(rd)
            if rd.snapshot is not None:
                disk.snapshot = rd.snapshot
                disk.entries = []
                disk.applied = rd.snapshot.index
            if rd.entries:
                base = disk.snapshot.index if disk.snapshot else 0
                del disk.entries[rd.entries[0].index - base - 1 :]
                disk.entries.extend(rd.entries)
            if rd.hard_state is not None:
                disk.hard_state = rd.hard_state
            for m in rd.messages:
                self.sent.append(m)
                if (m.sender, m.to) not in self.cut_links and m.type not in self.dropped_types:
                    self.queue.append(m)
            for e in rd.committed_entries:
                self.applied[node_id].append(e)
                disk.applied = e.index
            self.read_states[node_id].extend(rd.read_states)
            self.events[node_id].extend(rd.events)
            core.advance(rd)

    def process_all(self) -> None:
        for i in self.ids:
            self.process(i)

    # -- network -----------------------------------------------------------

    def deliver(self, drop=None, rewrite=None, limit: int = 100_000) -> None:
        """Deliver queued messages (and their consequences) until quiet; `drop(m)`
        returning True loses a message, `rewrite(m)` replaces it in flight."""
        self.process_all()
        while self.queue:
            limit -= 1
            assert limit > 0, "message storm"
            m = self.queue.popleft()
            if drop is not None and drop(m):
                continue
            if rewrite is not None:
                m = rewrite(m)
            self.cores[m.to].step(m)
            self.process(m.to)
            if m.type == MSG_SNAP and self.auto_report_snapshot:
                # The actor streamed the snapshot data successfully.
                self.cores[m.sender].report_snapshot(m.to, True)
                self.process(m.sender)

    def step(self, m: RaftMessage) -> None:
        self.cores[m.to].step(m)
        self.process(m.to)

    def cut(self, a: int, b: int) -> None:
        self.cut_links.add((a, b))
        self.cut_links.add((b, a))

    def isolate(self, node_id: int) -> None:
        for other in self.ids:
            if other != node_id:
                self.cut(node_id, other)

    def heal(self) -> None:
        self.cut_links.clear()
        self.dropped_types.clear()

    # -- time and requests ---------------------------------------------------

    def tick(self, node_id: int, n: int = 1) -> None:
        for _ in range(n):
            self.cores[node_id].tick()
            self.process(node_id)

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for i in self.ids:
                self.cores[i].tick()
                self.process(i)
            self.deliver()

    def elect(self, node_id: int) -> None:
        self.cores[node_id].campaign()
        self.deliver()
        assert self.cores[node_id].role == LEADER, self.cores[node_id].status()

    def propose(self, node_id: int, *data: bytes) -> bool:
        ok = self.cores[node_id].propose(list(data))
        self.deliver()
        return ok

    def applied_data(self, node_id: int) -> list[bytes]:
        return [e.data for e in self.applied[node_id] if e.data and e.kind == ENTRY_NORMAL]

    def events_of(self, node_id: int, name: str) -> list[dict]:
        return [f for n, f in self.events[node_id] if n == name]
