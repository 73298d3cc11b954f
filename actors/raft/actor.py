"""The raft actor: the thin I/O shell around the pure Raft core.

Theory of operation
-------------------
Each loop turn: drain peer traffic and local requests, tick the core when a tick
is due, step every message, propose every queued proposal as one batch, ask for
one ReadIndex for every read round queued, then drain the core's Ready under the
contract of etcd's raft (doc.go):

  1. persist hard state, entries and snapshot as ONE append to the write-ahead
     log (store/raftlog.py: one write, one fdatasync)
  2. send messages (one frame per peer)
  3. hand committed entries to the apply actor
  4. advance

except that a Ready with nothing to persist hands its committed entries to apply
before step 2: they were durable before it, and apply is on the client's path.

Apply flow: committed entries are sent to the apply actor in order, with at most
max_apply_inflight_entries unacknowledged; apply answers Applied(index), once a
tick or when a quarter of that window is unacknowledged. If apply
restarts (or a message is lost) it asks for ApplyNeed(next_index) and the entries
are re-read from the log, which is only compacted behind what apply has
made durable (Applied.durable_index): the keyspace commits without a sync, so
after an OS crash apply may need entries it had already acknowledged
(store/environment.py); nor past what a recently active follower still needs
unless the log holds more than max_retained_log_bytes
(retention.compaction_index): a follower that needed a snapshot then goes on
from the log. While apply installs a snapshot from the leader, the leader's
appends are dropped: they follow the snapshot, not the log it replaces.
Proposals made while no leader is known wait up to
no_leader_wait_ms for one, then are rejected with NoLeader: they never reached a
log, so the client may retry them.

Forwarded proposals: on a follower the core forwards proposals to the leader
(MSG_PROP). The actor remembers each forwarded payload's request id until it
commits, or until request_timeout_ms (the frontend has answered Timeout by then).
When the proposal is known never to have reached a log, it is rejected at once
(ProposalsRejected: NotLeader with the leader we now know, else NoLeader, both
retryable) instead of leaving its client to wait out its deadline: when the
recipient dropped it (the core reports Ready.dropped_proposals, see core.py), or
when its frame could not even be queued for the leader (peer unreachable). A
proposal whose fate is unknown (the leader changed after it was sent) is left
to commit or time out.

Membership (issue 15; the core's side is actors/raft/membership.py): a
ConfChangeProposal from the frontend (actors/member_service.py) is checked as
etcd's server checks it — ids that are or were members, peer URLs in use, a
learner not yet in sync, one change at a time, the strict reconfiguration check
against the members the leader heard from recently — and proposed with
``propose_conf_change`` on the leader. A follower forwards it to the leader's
raft over the peer door; the leader answers ConfChangeResult (to its own
frontend or back over the peer door to the origin) when the entry commits. A
new leader waits for its term's first commit before checking; a leader asked to
remove itself first hands leadership over, then forwards the change to the new
leader. Peers follow the configuration in use (``_follow_config`` after each
Ready; a change takes effect on append), with peer URLs from the YAML, the
replicated member records (store/members.py) and the changes in the log. A
member that learns it was removed (its removal committed, or another member
says so with MemberRemoved) leaves REMOVED_MARKER and exits REMOVED_EXIT_CODE; a
member started as a joiner (`cairn node --join`) starts as a learner of the
YAML's other members and learns the real configuration from the leader.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import struct
import time
from collections import deque


from actors.base import Actor
from actors.raft.auto_compaction import AutoCompactor
from actors.raft.core import LEADER, PersistedState, RaftConfig, RaftCore
from actors.raft.limits import RaftLimits
from actors.raft.markers import REJOIN_MARKER, REMOVED_EXIT_CODE, REMOVED_MARKER
from actors.raft.metrics import RaftMetrics
from actors.raft.peers import Peers
from actors.raft.retention import RetainedBytes, compaction_index
from actors.raft.snapshots import SnapshotReceiver, SnapshotSender
from store.environment import open_kv, open_raft_log
from store.mvcc import KeySpace
from transport import codec, curve
from transport.entries import make_payload
from actors.raft.membership import reconfig_problem
from store import members as member_records
from transport.errors import (
    ConfChangePendingError,
    LearnerNotReadyError,
    MemberIDExistsError,
    MemberNotFoundError,
    MemberNotLearnerError,
    NoLeaderError,
    NotEnoughStartedMembersError,
    NotLeaderError,
    PeerURLExistsError,
    TooManyRequestsError,
    UnhealthyClusterError,
)
from transport.messages import (
    KeyspaceReplaced,
    Applied,
    ApplyNeed,
    CommittedEntries,
    CompactionRequest,
    ConfChangeProposal,
    ConfChangeResult,
    MemberRemoved,
    Failpoint,
    ProposalsRejected,
    ProposeBatch,
    RaftStatus,
    ROLE_LEADER,
    ReadIndexRequest,
    ReadIndexResult,
    SnapshotChunk,
    SnapshotChunkAck,
    SnapshotInstalled,
    TransferLeadership,
)
from transport.raft_messages import (
    CONF_ADD_LEARNER,
    CONF_ADD_VOTER,
    CONF_CHANGE_NAMES,
    CONF_PROMOTE,
    CONF_REMOVE,
    CONF_UPDATE,
    ENTRY_CONF_CHANGE,
    MESSAGE_TYPE_NAMES,
    MSG_APP,
    MSG_HEARTBEAT_RESP,
    MSG_PRE_VOTE,
    MSG_PROP,
    MSG_SNAP,
    MSG_VOTE,
    ConfChange,
    HardState,
    decode_conf_change,
)
from transport.sockets import inbox, outbox

_CONTEXT = struct.Struct(">Q")
REJOIN_CONTEXT = b"rejoin"


class RaftActor(Actor):
    name = "raft"
    raft_limits = RaftLimits()

    def __init__(self, config, member_name: str):
        super().__init__(config, member_name)
        self.store = open_raft_log(self.data_dir)
        for repair in self.store.repairs:
            self.log.warning("raft_log_repaired", repair=repair)
        hard_state, snapshot, entries = self.store.load()
        self.kv_env = open_kv(self.data_dir, self.settings.kv_map_bytes)
        applied = self._applied_index_on_disk()
        # What the keyspace holds may be only in the page cache (apply syncs it
        # in the background): synced now, it is durable and compaction may use it.
        self.kv_env.sync(True)
        if snapshot is not None:
            applied = max(applied, snapshot.index)
        # After a snapshot install that crashed before raft persisted it, apply can
        # be past this log; start from the log's end (apply skips what it has).
        log_end = entries[-1].index if entries else (snapshot.index if snapshot else 0)
        applied = min(applied, log_end)
        self.member_urls = {m.id: m.peer for m in config.members}  # every member's peer URL we know
        # CURVE public keys: the YAML's, then those of members added at run time
        # (member records, conf-change entries); the peer door admits current members'.
        self.member_keys = {m.id: m.public_key for m in config.members if m.public_key}
        self.removed_ids: set[int] = set()
        self.removed_marker = os.path.join(self.data_dir, REMOVED_MARKER)
        self._load_member_records()
        self._note_conf_entries(entries)  # changes in the log that apply has not recorded yet
        if os.path.exists(self.removed_marker) or self.member.id in self.removed_ids:
            self._stop_removed("this member was removed from the cluster; its data dir cannot rejoin it")
        voters = tuple(m.id for m in config.members)
        learners: tuple[int, ...] = ()
        self.joining = getattr(config, "state", "new") == "existing"
        if self.joining:
            # Joining an existing cluster (cairn node --join): start as a learner of
            # it; the leader's log or snapshot then gives the real configuration.
            voters = tuple(v for v in voters if v != self.member.id)
            learners = (self.member.id,)
        limits = self.limits
        self.core = RaftCore(
            RaftConfig(
                id=self.member.id,
                voters=voters,
                learners=learners,
                election_ticks=self.settings.election_ticks,
                heartbeat_ticks=self.settings.heartbeat_ticks,
                max_entries_per_message=limits.max_entries_per_message,
                max_bytes_per_message=limits.max_bytes_per_message,
                max_inflight_messages=limits.max_inflight_messages,
                max_uncommitted_bytes=limits.max_uncommitted_bytes,
                defer_commit_notice=True,
            ),
            PersistedState(hard_state=hard_state, snapshot=snapshot, entries=entries, applied=applied),
            random.Random(int.from_bytes(os.urandom(8), "big")),
        )
        self.hard_state = self.saved_hard_state = hard_state  # the latest, and the latest on disk
        self.log.info(
            "raft_recovered", term=hard_state.term, vote=hard_state.vote, commit=hard_state.commit,
            first_index=entries[0].index if entries else None, last_index=entries[-1].index if entries else 0, applied=applied,
        )
        hwm = limits.socket_hwm
        self.inbox = inbox(self.context, self.data_dir, "raft", hwm)
        self.to_apply = outbox(self.context, self.data_dir, "apply", hwm)
        self.to_frontend = outbox(self.context, self.data_dir, "frontend", hwm)
        self.to_lease = outbox(self.context, self.data_dir, "lease", hwm)
        self.to_watch = outbox(self.context, self.data_dir, "watch", hwm)
        connect_curve = self._connect_curve if config.security.curve else None
        self.metrics_outbox = self.to_frontend
        self.raft_metrics = RaftMetrics(self.metrics)
        self.peers = Peers(self.context, self.member, config.members, self.log, self.serve_curve, connect_curve,
                           self.raft_limits)
        self.snapshot_sender = SnapshotSender(self.data_dir, self.kv_env, self.member.id, self.log, self.raft_limits)
        self.snapshot_receiver = SnapshotReceiver(self.data_dir, self.member.id, self.log)
        self.snapshot_to_step = None  # the MSG_SNAP waiting for apply to install its data
        self.pending_install = None  # the InstallSnapshot sent to apply, resent if apply restarts
        self.add_inbox(self.inbox)
        self._register_handlers()
        self.add_reader(self.peers.inbox, self.on_peer)

        self.tick_s = self.settings.tick_ms / 1000
        self.log_ready = self.settings.log_level == "debug"
        self.next_tick = time.monotonic() + self.tick_s
        self.peer_messages = []
        self.proposal_ids: list[int] = []
        self.proposal_payloads: list[bytes] = []
        self.waiting_for_leader = deque()  # (deadline, request_ids, payloads)
        # payload -> (request id, forget at): proposals forwarded to the leader, in
        # the order sent, so they can be rejected at once if known dropped
        self.forwarded: dict[bytes, tuple[int, float]] = {}
        self.own_payload_prefix = make_payload(self.member.id, b"")
        self.leaderless_since: float | None = time.monotonic()
        self.read_contexts: list[int] = []
        self.read_rounds: dict[int, list[int]] = {}
        self.next_read_round = 1
        # Apply flow: committed index, sent to apply, acknowledged by apply.
        self.committed_for_apply = applied
        self.sent_to_apply = applied
        self.apply_acked = applied
        self.apply_durable = applied  # synced above; moved by Applied.durable_index
        self.compaction_seen_durable = -1  # apply_durable when _maybe_compact last looked
        self.retained = RetainedBytes()  # bytes of applied entries still in memory
        self.revision = 0  # the keyspace revision apply last reported
        auto = self.settings.auto_compaction
        self.auto_compactor = AutoCompactor(auto.mode, auto.retention)
        self.auto_compaction_checked_at = 0.0
        self.last_status_key = None  # (role, term, leader, quorum active, learner) last published
        self.status_due = 0.0
        self.rejoin_marker = os.path.join(self.data_dir, REJOIN_MARKER)
        self.rejoining = os.path.exists(self.rejoin_marker)
        self.rejoin_target = 0  # the leader's commit index, learned by a ReadIndex round
        self.rejoin_asked = False
        if self.rejoining:
            self.log.warning("rejoining", reason="data dir lost; no votes until caught up")
        self.conf_proposals: dict[int, tuple[int, int, int]] = {}  # entry index -> (request id, term, origin)
        self.deferred_conf: list = []  # (deadline, ConfChangeProposal) waiting for a (new) leader
        self.stop_removed_at = 0.0
        self.stop_removed_reason = ""
        self.peer_conf = None
        self.commit_notice_at = 0.0  # when a deferred commit notice goes out (_commit_notice); 0: none due
        self.campaign_soon_pending = False  # a start's campaign, once a peer is reachable (_campaign_soon)
        self.leader_link_up = 0  # the leader whose connection this member has seen up (_watch_leader_link)
        self.campaign_soon_fast_until = time.monotonic() + 2 * self.settings.election_ticks * self.settings.tick_ms / 1000
        self._follow_config()
        if self.member.id not in (*self.core.voters, *self.core.learners) and self.core.commit_index >= self.core.pending_conf_index:
            self._stop_removed("this member's removal is in its own log")
        if self.joining or self.member.id not in self.core.voters:
            pass  # a learner (or a member not yet added) never campaigns
        elif len(voters) == 1 and not self.rejoining:
            self.core.campaign()
        elif not self.rejoining:
            # etcd's advanceTicksForElection: a member that starts has heard from
            # no leader, so it need not wait out a whole election timeout before
            # its first (pre-)vote; after a whole-cluster restart that timeout
            # was most of the time to the first write. As etcd does, it waits
            # until a peer is reachable (a campaign sent to nobody is lost, and
            # the next one is a whole timeout later), then campaigns within a
            # few ticks unless a leader is heard from first (_campaign_soon).
            self.campaign_soon_pending = True

    # ------------------------------------------------------------------ membership

    def _load_member_records(self) -> None:
        """Peer URLs and removed ids from the replicated member records (store/members.py)."""
        with self.kv_env.begin() as txn:
            meta_db = KeySpace(self.kv_env).meta_db
            records = member_records.load(txn, meta_db)
            self.removed_ids |= member_records.removed(txn, meta_db)
            self.member_keys.update(member_records.public_keys(txn, meta_db))
        for record in records or ():
            if record.peer_urls:
                self.member_urls[record.id] = record.peer_urls[0]

    def _note_conf_entries(self, entries) -> None:
        """Learn the peer URL (and CURVE key) a conf-change entry carries (the change
        takes effect on append, so they are needed before the entry commits)."""
        for entry in entries:
            if entry.kind != ENTRY_CONF_CHANGE or not entry.data:
                continue
            try:
                change, _ = decode_conf_change(entry.data)
            except ValueError:
                continue
            record = member_records.decode_context(change.context)
            urls = record.get("peer_urls") or ()
            if urls and change.type in (CONF_ADD_VOTER, CONF_ADD_LEARNER, CONF_UPDATE):
                self.member_urls[change.node_id] = urls[0]
            key = record.get("public_key")
            if isinstance(key, str) and key and change.type in (CONF_ADD_VOTER, CONF_ADD_LEARNER):
                self.member_keys[change.node_id] = key

    def _follow_config(self) -> None:
        """Peers follow the configuration in use: connect to added members, drop removed ones."""
        conf = self.core.conf_state
        if conf == self.peer_conf:
            return
        members = {peer for peer in (*conf.voters, *conf.learners) if peer != self.member.id}
        previous = set() if self.peer_conf is None else {p for p in (*self.peer_conf.voters, *self.peer_conf.learners)}
        self.removed_ids |= previous - members - {self.member.id}
        gone = {peer: self.member_urls[peer] for peer in self.removed_ids - members if peer in self.member_urls}
        known = {peer: self.member_urls[peer] for peer in members if peer in self.member_urls}
        missing = sorted(members - set(known))
        if missing:
            self.log.warning("peer_urls_unknown", peers=[f"{p:x}" for p in missing])
        self.peers.follow(known, gone, self.member_keys)
        if self.config.security.curve:
            # Removed members' keys are refused from now on (new connections; their
            # frames on old ones are dropped and answered MemberRemoved, peers.py).
            admitted = {self.member_keys[peer].encode(): f"{peer:x}" for peer in members | {self.member.id}
                        if peer in self.member_keys}
            self.allow_curve_keys("peer", admitted)
        if self.peer_conf is not None:
            self.log.info("config_followed", voters=[f"{v:x}" for v in conf.voters], learners=[f"{v:x}" for v in conf.learners])
        self.peer_conf = conf

    def _stop_removed(self, reason: str) -> None:
        """This member is no longer in the cluster: say so and stop the member
        (the supervisor stops every actor on REMOVED_EXIT_CODE)."""
        with open(self.removed_marker, "w") as marker:
            marker.write(f"member {self.member.id:x} was removed from the cluster: {reason}\n")
        self.log.error("member_removed", member_id=f"{self.member.id:x}", reason=reason)
        raise SystemExit(REMOVED_EXIT_CODE)

    def _on_member_removed(self, message: MemberRemoved) -> None:
        if self.stop_removed_at:
            return
        self.log.error("told_removed", by=f"{message.sender:x}")
        # A moment first, so that the answer to a change this member forwarded
        # (its own removal, say) still reaches its client.
        self.stop_removed_at = time.monotonic() + 1.0
        self.stop_removed_reason = f"member {message.sender:x} says this member was removed"

    def _on_conf_change(self, message: ConfChangeProposal) -> None:
        """etcd's server-side checks of a membership change, then the proposal (leader only)."""
        core = self.core
        change = ConfChange(message.change_type, message.node_id, message.context)

        origin = message.origin or self.member.id

        def refuse(error, leader: int = 0) -> None:
            self.log.info("conf_change_refused", request_id=message.request_id, code=error.code, error=error.message,
                          type=CONF_CHANGE_NAMES.get(change.type), member_id=f"{change.node_id:x}", origin=f"{origin:x}")
            self._answer_conf(ConfChangeResult(message.request_id, 0, error.code, error.message, leader, origin))

        if core.role != ROLE_LEADER:
            if core.leader_id and core.leader_id != self.member.id and not message.sender:
                # A follower hands its frontend's change to the leader (one hop, as proposals).
                forwarded = dataclasses.replace(message, origin=origin, sender=self.member.id)
                if self.peers.send_frame(core.leader_id, codec.encode(forwarded)):
                    self.log.info("conf_change_forwarded", request_id=message.request_id, leader=f"{core.leader_id:x}")
                    return None
            if message.sender == 0 and not core.leader_id:
                # No leader yet (an election, a transfer): try again once one is known.
                self.deferred_conf.append((time.monotonic() + self.settings.request_timeout_ms / 1000, message))
                return None
            return refuse(NotLeaderError() if core.leader_id else NoLeaderError(), core.leader_id)
        if core.term_at(core.commit_index) != core.term:
            # A new leader: until an entry of its term commits it takes no change
            # (membership.py), and it has not yet heard who is active. Wait for it.
            self.deferred_conf.append((time.monotonic() + self.settings.request_timeout_ms / 1000,
                                       dataclasses.replace(message, origin=origin, sender=0)))
            return None
        conf = core.conf_state
        current = (*conf.voters, *conf.learners)
        node, kind = change.node_id, change.type
        if kind in (CONF_ADD_VOTER, CONF_ADD_LEARNER):
            if node in current or node in self.removed_ids:
                return refuse(MemberIDExistsError())
            urls = set(member_records.decode_context(change.context).get("peer_urls") or ())
            if any(self.member_urls.get(peer) in urls for peer in current):
                return refuse(PeerURLExistsError())
        elif node not in current:
            return refuse(MemberNotFoundError())
        if kind == CONF_UPDATE:
            urls = set(member_records.decode_context(change.context).get("peer_urls") or ())
            if any(self.member_urls.get(peer) in urls for peer in current if peer != node):
                return refuse(PeerURLExistsError())
        if kind == CONF_PROMOTE:
            if node in conf.voters:
                return refuse(MemberNotLearnerError())
            if not core.learner_ready(node):
                return refuse(LearnerNotReadyError())
        if core.pending_conf_index > core.commit_index:
            return refuse(ConfChangePendingError())
        problem = reconfig_problem(conf, change, core.recently_active())
        if problem:
            return refuse(NotEnoughStartedMembersError())
        if kind == CONF_REMOVE and node == self.member.id:
            # etcd moves leadership away before removing the leader: the new
            # leader takes the removal when the client retries (NotLeader).
            target = self._transfer_target(conf)
            if not target:
                return refuse(UnhealthyClusterError())
            self.log.info("leader_removal_transfer", target=f"{target:x}", term=core.term)
            core.transfer_leadership(target)
            # The new leader takes it: forwarded once it is known (its origin's frontend still waits).
            self.deferred_conf.append((time.monotonic() + self.settings.request_timeout_ms / 1000,
                                       dataclasses.replace(message, origin=origin, sender=0)))
            return None
        if not core.propose_conf_change(change):
            return refuse(TooManyRequestsError())  # not ready yet (no entry of our term committed, a transfer)
        index = core.last_index
        self.conf_proposals[index] = (message.request_id, core.term, origin)
        self.log.info("conf_change_proposed", request_id=message.request_id, index=index,
                      type=CONF_CHANGE_NAMES.get(kind), member_id=f"{node:x}", term=core.term)

    def _answer_conf(self, result: ConfChangeResult) -> None:
        """To this member's frontend, or back to the member a change was forwarded from."""
        if result.origin in (0, self.member.id):
            self.send(self.to_frontend, result)
        else:
            self.peers.send_frame(result.origin, codec.encode(dataclasses.replace(result, sender=self.member.id)))

    def _retry_deferred_conf(self, now: float) -> None:
        if not self.core.leader_id:
            return
        if self.core.role == ROLE_LEADER and self.core.status().get("lead_transferee"):
            return  # handing over: the new leader takes them
        deferred, self.deferred_conf = self.deferred_conf, []
        for deadline, message in deferred:
            if deadline > now:
                self._on_conf_change(message)
            else:  # never proposed: its client may retry
                error = NoLeaderError()
                self._answer_conf(ConfChangeResult(message.request_id, 0, error.code, error.message, 0,
                                                   message.origin or self.member.id))

    def _transfer_target(self, conf) -> int:
        active = set(self.core.recently_active())
        candidates = [v for v in conf.voters if v != self.member.id and v in active]
        candidates.sort(key=lambda v: self.core.match_index(v) or 0, reverse=True)
        return candidates[0] if candidates else 0

    def _conf_committed(self, entries) -> None:
        for entry in entries:
            if entry.kind != ENTRY_CONF_CHANGE:
                continue
            proposal = self.conf_proposals.pop(entry.index, None)
            if proposal is not None:
                request_id, term, origin = proposal
                if term == entry.term:
                    self._answer_conf(ConfChangeResult(request_id, entry.index, origin=origin))
                else:  # our entry was replaced: it never committed, the client may retry
                    self._answer_conf(ConfChangeResult(request_id, 0, NotLeaderError.code, NotLeaderError().message,
                                                       self.core.leader_id, origin))
            try:
                change, _ = decode_conf_change(entry.data)
            except ValueError:
                continue
            if change.type == CONF_REMOVE:
                self.removed_ids.add(change.node_id)
                if change.node_id == self.member.id and not self.stop_removed_at:
                    # Let this Ready's messages (the commit index) go out first.
                    self.stop_removed_at = time.monotonic() + 1.0
                    self.stop_removed_reason = "its removal was committed"
        for index in [i for i in self.conf_proposals if i <= self.core.commit_index - 10000]:
            del self.conf_proposals[index]

    def _applied_index_on_disk(self) -> int:
        keyspace = KeySpace(self.kv_env)
        with self.kv_env.begin() as txn:
            return keyspace.applied_index(txn)

    # ------------------------------------------------------------------ input

    def on_peer(self, frames: list[bytes]) -> None:
        messages, others = self.peers.decode(frames)
        self.peer_messages.extend(messages)
        for message in others:
            if isinstance(message, SnapshotChunkAck):
                self.snapshot_sender.on_ack(message)
            elif isinstance(message, MemberRemoved):
                self._on_member_removed(message)
            elif isinstance(message, ConfChangeProposal):
                self._on_conf_change(message)  # forwarded by a follower
            elif isinstance(message, ConfChangeResult):
                if message.origin == self.member.id:
                    self.send(self.to_frontend, message)
            else:
                self._on_snapshot_chunk(message)

    def _on_snapshot_chunk(self, chunk: SnapshotChunk) -> None:
        if self.snapshot_to_step is not None:
            return  # installing one already; the leader resends after the stall timeout
        ack, install, message = self.snapshot_receiver.on_chunk(chunk)
        self.peers.send_frame(chunk.sender, codec.encode(ack))
        if install is not None:
            self.snapshot_to_step = message
            self.pending_install = install
            self.send(self.to_apply, install)

    def _connect_curve(self, socket, public_key: str) -> None:
        """A peer socket as a CURVE client of the member with `public_key`."""
        curve.make_client(socket, self.keys, public_key.encode())

    def _register_handlers(self) -> None:
        self.on_message(ProposeBatch, self._on_propose)
        self.on_message(ReadIndexRequest, lambda message: self.read_contexts.append(message.context))
        self.on_message(Applied, self._on_applied)
        self.on_message(ApplyNeed, self._on_apply_need)
        self.on_message(TransferLeadership, self._on_transfer_leadership)
        self.on_message(SnapshotInstalled, self._on_snapshot_installed)
        self.on_message(ConfChangeProposal, self._on_conf_change)
        self.on_message(Failpoint, lambda m: self.peers.set_failpoint(m.drop_peers, m.delay_peers, m.delay_ms))
        self.on_message(KeyspaceReplaced, self._on_keyspace_replaced)

    def _on_keyspace_replaced(self, message: KeyspaceReplaced) -> None:
        """apply defragmented the keyspace: snapshots for followers and the member
        records must come from the new file (the old one stops at the defragment)."""
        if message.error:
            return
        # close first: a second defragment may already have given the new lock file
        # the inode of the one this old environment holds, and LMDB refuses that
        self.kv_env.close()
        self.kv_env = open_kv(self.data_dir, self.settings.kv_map_bytes)
        self.snapshot_sender.kv_env = self.kv_env

    def _on_propose(self, message: ProposeBatch) -> None:
        self.proposal_ids.extend(message.request_ids)
        self.proposal_payloads.extend(message.payloads)

    def _on_applied(self, message: Applied) -> None:
        self.apply_acked = max(self.apply_acked, message.index)
        self.apply_durable = max(self.apply_durable, message.durable_index)
        self.revision = max(self.revision, message.revision)

    def _on_apply_need(self, message: ApplyNeed) -> None:
        self.log.info("apply_needs", next_index=message.next_index, sent=self.sent_to_apply)
        if self.pending_install is not None:
            self.send(self.to_apply, self.pending_install)  # apply restarted mid-install
        self.apply_acked = max(self.apply_acked, message.next_index - 1)
        self.sent_to_apply = message.next_index - 1

    def _on_transfer_leadership(self, message: TransferLeadership) -> None:
        self.log.info("transfer_leadership_requested", target=message.target, term=self.core.term)
        self.core.transfer_leadership(message.target)

    def _on_snapshot_installed(self, message: SnapshotInstalled) -> None:
        pending = self.snapshot_to_step
        if pending is None or pending.snapshot.index != message.index:
            # The answer to an InstallSnapshot sent again (ApplyNeed from an apply
            # that had not restarted after all): its install was answered already.
            self.log.info("snapshot_install_answer_ignored", index=message.index, ok=message.ok,
                          pending=pending.snapshot.index if pending is not None else None)
            return
        snapshot_message, self.snapshot_to_step = pending, None
        self.pending_install = None
        self.snapshot_receiver.installed()
        if not message.ok:
            self.log.error("snapshot_install_failed", index=message.index, error=message.error)
            return
        self.log.info("snapshot_installed", index=message.index, applied=message.applied, term=self.core.term)
        applied = max(message.applied, message.index)
        self.committed_for_apply = self.sent_to_apply = self.apply_acked = applied
        self.apply_durable = max(self.apply_durable, applied)  # apply synced it before answering
        self.retained.drop_through(applied)
        self.core.step(snapshot_message)
        self._load_member_records()  # the snapshot's keyspace holds the member records

    # ------------------------------------------------------------------ the turn

    def on_batch_end(self) -> None:
        now = time.monotonic()
        if self.campaign_soon_pending:
            self._campaign_soon()
        ticked = now >= self.next_tick
        if ticked:
            self._watch_leader_link()
        while now >= self.next_tick:
            if not self.rejoining:  # a rejoining member must not campaign
                self.core.tick()
            self.next_tick += self.tick_s
        if now - self.next_tick > self.raft_limits.starved_ticks * self.tick_s:  # starved of CPU
            self.next_tick = now + self.tick_s
        if self.peer_messages:
            messages, self.peer_messages = self.peer_messages, []
            stepped_at = time.perf_counter()
            for message in messages:
                if message.type == MSG_HEARTBEAT_RESP:  # a leader times its heartbeats (peer round trip)
                    self.raft_metrics.heartbeat_answered(message.sender, stepped_at)
                if self.rejoining and message.type in (MSG_VOTE, MSG_PRE_VOTE):
                    continue  # the vote we may have cast before losing our disk must not be cast twice
                if self.snapshot_to_step is not None and message.type == MSG_APP:
                    # The leader's appends follow the snapshot apply is installing;
                    # the core would judge them against the log the snapshot
                    # replaces and send the leader back to a snapshot. Dropped (a
                    # lost message): the snapshot's answer resumes the leader.
                    continue
                self.core.step(message)
        # The steps below are skipped, by a cheap look at their input, in the
        # turns that give them nothing to do (most turns, for most of them):
        # their calls were a fixed cost of every turn (issue 18).
        if self.rejoining:
            self._rejoin_progress()
        self._auto_compact(now)
        if self.forwarded:
            self._forget_forwarded(now)
        self._propose(now)
        if self.deferred_conf:
            self._retry_deferred_conf(now)
        if self.read_contexts:
            self._read_index()
        self._drain_ready()
        self._commit_notice(now)
        if self.snapshot_sender.transfers:
            for peer, ok in self.snapshot_sender.pump(self.peers.send_frame, codec.encode):
                self.core.report_snapshot(peer, ok)
        if self.sent_to_apply < self.committed_for_apply:
            self._feed_apply()
        # Compaction (below what apply made durable) has new room when that
        # moved; what else bounds it (followers' progress, retained bytes) is
        # looked at again at least once a tick.
        if ticked or self.apply_durable != self.compaction_seen_durable:
            self.compaction_seen_durable = self.apply_durable
            self._maybe_compact()
        if self.peers.delayed:
            self.peers.flush_delayed(now)
        self._publish_status(now)
        if self.stop_removed_at and now >= self.stop_removed_at:
            self._stop_removed(self.stop_removed_reason)

    def _commit_notice(self, now: float) -> None:
        """A deferred commit notice (RaftConfig.defer_commit_notice) goes out
        commit_notice_ms after it became due, unless an append or heartbeat
        carried it meanwhile."""
        if not self.core.commit_unsent():
            self.commit_notice_at = 0.0
        elif not self.commit_notice_at:
            self.commit_notice_at = now + self.raft_limits.commit_notice_ms / 1000
        elif now >= self.commit_notice_at:
            self.commit_notice_at = 0.0
            self.core.send_commit()
            self._drain_ready()

    def timeout_ms(self) -> int:
        # Until a peer is reachable after a start, look every 10 ms rather than
        # once a tick (the first election waits for it: _campaign_soon), for
        # two election timeouts at most: a member whose peers are all down
        # goes back to a turn per tick.
        if self.campaign_soon_pending and time.monotonic() < self.campaign_soon_fast_until:
            return 10
        if self.commit_notice_at:
            return max(1, min(self.settings.tick_ms, math.ceil((self.commit_notice_at - time.monotonic()) * 1000)))
        return self.settings.tick_ms

    def _campaign_soon(self) -> None:
        """After a start, once a peer is reachable and while no leader is known:
        campaign within a few ticks (RaftCore.campaign_soon). At least two
        ticks, so a live leader's heartbeat (every tick) comes first when only
        this member restarted; a random spread up to half an election timeout
        keeps the members of a whole-cluster restart from campaigning at once
        (a split vote costs a whole randomized timeout more)."""
        if self.core.leader_id:
            self.campaign_soon_pending = False
        elif self.peers.reachable():
            self.campaign_soon_pending = False
            election_ticks = self.settings.election_ticks
            self.core.campaign_soon(min(2, election_ticks), max(2, election_ticks // 2))
            self.log.info("campaign_soon", peers_reachable=True, term=self.core.term)

    def _watch_leader_link(self) -> None:
        """Once a tick. A follower whose connection to its leader was up and is
        gone now (a killed leader's sockets close with its process) campaigns
        within a few ticks rather than a whole election timeout after the last
        heartbeat (RaftCore.leader_unreachable; pre-vote keeps a live leader
        in office). A stopped leader keeps its connections: the timeout finds it."""
        lead = self.core.leader_id
        if not lead or lead == self.member.id or self.rejoining:
            self.leader_link_up = 0
        elif self.peers.connected(lead):
            self.leader_link_up = lead
        elif self.leader_link_up == lead:
            self.leader_link_up = 0
            self.core.leader_unreachable(1, max(1, self.settings.election_ticks // 2))  # logged as its event

    def _propose(self, now: float) -> None:
        if self.core.leader_id:
            self.leaderless_since = None
            if not self.proposal_ids and not self.waiting_for_leader:
                return  # most turns
        elif self.leaderless_since is None:
            self.leaderless_since = now
        wait_s = self.settings.no_leader_wait_ms / 1000
        if self.proposal_ids:
            # A member leaderless for a whole wait already answers at once: the
            # client backs off and retries, rather than every retry waiting again.
            long_leaderless = self.leaderless_since is not None and now - self.leaderless_since >= wait_s
            self.waiting_for_leader.append((now if long_leaderless else now + wait_s, self.proposal_ids, self.proposal_payloads))
            self.proposal_ids, self.proposal_payloads = [], []
        if not self.waiting_for_leader:
            return
        if self.core.leader_id:
            ids, payloads = [], []
            for _, batch_ids, batch_payloads in self.waiting_for_leader:
                ids.extend(batch_ids)
                payloads.extend(batch_payloads)
            self.waiting_for_leader.clear()
            if self.core.propose(payloads):
                self.log.info("proposed", request_ids=ids, term=self.core.term, leader=self.core.leader_id)
                if self.core.role != LEADER:
                    forget_at = now + self.settings.request_timeout_ms / 1000
                    for request_id, payload in zip(ids, payloads):
                        self.forwarded[payload] = (request_id, forget_at)
                return
            # Leader known but the core refused (transfer in progress, or the
            # uncommitted limit): not in any log, safe for the client to retry.
            self._reject(ids, TooManyRequestsError.code)
            return
        while self.waiting_for_leader and self.waiting_for_leader[0][0] <= now:
            _, ids, _ = self.waiting_for_leader.popleft()
            self._reject(ids, NoLeaderError.code)

    def _forget_forwarded(self, now: float) -> None:
        forwarded = self.forwarded
        while forwarded:
            payload = next(iter(forwarded))
            if forwarded[payload][1] > now:
                return
            del forwarded[payload]

    def _forwarded_dropped(self, payloads, reason: str) -> None:
        """Forwarded proposals known to be in no log: their clients retry now."""
        ids = []
        for payload in payloads:
            forwarded = self.forwarded.pop(payload, None)
            if forwarded is not None:
                ids.append(forwarded[0])
        if ids:
            code = NotLeaderError.code if self.core.leader_id else NoLeaderError.code
            self.log.info("forwarded_proposals_dropped", reason=reason, count=len(ids), term=self.core.term)
            self._reject(ids, code)

    def _rejoin_progress(self) -> None:
        """Leave rejoin mode once applied up to the leader's commit index at the
        time we asked (a ReadIndex round gives exactly that)."""
        if not self.rejoin_asked and self.core.leader_id:
            self.rejoin_asked = self.core.read_index(REJOIN_CONTEXT)
        if self.rejoin_target and self.apply_acked >= self.rejoin_target:
            self.rejoining = False
            os.unlink(self.rejoin_marker)
            self.log.info("rejoined", applied=self.apply_acked, term=self.core.term)

    def _auto_compact(self, now: float) -> None:
        """The leader proposes compactions for auto_compaction (checked once a second)."""
        if now - self.auto_compaction_checked_at < self.raft_limits.auto_compaction_check_s or self.core.role != ROLE_LEADER:
            return
        self.auto_compaction_checked_at = now
        target = self.auto_compactor.next_target(now, self.revision)
        if target is None:
            return
        request_id = int.from_bytes(os.urandom(8), "big") >> 1
        frame = codec.encode(CompactionRequest(target), request_id)
        self.proposal_ids.append(request_id)
        self.proposal_payloads.append(make_payload(self.member.id, frame))
        self.log.info("auto_compaction_proposed", revision=target, request_id=request_id, term=self.core.term)

    def _reject(self, request_ids, code: str) -> None:
        self.log.warning("proposals_rejected", request_ids=request_ids, code=code, term=self.core.term)
        self.send(self.to_frontend, ProposalsRejected(tuple(request_ids), code, self.core.leader_id))

    def _read_index(self) -> None:
        if not self.read_contexts:
            return
        contexts, self.read_contexts = self.read_contexts, []
        round_id = self.next_read_round
        self.next_read_round += 1
        if self.core.read_index(_CONTEXT.pack(round_id)):
            self.read_rounds[round_id] = contexts
            return
        for context in contexts:
            self.send(self.to_frontend, ReadIndexResult(context, 0, NoLeaderError.code))

    def _drain_ready(self) -> None:
        while self.core.has_ready():
            ready = self.core.ready()
            messages = self._without_snapshots(ready.messages)
            # Thesis §10.2.1 (and etcd's server): a leader may send its appends
            # while it writes them itself; its own entries count toward a commit
            # only once persisted (advance). Others persist first, then answer.
            leading = self.core.role == ROLE_LEADER
            # A Ready that writes nothing durable (the commit index moved, the
            # followers' answers arrived) hands its committed entries to apply
            # before its messages go out: they were durable on this member and a
            # quorum before this Ready, and apply is on the client's path, while
            # the messages (the new commit index for the followers) are not.
            sync = self._must_sync(ready)
            apply_first = bool(ready.committed_entries) and not sync
            if apply_first:
                self._hand_to_apply(ready.committed_entries)
            if leading:
                self._send_to_peers(messages)
            started = time.perf_counter()
            self._persist(ready, sync)
            if self.log_ready:  # its fields cost more than the filtered call; once per Ready
                self.log.debug(
                    "ready", entries=len(ready.entries), messages=len(ready.messages),
                    committed=len(ready.committed_entries), persist_ms=round((time.perf_counter() - started) * 1000, 3),
                    last=ready.entries[-1].index if ready.entries else None,
                    commit_to=ready.committed_entries[-1].index if ready.committed_entries else None,
                )
            if ready.snapshot is not None:
                self.log.info("snapshot_persisted", index=ready.snapshot.index, term=ready.snapshot.term)
            if ready.entries:
                self._note_conf_entries(ready.entries)
            if not leading:
                self._send_to_peers(messages)
            if ready.dropped_proposals:
                self._forwarded_dropped(ready.dropped_proposals, "rejected_by_peer")
            if ready.committed_entries and not apply_first:
                self._hand_to_apply(ready.committed_entries)
            for read_state in ready.read_states:
                if read_state.context == REJOIN_CONTEXT:
                    self.rejoin_target = read_state.index
                    continue
                round_id = _CONTEXT.unpack(read_state.context)[0]
                for context in self.read_rounds.pop(round_id, ()):
                    self.send(self.to_frontend, ReadIndexResult(context, read_state.index))
            if ready.soft_state is not None:
                self.log.info(
                    "role_changed", role=ready.soft_state.role, leader=ready.soft_state.leader_id, term=self.core.term
                )
                self._fail_read_rounds()
                self.status_due = 0.0
                self.raft_metrics.leader_seen(ready.soft_state.leader_id)
            for event in ready.events:
                name, fields = event[0], (event[1] if len(event) > 1 else {})
                self.log.info(name, **{"term": self.core.term, **_printable(fields)})
            self.core.advance(ready)
            self._follow_config()

    def _hand_to_apply(self, committed_entries) -> None:
        """Committed entries of a Ready: answer conf changes, feed apply, and
        forget the forwarded proposals among them."""
        self._conf_committed(committed_entries)
        self.committed_for_apply = max(self.committed_for_apply, committed_entries[-1].index)
        self._feed_apply(committed_entries)
        if self.forwarded:
            own = self.own_payload_prefix  # skip hashing other members' entries
            for entry in committed_entries:
                if entry.data.startswith(own):
                    self.forwarded.pop(entry.data, None)

    def _must_sync(self, ready) -> bool:
        """Whether this Ready writes anything durable (see _persist)."""
        hard_state = ready.hard_state if ready.hard_state is not None else self.hard_state
        return must_sync(ready, hard_state, self.saved_hard_state)

    def _persist(self, ready, sync: bool) -> None:
        """Write a Ready durably, except a change of the commit index alone: as in
        etcd's WAL (raft.MustSync), that needs no fsync of its own. It rides with
        the next write that must be synced; a restart recovers a lagging commit
        index from what apply holds (applied entries were committed) and from the
        leader. Term and vote, and every entry a member acknowledges, are always
        synced before the messages that depend on them go out. sync: whether the
        Ready writes anything durable (_must_sync, which _drain_ready asked)."""
        if ready.hard_state is not None:
            self.hard_state = ready.hard_state
        if not sync:
            return
        saved = self.saved_hard_state
        started = time.perf_counter()
        self.store.save(self.hard_state if self.hard_state != saved else None, ready.entries, ready.snapshot)
        self.raft_metrics.fsync.observe(time.perf_counter() - started)
        self.saved_hard_state = self.hard_state

    def _without_snapshots(self, messages):
        """MSG_SNAP goes out as a streamed keyspace copy, not as a message."""
        if not any(message.type == MSG_SNAP for message in messages):
            return messages
        for message in messages:
            if message.type == MSG_SNAP:
                self.snapshot_sender.start(message)
        return [message for message in messages if message.type != MSG_SNAP]

    def _send_to_peers(self, messages) -> None:
        if self.core.role == ROLE_LEADER:
            self.raft_metrics.sent(messages, time.perf_counter())
        for peer in self.peers.send(messages):
            self.core.report_unreachable(peer)
            # Not queued, so never received: a proposal forwarded in it is in no log.
            unsent = [e.data for m in messages if m.to == peer and m.type == MSG_PROP for e in m.entries]
            if unsent:
                self._forwarded_dropped(unsent, "leader_unreachable")

    def _fail_read_rounds(self) -> None:
        """After any change of leader or role the core drops pending reads (as
        etcd's does), so their rounds will never be confirmed: fail them now
        with NoLeader, which clients retry, rather than let them time out."""
        if not self.read_rounds:
            return
        for contexts in self.read_rounds.values():
            for context in contexts:
                self.send(self.to_frontend, ReadIndexResult(context, 0, NoLeaderError.code))
        self.read_rounds.clear()

    def _feed_apply(self, fresh_entries=()) -> None:
        """Send committed entries to apply in order, at most max_apply_inflight_entries
        unacknowledged; fresh entries from a Ready go out as they are when they
        follow what was sent, anything else is re-read from the log."""
        limit = self.limits.max_apply_inflight_entries
        while self.sent_to_apply < self.committed_for_apply and self.sent_to_apply - self.apply_acked < limit:
            first = self.sent_to_apply + 1
            last = min(self.committed_for_apply, first + self.raft_limits.apply_chunk_entries - 1, self.apply_acked + limit)
            if fresh_entries and fresh_entries[0].index <= first <= fresh_entries[-1].index:
                offset = first - fresh_entries[0].index
                chunk = tuple(fresh_entries[offset : offset + last - first + 1])
            else:
                chunk = self.store.entries(first, last + 1)
            if not chunk:
                self.log.error("apply_entries_missing", first=first, last=last)
                return
            if not self.send(self.to_apply, CommittedEntries(chunk)):
                return
            self.sent_to_apply = chunk[-1].index
            self.retained.add(chunk)

    def _maybe_compact(self) -> None:
        """Raft log compaction (§7): keep snapshot_entries applied entries behind
        what apply has made durable, so followers slightly behind catch up from
        the log, and what a recently active follower still needs (one installing
        a snapshot goes on after it), and drop the rest; keep fewer when they
        hold more than max_retained_log_bytes (actors/raft/retention.py). Never
        past the keyspace's durable index: an OS crash may undo apply's later
        batches, which are then applied again from this log."""
        durable = min(self.apply_durable, self.apply_acked, self.core.applied_index)
        by_bytes = self.retained.compact_point(self.limits.max_retained_log_bytes, durable)
        keep, first = self.settings.snapshot_entries, self.core.first_index
        # What followers still need only lowers the target: when, bytes aside,
        # there is nothing to compact even without it (most turns), skip the
        # leader's walk over them.
        if not by_bytes and not compaction_index(durable, keep, first, None, 0):
            return
        compact_to = compaction_index(durable, keep, first, self.core.catch_up_index(), by_bytes)
        if not compact_to:
            return
        term = self.store.term(compact_to)
        meta = self.core.compact(compact_to)
        self.retained.drop_through(compact_to)
        # The configuration at the snapshot's index, not the YAML's (membership changes).
        self.store.save_compaction(compact_to, term, tuple(meta.voters), tuple(meta.learners))
        self.log.info("log_compacted", index=compact_to, term=term)

    def _publish_status(self, now: float) -> None:
        core = self.core
        # Role, term, leader and quorum go out at once (leases and reads depend on
        # them); indexes alone move on every write, and waking three actors per
        # turn for them cost ~9% of the leader's CPU under load: once a tick.
        # The message is built only when it goes out (most turns it does not).
        quorum_active = core.role == ROLE_LEADER and core.quorum_active()
        is_learner = self.member.id in core.learners
        key = (core.role, core.term, core.leader_id, quorum_active, is_learner)
        if key == self.last_status_key and now < self.status_due:
            return
        self.last_status_key = key
        self.status_due = now + self.tick_s
        status = RaftStatus(
            member_id=self.member.id,
            term=core.term,
            leader_id=core.leader_id,
            role=core.role,
            commit_index=core.commit_index,
            last_index=core.last_index,
            applied_index=self.apply_acked,
            quorum_active=quorum_active,
            is_learner=is_learner,
        )
        frame = codec.encode(status)
        for socket in (self.to_frontend, self.to_lease, self.to_watch):
            self.send(socket, frame, on_full=_republished_next_tick)

    def collect_metrics(self) -> None:
        self.raft_metrics.collect(self.core.role == ROLE_LEADER)

    def queue_depth(self) -> int:
        return len(self.proposal_ids) + len(self.waiting_for_leader) + len(self.read_contexts)

    def answer_pending(self, error) -> int:
        """Proposals not yet in the log (waiting for a leader, or not yet
        stepped) go back to the frontend as rejected, so it answers them
        (retryable: they never reached a log)."""
        ids = [i for _, batch_ids, _ in self.waiting_for_leader for i in batch_ids] + self.proposal_ids
        if ids:
            self.send(self.to_frontend, ProposalsRejected(tuple(ids), error.code, 0))
        return len(ids)

    def release(self) -> None:
        self.snapshot_sender.close()
        self.store.close()
        self.kv_env.close()


def _republished_next_tick() -> None:
    """A RaftStatus that finds its receiver's queue full is dropped quietly:
    status goes out again at the next tick."""


def must_sync(ready, hard_state: HardState, saved: HardState) -> bool:
    """Whether a Ready needs a synced write (etcd's raft.MustSync): new entries,
    a snapshot, or a new term or vote. A commit index that moved alone does not."""
    return bool(ready.entries) or ready.snapshot is not None or (hard_state.term, hard_state.vote) != (saved.term, saved.vote)


def _printable(fields: dict) -> dict:
    """Core events carry ints and names; message types become their names."""
    out = {}
    for key, value in fields.items():
        if key == "type" and isinstance(value, int):
            value = MESSAGE_TYPE_NAMES.get(value, value)
        out[key if key not in ("event", "level", "node") else f"core_{key}"] = value
    return out
