"""The lease-expiry actor: lease deadlines in memory, acting only on the leader.

Theory of operation
-------------------
Every member's lease actor mirrors the replicated lease table (loaded from the
store at start, then kept current by LeasesChanged from apply). Only the
leader's keeps deadlines (actors/lease_table.py) and acts on them:

* keep-alives, TimeToLive and Leases requests are answered here, without the
  Raft log. A member that does not lead forwards them to the leader's frontend
  (as a client would) and relays the answer, so clients may use any member.
  TimeToLive and Leases come only after the frontend's read index wait, and
  which leases exist (and their keys) is read from the store, not from the
  table, which LeasesChanged may reach later: so they see every grant and
  revoke acknowledged before they were asked. A forwarded TimeToLive asks
  the leader without keys, and this member adds them from its own store
  (the leader's frontend would check them against no user; this member's
  checked them against the caller). A leader whose apply is behind this
  member's may not know a lease yet that this member granted and answered:
  its "not found" is asked again a tick later, until the forward's
  deadline (etcd's leader waits for its applied index before a renew).
* each tick, expired leases are revoked by proposing LeaseExpireRequest
  entries, many leases per entry — but only while the leader has heard from a
  quorum within an election timeout (RaftStatus.quorum_active): a leader cut off
  or starved of CPU must not revoke every lease it believes has expired.
* every checkpoint_interval, remaining TTLs are proposed as
  LeaseCheckpointRequest entries in batches, so a new leader resumes from them
  (see lease_table.promote).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections import deque

import zmq

from actors.auth_door import internal_token
from actors.base import Actor
from actors.lease_table import LeaseTable
from actors.lock_service import SERVICE_REQUESTS, LockService
from actors.member_specs import member_spec
from store.environment import open_kv
from store.mvcc import KeySpace
from transport import codec
from transport.entries import make_payload
from transport.errors import CairnError, MalformedRequestError, NoLeaderError
from transport.limits import limit, limits, positive
from transport.messages import (
    ClientReplies,
    KeyspaceReplaced,
    ClientRequests,
    LeaseCheckpointRequest,
    LeaseExpireRequest,
    LeaseKeepAliveRequest,
    LeaseKeepAliveResponse,
    LeaseLeasesRequest,
    LeaseLeasesResponse,
    LeasesChanged,
    LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
    ProposeBatch,
    RaftStatus,
    ResponseHeader,
    ROLE_FOLLOWER,
    ROLE_LEADER,
)
from transport.sockets import configure, inbox, outbox


@limits(
    positive("expire_batch", "expire_entries_per_tick", "checkpoint_batch", "checkpoint_interval_s", "forward_timeout_s"),
)
class LeaseLimits:
    """The lease actor's own bounds and periods, each with its reason."""

    expire_batch: int = limit(
        500,
        "Leases revoked per log entry: with expire_entries_per_tick, 10,000 leases expiring at once become 20 entries "
        "spread over a few ticks, never a stall.")
    expire_entries_per_tick: int = limit(
        4,
        "Expiry entries proposed per tick, so a mass expiry never fills one Raft batch.")
    checkpoint_interval_s: float = limit(
        5.0,
        "How often the leader proposes remaining TTLs, so a new leader resumes from them (lease_table.promote) rather "
        "than granting every lease a fresh TTL; etcd's checkpoint interval is 5 minutes, 5 s keeps the error small at "
        "one entry per 1,000 leases.")
    checkpoint_batch: int = limit(
        1000,
        "Leases per LeaseCheckpointRequest entry: bounds an entry's size.")
    forward_timeout_s: float = limit(
        2.0,
        "A forwarded lease request the leader has not answered in this long is failed (NoLeader, retryable), so a "
        "client can turn to another member well within a lease's life instead of waiting out its own timeout.")


@dataclasses.dataclass(slots=True)
class Forwarded:
    """A lease request sent on to the leader, until its answer is relayed."""

    identity: bytes
    deadline: float
    keys_wanted: bool
    frame: bytes  # sent again while the leader has not applied a lease this member has
    answer: bytes | None = None  # the leader's last answer, relayed at the deadline


