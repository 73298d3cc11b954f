"""The Raft consensus algorithm as a pure, deterministic state machine.

Theory of operation
-------------------
RaftCore is the algorithm of the Raft paper (§5) and of Ongaro's thesis (§3.10
leadership transfer, §4.2.3 disruptive servers / check-quorum, §6.4 ReadIndex, §9.6
pre-vote), shaped after etcd-io/raft. It owns no network, disk or clock:

* Time is ``tick()``: the actor calls it at a fixed period. Elections fire after a
  randomized timeout in [election_ticks, 2*election_ticks) ticks (§5.2); a leader
  heartbeats every heartbeat_ticks ticks.
* Input is ``step(message)`` (from peers) and the local requests ``propose``,
  ``read_index``, ``propose_conf_change``, ``transfer_leadership``, ``campaign``, ``campaign_soon``, ``compact``,
  ``report_snapshot``, ``report_unreachable``.
* Output is collected and handed out as one ``Ready`` at a time. The actor loop is::

      while core.has_ready():
          rd = core.ready()
          # 1. if rd.snapshot: install the state-machine snapshot the leader streamed,
          #    and drop the whole stored log (the log restarts after snapshot.index)
          # 2. append rd.entries (an entry at index i replaces stored entries >= i)
          # 3. write rd.hard_state if set
          #    -> 1..3 durable (fsync) before going on: §5.1 "persist before responding"
          # 4. send rd.messages
          # 5. apply rd.committed_entries in order (data == b"" is a no-op); hand out
          #    rd.read_states (safe to serve once applied >= index)
          # 6. log rd.events
          core.advance(rd)

  Every message is emitted in the same Ready as (or a later Ready than) the durable
  state it depends on, so "persist, then send" by the actor is all the ordering
  needed. ``ready()`` must be followed by ``advance()`` before the next ``ready()``;
  ``has_ready()`` is False while a Ready is outstanding. ``step``/``tick``/
  ``propose`` may be called between ``ready()`` and ``advance()``.
* Committed entries are handed out only when they are durable locally (earlier or
  the same Ready). The leader counts its own log towards the commit quorum only
  up to what ``advance()`` confirmed persisted.
* Randomness comes only from the injected ``random.Random``; with the same inputs
  and seed a core behaves identically. The simulator in tests/raft depends on this.

Roles and dispatch
------------------
``step`` first validates the message (wrong recipient, unknown sender or type,
impossible fields -> a "rejected" event, never an exception), then applies the
term rules shared by all roles (§5.1: a higher term turns us into a follower,
a lower term is stale), handles vote requests (role independent), and finally
dispatches to ``_step_leader`` / ``_step_candidate`` / ``_step_follower``. Each of
these lists the message kinds it expects; anything else is an explicit "rejected"
event. Programmer errors (calling advance with a foreign Ready, compacting past
applied, ...) are assertions.

Pre-vote (thesis §9.6): before bumping its term a node asks "would you vote for me
at term+1?"; nobody changes state for that question, so a partitioned node that
keeps timing out cannot inflate its term and depose a healthy leader on return.
Check-quorum (thesis §6.2): a leader that has not heard from a quorum within an
election timeout steps down; followers that heard from a leader within the election
timeout ignore (pre-)vote requests (thesis §4.2.3), unless the election is a
leadership transfer.

ReadIndex (thesis §6.4): the leader records commit_index for the read, confirms it is
still leader by a heartbeat round (the heartbeats carry a round id of the leader's,
see read_only.py), then emits ReadState(index, context) on the requesting node. A new leader first waits until an entry of its own term
(the election no-op) is committed, because before that its commit index may lag
behind entries committed by its predecessor.

Commit notices: etcd's leader tells every follower of a new commit index at
once (an empty MsgApp). With ``defer_commit_notice`` only the followers that wait
on it are told at once (one whose forwarded proposal committed, one that asked
for a read index, every one for a configuration change); the others learn it
with the next append or heartbeat, or when the actor calls ``send_commit``
(``commit_unsent`` says one is due). Safety does not depend on when a follower
learns the commit index, only liveness and staleness of its state machine.

Dropped proposals: a proposal is never queued, and forwarded at most once (to the
leader we know); whoever holds it then either appends it (as leader) or drops it.
``propose`` returns False when it drops a local one (no leader known, transfer in
progress, uncommitted limit: etcd's ErrProposalDropped). A MSG_PROP forwarded by
another member and dropped here (we are not the leader, know none, or refuse as
leader for those same reasons) is answered with a MSG_PROP_RESP (reject) echoing
its entries, sent at the moment of dropping and only then; on the forwarding
member they come out in ``Ready.dropped_proposals``. So a proposal reported
dropped never entered any log (nor will: nobody holds it any more), and its client
may safely retry it. This relies on the transport never duplicating a MSG_PROP
(ZeroMQ over TCP does not). Nothing is reported for a forwarded proposal whose fate
is unknown: lost on the way, or appended by a leader that then lost its leadership
(it may still commit).

Membership (thesis §4.1-§4.2, membership.py): configuration changes go through the
log one server at a time (``propose_conf_change``). A change takes effect on a node
when its entry is *appended* to that node's log, committed or not (thesis §4.1;
etcd applies it later, when the entry is applied, which needs its own care about
which configuration a leader counts with): the configuration is always a function
of the log, so a conflicting append that drops the entry drops the change, a
snapshot carries the configuration at its index, and a restart rebuilds it from the
stored log. A leader accepts a change only when the previous one is committed and
an entry of its own term is committed. Learners get the log and snapshots but never
count in a quorum (commit, check-quorum, ReadIndex, elections) and never campaign; a
promoted learner counts from the promotion entry on. A leader that removes itself
leads without counting itself until the removal commits, then steps down (§4.2.2).
Vote requests and leader messages are handled whatever the sender's membership
(§4.2.1); pre-vote and check-quorum keep a removed server from disrupting (§4.2.3).

Events: ``Ready.events`` holds ``(name, fields)`` tuples for the actor to log, e.g.
("became_leader", {"term": 5}), ("rejected", {"reason": ..., "type": "MSG_VOTE",
"from": 2, "term": 4}), ("dropped_proposal", {"reason": "no_leader", "count": 3}).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from actors.raft.log import RaftLog
from actors.raft.membership import ConfigHistory, apply_change, change_problem, learner_in_sync
from actors.raft.progress import PROBE, REPLICATE, SNAPSHOT, STATE_NAMES, Progress
from actors.raft.read_only import ReadOnly, ReadRequest
from transport.raft_messages import (
    CAMPAIGN_TRANSFER,
    CONF_CHANGE_NAMES,
    ENTRY_CONF_CHANGE,
    ENTRY_KINDS,
    ENTRY_NORMAL,
    MESSAGE_TYPE_NAMES,
    MSG_APP,
    MSG_APP_RESP,
    MSG_HEARTBEAT,
    MSG_HEARTBEAT_RESP,
    MSG_PRE_VOTE,
    MSG_PRE_VOTE_RESP,
    MSG_PROP,
    MSG_PROP_RESP,
    MSG_READ_INDEX,
    MSG_READ_INDEX_RESP,
    MSG_SNAP,
    MSG_TIMEOUT_NOW,
    MSG_TRANSFER_LEADER,
    MSG_VOTE,
    MSG_VOTE_RESP,
    ConfChange,
    ConfState,
    Entry,
    HardState,
    RaftMessage,
    SnapshotMeta,
    decode_conf_change,
    encode_conf_change,
    quicker_init,
)

if TYPE_CHECKING:  # the core only ever calls methods on the injected instance
    import random

FOLLOWER = "follower"
PRE_CANDIDATE = "pre_candidate"
CANDIDATE = "candidate"
LEADER = "leader"

# Thesis §4.2.1: "servers process incoming RPC requests without consulting their
# current configurations": a leader we do not know yet (added by an entry we lack)
# must still reach us, and so must its vote requests. Answers and forwarded local
# requests come only from members.
_FROM_ANY_SERVER = frozenset((MSG_APP, MSG_HEARTBEAT, MSG_SNAP, MSG_VOTE, MSG_PRE_VOTE, MSG_TIMEOUT_NOW))

_VOTE_PENDING = 0
_VOTE_WON = 1
_VOTE_LOST = 2


@dataclass(frozen=True, slots=True)
class RaftConfig:
    id: int
    # The bootstrap configuration: the one a log starting at index 1 begins with. A
    # snapshot's configuration, and every conf-change entry after it, override it
    # (membership.py), so a static cluster's YAML and a restarted member agree.
    voters: tuple[int, ...]
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    max_entries_per_message: int = 256
    max_bytes_per_message: int = 1 << 20
    max_inflight_messages: int = 256
    max_uncommitted_bytes: int = 64 << 20
    pre_vote: bool = True
    check_quorum: bool = True
    learners: tuple[int, ...] = ()
    # When an entry commits, etcd's leader tells every follower at once (an
    # empty MsgApp carrying the new commit index). With this set, only the
    # followers that wait on it are told at once: one whose forwarded proposal
    # or read index it is, and all of them for a configuration change. The
    # others learn it from the next append or heartbeat, or from send_commit(),
    # which the actor calls a few milliseconds after commit_unsent() became
    # true. Under a steady stream of writes each follower then takes one message
    # and answers once per write instead of twice.
    defer_commit_notice: bool = False

    def __post_init__(self) -> None:
        assert self.id > 0, "node id 0 means 'nobody'"
        assert self.voters and all(v > 0 for v in self.voters + self.learners), (self.voters, self.learners)
        members = self.voters + self.learners
        assert len(set(members)) == len(members), (self.voters, self.learners)
        # A member joining an existing cluster may start as a learner of it.
        assert self.id in members, (self.id, self.voters, self.learners)
        assert self.heartbeat_ticks >= 1
        # A follower must see several heartbeats per election timeout, or ordinary
        # jitter would trigger elections.
        assert self.election_ticks > 2 * self.heartbeat_ticks, (self.election_ticks, self.heartbeat_ticks)
        assert self.max_entries_per_message >= 1
        assert self.max_bytes_per_message >= 1
        assert self.max_inflight_messages >= 1
        assert self.max_uncommitted_bytes >= 1


@dataclass(frozen=True, slots=True)
class PersistedState:
    hard_state: HardState
    snapshot: SnapshotMeta | None
    entries: tuple[Entry, ...]  # entries after snapshot.index, contiguous
    applied: int  # index the state machine has applied (>= snapshot index)


@quicker_init  # built every turn (transport/raft_messages.py: quicker_init)
@dataclass(frozen=True, slots=True)
class ReadState:
    index: int
    context: bytes


@quicker_init  # built every turn (transport/raft_messages.py: quicker_init)
@dataclass(frozen=True, slots=True)
class SoftState:
    leader_id: int
    role: str


@quicker_init  # built every turn (transport/raft_messages.py: quicker_init)
@dataclass(frozen=True, slots=True)
class Ready:
    soft_state: SoftState | None  # set when leader or role changed since the last Ready
    hard_state: HardState | None  # set when changed; durable before messages are sent
    entries: tuple[Entry, ...]  # append durably; entry i replaces stored entries >= i
    snapshot: SnapshotMeta | None  # from the leader: install it, drop the stored log
    committed_entries: tuple[Entry, ...]  # apply in order; all durable by this Ready
    messages: tuple[RaftMessage, ...]  # send only after the above is durable
    read_states: tuple[ReadState, ...]  # ReadIndex results: serve once applied >= index
    events: tuple[tuple, ...]  # (name, fields) to log
    # Data of proposals this node forwarded that the recipient dropped (MSG_PROP_RESP):
    # in no log, safe for their clients to retry.
    dropped_proposals: tuple[bytes, ...] = ()


class RaftCore:
    def __init__(self, config: RaftConfig, persisted: PersistedState, rng: random.Random) -> None:
        self._cfg = config
        self._id = config.id
        self._rng = rng
        hs = persisted.hard_state
        snap = persisted.snapshot
        snap_index = snap.index if snap is not None else 0
        entries = persisted.entries
        for offset, e in enumerate(entries):
            if e.index != snap_index + 1 + offset:
                raise ValueError(f"persisted entries not contiguous after snapshot {snap_index}: {e.index}")
        last_index = snap_index + len(entries)
        if not snap_index <= persisted.applied <= last_index:
            raise ValueError(f"applied {persisted.applied} outside [{snap_index}, {last_index}]")
        if hs.commit > last_index:
            raise ValueError(f"hard state commit {hs.commit} beyond last index {last_index}")
        # (The vote may name a node that has left the configuration since: no check.)
        # Applied (and snapshotted) entries are committed even if the commit index
        # on disk lags (it is written with, not before, the entries it covers).
        committed = max(hs.commit, snap_index, persisted.applied)
        self._log = RaftLog(snap, entries, committed, persisted.applied)
        # Thesis §4.1: the configuration is the latest one in the log, committed or not.
        if snap is not None and snap.voters:
            base = ConfState(tuple(snap.voters), tuple(snap.learners))
        else:
            base = ConfState(config.voters, config.learners)
        self._conf_history = ConfigHistory(base)
        for e in entries:
            if e.kind == ENTRY_CONF_CHANGE:
                self._conf_history.add(e.index, e.term, self._decode_conf_entry(e))
        self._conf = self._conf_history.latest()
        self._voters = self._conf.voters
        self._quorum = len(self._voters) // 2 + 1

        self._term = hs.term
        self._vote = hs.vote
        self._lead = 0
        self._role = FOLLOWER
        self._progress: dict[int, Progress] = {}
        self._votes: dict[int, bool] = {}
        self._msgs: list[RaftMessage] = []
        self._read_states: list[ReadState] = []
        self._events: list[tuple] = []
        self._dropped_proposals: list[bytes] = []
        self._now = 0  # ticks since construction, for last_heard
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_election_timeout = config.election_ticks
        self._lead_transferee = 0
        self._transfer_elapsed = 0
        self._read_only = ReadOnly()
        self._reads_awaiting_commit: list[tuple[int, bytes]] = []
        self._uncommitted_size = 0
        self._outstanding: Ready | None = None
        self.become_follower(self._term, 0)
        # The first Ready reports only what changed from the loaded state.
        self._prev_soft = SoftState(self._lead, self._role)
        self._prev_hard = HardState(self._term, self._vote, self._log.committed)

    # ------------------------------------------------------------------
    # Read-only properties
    # ------------------------------------------------------------------

    @property
    def id(self) -> int:
        return self._id

    @property
    def term(self) -> int:
        return self._term

    @property
    def role(self) -> str:
        return self._role

    @property
    def leader_id(self) -> int:
        return self._lead

    @property
    def commit_index(self) -> int:
        return self._log.committed

    @property
    def applied_index(self) -> int:
        return self._log.applied

    @property
    def last_index(self) -> int:
        return self._log.last_index

    @property
    def first_index(self) -> int:
        return self._log.first_index

    @property
    def voters(self) -> tuple[int, ...]:
        return self._voters

    @property
    def learners(self) -> tuple[int, ...]:
        return self._conf.learners

    @property
    def conf_state(self) -> ConfState:
        """The configuration in use: the latest in the log, committed or not (§4.1)."""
        return self._conf

    @property
    def pending_conf_index(self) -> int:
        """Index of the last conf-change entry in the log (0 if none after the
        snapshot); a change is pending while this is above commit_index."""
        return self._conf_history.latest_index()

    def conf_state_at(self, index: int) -> ConfState:
        """The configuration after entry `index` (>= the snapshot index)."""
        assert index >= self._log.snap_index, (index, self._log.snap_index)
        return self._conf_history.at(index)

    def match_index(self, peer: int) -> int | None:
        """Leader only: the highest index known durable on `peer` (§5.3 matchIndex);
        None on a non-leader or for a non-member."""
        if self._role != LEADER or peer not in self._progress:
            return None
        return self._progress[peer].match

    def learner_ready(self, peer: int) -> bool:
        """Leader only: `peer` is a learner whose log is within 90% of ours, etcd's
        condition for promoting it (membership.learner_in_sync)."""
        if self._role != LEADER or peer not in self._conf.learners:
            return False
        return learner_in_sync(self._progress[peer].match, self._progress[self._id].match)

    def catch_up_index(self) -> int | None:
        """Leader only: the lowest index a recently active follower still needs the
        log to hold the term of, with every entry after it: its match (replicating),
        its probe's previous index (probing), or the snapshot it is installing.
        Compacting through no more than this lets a follower that just installed a
        snapshot go on from the log; compacting past it, while writes keep coming,
        sends that follower snapshot after snapshot (issue 15's restarted voter).
        Indexes already compacted away do not count; None when no follower needs
        anything the log still holds, or on a non-leader."""
        if self._role != LEADER:
            return None
        active = set(self.recently_active())
        snap_index = self._log.snap_index
        needed = []
        for peer, pr in self._progress.items():
            if peer == self._id or peer not in active:
                continue
            if pr.state == SNAPSHOT:
                index = pr.pending_snapshot
            elif pr.state == PROBE:
                index = pr.next - 1
            else:
                index = pr.match
            if index >= snap_index:
                needed.append(index)
        return min(needed) if needed else None

    @property
    def snapshot(self) -> SnapshotMeta | None:
        """The snapshot the log starts after (None if the log starts at index 1)."""
        return self._log.snapshot

    def term_at(self, index: int) -> int | None:
        """Term of the entry at index, None if compacted or beyond the end."""
        return self._log.term(index)

    def status(self) -> dict:
        progress = {}
        if self._role == LEADER:
            for v, pr in self._progress.items():
                progress[v] = {
                    "match": pr.match,
                    "next": pr.next,
                    "state": STATE_NAMES[pr.state],
                    "inflight": pr.inflights.count(),
                    "learner": v in self._conf.learners,
                }
        return {
            "id": self._id,
            "term": self._term,
            "vote": self._vote,
            "role": self._role,
            "leader_id": self._lead,
            "commit": self._log.committed,
            "applied": self._log.applied,
            "first_index": self._log.first_index,
            "last_index": self._log.last_index,
            "lead_transferee": self._lead_transferee,
            "voters": self._voters,
            "learners": self._conf.learners,
            "pending_conf_index": self._conf_history.latest_index(),
            "progress": progress,
        }

    def quorum_active(self) -> bool:
        """Leader only: a quorum (counting ourselves) was heard from within the last
        election timeout. False on non-leaders."""
        if self._role != LEADER:
            return False
        # recently_active()'s voters counted without building it: the actor asks every turn.
        horizon = self._now - self._cfg.election_ticks
        me, progress = self._id, self._progress
        active = 0
        for v in self._voters:
            if v == me or progress[v].last_heard > horizon:
                active += 1
        return active >= self._quorum

    def recently_active(self) -> tuple[int, ...]:
        """Leader only: the members (voters and learners) heard from within the last
        election timeout, ourselves included if we are a member; for
        membership.reconfig_problem. Empty on non-leaders."""
        if self._role != LEADER:
            return ()
        horizon = self._now - self._cfg.election_ticks
        return tuple(
            v
            for v in (*self._voters, *self._conf.learners)
            if (v == self._id or self._progress[v].last_heard > horizon)
        )

    # ------------------------------------------------------------------
    # Ready / advance
    # ------------------------------------------------------------------

    def has_ready(self) -> bool:
        if self._outstanding is not None:
            return False
        log = self._log
        if self._msgs or self._read_states or self._events or self._dropped_proposals:
            return True
        if log.pending_snapshot is not None or log.unstable_from <= log.last_index:
            return True
        if log.has_next_committed():
            return True
        return self._hard_changed() or self._soft_changed()

    # The states' fields compared directly: has_ready runs at least twice a
    # turn, and building the two states to compare them was a fixed cost of each.
    def _hard_changed(self) -> bool:
        hard = self._prev_hard
        return hard.commit != self._log.committed or hard.term != self._term or hard.vote != self._vote

    def _soft_changed(self) -> bool:
        soft = self._prev_soft
        return soft.leader_id != self._lead or soft.role != self._role

    def ready(self) -> Ready:
        assert self._outstanding is None, "advance() the previous Ready before asking for another"
        log = self._log
        soft = hard = None  # built only when changed
        if self._soft_changed():
            soft = self._prev_soft = SoftState(self._lead, self._role)
        if self._hard_changed():
            hard = self._prev_hard = HardState(self._term, self._vote, log.committed)
        committed_entries = log.next_committed_entries()
        rd = Ready(
            soft_state=soft,
            hard_state=hard,
            entries=log.unstable_entries(),
            snapshot=log.pending_snapshot,
            committed_entries=committed_entries,
            messages=tuple(self._msgs),
            read_states=tuple(self._read_states),
            events=tuple(self._events),
            dropped_proposals=tuple(self._dropped_proposals),
        )
        self._msgs = []
        self._read_states = []
        self._events = []
        self._dropped_proposals = []
        log.pending_snapshot = None
        if self._role == LEADER and committed_entries and self._uncommitted_size:
            size = sum(len(e.data) for e in committed_entries)
            self._uncommitted_size = max(0, self._uncommitted_size - size)
        self._outstanding = rd
        return rd

    def advance(self, ready: Ready) -> None:
        assert ready is self._outstanding, "advance() takes the Ready returned by the last ready()"
        self._outstanding = None
        log = self._log
        if ready.snapshot is not None:
            log.applied = max(log.applied, ready.snapshot.index)
        # If a conflicting append replaced part of what was persisted meanwhile, only
        # the still-identical prefix counts as durable (the rest goes out again).
        for e in reversed(ready.entries):
            if log.term(e.index) == e.term:
                log.stable_to(e.index, e.term)
                break
        if ready.committed_entries:
            log.applied = max(log.applied, ready.committed_entries[-1].index)
        if self._role == LEADER:
            # The leader's own copy counts towards the quorum only once durable.
            me = self._progress[self._id]
            before = log.committed
            if me.maybe_update(log.stable_last) and self._maybe_commit():
                self._commit_advanced(before)
            self._maybe_step_down_removed()

    # ------------------------------------------------------------------
    # Local requests
    # ------------------------------------------------------------------

    def tick(self) -> None:
        self._now += 1
        if self._role == LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def campaign(self) -> None:
        self._hup(transfer=False)

    def campaign_soon(self, min_ticks: int, max_ticks: int) -> None:
        """Campaign after a random min_ticks..max_ticks more ticks instead of a
        whole randomized election timeout, unless a leader is heard from first
        (etcd's advanceTicksForElection). For a member that has just started
        and heard from no leader: after a whole-cluster restart nobody would
        otherwise campaign for a whole timeout. The random spread keeps the
        members' elections apart; min_ticks lets a live leader's heartbeat
        arrive first. Only the timer moves, so every rule still holds: with
        pre-vote a campaign changes no term unless a quorum would vote for it,
        and members in a leader's lease refuse it. Nothing changes for a
        leader, or a member that knows one."""
        if self._role == LEADER or self._lead != 0:
            return
        ticks = self._rng.randint(max(1, min_ticks), max(1, min_ticks, max_ticks))
        self._election_elapsed = max(self._election_elapsed, self._randomized_election_timeout - ticks)

    def leader_unreachable(self, min_ticks: int, max_ticks: int) -> None:
        """The actor saw its connection to the leader drop (the leader's process
        died, or the network between them failed): forget the leader and
        campaign within min_ticks..max_ticks (campaign_soon) instead of a whole
        randomized election timeout after its last heartbeat. Only knowledge
        and the timer change: with pre-vote the campaign raises no term unless
        a quorum would vote for it, and a member still hearing the leader is
        in its lease and refuses. A heartbeat or append from a live leader
        makes it known again and resets the timer."""
        if self._role != FOLLOWER or self._lead == 0:
            return
        self._event("leader_unreachable", leader=self._lead)
        self._lead = 0
        self.campaign_soon(min_ticks, max_ticks)

    def propose(self, data: Sequence[bytes]) -> bool:
        batch = tuple(data)
        assert batch, "empty proposal batch"
        # b"" is reserved for the leader's no-op entry.
        assert all(isinstance(d, bytes) and d for d in batch), "proposal data must be non-empty bytes"
        if self._role == LEADER:
            return self._leader_propose(batch, origin=self._id)
        if self._lead == 0:
            self._event("dropped_proposal", reason="no_leader", count=len(batch))
            return False
        entries = tuple(Entry(index=0, term=0, data=d) for d in batch)
        self._send(MSG_PROP, self._lead, term=0, entries=entries)
        return True

    def propose_conf_change(self, change: ConfChange) -> bool:
        """Propose one single-server configuration change (thesis §4.1) through the
        log. On the leader it is appended at once, or refused with a
        "conf_change_rejected" event naming the reason (another change pending, the
        leader has not committed an entry of its term yet, a leadership transfer is
        under way, or the change makes no sense for the configuration); a follower
        forwards it to its leader. The change takes effect on every node when the
        entry is appended to its log, and the actor learns of it when it is applied
        (committed_entries, kind ENTRY_CONF_CHANGE, decode with decode_conf_change)."""
        if self._role == LEADER:
            return self._leader_propose_conf_change(change, origin=self._id)
        if self._lead == 0:
            self._conf_change_rejected(change, "no_leader", self._id)
            return False
        data = encode_conf_change(change, ConfState(()))  # the leader fills in the result
        self._send(MSG_PROP, self._lead, term=0, entries=(Entry(0, 0, data, ENTRY_CONF_CHANGE),))
        return True

    def read_index(self, context: bytes) -> bool:
        # The context comes back in the ReadState; it only has to be unique among
        # this node's own outstanding reads.
        assert context, "a read needs a non-empty context"
        if self._role == LEADER:
            self._leader_read_index(context, self._id)
            return True
        if self._lead == 0:
            self._event("dropped_read_index", reason="no_leader")
            return False
        self._send(MSG_READ_INDEX, self._lead, term=0, context=context)
        return True

    def transfer_leadership(self, target: int) -> None:
        if self._role == LEADER:
            self._leader_transfer(target)
        elif self._lead != 0:
            self._send(MSG_TRANSFER_LEADER, self._lead, index=target)
        else:
            self._event("dropped_transfer", reason="no_leader", target=target)

    def compact(self, index: int) -> SnapshotMeta | None:
        """The actor has a state-machine snapshot at `index` (<= applied); forget the
        log up to it. Returns the new snapshot metadata (the log's current one if
        `index` is not past it)."""
        log = self._log
        assert index <= log.applied, ("compact beyond applied", index, log.applied)
        if index <= log.snap_index:
            return log.snapshot
        conf = self._conf_history.at(index)
        meta = log.compact(index, conf.voters, conf.learners)
        self._conf_history.compact(index)
        self._event("compacted", index=index, term=meta.term)
        return meta

    def report_snapshot(self, peer: int, ok: bool) -> None:
        if self._role != LEADER or peer not in self._progress or peer == self._id:
            return
        pr = self._progress[peer]
        if pr.state != SNAPSHOT:
            return
        if not ok:
            pr.pending_snapshot = 0
        pr.become_probe()
        # Wait for an append response (success) or the next heartbeat (failure)
        # before sending again, rather than hammering the peer.
        pr.probe_sent = True
        self._event("snapshot_reported", peer=peer, ok=ok)

    def report_unreachable(self, peer: int) -> None:
        if self._role != LEADER or peer not in self._progress or peer == self._id:
            return
        pr = self._progress[peer]
        # Optimistic pipelining is pointless while messages are being lost.
        if pr.state == REPLICATE:
            pr.become_probe()

    # ------------------------------------------------------------------
    # Role transitions
    # ------------------------------------------------------------------

    def _reset(self, term: int) -> None:
        if self._term != term:
            self._term = term
            self._vote = 0
        self._lead = 0
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        # §5.2: randomized timeouts make split votes rare.
        e = self._cfg.election_ticks
        self._randomized_election_timeout = self._rng.randrange(e, 2 * e)
        self._abort_transfer("role_change")
        self._votes = {}
        last = self._log.last_index
        cap = self._cfg.max_inflight_messages
        # Learners get a Progress too (they receive the log); so do we, even when not
        # a member (a leader that removed itself still tracks its own log).
        self._progress = {v: Progress(last + 1, cap) for v in (self._id, *self._voters, *self._conf.learners)}
        self._progress[self._id].match = self._log.stable_last
        if self._read_only.pending or self._reads_awaiting_commit:
            self._event(
                "dropped_read_index",
                reason="leadership_lost",
                count=len(self._read_only.pending) + len(self._reads_awaiting_commit),
            )
        self._read_only = ReadOnly()
        self._reads_awaiting_commit = []
        self._uncommitted_size = 0

    def become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self._lead = lead
        self._role = FOLLOWER
        self._event("became_follower", term=term, leader=lead)

    def become_pre_candidate(self) -> None:
        assert self._role != LEADER, "a leader does not campaign"
        # Pre-vote changes nothing durable: no term bump, no vote (thesis §9.6).
        self._role = PRE_CANDIDATE
        self._lead = 0
        self._votes = {}
        self._event("became_pre_candidate", term=self._term)

    def become_candidate(self) -> None:
        assert self._role != LEADER, "a leader does not campaign"
        # §5.2: increment term, vote for self.
        self._reset(self._term + 1)
        self._vote = self._id
        self._role = CANDIDATE
        self._event("became_candidate", term=self._term)

    def become_leader(self) -> None:
        assert self._role == CANDIDATE, "only a candidate that won its election becomes leader"
        assert self._promotable(), "only voters campaign"
        self._reset(self._term)
        self._lead = self._id
        self._role = LEADER
        me = self._progress[self._id]
        me.become_replicate()
        me.match = self._log.stable_last
        # §5.4.2 / thesis §3.6.2: a no-op of the new term lets the leader commit
        # (and learn the commit index of) entries from previous terms.
        self._append_entries((b"",))
        self._event("became_leader", term=self._term)

    # ------------------------------------------------------------------
    # Timers
    # ------------------------------------------------------------------

    def _tick_election(self) -> None:
        self._election_elapsed += 1
        if self._election_elapsed >= self._randomized_election_timeout and self._promotable():
            # §5.2: no word from a leader within the election timeout: campaign.
            # Learners and removed nodes never do (thesis §4.2.1, §4.2.2).
            self._election_elapsed = 0
            self._hup(transfer=False)

    def _tick_heartbeat(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._lead_transferee:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= self._cfg.election_ticks:
                # §3.10: the target did not take over within an election timeout;
                # resume normal operation.
                self._abort_transfer("timeout")
        if self._election_elapsed >= self._cfg.election_ticks:
            self._election_elapsed = 0
            if self._cfg.check_quorum and not self.quorum_active():
                # Thesis §6.2: a leader cut off from a quorum steps down, so clients
                # stop waiting on it and followers' leases can expire.
                self._event("check_quorum_failed", term=self._term)
                self.become_follower(self._term, 0)
                return
        if self._heartbeat_elapsed >= self._cfg.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._bcast_heartbeat(None)

    # ------------------------------------------------------------------
    # Elections
    # ------------------------------------------------------------------

    def _hup(self, transfer: bool) -> None:
        if self._role == LEADER:
            self._event("campaign_ignored", reason="already_leader", term=self._term)
            return
        if not self._promotable():
            # A learner or a removed node could not count its own vote, and must not
            # disturb the voters' terms.
            self._event("campaign_ignored", reason="not_a_voter", term=self._term)
            return
        if self._cfg.pre_vote and not transfer:
            self._campaign(pre=True, transfer=False)
        else:
            # Transfers skip pre-vote: the old leader asked for it, so there is no
            # partitioned node to protect against (etcd does the same).
            self._campaign(pre=False, transfer=transfer)

    def _campaign(self, pre: bool, transfer: bool) -> None:
        if pre:
            self.become_pre_candidate()
            vote_type = MSG_PRE_VOTE
            term = self._term + 1
        else:
            self.become_candidate()
            vote_type = MSG_VOTE
            term = self._term
        if self._poll(self._id, True) == _VOTE_WON:
            # Single-voter cluster: our own vote is a quorum.
            if pre:
                self._campaign(pre=False, transfer=transfer)
            else:
                self.become_leader()
            return
        context = CAMPAIGN_TRANSFER if transfer else b""
        last_index = self._log.last_index
        last_term = self._log.last_term
        for v in self._voters:
            if v != self._id:
                self._send(vote_type, v, term=term, index=last_index, log_term=last_term, context=context)

    def _poll(self, voter: int, granted: bool) -> int:
        # Only our configuration's voters count (a learner's answer does not).
        if voter not in self._votes and voter in self._voters:
            self._votes[voter] = granted
        yes = sum(1 for g in self._votes.values() if g)
        no = len(self._votes) - yes
        if yes >= self._quorum:
            return _VOTE_WON
        if no > len(self._voters) - self._quorum:
            return _VOTE_LOST
        return _VOTE_PENDING

    def _handle_vote_request(self, m: RaftMessage) -> None:
        # §5.2: at most one vote per term (first come, first served); a pre-vote for
        # a future term commits us to nothing, so it does not consult our vote.
        # Thesis §4.2.1: answer "without consulting the current configuration". A
        # learner (or a node whose log does not yet hold its own addition) answers
        # too, as in etcd: a candidate counts the answer only if *its* log makes us
        # a voter, i.e. we were promoted and do not know it yet. Refusing would be
        # safe but could stall the cluster for good: say voters {1,2,3}, learner 4,
        # 1 appends "promote 4", reaches only 2, and dies; 2 needs 3 of {1,2,3,4}
        # (4's vote included), and 3 cannot win against 2's longer log.
        can_vote = (
            self._vote == m.sender
            or (self._vote == 0 and self._lead == 0)
            or (m.type == MSG_PRE_VOTE and m.term > self._term)
        )
        resp_type = MSG_VOTE_RESP if m.type == MSG_VOTE else MSG_PRE_VOTE_RESP
        if can_vote and self._log.is_up_to_date(m.index, m.log_term):
            # §5.4.1: grant only to a candidate whose log is at least as up to date.
            self._send(resp_type, m.sender, term=m.term)
            if m.type == MSG_VOTE:
                # Granting a vote resets our election timer (§5.2), and the vote is
                # in the HardState of the same Ready, so it is durable before the
                # response leaves.
                self._election_elapsed = 0
                self._vote = m.sender
            self._event("vote_granted", type=MESSAGE_TYPE_NAMES[m.type], to=m.sender, term=m.term)
        else:
            self._send(resp_type, m.sender, reject=True)

    # ------------------------------------------------------------------
    # Step
    # ------------------------------------------------------------------

    def step(self, m: RaftMessage) -> None:
        problem = self._validate(m)
        if problem is not None:
            self._reject(m, problem)
            return
        t = m.type
        if t == MSG_PROP_RESP:
            # Term-less, whatever our role now: the recipient dropped what we forwarded.
            self._dropped_proposals.extend(e.data for e in m.entries)
            self._event("proposal_rejected_by_peer", sender=m.sender, count=len(m.entries))
            return
        if t == MSG_PROP or t == MSG_READ_INDEX:
            pass  # term-less: a forwarded local request
        elif m.term > self._term:
            if t == MSG_VOTE or t == MSG_PRE_VOTE:
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = (
                    self._cfg.check_quorum
                    and self._lead != 0
                    and self._election_elapsed < self._cfg.election_ticks
                )
                if in_lease and not force:
                    # Thesis §4.2.3: we heard from a live leader within the minimum
                    # election timeout; a removed or partitioned node must not depose it.
                    self._reject(m, "leader_lease")
                    return
            if t == MSG_PRE_VOTE:
                pass  # answering a pre-vote changes nothing, not even our term
            elif t == MSG_PRE_VOTE_RESP and not m.reject:
                pass  # a granted pre-vote carries the future term; we bump when we win
            elif t == MSG_APP or t == MSG_HEARTBEAT or t == MSG_SNAP:
                # §5.1: a higher term wins; only a leader sends these, so we know it.
                self.become_follower(m.term, m.sender)
            else:
                self.become_follower(m.term, 0)
        elif m.term < self._term:
            if t == MSG_HEARTBEAT or t == MSG_APP:
                # A stale leader may never hear of the new term unless we tell it,
                # so answer with our term and it steps down (the paper's rule:
                # AppendEntries is answered with currentTerm). Under check-quorum
                # or pre-vote its peers ignore its campaigns; without both, etcd
                # counts on our own campaigns reaching it, which they do not when
                # our configurations differ (it is not a voter in ours) or we may
                # not campaign at all: a leader that needs our acknowledgement
                # then waits forever (simulation seeds 23274, 27713, 36748).
                self._send(MSG_APP_RESP, m.sender)
            elif t == MSG_PRE_VOTE:
                # Tell the pre-candidate our term, or with pre-vote it could be stuck
                # below the cluster's term forever.
                self._send(MSG_PRE_VOTE_RESP, m.sender, reject=True)
            elif t == MSG_VOTE:
                # So a candidate (the paper's RequestVote reply carries currentTerm;
                # etcd ignores it): one whose votes come only to members at higher
                # terms, who never message it otherwise (it is not a voter in their
                # configurations), would campaign below their terms forever, even
                # with the only log that can win (simulation seed 36748).
                self._send(MSG_VOTE_RESP, m.sender, reject=True)
            else:
                self._reject(m, "stale_term")
            return

        if t == MSG_VOTE or t == MSG_PRE_VOTE:
            self._handle_vote_request(m)
        elif self._role == LEADER:
            self._step_leader(m)
        elif self._role == FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _step_leader(self, m: RaftMessage) -> None:
        t = m.type
        if t == MSG_PROP and m.entries[0].kind == ENTRY_CONF_CHANGE:
            change, _ = decode_conf_change(m.entries[0].data)  # validated
            self._leader_propose_conf_change(change, origin=m.sender)
            return
        if t == MSG_APP_RESP:
            self._leader_handle_append_response(m)
        elif t == MSG_HEARTBEAT_RESP:
            self._leader_handle_heartbeat_response(m)
        elif t == MSG_PROP:
            self._leader_propose(tuple(e.data for e in m.entries), origin=m.sender)
        elif t == MSG_READ_INDEX:
            self._leader_read_index(m.context, m.sender)
        elif t == MSG_TRANSFER_LEADER:
            self._leader_transfer(m.index)
        elif t == MSG_VOTE_RESP or t == MSG_PRE_VOTE_RESP:
            self._reject(m, "late_vote_response")  # we already won
        elif t == MSG_APP or t == MSG_HEARTBEAT or t == MSG_SNAP:
            # Election Safety (§5.2) says this cannot happen; record it loudly.
            self._reject(m, "other_leader_in_same_term")
        else:
            self._reject(m, "unexpected_for_leader")

    def _step_candidate(self, m: RaftMessage) -> None:
        """Both PRE_CANDIDATE and CANDIDATE."""
        t = m.type
        my_response = MSG_PRE_VOTE_RESP if self._role == PRE_CANDIDATE else MSG_VOTE_RESP
        if t == MSG_PROP:
            self._drop_proposal("no_leader", tuple(e.data for e in m.entries), m.sender)
        elif t == MSG_APP or t == MSG_HEARTBEAT or t == MSG_SNAP:
            # §5.2: a leader of our term exists (term rules already handled higher).
            self.become_follower(m.term, m.sender)
            self._step_follower(m)
        elif t == my_response:
            result = self._poll(m.sender, not m.reject)
            if result == _VOTE_WON:
                if self._role == PRE_CANDIDATE:
                    self._campaign(pre=False, transfer=False)
                else:
                    self.become_leader()
                    self._bcast_append()
            elif result == _VOTE_LOST:
                # Pre-candidates never bumped their term, so this reverts cleanly.
                self.become_follower(self._term, 0)
        elif t == MSG_READ_INDEX_RESP:
            # Forwarded while we were a follower; the leader confirmed it, so it is
            # still a valid linearization point whatever our role now.
            self._read_states.append(ReadState(m.index, m.context))
        elif t == MSG_TIMEOUT_NOW:
            self._reject(m, "candidate_ignores_timeout_now")
        else:
            self._reject(m, f"unexpected_for_{self._role}")

    def _step_follower(self, m: RaftMessage) -> None:
        t = m.type
        if t == MSG_APP:
            self._election_elapsed = 0
            self._lead = m.sender
            self._handle_append(m)
        elif t == MSG_HEARTBEAT:
            self._election_elapsed = 0
            self._lead = m.sender
            self._handle_heartbeat(m)
        elif t == MSG_SNAP:
            self._election_elapsed = 0
            self._lead = m.sender
            self._handle_snapshot(m)
        elif t == MSG_READ_INDEX_RESP:
            self._read_states.append(ReadState(m.index, m.context))
        elif t == MSG_TIMEOUT_NOW:
            # §3.10: our leader asks us to take over now; the log is up to date.
            self._event("timeout_now_received", sender=m.sender, term=self._term)
            self._hup(transfer=True)
        elif t == MSG_PROP:
            # Forwarded to us by a node that thought we lead. Forwarding again could
            # bounce between stale views; the origin's client retries instead.
            reason = "not_leader" if self._lead else "no_leader"
            self._drop_proposal(reason, tuple(e.data for e in m.entries), m.sender)
        elif t == MSG_READ_INDEX:
            self._reject(m, "not_leader")
        elif t == MSG_TRANSFER_LEADER:
            self._reject(m, "not_leader")
        else:
            self._reject(m, "unexpected_for_follower")

    # ------------------------------------------------------------------
    # Follower side of replication
    # ------------------------------------------------------------------

    def _handle_append(self, m: RaftMessage) -> None:
        log = self._log
        if m.index < log.committed:
            # Everything up to our commit index matches the leader (Leader
            # Completeness); say so, and the leader skips ahead.
            self._send(MSG_APP_RESP, m.sender, index=log.committed)
            return
        # From here m.index >= committed, so the new entries all lie above the commit
        # index and the log's "never overwrite a committed entry" assertion cannot be
        # triggered by any message.
        last_new = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            if m.entries:
                self._sync_config_with_log(m.entries)
            # Sent in the Ready that carries the appended entries: durable first (§5.1).
            self._send(MSG_APP_RESP, m.sender, index=last_new)
            return
        # §5.3: consistency check failed. Point the leader at the last index that
        # may match: the largest one whose term is <= the leader's term at m.index
        # (everything after it certainly conflicts) — one round trip per term.
        hint = log.find_conflict_by_term(min(m.index, log.last_index), m.log_term)
        hint_term = log.term(hint)
        assert hint_term is not None  # hint >= committed >= snapshot index
        self._send(MSG_APP_RESP, m.sender, index=m.index, reject=True, reject_hint=hint, log_term=hint_term)

    def _handle_heartbeat(self, m: RaftMessage) -> None:
        if m.commit > self._log.last_index:
            # The leader sends min(match, commit), which we hold; anything else means
            # our disk lost acknowledged entries (a wiped data dir). Do not commit
            # what we do not have, and tell the leader where our log really ends so
            # it repairs us (by snapshot) instead of waiting forever.
            self._reject(m, "heartbeat_commit_beyond_log")
            self._send(MSG_HEARTBEAT_RESP, m.sender, context=m.context, reject=True, reject_hint=self._log.last_index)
            return
        self._log.commit_to(m.commit)
        self._send(MSG_HEARTBEAT_RESP, m.sender, context=m.context)

    def _handle_snapshot(self, m: RaftMessage) -> None:
        log = self._log
        meta = m.snapshot
        assert meta is not None  # validated
        if meta.index <= log.committed:
            self._event("snapshot_ignored", index=meta.index, reason="not_newer_than_commit")
        elif log.term(meta.index) == meta.term:
            # We already hold the snapshot's last entry, hence (Log Matching) all of it:
            # just learn that it is committed and keep the rest of our log.
            log.commit_to(meta.index)
            self._event("snapshot_ignored", index=meta.index, reason="log_contains_it")
        else:
            log.restore(meta)
            self._event("snapshot_restored", index=meta.index, term=meta.term)
            # The snapshot carries the configuration at its index (thesis §4.1).
            self._conf_history.reset(ConfState(tuple(meta.voters), tuple(meta.learners)))
            self._apply_latest_config(meta.index)
        # In every branch our log now matches the leader's up to our commit index.
        self._send(MSG_APP_RESP, m.sender, index=log.committed)

    # ------------------------------------------------------------------
    # Leader side of replication
    # ------------------------------------------------------------------

    def _leader_propose(self, batch: tuple[bytes, ...], origin: int) -> bool:
        if self._lead_transferee:
            # §3.10: stop accepting client requests while handing over, or the target
            # might never catch up.
            self._drop_proposal("leadership_transfer", batch, origin)
            return False
        if not self._append_entries(batch):
            self._drop_proposal("too_many_uncommitted", batch, origin)
            return False
        if origin != self._id and origin in self._progress:
            self._progress[origin].commit_wanted = self._log.last_index  # its client waits for the commit
        self._bcast_append()
        return True

    def _append_entries(self, batch: tuple[bytes, ...]) -> bool:
        size = sum(len(d) for d in batch)
        # Always admit a batch into an empty budget, so one huge batch cannot wedge us.
        if self._uncommitted_size > 0 and size > 0 and self._uncommitted_size + size > self._cfg.max_uncommitted_bytes:
            return False
        self._uncommitted_size += size
        log = self._log
        first = log.last_index + 1
        entries = tuple(Entry(first + i, self._term, d) for i, d in enumerate(batch))
        log.append(entries)
        # Our own match moves only in advance(), once these are durable.
        self._progress[self._id].next = log.last_index + 1
        return True

    def _maybe_commit(self) -> bool:
        # Only voters of the latest configuration count (thesis §4.1), ourselves
        # included only while we are one (§4.2.2: a leader removing itself does not).
        matches = sorted((self._progress[v].match for v in self._voters), reverse=True)
        candidate = matches[self._quorum - 1]  # the highest index a quorum holds
        log = self._log
        # §5.4.2: only entries of the current term are committed by counting replicas;
        # earlier ones commit indirectly, by Log Matching, with them.
        if candidate > log.committed and log.term(candidate) == self._term:
            log.commit_to(candidate)
            if self._reads_awaiting_commit:
                waiting = self._reads_awaiting_commit
                self._reads_awaiting_commit = []
                for requester, context in waiting:
                    self._leader_read_index(context, requester)
            return True
        return False

    def _leader_propose_conf_change(self, change: ConfChange, origin: int) -> bool:
        reason = self._conf_change_refusal(change)
        if reason is not None:
            self._conf_change_rejected(change, reason, origin)
            return False
        conf = apply_change(self._conf, change)
        log = self._log
        index = log.last_index + 1
        data = encode_conf_change(change, conf)
        log.append((Entry(index, self._term, data, ENTRY_CONF_CHANGE),))
        self._uncommitted_size += len(data)
        # Our own match moves only in advance(), once the entry is durable.
        self._progress[self._id].next = log.last_index + 1
        self._conf_history.add(index, self._term, conf)
        self._event(
            "conf_change_proposed", index=index, change=CONF_CHANGE_NAMES[change.type], node=change.node_id, origin=origin
        )
        self._apply_latest_config(index)
        self._bcast_append()
        return True

    def _conf_change_refusal(self, change: ConfChange) -> str | None:
        log = self._log
        if self._lead_transferee:
            return "leadership_transfer"  # §3.10: no new requests while handing over
        if log.term(log.committed) != self._term:
            # Until an entry of our term is committed, our log may end in a change
            # of an earlier term that is not committed and may yet be overwritten;
            # a change of ours on top of it could break the majority overlap
            # (Ongaro, raft-dev 2015, the single-server change bug; etcd's rule too).
            return "leader_not_ready"
        if self._conf_history.pending(log.committed):
            return "pending_conf_change"  # thesis §4.1: one change at a time
        return change_problem(self._conf, change)

    def _conf_change_rejected(self, change: ConfChange, reason: str, origin: int) -> None:
        self._event(
            "conf_change_rejected",
            reason=reason,
            change=CONF_CHANGE_NAMES.get(change.type, str(change.type)),
            node=change.node_id,
            origin=origin,
        )

    def _bcast_append(self) -> None:
        for v in self._progress:  # voters and learners
            if v != self._id:
                self._send_append(v, send_if_empty=True)

    def _commit_advanced(self, before: int) -> None:
        """The commit index moved past `before`: tell the followers (see
        RaftConfig.defer_commit_notice)."""
        committed = self._log.committed
        if not self._cfg.defer_commit_notice or before < self._conf_history.latest_index() <= committed:
            self._bcast_append()
            return
        for v, pr in self._progress.items():
            if v != self._id and pr.commit_sent < min(pr.commit_wanted, committed):
                self._send_append(v, send_if_empty=True)

    def commit_unsent(self) -> bool:
        """Whether a deferred commit notice is due (see _owed_commit)."""
        return any(self._owed_commit())

    def send_commit(self) -> None:
        """Tell every follower _owed_commit names the commit index now."""
        for v in list(self._owed_commit()):
            self._send_append(v, send_if_empty=True)

    def _owed_commit(self):
        """Leader only: the followers we can send to that have not been told
        the commit index up to what they hold."""
        if self._role != LEADER:
            return
        committed = self._log.committed
        for v, pr in self._progress.items():
            if v != self._id and pr.commit_sent < min(committed, pr.next - 1) and not pr.is_paused():
                yield v

    def _send_append(self, to: int, send_if_empty: bool) -> bool:
        pr = self._progress[to]
        if pr.is_paused():
            return False
        log = self._log
        prev_index = pr.next - 1
        prev_term = log.term(prev_index)
        if prev_term is None:
            if prev_index < log.snap_index:
                return self._send_snapshot(to, pr)
            # next beyond our log: cannot happen (next <= last + 1); be safe.
            pr.next = log.last_index + 1
            return False
        entries = log.entries_from(pr.next, self._cfg.max_entries_per_message, self._cfg.max_bytes_per_message)
        if not entries and not send_if_empty:
            return False
        self._send(MSG_APP, to, index=prev_index, log_term=prev_term, entries=entries, commit=log.committed)
        pr.sent_entries(entries[-1].index if entries else None)
        told = min(log.committed, prev_index + len(entries))  # the follower commits no further than it holds
        if told > pr.commit_sent:
            pr.commit_sent = told
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        meta = self._log.snapshot
        assert meta is not None
        pr.become_snapshot(meta.index)
        self._send(MSG_SNAP, to, snapshot=meta)
        self._event("snapshot_sent", to=to, index=meta.index, term=meta.term)
        return True

    def _bcast_heartbeat(self, context: bytes | None) -> None:
        if context is None:
            # Later heartbeats repeat the newest round, so a lost one is retried.
            context = self._read_only.last_round()
        committed = self._log.committed
        for v, pr in self._progress.items():  # voters and learners
            if v != self._id:
                # Never tell a follower to commit beyond what it is known to hold.
                told = min(pr.match, committed)
                self._send(MSG_HEARTBEAT, v, commit=told, context=context)
                if told > pr.commit_sent:
                    pr.commit_sent = told

    def _leader_handle_append_response(self, m: RaftMessage) -> None:
        pr = self._progress[m.sender]
        pr.last_heard = self._now
        log = self._log
        if m.reject:
            hint = m.reject_hint
            if m.log_term > 0:
                # Skip every entry of ours whose term exceeds the follower's term at
                # the hint: all of those conflict as well.
                hint = log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decr_to(m.index, hint):
                if pr.state == REPLICATE:
                    pr.become_probe()
                self._send_append(m.sender, send_if_empty=True)
            return
        if m.index > log.last_index:
            self._reject(m, "ack_beyond_leader_log")
            return
        was_paused = pr.is_paused()
        if pr.maybe_update(m.index) or (pr.match == m.index and pr.state == PROBE):
            if pr.state == PROBE:
                pr.become_replicate()
            elif pr.state == SNAPSHOT and pr.match + 1 >= log.first_index:
                # Caught up through the snapshot (or past it): stream again.
                pr.become_probe()
                pr.become_replicate()
            elif pr.state == REPLICATE:
                pr.inflights.free_le(m.index)
            before = log.committed
            if self._maybe_commit():
                self._commit_advanced(before)  # carry the new commit index
            elif was_paused:
                self._send_append(m.sender, send_if_empty=True)
            # Fill the inflight window.
            while self._send_append(m.sender, send_if_empty=False):
                pass
            if m.sender == self._lead_transferee and pr.match == log.last_index:
                self._send(MSG_TIMEOUT_NOW, m.sender)
                self._event("transfer_timeout_now_sent", to=m.sender)
            self._maybe_step_down_removed()

    def _leader_handle_heartbeat_response(self, m: RaftMessage) -> None:
        pr = self._progress[m.sender]
        pr.last_heard = self._now
        pr.probe_sent = False
        if m.reject and m.reject_hint < pr.match:
            # The follower lost entries it had acknowledged (see _handle_heartbeat).
            # Lowering match is conservative: our commit index never moves back, and
            # a member rejoining this way takes no part in elections until it has
            # caught up (the actor's --rejoin), so no committed entry can be lost.
            self._events.append(("follower_log_lost", {"peer": m.sender, "match": pr.match, "last_index": m.reject_hint}))
            pr.match = m.reject_hint
            pr.become_probe()
        if pr.state == REPLICATE and pr.inflights.full():
            # If every inflight MsgApp was lost we would wait forever; free a slot so
            # one more append goes out and its reply resynchronizes us.
            pr.inflights.free_first_one()
        if pr.match < self._log.last_index:
            self._send_append(m.sender, send_if_empty=True)
        if not m.context:
            return
        acks = self._read_only.ack(m.context, m.sender)
        if sum(1 for v in acks if v in self._voters) < self._quorum:
            return
        for request in self._read_only.release_through(m.context):
            self._answer_read(request.requester, request.index, request.context)

    def _leader_read_index(self, context: bytes, requester: int) -> None:
        log = self._log
        if log.term(log.committed) != self._term:
            # Thesis §6.4 step 1: until our no-op commits, our commit index may be
            # behind what the previous leader committed. Park the read.
            self._reads_awaiting_commit.append((requester, context))
            return
        if self._voters == (self._id,):
            self._answer_read(requester, log.committed, context)
            return
        # Thesis §6.4 steps 2-3: remember commit now, confirm leadership by a round
        # of heartbeats carrying the request's round id.
        round_id = self._read_only.add(ReadRequest(log.committed, context, requester, self._id))
        self._bcast_heartbeat(round_id)

    def _answer_read(self, requester: int, index: int, context: bytes) -> None:
        if requester == self._id:
            self._read_states.append(ReadState(index, context))
            return
        pr = self._progress.get(requester)
        if pr is not None:
            # The follower serves the read once it has applied `index`, so it must
            # learn that index is committed: now, ahead of the answer, if no
            # append or heartbeat told it yet (a deferred commit notice).
            pr.commit_wanted = max(pr.commit_wanted, index)
            if self._cfg.defer_commit_notice and pr.commit_sent < index:
                self._send_append(requester, send_if_empty=True)
        self._send(MSG_READ_INDEX_RESP, requester, index=index, context=context)

    def _leader_transfer(self, target: int) -> None:
        if target not in self._progress:
            self._event("transfer_rejected", reason="unknown_target", target=target)
            return
        if target not in self._voters:
            self._event("transfer_rejected", reason="target_not_voter", target=target)
            return
        if self._lead_transferee:
            if self._lead_transferee == target:
                return  # already in progress
            self._abort_transfer("superseded")
        if target == self._id:
            self._event("transfer_rejected", reason="already_leader", target=target)
            return
        # §3.10: stop taking proposals, bring the target up to date, then tell it to
        # start an election at once.
        self._lead_transferee = target
        self._transfer_elapsed = 0
        self._event("transfer_started", target=target, term=self._term)
        pr = self._progress[target]
        if pr.match == self._log.last_index:
            self._send(MSG_TIMEOUT_NOW, target)
            self._event("transfer_timeout_now_sent", to=target)
        else:
            self._send_append(target, send_if_empty=True)

    def _abort_transfer(self, reason: str) -> None:
        if self._lead_transferee:
            self._event("transfer_aborted", reason=reason, target=self._lead_transferee)
            self._lead_transferee = 0
            self._transfer_elapsed = 0

    # ------------------------------------------------------------------
    # Configuration (membership.py)
    # ------------------------------------------------------------------

    def _decode_conf_entry(self, e: Entry) -> ConfState:
        _, conf = decode_conf_change(e.data)  # validated on the way in (or our own)
        assert conf.voters, e
        return conf

    def _sync_config_with_log(self, entries: tuple[Entry, ...]) -> None:
        """After a follower's append: forget conf-change entries the append replaced
        and note the new ones (thesis §4.1: a server uses the latest configuration in
        its log, so a truncated change is undone with it)."""
        history = self._conf_history
        history.retain(self._log.term)
        for e in entries:
            if e.kind == ENTRY_CONF_CHANGE and e.index > history.latest_index() and self._log.term(e.index) == e.term:
                history.add(e.index, e.term, self._decode_conf_entry(e))
        self._apply_latest_config(entries[-1].index)

    def _apply_latest_config(self, index: int) -> None:
        conf = self._conf_history.latest()
        if conf == self._conf:
            return
        self._conf = conf
        self._voters = conf.voters
        self._quorum = len(conf.voters) // 2 + 1
        members = {*conf.voters, *conf.learners}
        for peer in [p for p in self._progress if p != self._id and p not in members]:
            del self._progress[peer]
            if peer == self._lead_transferee:
                self._abort_transfer("target_removed")
        for peer in members:
            if peer not in self._progress:
                pr = Progress(self._log.last_index + 1, self._cfg.max_inflight_messages)
                # Count a new member as recently heard, or check-quorum could depose
                # the leader before the newcomer ever answered (etcd does the same).
                pr.last_heard = self._now
                self._progress[peer] = pr
        self._event("config_changed", index=index, voters=conf.voters, learners=conf.learners, role=self._role)

    def _promotable(self) -> bool:
        """May we campaign? Voters of our latest configuration may. So may a voter
        whose removal is still pending in its own log: a leader that appended its own
        removal and restarted before replicating it may hold the only log the other
        voters can elect, yet not count in its latest configuration; if it could not
        campaign, nobody could win (e.g. {1,3}, 3 appends "remove 3" and restarts: 1
        needs 3's vote, 3 refuses 1's shorter log). Elected, it leads without counting
        itself and steps down once the removal commits (§4.2.2), as if it had never
        restarted. Once it knows the removal committed, it never campaigns again."""
        if self._id in self._voters:
            return True
        history = self._conf_history
        committed = self._log.committed
        return history.pending(committed) and self._id in history.at(committed).voters

    def _maybe_step_down_removed(self) -> None:
        """Thesis §4.2.2: a leader not in the latest configuration keeps leading (without
        counting itself) until that configuration is committed, then steps down. It
        hands over to an up-to-date voter at once (MSG_TIMEOUT_NOW, §3.10) rather than
        leave the cluster waiting an election timeout; the actor should transfer
        leadership before proposing the removal, as etcd does, so this is rare."""
        if self._role != LEADER or self._id in self._voters or self._conf_history.pending(self._log.committed):
            return
        last = self._log.last_index
        successor = next((v for v in self._voters if self._progress[v].match == last), 0)
        if successor:
            self._send(MSG_TIMEOUT_NOW, successor)
        self._event("stepped_down", reason="removed_from_configuration", term=self._term, successor=successor)
        self.become_follower(self._term, 0)

    # ------------------------------------------------------------------
    # Plumbing
    # ------------------------------------------------------------------

    def _send(self, type_: int, to: int, term: int | None = None, **fields) -> None:
        self._msgs.append(
            RaftMessage(type=type_, to=to, sender=self._id, term=self._term if term is None else term, **fields)
        )

    def _drop_proposal(self, reason: str, batch: tuple[bytes, ...], origin: int) -> None:
        """Drop a proposal batch; one forwarded by another member is answered with
        a rejection echoing it, now, since only now is it known to be in no log."""
        self._event("dropped_proposal", reason=reason, count=len(batch), origin=origin)
        if origin != self._id:
            entries = tuple(Entry(index=0, term=0, data=d) for d in batch)
            self._send(MSG_PROP_RESP, origin, term=0, entries=entries, reject=True)

    def _event(self, name: str, **fields) -> None:
        self._events.append((name, fields))

    def _reject(self, m: RaftMessage, reason: str) -> None:
        self._events.append(
            (
                "rejected",
                {
                    "reason": reason,
                    "type": MESSAGE_TYPE_NAMES.get(m.type, str(m.type)),
                    "from": m.sender,
                    "term": m.term,
                    "role": self._role,
                    "my_term": self._term,
                },
            )
        )

    def _validate(self, m: RaftMessage) -> str | None:
        """Reasons a message cannot be processed at all, whatever our state."""
        if m.to != self._id:
            return "wrong_recipient"
        if m.type not in MESSAGE_TYPE_NAMES:
            return "unknown_type"
        if m.sender == self._id or m.sender == 0:
            return "unknown_sender"
        if m.sender not in self._progress and m.type not in _FROM_ANY_SERVER:
            # Answers and forwarded requests come only from members we know.
            return "unknown_sender"
        if m.term < 0 or m.index < 0 or m.log_term < 0 or m.commit < 0 or m.reject_hint < 0:
            return "negative_field"
        t = m.type
        if t != MSG_PROP and t != MSG_READ_INDEX and t != MSG_PROP_RESP and m.term == 0:
            return "missing_term"
        if t == MSG_APP:
            expected = m.index + 1
            prev_term = m.log_term
            for e in m.entries:
                # Log Matching needs contiguous indices and non-decreasing terms no
                # newer than the sender's own term.
                if e.index != expected or e.term < prev_term or e.term > m.term:
                    return "malformed_entries"
                expected += 1
                prev_term = e.term
                if e.kind != ENTRY_NORMAL and not _valid_conf_entry(e, require_conf=True):
                    return "malformed_entries"
        elif t == MSG_PROP:
            if not m.entries or any(not e.data for e in m.entries):
                return "malformed_proposal"
            if any(e.kind != ENTRY_NORMAL for e in m.entries) and (len(m.entries) != 1 or not _valid_conf_entry(m.entries[0], False)):
                return "malformed_proposal"
        elif t == MSG_PROP_RESP:
            if not m.reject or not m.entries or any(not e.data for e in m.entries):
                return "malformed_proposal_response"
        elif t == MSG_SNAP:
            s = m.snapshot
            if s is None or s.index <= 0 or s.term <= 0 or s.term > m.term:
                return "malformed_snapshot"
            if not s.voters or not _valid_conf_state(ConfState(tuple(s.voters), tuple(s.learners))):
                return "malformed_snapshot"
        elif t == MSG_READ_INDEX or t == MSG_READ_INDEX_RESP:
            if not m.context:
                return "missing_context"
        elif t == MSG_TRANSFER_LEADER:
            if m.index not in self._progress:
                return "unknown_transfer_target"
        elif t == MSG_APP_RESP and m.reject and m.reject_hint > m.index:
            return "malformed_reject_hint"
        return None


def _valid_conf_state(conf: ConfState) -> bool:
    members = conf.voters + conf.learners
    return all(v > 0 for v in members) and len(set(members)) == len(members)


def _valid_conf_entry(e: Entry, require_conf: bool) -> bool:
    """A conf-change entry from a peer decodes; in the log it also names a non-empty
    configuration (a forwarded proposal leaves that to the leader)."""
    if e.kind not in ENTRY_KINDS:
        return False
    try:
        _, conf = decode_conf_change(e.data)
    except ValueError:
        return False
    return bool(conf.voters) or not require_conf
