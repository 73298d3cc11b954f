"""Deterministic simulator for the Raft core: many nodes, a hostile network, crashes.

Theory of operation
-------------------
One seeded ``random.Random`` drives everything (cluster shape, configuration, message
delays, drops, duplicates, partitions, crashes, client requests), and the cores get
their own ``random.Random`` seeded from it, so a seed replays bit for bit.

Each simulated tick: every live node ticks; random chaos actions happen (proposals,
ReadIndex, leadership transfers, compaction, crash/restart, partition/heal); then
every message due by now is delivered, in an order randomized by per-message delay
and a random tie-break. Messages may be dropped, duplicated and delayed (which also
reorders them). A message crossing a partition, or addressed to a crashed node, is
lost.

Every time a core has a Ready, the node plays the actor's part: it writes the
snapshot/entries/hard state to its *disk* (the only thing a crash keeps), sends the
messages, applies the committed entries to its state machine (also on disk, with the
applied index, as the real actor's LMDB transaction would), then calls advance. A
crash may hit before the write (the whole Ready is lost) or between the write and
the send/apply. A restart rebuilds RaftCore from the disk alone.

After every processed Ready the invariants below are checked; a violation raises
``InvariantViolation`` naming the seed. After the chaos phase the network heals, all
nodes restart, and within a bounded number of ticks a leader must exist and every
node must have applied everything committed (liveness).

Invariants (Raft paper figure 3, plus read safety):
* Election Safety: at most one leader per term, ever.
* Vote safety: a node's durable vote never changes within a term; terms never go back.
* Log Matching: (index, term) identifies an entry and its whole prefix: checked as
  "same (index, term) => same data and same previous term" across every durable write.
* Leader Completeness: a leader of term L holds every entry committed in a term < L.
  The commit term of an index is over-approximated by the term of the first node seen
  to commit it, which can only make the check weaker, never wrong.
* State Machine Safety: no two nodes apply different data at an index; each node
  applies indices in order without gaps or repeats; installed snapshots agree too.
* Read safety: a ReadState's index is >= every index known committed (by any node)
  when the read was requested, and is itself committed.
* Dropped means dropped: a proposal refused by ``propose`` or reported in
  ``Ready.dropped_proposals`` (a forwarded one the recipient dropped) never appears
  in any Ready's entries, before or after (its client would retry it: a write both
  retried and committed would apply twice). Like the real transport, the network
  never duplicates a MSG_PROP (it may duplicate everything else).
* Membership (thesis §4.1): every node uses the latest configuration in its stored
  log (checked whenever it is quiescent); when a leader appends a conf-change entry, the previous
  one in its log is committed (never two pending changes), and the new voters differ
  from the previous configuration's by at most one server. Election Safety above is
  checked across configurations: the leaders record is global, whatever the
  configuration each leader believed in.

Membership changes: some schedules run `spare` extra nodes that start outside the
cluster (learners of their own bootstrap configuration, as a joining member would),
and propose random single-server changes: add a learner (or re-add a removed node),
promote, add a voter directly, remove a learner or a voter (the leader itself
included). Removed nodes keep running through the chaos phase. In the liveness
phase they keep running only with pre-vote: without it (thesis §4.2.3's disruptive
servers; check-quorum's lease helps only while a leader exists) the simulator stops
every node outside the latest committed configuration, as etcd's transport makes a
removed member stop.
"""

from __future__ import annotations

import heapq
import random
import sys
import time
from collections import deque
import dataclasses
from dataclasses import dataclass

from actors.raft.core import LEADER, PersistedState, RaftConfig, RaftCore, Ready
from actors.raft.membership import is_single_server_change
from transport.raft_messages import (
    CONF_ADD_LEARNER,
    CONF_ADD_VOTER,
    CONF_PROMOTE,
    CONF_REMOVE,
    ENTRY_CONF_CHANGE,
    MESSAGE_TYPE_NAMES,
    MSG_PROP,
    MSG_SNAP,
    ConfChange,
    ConfState,
    Entry,
    HardState,
    RaftMessage,
    SnapshotMeta,
    decode_conf_change,
)

REPLAY_COMMAND = "CAIRN_SIM_SEED={seed} .venv/bin/python -m pytest tests/raft/test_simulation.py -q"


class InvariantViolation(AssertionError):
    pass