class LeaseActor(Actor):
    name = "lease"
    lease_limits = LeaseLimits()

    def __init__(self, config, member_name: str):
        super().__init__(config, member_name)
        hwm = self.limits.socket_hwm
        self.inbox = inbox(self.context, self.data_dir, "lease", hwm)
        self.to_frontend = outbox(self.context, self.data_dir, "frontend", hwm)
        self.to_raft = outbox(self.context, self.data_dir, "raft", hwm)
        self.metrics_outbox = self.to_frontend
        self.granted = self.metrics.counter("etcd_debugging_lease_granted_total")
        self.revoked = self.metrics.counter("etcd_debugging_lease_revoked_total")
        self.renewed = self.metrics.counter("etcd_debugging_lease_renewed_total")
        self.add_inbox(self.inbox)
        self.on_message(RaftStatus, self.on_status)
        self.on_message(LeasesChanged, self.on_leases_changed)
        self.on_message(ClientRequests, self.on_client_requests)
        self.on_message(KeyspaceReplaced, self.on_keyspace_replaced)
        self.env = open_kv(self.data_dir, self.settings.kv_map_bytes)
        self.keyspace = KeySpace(self.env)
        self.batch_revision: int | None = None  # see _header_revision
        self.batch_txn = self.batch_reader = None  # a read transaction for this batch's checks (see _stored)
        self.table = LeaseTable()
        self.table.load(self._stored_leases())
        self.election_timeout_s = self.settings.election_ticks * self.settings.tick_ms / 1000
        self.raft = RaftStatus(self.member.id, 0, 0, ROLE_FOLLOWER, 0, 0, 0)
        self.replies: list[tuple[bytes, bytes]] = []
        self.leader_link: zmq.Socket | None = None
        self.leader_link_to = 0
        self.forwarded: dict[int, Forwarded] = {}  # request id -> what its answer needs
        self.ask_again: list[int] = []  # forwarded requests the leader answered before applying their lease
        self.ask_again_at = 0.0  # when they go to the leader again: a tick after the first answer
        self.next_checkpoint = time.monotonic() + self.lease_limits.checkpoint_interval_s
        # Lock and Election services: worker threads hand results back through
        # this deque and wake the loop through an inproc pair.
        self.lock_service: LockService | None = None
        self.service_replies: deque[tuple[bytes, bytes]] = deque()
        self.service_wake_in = self.context.socket(zmq.PAIR)
        self.service_wake_in.bind("inproc://lease-service-wake")
        self.service_wake_out = self.context.socket(zmq.PAIR)
        self.service_wake_out.connect("inproc://lease-service-wake")
        self.service_wake_lock = threading.Lock()
        self.add_reader(self.service_wake_in, self.on_service_replies)
        self.log.info("leases_loaded", count=len(self.table.ttl))

    def on_keyspace_replaced(self, message: KeyspaceReplaced) -> None:
        """A defragment replaced the keyspace file: read the new one from now on."""
        if message.error:
            return  # the defragment failed: the file was not replaced
        if self.batch_txn is not None:
            self.batch_txn.abort()
            self.batch_txn = self.batch_reader = None
        self.batch_revision = None
        # close first: a second defragment may already have given the new lock
        # file the inode of the one the old environment holds (LMDB refuses that)
        self.env.close()
        self.env = open_kv(self.data_dir, self.settings.kv_map_bytes)
        self.keyspace = KeySpace(self.env)

    def _stored_leases(self) -> dict[int, tuple[int, int]]:
        header = ResponseHeader(self.config.id, self.member.id, 0, 0)
        with self.env.begin() as txn:
            reader = self.keyspace.reader(txn, header)
            return {lease: reader.lease(lease) for lease in reader.leases()}

    # ------------------------------------------------------------------ input

    def on_leases_changed(self, message: LeasesChanged) -> None:
        now = time.monotonic()
        for lease, ttl in zip(message.granted_ids, message.granted_ttls):
            self.table.granted(lease, ttl, now)
        for lease in message.revoked_ids:
            self.table.revoked(lease)
        self.granted.value += len(message.granted_ids)
        self.revoked.value += len(message.revoked_ids)

    def on_client_requests(self, message: ClientRequests) -> None:
        now = time.monotonic()
        for identity, client_frame in zip(message.identities, message.frames):
            self.on_client(identity, client_frame, now)

    def on_status(self, status: RaftStatus) -> None:
        now = time.monotonic()
        leading = status.role == ROLE_LEADER
        if leading and not self.table.leading:
            # reload: this member may have missed LeasesChanged while it restarted
            self.table.load(self._stored_leases())
            self.table.promote(now, self.election_timeout_s)
            self.log.info("leases_promoted", count=len(self.table.ttl), extend_s=self.election_timeout_s, term=status.term)
        elif not leading and self.table.leading:
            self.table.demote()
            self.log.info("leases_demoted", term=status.term)
        if status.leader_id != self.raft.leader_id and self.forwarded:
            # the leader they went to is gone: no answer will come (retryable)
            self._fail_forwarded(list(self.forwarded), NoLeaderError("etcdserver: leader changed"))
        self.raft = status

    def _fail_forwarded(self, request_ids: list[int], error) -> None:
        for request_id in request_ids:
            self.reply(self.forwarded.pop(request_id).identity, request_id, error.to_response())

    def on_client(self, identity: bytes, frame: bytes, now: float) -> None:
        try:
            request_id, request = codec.decode(frame)
        except CairnError as error:
            self.reply(identity, codec.peek_request_id(frame), error.to_response())
            return
        if isinstance(request, SERVICE_REQUESTS):
            if self.lock_service is None:
                self.lock_service = LockService(self.member.client, self.service_reply,
                                                self.client_security(), internal_token(self.data_dir))
            self.lock_service.submit(identity, request_id, request)
            return
        if not self.table.leading:
            keys_wanted = isinstance(request, LeaseTimeToLiveRequest) and request.keys
            if keys_wanted:
                frame = codec.encode(dataclasses.replace(request, keys=False), request_id)
            self.forward(identity, request_id, frame, now, keys_wanted)
            return
        header = ResponseHeader(self.config.id, self.member.id, self._header_revision(), self.raft.term)
        if isinstance(request, LeaseKeepAliveRequest):
            ttl = self.table.renew(request.id, now)
            if ttl == 0 and request.id not in self.table.ttl:
                ttl = self._renew_unseen(request.id, now)
            elif ttl and not self._stored(request.id):
                # revoked, and this actor not told yet: LeasesChanged travels on
                # another pipe than the revoke's answer, which the client may
                # have had before this keep-alive left. The store already knows.
                self.table.revoked(request.id)
                ttl = 0
            self.renewed.value += 1 if ttl else 0
            self.reply(identity, request_id, LeaseKeepAliveResponse(header, request.id, ttl))
        elif isinstance(request, LeaseTimeToLiveRequest):
            self.reply(identity, request_id, self.time_to_live(header, request, now))
        elif isinstance(request, LeaseLeasesRequest):
            self.reply(identity, request_id, LeaseLeasesResponse(header, tuple(sorted(self._reader().leases()))))
        else:
            self.reply(identity, request_id, MalformedRequestError(f"{type(request).__name__} is not a lease request").to_response())

    def _renew_unseen(self, lease: int, now: float) -> int:
        """A keep-alive can overtake the LeasesChanged of a grant just applied
        (they reach this actor through different pipes): the store decides."""
        stored = self._stored_leases().get(lease)
        if stored is None:
            return 0
        self.table.granted(lease, stored[0], now)
        return self.table.renew(lease, now)

    def time_to_live(self, header, request: LeaseTimeToLiveRequest, now: float) -> LeaseTimeToLiveResponse:
        """From the store whether the lease exists (the table may not have
        heard of a grant or revoke yet), from the table its deadline."""
        stored = self._reader().lease(request.id)
        if stored is None:
            self.table.revoked(request.id)
            return LeaseTimeToLiveResponse(header, request.id, -1)
        if request.id not in self.table.ttl:
            self.table.granted(request.id, stored[0], now)
        keys = tuple(self._reader().lease_keys(request.id)) if request.keys else ()
        return LeaseTimeToLiveResponse(header, request.id, self.table.remaining(request.id, now), self.table.ttl[request.id], keys)

    def service_reply(self, identity: bytes, frame: bytes) -> None:
        """Called on a service worker thread."""
        self.service_replies.append((identity, frame))
        with self.service_wake_lock:
            self.service_wake_out.send(b"", zmq.NOBLOCK)

    def on_service_replies(self, frames: list[bytes]) -> None:
        while self.service_replies:
            self.replies.append(self.service_replies.popleft())

    # ------------------------------------------------------------------ forwarding

    def forward(self, identity: bytes, request_id: int, frame: bytes, now: float, keys_wanted: bool = False) -> None:
        """Send a lease request to the leader's frontend and relay its answer."""
        leader = self._leader_spec()
        if leader is None or leader.id == self.member.id:
            self.reply(identity, request_id, NoLeaderError().to_response())
            return
        if self.leader_link_to != leader.id:
            self._connect_leader(leader)
        # the link's queue is full: the leader is far behind or gone (retryable)
        unreachable = NoLeaderError("etcdserver: leader unreachable").to_response()
        if self.send(self.leader_link, frame, on_full=lambda: self.reply(identity, request_id, unreachable)):
            self.forwarded[request_id] = Forwarded(identity, now + self.lease_limits.forward_timeout_s, keys_wanted, frame)

    def _leader_spec(self):
        """The leader's client address and key: the YAML's member, else one added
        at run time (actors/member_specs.py)."""
        return member_spec(self.config, self.env, self.keyspace.meta_db, self.raft.leader_id)

    def _connect_leader(self, leader) -> None:
        if self.leader_link is not None:
            self.remove_reader(self.leader_link)
            self.leader_link.close(linger=0)
        # No ZMQ_IMMEDIATE: the first forwards queue while the connection is made
        # (with it they failed at once). A leader that never answers is covered
        # by forward_timeout_s and by a leader change, which fail them.
        self.leader_link = configure(self.context.socket(zmq.DEALER), self.limits.socket_hwm)
        self.connect_curve(self.leader_link, leader)
        self.leader_link.connect(leader.client)
        self.leader_link_to = leader.id
        self.add_reader(self.leader_link, self.on_leader_replies)
        self.log.info("lease_forwarding_to", leader=leader.id)

    def on_leader_replies(self, frames: list[bytes]) -> None:
        for frame in frames:
            try:
                request_id, message = codec.decode(frame)
            except CairnError:
                request_id, message = codec.peek_request_id(frame), None
            pending = self.forwarded.get(request_id)
            if pending is None:
                continue
            answer = frame if message is None else self._as_own_answer(frame, request_id, message, pending.keys_wanted)
            if message is not None and self._leader_behind(message):
                pending.answer = answer  # relayed if the leader still has not applied it by the deadline
                if not self.ask_again:
                    self.ask_again_at = time.monotonic() + self.settings.tick_ms / 1000
                self.ask_again.append(request_id)
                continue
            del self.forwarded[request_id]
            self.replies.append((pending.identity, answer))

    def _leader_behind(self, message) -> bool:
        """The leader says a lease does not exist that this member's store has:
        its apply has not reached the grant this member applied (and answered
        the client for) yet, as etcd's leader waits for its applied index
        before a renew. Asked again a tick later, until the deadline."""
        unknown = ((isinstance(message, LeaseKeepAliveResponse) and message.ttl == 0)
                   or (isinstance(message, LeaseTimeToLiveResponse) and message.ttl == -1))
        return unknown and self._stored(message.id)

    def _as_own_answer(self, frame: bytes, request_id: int, message, keys_wanted: bool) -> bytes:
        """The leader's answer with this member's id in its header: the member a
        client asked is the one that answers, as in etcd, where a follower fills
        the header of a keep-alive it forwarded; a TimeToLive's keys from this
        member's store (see the module docstring)."""
        if keys_wanted and isinstance(message, LeaseTimeToLiveResponse) and message.ttl >= 0:
            message = dataclasses.replace(message, keys=tuple(self._reader().lease_keys(message.id)))
        elif getattr(message, "header", None) is None or message.header.member_id == self.member.id:
            return frame
        header = message.header
        return codec.encode(dataclasses.replace(message, header=dataclasses.replace(header, member_id=self.member.id)), request_id)

    # ------------------------------------------------------------------ turn end

    def reply(self, identity: bytes, request_id: int, message) -> None:
        self.replies.append((identity, codec.encode(message, request_id)))

    def _reader(self):
        """The keyspace as of this batch: one read transaction per batch."""
        if self.batch_txn is None:
            self.batch_txn = self.env.begin()
            self.batch_reader = self.keyspace.reader(self.batch_txn, ResponseHeader(0, 0, 0, 0))
        return self.batch_reader

    def _stored(self, lease: int) -> bool:
        """Whether the lease is in the store."""
        return self._reader().lease(lease) is not None

    def _header_revision(self) -> int:
        """The keyspace revision for answers' headers, as etcd's lease answers
        carry it: read once per batch, not once per keep-alive."""
        if self.batch_revision is None:
            with self.env.begin() as txn:
                self.batch_revision = self.keyspace.current_revision(txn)
        return self.batch_revision

    def on_batch_end(self) -> None:
        self.batch_revision = None
        if self.batch_txn is not None:
            self.batch_txn.abort()  # short: LMDB must not keep old pages for a reader
            self.batch_txn = self.batch_reader = None
        if self.replies:
            identities, frames = zip(*self.replies)
            self.replies = []
            self.send(self.to_frontend, ClientReplies(identities, frames))

    def on_timer(self, now: float) -> None:
        if self.forwarded:
            late = [request_id for request_id, pending in self.forwarded.items() if pending.deadline <= now]
            unanswered = []
            for request_id in late:
                if self.forwarded[request_id].answer is None:
                    unanswered.append(request_id)
                else:  # the leader's answer stands: it did not apply the lease in time
                    pending = self.forwarded.pop(request_id)
                    self.replies.append((pending.identity, pending.answer))
            if unanswered:
                self._fail_forwarded(unanswered, NoLeaderError("etcdserver: leader unreachable (no answer in time)"))
        if self.ask_again and now >= self.ask_again_at:
            for request_id in self.ask_again:
                pending = self.forwarded.get(request_id)
                if pending is not None:
                    self.send(self.leader_link, pending.frame, on_full=lambda: None)  # the deadline covers a loss
            self.ask_again = []
        if not self.table.leading:
            return
        if self.raft.quorum_active:
            self._expire(now)
        if now >= self.next_checkpoint:
            self.next_checkpoint = now + self.lease_limits.checkpoint_interval_s
            self._checkpoint(self.table.checkpoints(now))
        elif self.table.dirty:
            self._checkpoint(self.table.dirty_checkpoints(now))

    def _expire(self, now: float) -> None:
        per_entry = self.lease_limits.expire_batch
        expired = self.table.expired(now, per_entry * self.lease_limits.expire_entries_per_tick)
        if not expired:
            return
        batches = [tuple(expired[i : i + per_entry]) for i in range(0, len(expired), per_entry)]
        self._propose([LeaseExpireRequest(batch) for batch in batches])
        self.log.info("leases_expired", count=len(expired), entries=len(batches), term=self.raft.term)

    def _checkpoint(self, points) -> None:
        if not points:
            return
        requests = []
        per_entry = self.lease_limits.checkpoint_batch
        for start in range(0, len(points), per_entry):
            batch = points[start : start + per_entry]
            requests.append(LeaseCheckpointRequest(tuple(p[0] for p in batch), tuple(p[1] for p in batch)))
            for lease, remaining in batch:
                self.table.checkpoint_persisted(lease, remaining)
        self._propose(requests)
        self.log.debug("leases_checkpointed", count=len(points), term=self.raft.term)

    def _propose(self, requests) -> None:
        request_ids, payloads = [], []
        for request in requests:
            request_id = int.from_bytes(os.urandom(8), "big") >> 1
            request_ids.append(request_id)
            payloads.append(make_payload(self.member.id, codec.encode(request, request_id)))
        self.send(self.to_raft, ProposeBatch(tuple(request_ids), tuple(payloads)))

    def collect_metrics(self) -> None:
        self.metrics.gauge("cairn_lease_total").value = len(self.table.ttl)

    def queue_depth(self) -> int:
        return len(self.replies) + len(self.forwarded) + len(self.service_replies)

    def answer_pending(self, error: CairnError) -> int:
        """Keep-alives forwarded to the leader and not yet answered, and the
        Lock and Election requests queued or waiting in the service."""
        answered = len(self.forwarded)
        self._fail_forwarded(list(self.forwarded), error)
        if self.lock_service is not None:
            answered += self.lock_service.stop(error)
        self.on_service_replies([])
        self.on_batch_end()  # hand every answer to the frontend
        return answered

    def release(self) -> None:
        if self.lock_service is not None:
            self.lock_service.close()
        self.env.close()
