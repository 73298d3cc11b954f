"""The frontend actor: the member's door for clients (a ZeroMQ ROUTER on tcp).

Theory of operation
-------------------
Each loop turn drains every client frame queued, validates it at the boundary
(size, CBOR, schema) and sorts it:

* writes (put, delete, txn, compaction) are forwarded to the local raft actor
  as one ProposeBatch; the frame goes into the log untouched. The apply actor
  of this member answers them (Applied), and the frontend routes each answer to
  the client that asked, by request id. A write that gets no answer within
  request_timeout_ms is answered Timeout: its outcome is unknown.
* linearizable reads wait for one ReadIndex round per turn (all reads queued
  in the turn share it); once this member has applied up to the read index they
  are served from LMDB in one short read transaction. Serializable reads are
  served at once from the local LMDB. Authenticate and the lease reads
  (TimeToLive, Leases) wait for the same round, then are served (the lease
  reads by the lease actor, which reads the store): a password changed or a
  lease granted through any member is seen, as etcd's leader waits for its
  applied index before answering them.
* status and member list are answered from what raft and apply last reported.

Every request gets exactly one reply; bad frames get an ErrorResponse and the
frontend keeps serving. At shutdown, pending requests are answered Stopping.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import deque

import zmq

from actors.auth_door import MAX_PARKED_AUTHENTICATIONS, AuthDoor, Hasher, hash_password, verify_password
from actors.base import Actor
from actors.crash_reports import read_member_errors
from actors.member_service import MemberService
from actors.lock_service import SERVICE_REQUESTS
from actors.corruption import CorruptionChecker
from actors.maintenance import MAINTENANCE_REQUESTS, Maintenance
from store.alarms import Alarms, bytes_in_use, corrupt_refuses
from store.environment import kv_path, open_kv, replicated_databases
from store.mvcc import KeySpace
from transport import codec
from transport.entries import make_payload
from transport.errors import (
    AuthFailedError,
    CairnError,
    CorruptError,
    EmptyKeyError,
    InvalidArgumentError,
    LearnerNotSupportedError,
    MalformedRequestError,
    NoLeaderError,
    TimeoutError_,
    TooManyRequestsError,
    ERRORS_BY_CODE,
    from_response,
)
from transport import messages as m
from transport.limits import holds, limit, limits
from transport.messages import (
    KeyspaceReplaced,
    ALARM_GET,
    ALARM_NAMES,
    AlarmRequest,
    AlarmResponse,
    Applied,
    AppliedWanted,
    ClientReplies,
    ClientRequests,
    CompactionRequest,
    DeleteRangeRequest,
    LeaseGrantRequest,
    LeaseKeepAliveRequest,
    LeaseLeasesRequest,
    LeaseRevokeRequest,
    LeaseTimeToLiveRequest,
    ErrorResponse,
    MEMBER_CHANGE_REQUESTS,
    ConfChangeResult,
    MemberListRequest,
    MemberListResponse,
    MetricSample,
    MetricsReport,
    MetricsRequest,
    MetricsResponse,
    MoveLeaderRequest,
    MoveLeaderResponse,
    ProposalsRejected,
    ProposeBatch,
    PutRequest,
    RaftStatus,
    ROLE_FOLLOWER,
    SORT_ASCEND,
    SORT_BY_KEY,
    SORT_NONE,
    RangeChunk,
    RangeRequest,
    RangeResponse,
    ReadIndexRequest,
    ReadIndexResult,
    ResponseHeader,
    StatusRequest,
    StatusResponse,
    TransferLeadership,
    TxnRequest,
    WatchCancelRequest,
    WatchCreateRequest,
    WatchProgressRequest,
)
from transport.sockets import configure, drain, inbox, outbox, send_routed

VERSION = "0.1.0"


@limits(
    holds(lambda l: l.leader_move_election_timeouts >= 2, "the transfer's own timeout, and slack"),
)
class FrontendLimits:
    """The frontend's own bounds, each with its reason (the member's, such as
    max_pending_requests and request_timeout_ms, are in cairn/config.py)."""

    leader_move_election_timeouts: int = limit(
        3,
        "A leadership transfer succeeds within one election timeout or is abandoned (thesis §3.10); a MoveLeader "
        "waits this many, so the new leader's status has time to reach this member before the caller is told Timeout.")


def new_lease_id() -> int:
    """A positive 63-bit id; random, so ids from different members never need
    coordinating (a collision, 1 in 2^63, is refused as LeaseExists)."""
    return (int.from_bytes(os.urandom(8), "big") >> 1) or 1


class RangeStream:
    """A large range being answered in chunks, one chunk per loop turn."""

    __slots__ = ("identity", "request_id", "request", "revision", "header_revision", "resume", "sent")

    def __init__(self, identity, request_id, request, revision, header_revision, resume, sent):
        self.identity, self.request_id, self.request = identity, request_id, request
        self.revision, self.header_revision, self.resume, self.sent = revision, header_revision, resume, sent
WRITE_REQUESTS = (PutRequest, DeleteRangeRequest, TxnRequest, CompactionRequest)
WATCH_REQUESTS = (WatchCreateRequest, WatchCancelRequest, WatchProgressRequest)
# Requests the lease actor answers: lease reads (the leader's holds the
# deadlines) and the Lock and Election services it runs.
LEASE_ACTOR_REQUESTS = (LeaseKeepAliveRequest, LeaseTimeToLiveRequest, LeaseLeasesRequest) + SERVICE_REQUESTS
# Served after a read index as a range is (see the module docstring); a
# keep-alive is not a read of replicated state and goes on at once.
AFTER_READ_INDEX = (m.AuthenticateRequest, LeaseTimeToLiveRequest, LeaseLeasesRequest)
LEASE_WRITE_REQUESTS = (LeaseGrantRequest, LeaseRevokeRequest)
# Every auth request but Authenticate goes through the log, reads too (etcd).
AUTH_LOG_REQUESTS = (
    m.AuthEnableRequest, m.AuthDisableRequest, m.AuthStatusRequest, m.AuthUserAddRequest, m.AuthUserGetRequest,
    m.AuthUserListRequest, m.AuthUserDeleteRequest, m.AuthUserChangePasswordRequest, m.AuthUserGrantRoleRequest,
    m.AuthUserRevokeRoleRequest, m.AuthRoleAddRequest, m.AuthRoleGetRequest, m.AuthRoleListRequest,
    m.AuthRoleDeleteRequest, m.AuthRoleGrantPermissionRequest, m.AuthRoleRevokePermissionRequest)
# Requests that go through the log (an AlarmRequest other than GET is answered earlier).
LOGGED_REQUESTS = WRITE_REQUESTS + LEASE_WRITE_REQUESTS + AUTH_LOG_REQUESTS + (AlarmRequest,)
# Checked by the state machine (through the log) or when served (ranges), not on arrival.
CHECKED_LATER = LOGGED_REQUESTS + (RangeRequest, m.AuthenticateRequest)
# Requests whose password the frontend hashes before proposing them.
PASSWORD_REQUESTS = (m.AuthUserAddRequest, m.AuthUserChangePasswordRequest)


class FrontendActor(Actor):
    name = "frontend"
    frontend_limits = FrontendLimits()

    def timeout_ms(self) -> int:
        return 0 if self.range_streams else self.settings.tick_ms

    def __init__(self, config, member_name: str):
        super().__init__(config, member_name)
        hwm = self.limits.socket_hwm
        self.router = configure(self.context.socket(zmq.ROUTER), hwm)
        self.serve_curve(self.router, "client")
        self.router.bind(self.member.client)
        self.to_watch = outbox(self.context, self.data_dir, "watch", hwm)
        self.for_watch: list[tuple[bytes, bytes]] = []
        self.to_lease = outbox(self.context, self.data_dir, "lease", hwm)
        self.for_lease: list[tuple[bytes, bytes]] = []
        self.inbox = inbox(self.context, self.data_dir, "frontend", hwm)
        self.to_raft = outbox(self.context, self.data_dir, "raft", hwm)
        self.to_apply = outbox(self.context, self.data_dir, "apply", hwm)
        self.retired_envs = []  # keyspace files a defragment replaced, closed once no copy thread uses them
        self.env = open_kv(self.data_dir, self.settings.kv_map_bytes)
        self.keyspace = KeySpace(self.env)
        self.alarms = Alarms(self.env)
        with self.env.begin() as txn:
            self.applied_index = self.keyspace.applied_index(txn)
        self.applied_wanted = 0  # the index apply was asked to tell of (AppliedWanted); 0: none
        self.applied_wanted_again = 0.0  # when to ask again (apply may have restarted meanwhile)
        # A member joining a cluster starts as a learner: refuse writes until raft says otherwise.
        self.raft = RaftStatus(self.member.id, 0, 0, ROLE_FOLLOWER, 0, 0, 0, is_learner=config.state == "existing")
        # request id -> (client identity, deadline)
        self.pending_writes: dict[int, tuple[bytes, float]] = {}
        self.expiry = deque()  # (deadline, request id), in deadline order
        self.proposals: list[tuple[int, bytes]] = []
        self.serve_now: list[tuple[bytes, int, object]] = []
        self.awaiting_read_index: list[tuple[bytes, int, object]] = []
        self.read_rounds: dict[int, tuple[float, list]] = {}  # context -> (deadline, reads)
        self.reads_at_index: list[tuple[int, float, list]] = []  # (read index, deadline, reads) awaiting apply
        self.next_context = 1
        self.range_streams: deque[RangeStream] = deque()
        self.leader_moves: list[tuple[bytes, int, int, float]] = []  # (identity, request id, target, deadline)
        self.add_reader(self.router, self.on_client_frames, multipart=True)
        self.add_inbox(self.inbox)
        self.on_message(Applied, self.on_applied)
        self.on_message(ReadIndexResult, self.on_read_index)
        self.on_message(ProposalsRejected, self.on_rejected)
        self.on_message(ClientReplies, self.on_client_replies)
        self.on_message(RaftStatus, self.on_raft_status)
        self.maintenance = Maintenance(self)  # Snapshot, Hash, HashKV
        # auth (actors/auth_door.py): tokens, throttling, scrypt off the loop
        self.auth = AuthDoor(self.env, self.data_dir, self.settings.auth_token_ttl_s,
                             self.settings.auth_failure_delay_ms / 1000)
        self.hasher = Hasher(self.context, "frontend-hasher")
        self.add_reader(self.hasher.socket, self.hasher.ready)
        self.read_users: dict[tuple[bytes, int], str] = {}  # reads to check when served: (identity, request id) -> user
        self.read_peers: dict[tuple[bytes, int], str] = {}  # Authenticates a door made: (identity, request id) -> its caller
        self.parked_authentications: list[tuple[bytes, int, object, str | None]] = []  # waiting for another of their user
        self.member_service = MemberService(self)  # MemberAdd/Remove/Update/Promote/List
        # CORRUPT raised anywhere: reads are refused here (writes by the state
        # machine), judged by the state each batch of reads sees (serve_reads).
        self.client_keys_read_at = 0.0
        self.corruption = CorruptionChecker(self)  # periodic and start-up HashKV comparisons
        self.on_message(ConfChangeResult, self.member_service.on_result)
        self.on_message(KeyspaceReplaced, self.on_keyspace_replaced)
        # every actor's last metrics report, this one's included (actors/metrics.py)
        self.metric_reports: dict[str, MetricsReport] = {}
        self.on_message(MetricsReport, self.on_metrics_report)
        self.proposals_failed = self.metrics.counter("etcd_server_proposals_failed_total")
        self.read_indexes = self.metrics.counter("etcd_server_read_indexes_total")
        self.log.info("frontend_listening", client=self.member.client)

    # ------------------------------------------------------------------ clients

    def on_client_frames(self, messages: list[list[bytes]]) -> None:
        now = time.monotonic()
        self.auth.new_batch()
        for parts in messages:
            identity = parts[0]
            if len(parts) != 2:
                self.reply_error(identity, 0, MalformedRequestError("malformed frame: expected exactly one frame per request"))
                continue
            frame = parts[1]
            try:
                request_id, request, options = codec.decode_with_options(frame, self.limits.max_request_bytes)
                if options.get("require_leader") and not self.raft.leader_id:
                    raise NoLeaderError()  # etcd's WithRequireLeader
                user = self.auth.identify(options, now)
                if user is not None and not isinstance(request, CHECKED_LATER):
                    self.auth.check_arrival(user, request)
                if "token" in options:  # no token in the log, nor in frames handed to other actors
                    frame = codec.encode(request, request_id, {k: v for k, v in options.items() if k != "token"})
                self.dispatch(identity, request_id, request, frame, now, user)
            except CairnError as error:
                request_id = codec.peek_request_id(frame)
                self.log.info("request_rejected", request_id=request_id, code=error.code, error=error.message)
                self.reply_error(identity, request_id, error)

    def dispatch(self, identity: bytes, request_id: int, request, frame: bytes, now: float, user: str | None = None) -> None:
        """user: who the request runs as (actors/auth_door.py: None = unchecked)."""
        if self.raft.is_learner and not self.learner_serves(request):
            raise LearnerNotSupportedError()
        if isinstance(request, MEMBER_CHANGE_REQUESTS):
            self.member_service.handle(identity, request_id, request, now)
        elif isinstance(request, AlarmRequest) and request.action == ALARM_GET:
            self.reply(identity, request_id, self.alarm_list(request.member_id))
        elif isinstance(request, AFTER_READ_INDEX):
            if self.auth.peer is not None:
                self.read_peers[(identity, request_id)] = self.auth.peer
            if user is not None:
                self.read_users[(identity, request_id)] = user
            self.awaiting_read_index.append((identity, request_id, request))
        elif isinstance(request, PASSWORD_REQUESTS) and request.password:
            self.hash_then_propose(identity, request_id, request, user)
        elif isinstance(request, LOGGED_REQUESTS):
            if isinstance(request, LeaseGrantRequest) and request.id == 0:
                # etcd's server picks the id before the log, so every member applies the same one
                request = LeaseGrantRequest(request.ttl, new_lease_id())
                frame = codec.encode(request, request_id)
            self.check_write(request)
            if request_id in self.pending_writes:
                raise MalformedRequestError(f"request id {request_id} is already in flight")
            if len(self.pending_writes) >= self.limits.max_pending_requests:
                raise TooManyRequestsError()
            deadline = now + self.settings.request_timeout_ms / 1000
            self.pending_writes[request_id] = (identity, deadline)
            self.expiry.append((deadline, request_id))
            self.proposals.append((request_id, make_payload(self.member.id, frame, user)))
        elif isinstance(request, RangeRequest):
            if not request.key:
                raise EmptyKeyError()
            read = (identity, request_id, request)
            if user is not None:
                self.read_users[(identity, request_id)] = user
            (self.serve_now if request.serializable else self.awaiting_read_index).append(read)
        elif isinstance(request, WATCH_REQUESTS):
            self.for_watch.append((identity, frame))
        elif isinstance(request, LEASE_ACTOR_REQUESTS):
            self.for_lease.append((identity, frame))
        elif isinstance(request, StatusRequest):
            self.reply(identity, request_id, self.status())
        elif isinstance(request, MetricsRequest):
            self.reply(identity, request_id, self.metrics_response())
        elif isinstance(request, MemberListRequest):
            self.reply(identity, request_id, self.member_list())
        elif isinstance(request, MoveLeaderRequest):
            self.move_leader(identity, request_id, request.target_id, now)
        elif isinstance(request, MAINTENANCE_REQUESTS):
            self.maintenance.handle(identity, request_id, request)
        else:
            raise MalformedRequestError(f"{type(request).__name__} is not a client request")

    # ------------------------------------------------------------------ auth

    def authenticate(self, identity: bytes, request_id: int, request, now: float, peer: str | None) -> None:
        """Verify on the hasher's thread, then answer with a token (or AuthFailed);
        an attempt whose user or caller is being verified waits for that one."""
        started = self.auth.begin_authenticate(identity, request.name, now, peer)
        if started is None:
            if len(self.parked_authentications) >= MAX_PARKED_AUTHENTICATIONS:
                raise AuthFailedError()
            self.parked_authentications.append((identity, request_id, request, peer))
            return
        keys, stored = started
        password = request.password

        def done(verified) -> None:
            try:
                token = self.auth.finish_authenticate(keys, verified, request.name, time.monotonic())
            except CairnError as error:
                self.log.info("authentication_failed", user=request.name)
                self.reply_error(identity, request_id, error)
            else:
                header = ResponseHeader(self.config.id, self.member.id, self.revision, self.raft.term)
                self.log.info("authenticated", user=request.name)
                self.reply(identity, request_id, m.AuthenticateResponse(header, token))
            self.resume_parked_authentications()

        self.hasher.submit(lambda: verify_password(password, stored), done,
                           lambda error: self.reply_error(identity, request_id, error))

    def resume_parked_authentications(self) -> None:
        """The attempts that waited for one just verified, judged now (in the
        order they came; those still waiting park again)."""
        parked, self.parked_authentications = self.parked_authentications, []
        now = time.monotonic()
        for identity, request_id, request, peer in parked:
            try:
                self.authenticate(identity, request_id, request, now, peer)
            except CairnError as error:
                self.reply_error(identity, request_id, error)

    def hash_then_propose(self, identity: bytes, request_id: int, request, user: str | None) -> None:
        """The password hashed on the hasher's thread; the request proposed with
        the hash and without the password (store/apply.py refuses a plaintext one)."""
        password = request.password

        def done(hashed) -> None:
            if isinstance(hashed, Exception):
                self.reply_error(identity, request_id, InvalidArgumentError("cairn: the password could not be hashed"))
                return
            hashed_request = dataclasses.replace(request, password="", hashed_password=hashed)
            try:
                self.dispatch(identity, request_id, hashed_request, codec.encode(hashed_request, request_id),
                              time.monotonic(), user)
            except CairnError as error:
                self.reply_error(identity, request_id, error)

        self.hasher.submit(lambda: hash_password(password), done,
                           lambda error: self.reply_error(identity, request_id, error))

    @staticmethod
    def learner_serves(request) -> bool:
        """etcd's learner serves serializable reads, watches, status and member
        list (and the maintenance reads); anything else goes to a voter."""
        if isinstance(request, RangeRequest):
            return request.serializable
        if isinstance(request, AlarmRequest):
            return request.action == ALARM_GET
        return isinstance(request, WATCH_REQUESTS + (StatusRequest, MetricsRequest, MemberListRequest) + MAINTENANCE_REQUESTS)

    @staticmethod
    def check_write(request) -> None:
        """Reject what etcd rejects before the log (so a bad request costs no entry)."""
        if isinstance(request, (PutRequest, DeleteRangeRequest)) and not request.key:
            raise EmptyKeyError()

    def move_leader(self, identity: bytes, request_id: int, target: int, now: float) -> None:
        if target not in {member.id for member in self.member_service.members()}:
            raise InvalidArgumentError(f"etcdserver: bad leader transferee: {target:x} is not a member")
        election_timeouts = self.frontend_limits.leader_move_election_timeouts
        wait_s = election_timeouts * self.settings.election_ticks * self.settings.tick_ms / 1000
        self.leader_moves.append((identity, request_id, target, now + wait_s))
        self.send_to_raft(TransferLeadership(target), ())
        self.answer_leader_moves()

    def answer_leader_moves(self, now: float = 0.0) -> None:
        still_waiting = []
        for identity, request_id, target, deadline in self.leader_moves:
            if self.raft.leader_id == target:
                header = ResponseHeader(self.config.id, self.member.id, self.revision, self.raft.term)
                self.reply(identity, request_id, MoveLeaderResponse(header))
            elif now and deadline <= now:
                self.reply_error(identity, request_id, TimeoutError_("etcdserver: leadership transfer timed out"))
            else:
                still_waiting.append((identity, request_id, target, deadline))
        self.leader_moves = still_waiting

    # ------------------------------------------------------------------ actors

    def on_client_replies(self, message: ClientReplies) -> None:
        for identity, frame in zip(message.identities, message.frames):
            send_routed(self.router, identity, frame)

    def on_raft_status(self, message: RaftStatus) -> None:
        self.raft = message
        self.answer_leader_moves()

    @property
    def revision(self) -> int:
        """The keyspace's revision, read now: for the headers of answers that
        read nothing else (apply tells this frontend of batches that answer
        none of its requests only once a tick)."""
        with self.env.begin() as txn:
            return self.keyspace.current_revision(txn)

    def refresh_applied(self) -> None:
        """The applied index as the keyspace has it now (apply commits it with
        each batch), ahead of apply's Applied."""
        with self.env.begin() as txn:
            self.applied_index = max(self.applied_index, self.keyspace.applied_index(txn))

    def await_applied(self, now: float) -> None:
        """Reads and member changes that wait for this member's apply: first
        the keyspace's own applied index; if they must still wait, apply is
        asked to say when it gets there (AppliedWanted), the earliest index
        first, and again a tick later (an apply that restarted forgot it)."""
        waiting = [index for index, _, _ in self.reads_at_index if index > self.applied_index]
        waiting += [index for index, _ in self.member_service.at_index if index > self.applied_index]
        if not waiting:
            return
        self.refresh_applied()
        first = min((index for index in waiting if index > self.applied_index), default=0)
        if not first:
            return
        if self.applied_wanted <= self.applied_index or first < self.applied_wanted or now >= self.applied_wanted_again:
            self.applied_wanted = first
            self.applied_wanted_again = now + self.settings.tick_ms / 1000
            self.send(self.to_apply, AppliedWanted(first))

    def on_applied(self, message: Applied) -> None:
        self.applied_index = max(self.applied_index, message.index)
        answered = []
        for request_id, frame in zip(message.request_ids, message.frames):
            pending = self.pending_writes.pop(request_id, None)
            if pending is not None:
                send_routed(self.router, pending[0], frame)
                answered.append(request_id)
        if answered:
            self.log.info("answered", request_ids=answered, index=message.index, revision=message.revision)

    def on_rejected(self, message: ProposalsRejected) -> None:
        # NoLeader, NotLeader, TooManyRequests or Stopping: all retryable, none reached a log
        error_class = ERRORS_BY_CODE.get(message.code, TooManyRequestsError)
        for request_id in message.request_ids:
            pending = self.pending_writes.pop(request_id, None)
            if pending is not None:
                self.proposals_failed.value += 1
                self.reply_error(pending[0], request_id, error_class(leader_hint=message.leader_id))
        self.log.info("proposals_rejected", request_ids=list(message.request_ids), code=message.code)

    def on_read_index(self, message: ReadIndexResult) -> None:
        round_ = self.read_rounds.pop(message.context, None)
        if round_ is None:
            return
        deadline, reads = round_
        if message.code:
            self.fail_reads(reads, from_response(ErrorResponse(message.code, f"etcdserver: {message.code}")))
            return
        self.reads_at_index.append((message.index, deadline, reads))

    # ------------------------------------------------------------------ batch end

    def on_batch_end(self) -> None:
        if self.proposals:
            request_ids = tuple(request_id for request_id, _ in self.proposals)
            payloads = tuple(payload for _, payload in self.proposals)
            self.proposals = []
            self.log.info("proposed", request_ids=list(request_ids))
            self.send_to_raft(ProposeBatch(request_ids, payloads), request_ids)
        if self.awaiting_read_index:
            context = self.next_context
            self.next_context += 1
            deadline = time.monotonic() + self.settings.request_timeout_ms / 1000
            self.read_rounds[context] = (deadline, self.awaiting_read_index)
            self.read_indexes.value += 1
            self.awaiting_read_index = []
            self.send_to_raft(ReadIndexRequest(context), ())
        if self.reads_at_index or self.member_service.at_index:
            self.await_applied(time.monotonic())
        ready = [reads for index, _, reads in self.reads_at_index if index <= self.applied_index]
        if ready:
            self.reads_at_index = [waiting for waiting in self.reads_at_index if waiting[0] > self.applied_index]
            for reads in ready:
                self.serve_now.extend(reads)
        if self.serve_now:
            reads, self.serve_now = self.serve_now, []
            self.serve_reads(reads)
        if self.range_streams:
            self.continue_streams()
        if self.member_service.at_index:
            self.member_service.answer_applied()
        # last: the lease reads served above go to the lease actor in this turn
        if self.for_watch:
            identities, frames = zip(*self.for_watch)
            self.for_watch = []
            self.send(self.to_watch, ClientRequests(identities, frames), on_full=lambda: self.refuse(identities, frames))
        if self.for_lease:
            identities, frames = zip(*self.for_lease)
            self.for_lease = []
            self.send(self.to_lease, ClientRequests(identities, frames), on_full=lambda: self.refuse(identities, frames))

    def serve_reads(self, reads) -> None:
        """Every read of the turn in one short LMDB read transaction; a range
        larger than range_chunk_bytes continues as a stream of chunks.
        Authenticates start their verification; lease reads, checked, go on
        to the lease actor."""
        header = ResponseHeader(self.config.id, self.member.id, 0, self.raft.term)
        now = time.monotonic()
        with self.env.begin() as txn:
            reader = self.keyspace.reader(txn, header)
            # etcd's corrupt applier, as of the state these reads see: a
            # linearizable read after an acknowledged disarm is served.
            corrupt = self.alarms.corrupt(txn)
            for identity, request_id, request in reads:
                try:
                    user = self.read_users.pop((identity, request_id), None)
                    if corrupt and corrupt_refuses(request):
                        raise CorruptError()
                    if isinstance(request, m.AuthenticateRequest):
                        self.authenticate(identity, request_id, request, now, self.read_peers.pop((identity, request_id), None))
                    elif isinstance(request, (LeaseTimeToLiveRequest, LeaseLeasesRequest)):
                        if user is not None and isinstance(request, LeaseTimeToLiveRequest) and request.keys:
                            self.auth.check_lease_keys(txn, user, reader.lease_keys(request.id))
                        self.for_lease.append((identity, codec.encode(request, request_id)))
                    else:
                        if user is not None:  # checked against the state this read sees
                            self.auth.check_read(txn, user, request)
                        if not self.start_stream(reader, identity, request_id, request):
                            self.reply(identity, request_id, reader.range(request))
                except CairnError as error:
                    self.reply_error(identity, request_id, error)

    @staticmethod
    def pageable(request: RangeRequest) -> bool:
        """Key-ordered results can be produced page by page; other sort orders
        need the whole result in memory, as in etcd."""
        key_order = request.sort_order == SORT_NONE or (
            request.sort_order == SORT_ASCEND and request.sort_target == SORT_BY_KEY)
        return key_order and not request.count_only and bool(request.range_end)

    def start_stream(self, reader, identity, request_id, request: RangeRequest) -> bool:
        if not self.pageable(request):
            return False
        revision = request.revision or reader.revision
        kvs, resume = reader.range_page(request, revision, None, self.limits.range_chunk_bytes)
        if resume is None or (request.limit and len(kvs) >= request.limit):
            return False  # small enough for one response
        self.reply(identity, request_id, RangeChunk(tuple(kvs)))
        self.range_streams.append(RangeStream(identity, request_id, request, revision, reader.revision, resume, len(kvs)))
        return True

    def continue_streams(self) -> None:
        """One chunk of each large range per turn, each in its own short read
        transaction so LMDB can reuse freed pages meanwhile."""
        header = ResponseHeader(self.config.id, self.member.id, 0, self.raft.term)
        for _ in range(len(self.range_streams)):
            stream = self.range_streams.popleft()
            request = stream.request
            try:
                with self.env.begin() as txn:
                    reader = self.keyspace.reader(txn, header)
                    kvs, resume = reader.range_page(request, stream.revision, stream.resume, self.limits.range_chunk_bytes)
                    if request.limit:
                        kvs = kvs[: request.limit - stream.sent]
                    stream.sent += len(kvs)
                    done = resume is None or (request.limit and stream.sent >= request.limit)
                    if not done:
                        self.reply(stream.identity, stream.request_id, RangeChunk(tuple(kvs)))
                        stream.resume = resume
                        self.range_streams.append(stream)
                        continue
                    count = reader.count(request, stream.revision)  # once, at the end
            except CairnError as error:  # e.g. compacted away mid-stream
                self.reply_error(stream.identity, stream.request_id, error)
                continue
            final_header = ResponseHeader(self.config.id, self.member.id, stream.header_revision, self.raft.term)
            more = bool(request.limit) and count > stream.sent
            self.log.info("range_streamed", request_id=stream.request_id, kvs=stream.sent, revision=stream.revision)
            self.reply(stream.identity, stream.request_id, RangeResponse(final_header, tuple(kvs), more, count))

    def refuse(self, identities, frames) -> None:
        """Client frames the actor that serves them cannot take now (its queue is
        full): the clients get TooManyRequests at once rather than silence."""
        for identity, frame in zip(identities, frames):
            self.reply_error(identity, codec.peek_request_id(frame), TooManyRequestsError())

    def send_to_raft(self, message, request_ids) -> None:
        """To raft; if its queue is full the writes it carried fail now (retryable)."""
        self.send(self.to_raft, message, on_full=lambda: self.fail_writes(request_ids, TooManyRequestsError()))

    def fail_writes(self, request_ids, error: CairnError) -> int:
        failed = 0
        for request_id in request_ids:
            pending = self.pending_writes.pop(request_id, None)
            if pending is not None:
                self.reply_error(pending[0], request_id, error)
                failed += 1
        self.proposals_failed.value += failed
        return failed

    # ------------------------------------------------------------------ timers

    def on_timer(self, now: float) -> None:
        self.auth.on_timer(now)
        if self.retired_envs:
            self.close_retired_envs()
        if now - self.client_keys_read_at >= self.settings.tick_ms / 1000:
            self.client_keys_read_at = now
            with self.env.begin() as txn:
                self.member_service.follow_client_keys(txn)
        self.corruption.on_timer(now)
        if self.maintenance.transfers:
            self.maintenance.on_timer(now)
        if self.leader_moves:
            self.answer_leader_moves(now)
        while self.expiry and self.expiry[0][0] <= now:
            _, request_id = self.expiry.popleft()
            pending = self.pending_writes.pop(request_id, None)
            if pending is not None:
                self.proposals_failed.value += 1
                self.log.warning("request_timed_out", request_id=request_id)
                self.reply_error(pending[0], request_id, TimeoutError_())
        for context, (deadline, reads) in list(self.read_rounds.items()):
            if deadline <= now:
                del self.read_rounds[context]
                self.fail_reads(reads, TimeoutError_())
        # a read whose round came back waits for this member's apply, but not
        # past its request's deadline
        if any(deadline <= now for _, deadline, _ in self.reads_at_index):
            for _, deadline, reads in self.reads_at_index:
                if deadline <= now:
                    self.fail_reads(reads, TimeoutError_())
            self.reads_at_index = [waiting for waiting in self.reads_at_index if waiting[1] > now]

    def on_keyspace_replaced(self, message: KeyspaceReplaced) -> None:
        """apply defragmented the keyspace: read the new file from now on (this
        message comes before any Applied of a later entry), then answer the
        Defragment. Range streams read at their revision in a new transaction
        each turn, so they go on in the new file; a snapshot copy thread may
        still be reading the old one, which is closed once none is."""
        if not message.error:
            started = time.perf_counter()
            self.retired_envs.append(self.env)
            self.env = open_kv(self.data_dir, self.settings.kv_map_bytes)
            self.keyspace = KeySpace(self.env)
            self.alarms = Alarms(self.env)
            self.auth.reopen(self.env)
            opened = time.perf_counter()
            self.close_retired_envs()
            # reads wait for this: the old file's last close frees its blocks
            self.log.info("keyspace_reopened", open_ms=round((opened - started) * 1000, 1),
                          close_old_ms=round((time.perf_counter() - opened) * 1000, 1))
        self.maintenance.defragmented(message)

    def close_retired_envs(self) -> None:
        if self.retired_envs and not self.maintenance.copying():
            for env in self.retired_envs:
                env.close()
            self.retired_envs = []

    # ------------------------------------------------------------------ answers

    def db_sizes(self) -> tuple[int, int]:
        """The keyspace file's size and the bytes its databases use (etcd's dbSize, dbSizeInUse)."""
        try:
            db_size = os.path.getsize(os.path.join(kv_path(self.data_dir), "data.mdb"))
        except OSError:
            db_size = 0
        with self.env.begin() as txn:
            return db_size, bytes_in_use(self.env, txn, replicated_databases())

    def status(self) -> StatusResponse:
        self.refresh_applied()
        db_size, db_size_in_use = self.db_sizes()
        header = ResponseHeader(self.config.id, self.member.id, self.revision, self.raft.term)
        errors = () if self.raft.leader_id else ("etcdserver: no leader",)
        errors += tuple(f"memberID:{a.member_id:x} alarm:{ALARM_NAMES.get(a.alarm, a.alarm)}" for a in self.alarm_list().alarms)
        errors += read_member_errors(self.data_dir)
        return StatusResponse(
            header=header,
            version=VERSION,
            db_size=db_size,
            leader=self.raft.leader_id,
            # the raft status is up to a tick old, the applied index fresh: what was applied was committed
            raft_index=max(self.raft.commit_index, self.applied_index),
            raft_term=self.raft.term,
            raft_applied_index=self.applied_index,
            errors=errors,
            name=self.member.name,
            is_learner=self.raft.is_learner,
            db_size_in_use=db_size_in_use,
        )

    def on_metrics_report(self, report: MetricsReport) -> None:
        self.metric_reports[report.actor] = report

    def queue_depth(self) -> int:
        return len(self.pending_writes) + len(self.serve_now) + len(self.awaiting_read_index) + len(self.range_streams)

    def collect_metrics(self) -> None:
        self.metrics.gauge("etcd_server_proposals_pending").value = len(self.pending_writes)

    def publish_metrics(self, report: MetricsReport) -> None:
        self.metric_reports[report.actor] = report

    def metrics_response(self) -> MetricsResponse:
        """Every actor's last report, and what is read when a scrape asks: raft's
        state as the frontend knows it (a tick old at most), the file's sizes and
        the number of keys (an LMDB stat, O(1))."""
        self.report_metrics(time.monotonic())
        self.refresh_applied()
        db_size, db_size_in_use = self.db_sizes()
        with self.env.begin() as txn:
            keys = txn.stat(self.keyspace.live_db)["entries"]
        raft = self.raft
        read = MetricsReport(self.name, (
            MetricSample("etcd_server_has_leader", int(bool(raft.leader_id))),
            MetricSample("etcd_server_is_leader", int(bool(raft.leader_id) and raft.leader_id == self.member.id)),
            MetricSample("etcd_server_term", raft.term),
            # what was applied was committed: the applied index is fresh, the raft status up to a tick old
            MetricSample("etcd_server_proposals_committed_total", max(raft.commit_index, self.applied_index)),
            MetricSample("etcd_server_proposals_applied_total", self.applied_index),
            MetricSample("etcd_mvcc_db_total_size_in_bytes", db_size),
            MetricSample("etcd_mvcc_db_total_size_in_use_in_bytes", db_size_in_use),
            MetricSample("etcd_debugging_mvcc_keys_total", keys),
            MetricSample("etcd_debugging_mvcc_current_revision", self.revision),
            MetricSample("etcd_server_is_learner", int(self.raft.is_learner)),
        ))
        header = ResponseHeader(self.config.id, self.member.id, self.revision, self.raft.term)
        return MetricsResponse(header, (*self.metric_reports.values(), read))

    def alarm_list(self, member_id: int = 0) -> AlarmResponse:
        with self.env.begin() as txn:
            alarms = self.alarms.list(txn, member_id)
        return AlarmResponse(ResponseHeader(self.config.id, self.member.id, self.revision, self.raft.term), alarms)

    def member_list(self) -> MemberListResponse:
        return self.member_service.member_list()

    def reply(self, identity: bytes, request_id: int, message) -> None:
        """A message to a client: the ROUTER never blocks (a frame to a client
        whose pipe is full is dropped, and the client times out and retries)."""
        send_routed(self.router, identity, codec.encode(message, request_id))

    def fail_reads(self, reads, error: CairnError) -> None:
        for identity, request_id, _ in reads:
            self.read_users.pop((identity, request_id), None)
            self.read_peers.pop((identity, request_id), None)
            self.reply_error(identity, request_id, error)

    def reply_error(self, identity: bytes, request_id: int, error: CairnError) -> None:
        send_routed(self.router, identity, codec.encode(error.to_response(), request_id))

    def answer_pending(self, error: CairnError) -> int:
        """Every request this door still holds: writes awaiting their entry
        (outcome unknown: Timeout, which the client reports as indeterminate),
        reads awaiting a read index or apply, large ranges mid-stream, leader
        moves, passwords on the hasher's thread, and frames not yet handed to
        the watch or lease actor."""
        # A write handed to raft may be in a log already: its outcome is unknown,
        # so it must not get a retryable answer (the client would apply it twice).
        # One still queued here never left: that one may be retried.
        unsent = [request_id for request_id, _ in self.proposals]
        answered = self.fail_writes(unsent, error)
        answered += self.fail_writes(list(self.pending_writes), TimeoutError_("etcdserver: server stopped; the write's outcome is unknown"))
        reads = self.awaiting_read_index + self.serve_now
        reads += [read for _, round_reads in self.read_rounds.values() for read in round_reads]
        reads += [read for _, _, waiting in self.reads_at_index for read in waiting]
        reads += [(s.identity, s.request_id, s.request) for s in self.range_streams]
        reads += [(identity, request_id, None) for identity, request_id, _, _ in self.leader_moves]
        reads += [(identity, request_id, None) for identity, request_id, _, _ in self.parked_authentications]
        self.fail_reads(reads, error)
        answered += self.maintenance.answer_pending(error)
        answered += self.hasher.stop_pending(error)  # passwords being hashed or verified
        handed = self.for_watch + self.for_lease
        # and what clients sent that this door has not read yet
        handed += [tuple(parts) for parts in drain(self.router, self.limits.max_batch_messages, multipart=True) if len(parts) == 2]
        for identity, frame in handed:
            self.reply_error(identity, codec.peek_request_id(frame), error)
        self.awaiting_read_index, self.serve_now, self.read_rounds, self.reads_at_index = [], [], {}, []
        self.range_streams.clear()
        self.leader_moves, self.for_watch, self.for_lease, self.parked_authentications = [], [], [], []
        return answered + len(reads) + len(handed)

    def release(self) -> None:
        self.hasher.close()
        self.maintenance.close()
        self.env.close()