@dataclass(frozen=True)
class SimParams:
    n: int
    pre_vote: bool
    check_quorum: bool
    election_ticks: int
    heartbeat_ticks: int
    max_inflight: int
    max_entries: int
    max_uncommitted_bytes: int
    drop: float
    duplicate: float
    max_delay: int
    p_long_delay: float
    tick_skew: float
    chaos_ticks: int
    p_propose: float
    p_read: float
    p_transfer: float
    p_compact: float
    p_crash: float
    p_crash_leader: float
    p_restart: float
    p_crash_in_ready: float
    p_interleave: float
    p_partition: float
    p_isolate_leader: float
    p_heal: float
    liveness_ticks: int
    spare: int
    p_conf_change: float
    # Not drawn from the schedule's random stream (that would change every
    # seed's schedule): Simulation sets them from the seed, the deferral for
    # odd seeds, tell_leader_lost for seeds with seed % 4 in (2, 3).
    defer_commit_notice: bool = False
    tell_leader_lost: bool = False  # a crash drops the connections to it: its followers call leader_unreachable

    @classmethod
    def draw(cls, rng: random.Random) -> SimParams:
        election = rng.choice((6, 8, 10))
        return cls(
            n=rng.choice((3, 5)),
            pre_vote=rng.random() < 0.7,
            check_quorum=rng.random() < 0.7,
            election_ticks=election,
            heartbeat_ticks=rng.choice((1, 2)),
            max_inflight=rng.choice((1, 2, 4, 64)),
            max_entries=rng.choice((1, 2, 3, 100)),
            max_uncommitted_bytes=rng.choice((16, 64, 1 << 20)),
            drop=rng.choice((0.0, 0.02, 0.1, 0.25)),
            duplicate=rng.choice((0.0, 0.02, 0.1)),
            max_delay=rng.choice((0, 1, 2, 4)),
            p_long_delay=rng.choice((0.0, 0.0, 0.01, 0.05)),
            tick_skew=rng.choice((0.0, 0.0, 0.1, 0.3)),
            chaos_ticks=rng.randint(20, 120),
            p_propose=rng.choice((0.1, 0.3, 0.6)),
            p_read=rng.choice((0.05, 0.1, 0.3)),
            p_transfer=rng.choice((0.0, 0.01, 0.05)),
            p_compact=rng.choice((0.0, 0.05, 0.2)),
            p_crash=rng.choice((0.0, 0.005, 0.02)),
            p_crash_leader=rng.choice((0.0, 0.02, 0.05)),
            p_restart=rng.choice((0.05, 0.2)),
            p_crash_in_ready=rng.choice((0.0, 0.002, 0.01)),
            p_interleave=rng.choice((0.0, 0.1, 0.3)),
            p_partition=rng.choice((0.0, 0.01, 0.04)),
            p_isolate_leader=rng.choice((0.0, 0.01, 0.03)),
            p_heal=rng.choice((0.02, 0.05, 0.2)),
            liveness_ticks=60 * election,
            spare=rng.choice((0, 1, 2)),
            p_conf_change=rng.choice((0.0, 0.03, 0.1, 0.2)),
        )


class Disk:
    """What survives a crash: the actor's durable storage."""

    __slots__ = ("hard_state", "snapshot", "entries", "applied", "sm")

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snapshot: SnapshotMeta | None = None
        self.entries: list[Entry] = []
        self.applied = 0
        self.sm: list[bytes] = []  # state machine: sm[i - 1] is the data applied at index i

    @property
    def snap_index(self) -> int:
        return self.snapshot.index if self.snapshot is not None else 0

    def term(self, index: int) -> int | None:
        base = self.snap_index
        if index == base:
            return self.snapshot.term if self.snapshot is not None else 0
        if index < base or index > base + len(self.entries):
            return None
        return self.entries[index - base - 1].term


class Node:
    __slots__ = ("id", "disk", "core", "incarnation", "snap_payloads", "retired")

    def __init__(self, node_id: int) -> None:
        self.id = node_id
        self.retired = False  # stopped for good (removed from the cluster)
        self.disk = Disk()
        self.core: RaftCore | None = None
        self.incarnation = 0
        self.snap_payloads: dict[tuple[int, int], tuple[bytes, ...]] = {}


_MSG = 0
_REPORT_SNAPSHOT = 1


class Simulation:
    def __init__(self, seed: int, params: SimParams | None = None) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        if params is None:
            params = dataclasses.replace(SimParams.draw(self.rng), defer_commit_notice=seed % 2 == 1,
                                         tell_leader_lost=seed % 4 in (2, 3))
        self.p = params
        p = self.p
        self.voters = tuple(range(1, p.n + 1))  # the bootstrap configuration
        self.ids = tuple(range(1, p.n + p.spare + 1))
        self.nodes = {i: Node(i) for i in self.ids}
        self.configs = {
            i: RaftConfig(
                id=i,
                voters=self.voters,
                learners=() if i in self.voters else (i,),
                election_ticks=p.election_ticks,
                heartbeat_ticks=p.heartbeat_ticks,
                max_entries_per_message=p.max_entries,
                max_inflight_messages=p.max_inflight,
                max_uncommitted_bytes=p.max_uncommitted_bytes,
                pre_vote=p.pre_vote,
                check_quorum=p.check_quorum,
                defer_commit_notice=p.defer_commit_notice,
            )
            for i in self.ids
        }
        self.now = 0
        self.queue: list[tuple] = []
        self.seq = 0
        self.consumed: set[int] = set()  # queue entries delivered early (interleaving)
        self.group = {i: 0 for i in self.ids}  # partition: nodes talk only within a group
        self.drop = p.drop
        self.duplicate = p.duplicate
        self.crash_in_ready = p.p_crash_in_ready
        self.long_delay = p.p_long_delay
        self.tick_skew = p.tick_skew
        self.max_delay = p.max_delay
        self.trace: deque = deque(maxlen=300)
        # Global knowledge for the invariants.
        self.leaders: dict[int, int] = {}  # term -> leader id
        self.entry_ids: dict[tuple[int, int], tuple[bytes, int]] = {}  # (index, term) -> (data, prev term)
        self.committed_terms: list[int] = [0]  # [i] = term of committed index i (0: sentinel)
        self.commit_terms: list[int] = [0]  # [i] = a term in which index i was known committed
        self.applied_data: list[bytes] = []  # [i - 1] = data applied at index i
        self.reads: dict[tuple[int, bytes], int] = {}  # (node, context) -> committed index when requested
        self.conf_entries: dict[tuple[int, int], ConfState] = {}  # (index, term) -> configuration after it
        self.committed_conf = ConfState(self.voters)  # latest configuration known committed
        self.proposal_counter = 0
        self.appended: set[bytes] = set()  # data of every entry any Ready handed out
        self.dropped: set[bytes] = set()  # data of every proposal reported dropped
        self.read_counters = {i: 0 for i in self.ids}
        self.stats = {"ticks": 0, "messages": 0, "readies": 0, "elections": 0, "crashes": 0,
                      "snapshots": 0, "reads": 0, "applied": 0, "dropped": 0, "conf_changes": 0}
        for node in self.nodes.values():
            self._start(node)

    # ------------------------------------------------------------------
    # Driver
    # ------------------------------------------------------------------

    def run(self) -> dict:
        try:
            self._run()
        except InvariantViolation:
            raise
        except Exception as exc:  # a crash inside the core is a failure too
            raise InvariantViolation(self._describe(f"exception: {exc!r}")) from exc
        return self.stats

    def _run(self) -> None:
        p = self.p
        for _ in range(p.chaos_ticks):
            self._tick()
            self._chaos()
            self._deliver_due()
        # Liveness: heal everything, stop the chaos, and demand convergence.
        self.group = {i: 0 for i in self.ids}
        self.drop = 0.0
        self.duplicate = 0.0
        self.crash_in_ready = 0.0
        self.long_delay = 0.0
        self.max_delay = min(self.max_delay, 1)
        for node in self.nodes.values():
            if node.core is None:
                self._start(node)
        # Check-quorum's lease protects only while there is a leader: in a leaderless
        # window a removed node that missed its removal keeps resetting the voters'
        # election timers with higher terms (seed 16432). Only pre-vote contains it.
        contain_removed = not p.pre_vote
        for _ in range(p.liveness_ticks):
            if contain_removed:
                self._retire_removed()
            self._tick()
            self._deliver_due()
            if self._converged():
                return
        raise InvariantViolation(self._describe(f"liveness: no convergence within {p.liveness_ticks} ticks after healing"))

    def _tick(self) -> None:
        self.now += 1
        self.stats["ticks"] += 1
        order = list(self.ids)
        self.rng.shuffle(order)
        skew = self.tick_skew
        for i in order:
            node = self.nodes[i]
            if node.core is not None:
                if skew and i == 1 and self.rng.random() < skew:
                    continue  # node 1's clock runs slow (lease and timeout edge cases)
                node.core.tick()
                if self.p.defer_commit_notice and node.core.commit_unsent() and self.rng.random() < 0.5:
                    node.core.send_commit()  # the actor's commit_notice_ms timer, some ticks
                self._process(node)

    def _chaos(self) -> None:
        p = self.p
        rng = self.rng
        # A node can crash while processing any action, so pick afresh each time.
        if rng.random() < p.p_propose and (node := self._pick_live()):
            batch = []
            for _ in range(rng.randint(1, 3)):
                self.proposal_counter += 1
                batch.append(b"n%d-p%d" % (node.id, self.proposal_counter))
            if not node.core.propose(batch):
                self._proposals_dropped(node, batch)
            self._process(node)
        if rng.random() < p.p_read and (node := self._pick_live()):
            # Per-node numbering: contexts collide across nodes, as the actor's do.
            self.read_counters[node.id] += 1
            context = b"r%d" % self.read_counters[node.id]
            required = len(self.committed_terms) - 1
            if node.core.read_index(context):
                self.reads[(node.id, context)] = required
            self._process(node)
        if p.p_conf_change and rng.random() < p.p_conf_change:
            self._propose_conf_change()
        if rng.random() < p.p_transfer and (node := self._pick_live()):
            node.core.transfer_leadership(rng.choice(self.ids))
            self._process(node)
        if rng.random() < p.p_compact and (node := self._pick_live()):
            core = node.core
            first = core.first_index
            if core.applied_index >= first:
                index = rng.randint(first, core.applied_index)
                meta = core.compact(index)
                d = node.disk
                assert meta is not None and meta.index == index
                del d.entries[: index - d.snap_index]
                d.snapshot = meta
                self.trace.append((self.now, node.id, "compact", index))
            self._process(node)
        if p.p_crash_leader and rng.random() < p.p_crash_leader:
            # Leader failures are what exercise the hard rules (§5.4), and a uniform
            # crash rate rarely hits a leader at the wrong moment: aim for it.
            for node in self.nodes.values():
                if node.core is not None and node.core.role == LEADER:
                    self._crash(node)
        for node in self.nodes.values():
            if node.core is not None:
                if rng.random() < p.p_crash:
                    self._crash(node)
            elif rng.random() < p.p_restart and not node.retired:
                self._start(node)
        if p.p_isolate_leader and rng.random() < p.p_isolate_leader:
            for node in self.nodes.values():
                if node.core is not None and node.core.role == LEADER:
                    for i in self.ids:
                        self.group[i] = 1 if i == node.id else 0
                    self.trace.append((self.now, node.id, "isolate leader", None))
        elif rng.random() < p.p_partition:
            leader = next((n.id for n in self.nodes.values() if n.core is not None and n.core.role == LEADER), 0)
            if leader and rng.random() < 0.5:
                # The leader keeps a minority: the classic stale-leader setting for
                # ReadIndex and for two leaders (of different terms) at once.
                others = [i for i in self.ids if i != leader]
                rng.shuffle(others)
                keep = set(others[: (self.p.n - 1) // 2 - rng.randint(0, (self.p.n - 1) // 2)])
                for i in self.ids:
                    self.group[i] = 1 if i == leader or i in keep else 0
            else:
                for i in self.ids:
                    self.group[i] = rng.randint(0, 1)
            self.trace.append((self.now, 0, "partition", dict(self.group)))
        elif rng.random() < p.p_heal:
            self.group = {i: 0 for i in self.ids}

    def _propose_conf_change(self) -> None:
        """A random single-server change, mostly at the leader, chosen from the
        proposer's own view of the configuration (so some are refused: pending,
        not ready, stale view)."""
        rng = self.rng
        leaders = [n for n in self.nodes.values() if n.core is not None and n.core.role == LEADER]
        node = rng.choice(leaders) if leaders and rng.random() < 0.8 else self._pick_live()
        if node is None:
            return
        conf = node.core.conf_state
        outsiders = [i for i in self.ids if i not in conf.voters and i not in conf.learners]
        options = []
        if outsiders:
            options.append(ConfChange(CONF_ADD_LEARNER, rng.choice(outsiders)))
            if rng.random() < 0.2:
                options.append(ConfChange(CONF_ADD_VOTER, rng.choice(outsiders)))
        if conf.learners:
            options.append(ConfChange(CONF_PROMOTE, rng.choice(conf.learners)))
            options.append(ConfChange(CONF_REMOVE, rng.choice(conf.learners)))
        if len(conf.voters) > 1:
            options.append(ConfChange(CONF_REMOVE, rng.choice(conf.voters)))
        if not options:
            return
        change = rng.choice(options)
        self.trace.append((self.now, node.id, "propose conf change", change))
        node.core.propose_conf_change(change)
        self._process(node)

    def _retire_removed(self) -> None:
        """Stop the nodes that are removed for good: outside the latest committed
        configuration and outside the latest configuration in the log of every live
        member of it (a pending addition needs the newcomer's answers to commit).
        Start again one that a change brought (back) in."""
        committed = {*self.committed_conf.voters, *self.committed_conf.learners}
        members = set(committed)
        for i in committed:
            core = self.nodes[i].core
            if core is not None:
                members.update((*core.conf_state.voters, *core.conf_state.learners))
        for node in self.nodes.values():
            if node.id not in members and not node.retired:
                if node.core is not None:
                    self._crash(node)
                node.retired = True
                self.trace.append((self.now, node.id, "retired", None))
            elif node.id in members and node.retired:
                node.retired = False
                self._start(node)

    def _pick_live(self) -> Node | None:
        live = [n for n in self.nodes.values() if n.core is not None]
        return self.rng.choice(live) if live else None

    def _converged(self) -> bool:
        leader = None
        for node in self.nodes.values():
            if node.core is not None and node.core.role == LEADER:
                if leader is None or node.core.term > leader.core.term:
                    leader = node
        if leader is None:
            return False
        core = leader.core
        if core.commit_index != core.last_index or core.term_at(core.commit_index) != core.term:
            return False
        conf = core.conf_state
        for node in self.nodes.values():
            if node.id not in conf.voters and node.id not in conf.learners:
                continue  # not a member (never added, or removed): nothing to converge
            c = node.core
            if c is None or c.term != core.term or c.leader_id != leader.id:
                return False
            if c.applied_index != core.commit_index or c.has_ready():
                return False
        # Only now is this the cluster's leader (a deposed leader of an older term may
        # linger, legitimately behind); it must hold everything ever committed.
        if core.commit_index < len(self.committed_terms) - 1:
            raise InvariantViolation(self._describe("converged leader's commit is behind a committed index"))
        return True

    # ------------------------------------------------------------------
    # Node lifecycle
    # ------------------------------------------------------------------

    def _start(self, node: Node) -> None:
        d = node.disk
        node.incarnation += 1
        node.snap_payloads = {}
        persisted = PersistedState(
            hard_state=d.hard_state, snapshot=d.snapshot, entries=tuple(d.entries), applied=d.applied
        )
        node.core = RaftCore(self.configs[node.id], persisted, random.Random(self.rng.getrandbits(64)))
        self.trace.append((self.now, node.id, "start", node.incarnation))
        self._process(node)

    def _crash(self, node: Node) -> None:
        node.core = None
        node.snap_payloads = {}
        node.incarnation += 1
        self.stats["crashes"] += 1
        self.trace.append((self.now, node.id, "crash", node.incarnation))
        if self.p.tell_leader_lost:
            for other in self.nodes.values():  # their actors see the connection to it drop
                if other.core is not None and other.core.leader_id == node.id:
                    other.core.leader_unreachable(1, 5)

    # ------------------------------------------------------------------
    # The actor's part
    # ------------------------------------------------------------------

    def _process(self, node: Node) -> None:
        rng = self.rng
        p_crash = self.crash_in_ready
        while node.core is not None and node.core.has_ready():
            core = node.core
            rd = core.ready()
            self.stats["readies"] += 1
            self._check_dropped(node, rd)
            if self.p.p_interleave and rng.random() < self.p.p_interleave:
                # An asynchronous actor keeps stepping messages while the Ready is
                # being persisted; their effects belong to the next Ready.
                self._interleave(node)
            if p_crash and rng.random() < p_crash:
                self.trace.append((self.now, node.id, "crash before persist", None))
                self._crash(node)
                return
            self._persist(node, rd)
            if p_crash and rng.random() < p_crash:
                self.trace.append((self.now, node.id, "crash after persist", None))
                self._crash(node)
                return
            for m in rd.messages:
                self._send(node, m)
            self._apply(node, rd)
            core.advance(rd)
            self._check_node(node, rd)
        core = node.core
        if core is not None:
            # Quiescent: everything the core believes it has must be what is on disk.
            d = node.disk
            last = d.snap_index + len(d.entries)
            if core.last_index != last or core.term_at(last) != d.term(last):
                raise InvariantViolation(
                    self._describe(
                        f"node {node.id} memory log ends at ({core.last_index}, {core.term_at(core.last_index)}) "
                        f"but disk at ({last}, {d.term(last)})"
                    )
                )
            # Thesis §4.1: the configuration in use is the latest one in the log.
            if self.p.p_conf_change and core.conf_state != self._conf_before(d, last + 1, node.id)[1]:
                raise InvariantViolation(
                    self._describe(f"node {node.id} uses {core.conf_state}, its log says {self._conf_before(d, last + 1, node.id)[1]}")
                )

    def _check_dropped(self, node: Node, rd: Ready) -> None:
        for e in rd.entries:
            if e.data:
                if e.data in self.dropped:
                    raise InvariantViolation(self._describe(f"node {node.id} appends {e}, reported dropped earlier"))
                self.appended.add(e.data)
        if rd.dropped_proposals:
            self._proposals_dropped(node, rd.dropped_proposals)

    def _proposals_dropped(self, node: Node, batch) -> None:
        for data in batch:
            if data in self.appended:
                raise InvariantViolation(self._describe(f"node {node.id} told {data!r} was dropped, but it was appended"))
            self.dropped.add(data)
        self.stats["dropped"] += len(batch)

    def _interleave(self, node: Node) -> None:
        candidates = [
            entry
            for entry in self.queue
            if entry[3][0] == _MSG
            and entry[3][3].to == node.id
            and entry[3][3].type != MSG_SNAP
            and entry[2] not in self.consumed
        ]
        if not candidates:
            return
        when, _, seq, (_, src, _, m, _) = self.rng.choice(candidates)
        self.consumed.add(seq)
        if self.group[src] == self.group[node.id]:
            self.trace.append((self.now, node.id, "recv (during persist)", m))
            node.core.step(m)

    def _persist(self, node: Node, rd: Ready) -> None:
        d = node.disk
        if rd.snapshot is not None:
            meta = rd.snapshot
            payload = node.snap_payloads.get((meta.index, meta.term))
            if payload is None:
                raise InvariantViolation(self._describe(f"node {node.id} told to install unknown snapshot {meta}"))
            self._check_applied_prefix(node, payload)
            d.snapshot = meta
            d.entries = []
            d.sm = list(payload)
            d.applied = meta.index
            self.stats["snapshots"] += 1
            self.trace.append((self.now, node.id, "install snapshot", meta))
        if rd.entries:
            first = rd.entries[0].index
            base = d.snap_index
            if not base < first <= base + len(d.entries) + 1:
                raise InvariantViolation(
                    self._describe(f"node {node.id} Ready entries start at {first}, disk holds ({base}, {base + len(d.entries)}]")
                )
            del d.entries[first - base - 1 :]
            prev_term = d.term(first - 1)
            new_conf_entries = []
            for e in rd.entries:
                if e.index != first or e.term < prev_term:
                    raise InvariantViolation(self._describe(f"node {node.id} Ready entries malformed at {e}"))
                key = (e.index, e.term)
                seen = self.entry_ids.get(key)
                if seen is None:
                    self.entry_ids[key] = (e.data, prev_term)
                    if e.kind == ENTRY_CONF_CHANGE:
                        # First written anywhere: by the leader that appended it.
                        new_conf_entries.append((e, self._conf_before(d, e.index, node.id)))
                        self.conf_entries[key] = decode_conf_change(e.data)[1]
                elif seen != (e.data, prev_term):
                    raise InvariantViolation(
                        self._describe(f"log matching: node {node.id} stores {e} after term {prev_term}, elsewhere {seen}")
                    )
                d.entries.append(e)
                prev_term = e.term
                first += 1
        if rd.hard_state is not None:
            old = d.hard_state
            hs = rd.hard_state
            if hs.term < old.term or (hs.term == old.term and old.vote not in (0, hs.vote)):
                raise InvariantViolation(self._describe(f"node {node.id} hard state {old} -> {hs}"))
            if hs.commit < old.commit:
                raise InvariantViolation(self._describe(f"node {node.id} commit regressed {old} -> {hs}"))
            d.hard_state = hs
        if rd.hard_state is not None or rd.snapshot is not None:
            self._record_commit(node, max(d.hard_state.commit, d.snap_index))
        if rd.entries:
            for e, (prev_index, prev_conf) in new_conf_entries:
                self._check_conf_change(node, e, prev_index, prev_conf)

    def _conf_before(self, d: Disk, index: int, node_id: int) -> tuple[int, ConfState]:
        """(index, configuration) of the last conf-change entry before `index` in a
        node's stored log; (0, snapshot's or bootstrap configuration) if none."""
        for e in reversed(d.entries[: index - d.snap_index - 1]):
            if e.kind == ENTRY_CONF_CHANGE:
                return e.index, self.conf_entries[(e.index, e.term)]
        if d.snapshot is not None:
            return 0, ConfState(d.snapshot.voters, d.snapshot.learners)
        cfg = self.configs[node_id]
        return 0, ConfState(cfg.voters, cfg.learners)

    def _check_conf_change(self, node: Node, e: Entry, prev_index: int, prev_conf: ConfState) -> None:
        change, conf = decode_conf_change(e.data)
        self.stats["conf_changes"] += 1
        self.trace.append((self.now, node.id, "conf change appended", (e.index, e.term, change, conf)))
        committed = len(self.committed_terms) - 1
        if prev_index > committed:
            raise InvariantViolation(
                self._describe(f"two pending changes: node {node.id} appends {change} at {e.index} while {prev_index} is uncommitted")
            )
        if not is_single_server_change(prev_conf, conf):
            raise InvariantViolation(
                self._describe(f"node {node.id} appends {conf} at {e.index} after {prev_conf}: not a single-server change")
            )

    def _record_commit(self, node: Node, commit: int) -> None:
        d = node.disk
        terms = self.committed_terms
        known = len(terms) - 1
        if commit <= known:
            t = d.term(commit)
            if t is not None and t != terms[commit]:
                raise InvariantViolation(
                    self._describe(f"node {node.id} committed index {commit} term {t}, but term {terms[commit]} was committed")
                )
            return
        t = d.term(known)
        if t is not None and t != terms[known]:
            raise InvariantViolation(
                self._describe(f"node {node.id} has term {t} at committed index {known}, expected {terms[known]}")
            )
        node_term = d.hard_state.term
        for i in range(known + 1, commit + 1):
            t = d.term(i)
            if t is None:
                raise InvariantViolation(self._describe(f"node {node.id} commits {i} which is not on its disk"))
            terms.append(t)
            self.commit_terms.append(node_term)
            conf = self.conf_entries.get((i, t))
            if conf is not None:
                self.committed_conf = conf

    def _check_applied_prefix(self, node: Node, payload: tuple[bytes, ...]) -> None:
        record = self.applied_data
        if len(payload) > len(record):
            raise InvariantViolation(self._describe(f"snapshot for node {node.id} covers unapplied indexes"))
        for i, data in enumerate(payload):
            if record[i] != data:
                raise InvariantViolation(self._describe(f"snapshot for node {node.id} differs at index {i + 1}"))

    def _apply(self, node: Node, rd: Ready) -> None:
        d = node.disk
        record = self.applied_data
        for e in rd.committed_entries:
            if e.index != d.applied + 1:
                raise InvariantViolation(self._describe(f"node {node.id} applies {e.index} after {d.applied}"))
            if e.index > d.hard_state.commit or d.term(e.index) != e.term:
                raise InvariantViolation(self._describe(f"node {node.id} applies {e} which is not durable/committed"))
            if e.index <= len(record):
                if record[e.index - 1] != e.data:
                    raise InvariantViolation(
                        self._describe(f"state machine safety: node {node.id} applies {e.data!r} at {e.index}, others {record[e.index - 1]!r}")
                    )
            elif e.index == len(record) + 1:
                record.append(e.data)
            else:
                raise InvariantViolation(self._describe(f"node {node.id} applies {e.index} beyond the global record"))
            d.sm.append(e.data)
            d.applied = e.index
            self.stats["applied"] += 1
        known = len(self.committed_terms) - 1
        for rs in rd.read_states:
            required = self.reads.get((node.id, rs.context))
            if required is None:
                raise InvariantViolation(self._describe(f"node {node.id} got a ReadState for unknown context {rs}"))
            if rs.index < required or rs.index > known:
                raise InvariantViolation(
                    self._describe(f"read safety: node {node.id} {rs} but index {required} was committed before the request (known committed {known})")
                )
            self.stats["reads"] += 1

    def _check_node(self, node: Node, rd: Ready) -> None:
        core = node.core
        if core.role != LEADER:
            return
        term = core.term
        leader = self.leaders.get(term)
        if leader == node.id:
            return
        if leader is not None:
            raise InvariantViolation(self._describe(f"election safety: nodes {leader} and {node.id} both lead term {term}"))
        self.leaders[term] = node.id
        self.stats["elections"] += 1
        self.trace.append((self.now, node.id, "leader", term))
        # Leader Completeness: find the last index committed in a term < this one.
        i = len(self.commit_terms) - 1
        while i > 0 and self.commit_terms[i] >= term:
            i -= 1
        if i == 0:
            return
        snap = core.snapshot
        if snap is not None and snap.index >= i:
            return
        if core.term_at(i) != self.committed_terms[i]:
            raise InvariantViolation(
                self._describe(
                    f"leader completeness: leader {node.id} of term {term} has term {core.term_at(i)} at committed index {i}, "
                    f"expected {self.committed_terms[i]}"
                )
            )

    # ------------------------------------------------------------------
    # Network
    # ------------------------------------------------------------------

    def _send(self, node: Node, m: RaftMessage) -> None:
        rng = self.rng
        self.stats["messages"] += 1
        payload = None
        if m.type == MSG_SNAP:
            meta = m.snapshot
            payload = tuple(node.disk.sm[: meta.index])
            if len(payload) != meta.index:
                raise InvariantViolation(self._describe(f"node {node.id} sends snapshot {meta} beyond its applied state"))
        copies = 1
        if self.drop and rng.random() < self.drop:
            copies = 0
        elif self.duplicate and rng.random() < self.duplicate:
            copies = 1 if m.type == MSG_PROP else 2
        if copies == 0 and m.type == MSG_SNAP:
            self._push(self.now + rng.randint(0, self.max_delay), (_REPORT_SNAPSHOT, node.id, node.incarnation, m.to, False))
        for _ in range(copies):
            delay = rng.randint(0, self.max_delay)
            if self.long_delay and rng.random() < self.long_delay:
                delay += rng.randint(1, 4 * self.p.election_ticks)  # a very stale message
            self._push(self.now + delay, (_MSG, node.id, node.incarnation, m, payload))

    def _push(self, when: int, item: tuple) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (when, self.rng.random(), self.seq, item))

    def _deliver_due(self) -> None:
        queue = self.queue
        budget = 100_000
        while queue and queue[0][0] <= self.now:
            budget -= 1
            assert budget > 0, "message storm"
            _, _, seq, item = heapq.heappop(queue)
            if seq in self.consumed:
                self.consumed.discard(seq)
                continue
            if item[0] == _REPORT_SNAPSHOT:
                _, src, incarnation, peer, ok = item
                node = self.nodes[src]
                if node.core is not None and node.incarnation == incarnation:
                    node.core.report_snapshot(peer, ok)
                    self._process(node)
                continue
            _, src, incarnation, m, payload = item
            dst = self.nodes[m.to]
            delivered = dst.core is not None and self.group[src] == self.group[m.to]
            if delivered:
                self.trace.append((self.now, m.to, "recv", m))
                if m.type == MSG_SNAP:
                    dst.snap_payloads[(m.snapshot.index, m.snapshot.term)] = payload
                dst.core.step(m)
                self._process(dst)
            if m.type == MSG_SNAP:
                sender = self.nodes[src]
                if sender.core is not None and sender.incarnation == incarnation:
                    sender.core.report_snapshot(m.to, delivered)
                    self._process(sender)

    # ------------------------------------------------------------------
    # Reporting
    # ------------------------------------------------------------------

    def _describe(self, what: str) -> str:
        lines = [
            f"seed {self.seed}: {what}",
            f"replay: {REPLAY_COMMAND.format(seed=self.seed)}",
            f"params: {self.p}",
            f"now={self.now}",
        ]
        for node in self.nodes.values():
            if node.core is None:
                lines.append(f"  node {node.id}: down; disk hs={node.disk.hard_state} applied={node.disk.applied}")
            else:
                s = node.core.status()
                lines.append(
                    f"  node {node.id}: {s['role']} term={s['term']} lead={s['leader_id']} commit={s['commit']} "
                    f"applied={s['applied']} last={s['last_index']} progress={s['progress']}"
                )
        lines.append("recent trace:")
        for now, nid, kind, detail in list(self.trace)[-60:]:
            if isinstance(detail, RaftMessage):
                detail = _format_message(detail)
            lines.append(f"  t={now} n{nid} {kind} {detail}")
        return "\n".join(lines)


def _format_message(m: RaftMessage) -> str:
    text = f"{MESSAGE_TYPE_NAMES.get(m.type, m.type)} {m.sender}->{m.to} term={m.term}"
    if m.index or m.log_term:
        text += f" index={m.index} log_term={m.log_term}"
    if m.entries:
        text += f" entries={[(e.index, e.term) for e in m.entries]}"
    if m.commit:
        text += f" commit={m.commit}"
    if m.reject:
        text += f" reject hint={m.reject_hint}"
    if m.context:
        text += f" ctx={m.context!r}"
    if m.snapshot is not None:
        text += f" snap=({m.snapshot.index},{m.snapshot.term})"
    return text


def run_schedule(seed: int) -> dict:
    return Simulation(seed).run()


def main(argv: list[str]) -> int:
    """python -m tests.raft.sim START COUNT: run seeds START..START+COUNT-1."""
    start = int(argv[0]) if argv else 0
    count = int(argv[1]) if len(argv) > 1 else 1000
    began = time.monotonic()
    failures = 0
    for seed in range(start, start + count):
        try:
            run_schedule(seed)
        except InvariantViolation as exc:
            failures += 1
            print(f"FAIL seed={seed}\n{exc}\n", flush=True)
        if (seed - start + 1) % 1000 == 0:
            print(f"progress {seed - start + 1}/{count} failures={failures} elapsed={time.monotonic() - began:.0f}s", flush=True)
    print(f"done start={start} count={count} failures={failures} elapsed={time.monotonic() - began:.1f}s", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
