"""Every message that crosses a process boundary, declared once.

Theory of operation
-------------------
Messages are frozen, slotted dataclasses. `transport.codec` turns them into CBOR
frames and back; the codec reads each class's field annotations, so a field's type
here *is* its wire schema: decoding rejects a frame whose fields do not match.
Nothing in this module does I/O, so the pure cores (the Raft core, the MVCC rules)
may import it.

The client API mirrors etcd v3's protobufs (rpc.proto, kv.proto) field for field
where etcd defines them, so anyone who knows etcd can read these. Enumerations are
plain ints with named constants, as in etcd's protobufs.

Frames (see codec): [PROTOCOL_VERSION, request_id, body], plus an optional map of
request options (require_leader); a body is [tag, field_1, field_2, ...]. The
request id travels in the envelope, not in each message, so every actor can log it
and an error reply can echo it even when the body is malformed.

Raft's peer messages live in transport/raft_messages.py; the codec registers both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transport import raft_messages
from transport.wire_types import Uint64, enum_of
from transport.raft_messages import quicken_module

PROTOCOL_VERSION = 1


# ---------------------------------------------------------------------------
# Keyspace data (etcd mvccpb)
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyValue:
    """A key's state at one revision (etcd mvccpb.KeyValue)."""

    key: bytes
    create_revision: int
    mod_revision: int
    version: int
    value: bytes
    lease: int = 0


EVENT_PUT = 0
EVENT_DELETE = 1
EventType = enum_of("EventType", (EVENT_PUT, EVENT_DELETE))


@dataclass(frozen=True, slots=True)
class Event:
    """One change of one key (etcd mvccpb.Event). For DELETE, kv holds the key and
    the tombstone's mod_revision, with empty value and version 0."""

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class ResponseHeader:
    cluster_id: Uint64
    member_id: Uint64
    revision: int
    raft_term: Uint64


# ---------------------------------------------------------------------------
# KV requests (etcd etcdserverpb)
# ---------------------------------------------------------------------------

SORT_NONE = 0
SORT_ASCEND = 1
SORT_DESCEND = 2

SORT_BY_KEY = 0
SORT_BY_VERSION = 1
SORT_BY_CREATE = 2
SORT_BY_MOD = 3
SORT_BY_VALUE = 4
_INVALID_SORT = "etcdserver: invalid sort option"
SortOrder = enum_of("SortOrder", (SORT_NONE, SORT_ASCEND, SORT_DESCEND), _INVALID_SORT)
SortTarget = enum_of("SortTarget", (SORT_BY_KEY, SORT_BY_VERSION, SORT_BY_CREATE, SORT_BY_MOD, SORT_BY_VALUE), _INVALID_SORT)


@dataclass(frozen=True, slots=True)
class RangeRequest:
    """range_end: b"" = the single key; b"\\0" = every key >= key; otherwise [key, range_end)."""

    key: bytes
    range_end: bytes = b""
    limit: int = 0
    revision: int = 0
    sort_order: SortOrder = SORT_NONE
    sort_target: SortTarget = SORT_BY_KEY
    serializable: bool = False
    keys_only: bool = False
    count_only: bool = False
    min_mod_revision: int = 0
    max_mod_revision: int = 0
    min_create_revision: int = 0
    max_create_revision: int = 0


@dataclass(frozen=True, slots=True)
class PutRequest:
    key: bytes
    value: bytes = b""
    lease: int = 0
    prev_kv: bool = False
    ignore_value: bool = False
    ignore_lease: bool = False


@dataclass(frozen=True, slots=True)
class DeleteRangeRequest:
    key: bytes
    range_end: bytes = b""
    prev_kv: bool = False


COMPARE_EQUAL = 0
COMPARE_GREATER = 1
COMPARE_LESS = 2
COMPARE_NOT_EQUAL = 3

TARGET_VERSION = 0
TARGET_CREATE = 1
TARGET_MOD = 2
TARGET_VALUE = 3
TARGET_LEASE = 4
CompareResult = enum_of("CompareResult", (COMPARE_EQUAL, COMPARE_GREATER, COMPARE_LESS, COMPARE_NOT_EQUAL))
CompareTarget = enum_of("CompareTarget", (TARGET_VERSION, TARGET_CREATE, TARGET_MOD, TARGET_VALUE, TARGET_LEASE))


@dataclass(frozen=True, slots=True)
class Compare:
    """etcd Compare. `operand` is bytes for TARGET_VALUE, an int otherwise."""

    result: CompareResult
    target: CompareTarget
    key: bytes
    operand: int | bytes
    range_end: bytes = b""


@dataclass(frozen=True, slots=True)
class TxnRequest:
    compare: tuple[Compare, ...] = ()
    success: tuple[RangeRequest | PutRequest | DeleteRangeRequest | TxnRequest, ...] = ()
    failure: tuple[RangeRequest | PutRequest | DeleteRangeRequest | TxnRequest, ...] = ()


@dataclass(frozen=True, slots=True)
class CompactionRequest:
    revision: int
    physical: bool = False


# ---------------------------------------------------------------------------
# KV responses
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RangeResponse:
    header: ResponseHeader
    kvs: tuple[KeyValue, ...] = ()
    more: bool = False
    count: int = 0


@dataclass(frozen=True, slots=True)
class RangeChunk:
    """Part of a large range's answer: chunks arrive in key order under the
    request's id, then a RangeResponse with the rest, `count` and `more`."""

    kvs: tuple[KeyValue, ...]


@dataclass(frozen=True, slots=True)
class PutResponse:
    header: ResponseHeader
    prev_kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class DeleteRangeResponse:
    header: ResponseHeader
    deleted: int = 0
    prev_kvs: tuple[KeyValue, ...] = ()


@dataclass(frozen=True, slots=True)
class TxnResponse:
    header: ResponseHeader
    succeeded: bool = False
    responses: tuple[RangeResponse | PutResponse | DeleteRangeResponse | TxnResponse, ...] = ()


@dataclass(frozen=True, slots=True)
class CompactionResponse:
    header: ResponseHeader


# ---------------------------------------------------------------------------
# Maintenance and cluster
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusRequest:
    pass


@dataclass(frozen=True, slots=True)
class StatusResponse:
    header: ResponseHeader
    version: str
    db_size: int
    leader: Uint64
    raft_index: Uint64
    raft_term: Uint64
    raft_applied_index: Uint64
    errors: tuple[str, ...] = ()
    name: str = ""
    is_learner: bool = False
    # etcd's dbSizeInUse: the pages the keyspace's databases use (db_size less
    # the free pages a defragment would give back).
    db_size_in_use: int = 0


@dataclass(frozen=True, slots=True)
class MetricSample:
    """One metric of one actor (actors/metrics.py: CATALOGUE says what `name`
    means and its unit): a counter's or gauge's value, or a histogram's sum
    with its count per bucket (the last one +Inf)."""

    name: str
    value: int
    labels: tuple[str, ...] = ()
    buckets: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class MetricsReport:
    """any actor -> its frontend, once a second: its metrics as they are now."""

    actor: str
    samples: tuple[MetricSample, ...]


@dataclass(frozen=True, slots=True)
class MetricsRequest:
    """The member's metrics, every actor's last report (what /metrics serves)."""


@dataclass(frozen=True, slots=True)
class MetricsResponse:
    header: ResponseHeader
    reports: tuple[MetricsReport, ...]


@dataclass(frozen=True, slots=True)
class Member:
    id: Uint64
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool = False


@dataclass(frozen=True, slots=True)
class MemberListRequest:
    linearizable: bool = False


@dataclass(frozen=True, slots=True)
class MemberListResponse:
    header: ResponseHeader
    members: tuple[Member, ...] = ()


@dataclass(frozen=True, slots=True)
class MemberAddRequest:
    """etcd's Cluster.MemberAdd. cairn names the member at add time (etcdctl's
    NAME argument; etcd sends it only when the member starts): the member's id
    derives from the cluster and member names, as a YAML member's does
    (cairn/config.py member_id_for), so the new member's YAML names it.
    client_urls may be given now (a cairn extension); etcd publishes them later.
    public_key (cairn): the new member's CURVE public key, which a cluster in
    security mode curve needs to let it in (replicated with its record)."""

    peer_urls: tuple[str, ...]
    is_learner: bool = False
    name: str = ""
    client_urls: tuple[str, ...] = ()
    public_key: str = ""


@dataclass(frozen=True, slots=True)
class MemberAddResponse:
    header: ResponseHeader
    member: Member
    members: tuple[Member, ...] = ()
    cluster_name: str = ""  # cairn: the new member's YAML needs it (member ids derive from it)


@dataclass(frozen=True, slots=True)
class MemberRemoveRequest:
    id: Uint64


@dataclass(frozen=True, slots=True)
class MemberRemoveResponse:
    header: ResponseHeader
    members: tuple[Member, ...] = ()


@dataclass(frozen=True, slots=True)
class MemberUpdateRequest:
    id: Uint64
    peer_urls: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MemberUpdateResponse:
    header: ResponseHeader
    members: tuple[Member, ...] = ()


@dataclass(frozen=True, slots=True)
class MemberPromoteRequest:
    id: Uint64


@dataclass(frozen=True, slots=True)
class MemberPromoteResponse:
    header: ResponseHeader
    members: tuple[Member, ...] = ()


MEMBER_CHANGE_REQUESTS = (MemberAddRequest, MemberRemoveRequest, MemberUpdateRequest, MemberPromoteRequest)


ALARM_NONE = 0
ALARM_NOSPACE = 1
ALARM_CORRUPT = 2
ALARM_NAMES = {ALARM_NONE: "NONE", ALARM_NOSPACE: "NOSPACE", ALARM_CORRUPT: "CORRUPT"}
AlarmType = enum_of("AlarmType", ALARM_NAMES)

ALARM_GET = 0
ALARM_ACTIVATE = 1
ALARM_DEACTIVATE = 2
AlarmAction = enum_of("AlarmAction", (ALARM_GET, ALARM_ACTIVATE, ALARM_DEACTIVATE))


@dataclass(frozen=True, slots=True)
class AlarmMember:
    member_id: Uint64
    alarm: AlarmType


@dataclass(frozen=True, slots=True)
class AlarmRequest:
    """etcd's Maintenance.Alarm: GET lists alarms (member_id 0 = every member);
    ACTIVATE and DEACTIVATE go through the Raft log so every member agrees."""

    action: AlarmAction = ALARM_GET
    member_id: Uint64 = 0
    alarm: AlarmType = ALARM_NONE


@dataclass(frozen=True, slots=True)
class AlarmResponse:
    header: ResponseHeader
    alarms: tuple[AlarmMember, ...] = ()


@dataclass(frozen=True, slots=True)
class MoveLeaderRequest:
    """Transfer leadership to target_id (etcdctl move-leader); sent to any member."""

    target_id: Uint64


@dataclass(frozen=True, slots=True)
class MoveLeaderResponse:
    header: ResponseHeader


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """etcd's Maintenance.Snapshot, pulled piece by piece from ONE member.

    snapshot_id 0 asks the member for a new consistent copy of its keyspace
    (LMDB's compacting copy, made in the background); the answer carries the
    first piece and the copy's id. Then (snapshot_id, offset) asks for the piece
    at offset. The member keeps the copy until its last piece is sent, or until
    nobody asked for a piece for a while (then the id is unknown). Pulling keeps
    the member's memory bounded by one piece per transfer."""

    snapshot_id: Uint64 = 0
    offset: Uint64 = 0


@dataclass(frozen=True, slots=True)
class SnapshotResponse:
    """A piece of a snapshot (etcd's SnapshotResponse: blob, remaining_bytes).
    header.revision is the revision the copy holds; sha256 is the digest of the
    whole copy, in every piece, so the client checks what it assembled."""

    header: ResponseHeader
    snapshot_id: Uint64
    offset: Uint64
    blob: bytes
    total_bytes: Uint64
    remaining_bytes: Uint64
    sha256: bytes = b""


@dataclass(frozen=True, slots=True)
class HashRequest:
    """etcd's Maintenance.Hash: a hash of the member's whole keyspace store."""


@dataclass(frozen=True, slots=True)
class HashResponse:
    header: ResponseHeader
    hash: Uint64


@dataclass(frozen=True, slots=True)
class HashKVRequest:
    """etcd's Maintenance.HashKV: a hash of the MVCC history up to `revision`
    (0 = the latest), the same on every member that holds the same history."""

    revision: int = 0


@dataclass(frozen=True, slots=True)
class DefragmentRequest:
    """etcd's Maintenance.Defragment: rewrite this member's keyspace file
    without its free pages, so the file shrinks (one member per request)."""


@dataclass(frozen=True, slots=True)
class DefragmentResponse:
    header: ResponseHeader


@dataclass(frozen=True, slots=True)
class Defragment:
    """frontend -> apply: defragment the keyspace (request_id: the client's)."""

    request_id: int


@dataclass(frozen=True, slots=True)
class KeyspaceReplaced:
    """apply -> frontend, watch, lease: the keyspace file was replaced by its
    compacted copy; open it again before reading anything applied after this
    message (apply sends it before any later Applied, on the same FIFO pipe).
    For the frontend, the answer to Defragment request_id (error: why not)."""

    request_id: int
    error: str = ""
    size_before: int = 0
    size_after: int = 0
    pause_ms: int = 0


@dataclass(frozen=True, slots=True)
class HashKVResponse:
    header: ResponseHeader
    hash: Uint64
    compact_revision: int
    hash_revision: int = 0


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """An operating error that reaches the client (see transport.errors).

    code names the error class; details carries its typed extras (for example
    {"compact_revision": 5}); leader_hint is the leader's member id where known.
    """

    code: str
    message: str
    details: dict[str, int | str] | None = None


# ---------------------------------------------------------------------------
# Intra-node messages between a member's actors (ipc://). Each carries a batch:
# the actors drain their sockets and hand on everything queued as one message.
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProposeBatch:
    """frontend -> raft: proposals to append. Each item is an entry payload
    (see transport.entries): the origin member id and the client's frame,
    forwarded without re-encoding."""

    request_ids: tuple[Uint64, ...]
    payloads: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class ProposalsRejected:
    """raft -> frontend: proposals that never reached a leader's log, so the
    client may retry them safely. code is an errors code (NoLeader, NotLeader,
    TooManyRequests, Stopping)."""

    request_ids: tuple[Uint64, ...]
    code: str
    leader_id: Uint64 = 0


@dataclass(frozen=True, slots=True)
class ConfChangeProposal:
    """frontend -> raft: a membership change a client asked for (the raft actor
    checks it as etcd's server does and proposes it on the leader). change_type
    is a transport.raft_messages CONF_* kind; context the member record (CBOR,
    store/members.py) that rides in the ConfChange's context."""

    request_id: Uint64
    change_type: int
    node_id: Uint64
    context: bytes = b""
    # A follower's raft forwards the proposal to the leader's raft (tcp, the peer
    # door): origin is the member whose frontend waits for the answer, sender the
    # member that sent this frame (0 for both: from this member's own frontend).
    origin: Uint64 = 0
    sender: Uint64 = 0


@dataclass(frozen=True, slots=True)
class ConfChangeResult:
    """raft -> frontend: the change's entry committed at `index` (code "") or it
    was refused: code is an errors code, message its text (etcd's)."""

    request_id: Uint64
    index: Uint64 = 0
    code: str = ""
    message: str = ""
    leader_id: Uint64 = 0
    origin: Uint64 = 0  # as in ConfChangeProposal: the leader answers a forwarded change to its origin
    sender: Uint64 = 0


@dataclass(frozen=True, slots=True)
class ReadIndexRequest:
    """frontend -> raft: one ReadIndex round for every linearizable read queued."""

    context: int


@dataclass(frozen=True, slots=True)
class ReadIndexResult:
    """raft -> frontend: reads of `context` may be served once applied >= index.
    code is "" on success, else an errors code (NoLeader)."""

    context: int
    index: Uint64
    code: str = ""


# RaftStatus.role: the names the Raft core gives its roles. The pure core keeps
# its own copy (actors/raft/core.py imports only transport.raft_messages);
# tests/raft/test_core_rules.py checks that the two agree.
ROLE_FOLLOWER = "follower"
ROLE_PRE_CANDIDATE = "pre_candidate"
ROLE_CANDIDATE = "candidate"
ROLE_LEADER = "leader"
ROLES = (ROLE_FOLLOWER, ROLE_PRE_CANDIDATE, ROLE_CANDIDATE, ROLE_LEADER)


@dataclass(frozen=True, slots=True)
class RaftStatus:
    """raft -> frontend, lease, watch: published on every change of leader or
    term and at most once a tick otherwise."""

    member_id: Uint64
    term: Uint64
    leader_id: Uint64
    role: str
    commit_index: Uint64
    last_index: Uint64
    applied_index: Uint64
    quorum_active: bool = False
    # This member is a learner of the configuration (takes no writes, no
    # linearizable reads: etcd's "rpc not supported for learner").
    is_learner: bool = False


@dataclass(frozen=True, slots=True)
class MemberRemoved:
    """raft -> raft of another member (tcp): you were removed from the cluster
    (etcd's peer handler answers a removed member's messages with 410 Gone)."""

    sender: Uint64
    removed_id: Uint64


@dataclass(frozen=True, slots=True)
class CommittedEntries:
    """raft -> apply: committed entries in log order."""

    entries: tuple[raft_messages.Entry, ...]


@dataclass(frozen=True, slots=True)
class ApplyNeed:
    """apply -> raft: send committed entries from index `next_index` on (sent at
    start and whenever apply sees a gap)."""

    next_index: Uint64


@dataclass(frozen=True, slots=True)
class Applied:
    """apply -> raft and frontend: everything up to index is applied (committed
    to the keyspace, which readers see at once); frames answers this member's
    requests in the batch. durable_index (to raft) is how far the keyspace is
    synced to disk: raft never compacts its log past it (store/environment.py),
    0 when unchanged."""

    index: Uint64
    revision: int
    request_ids: tuple[Uint64, ...] = ()
    frames: tuple[bytes, ...] = ()
    durable_index: Uint64 = 0


@dataclass(frozen=True, slots=True)
class TransferLeadership:
    """frontend -> raft: move-leader."""

    target: Uint64


@dataclass(frozen=True, slots=True)
class Shutdown:
    """supervisor/tests -> any actor: stop cleanly."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class AppliedEvents:
    """apply -> watch: the events of one applied batch, in revision order;
    revision is the store revision after the batch. elided: the events were left
    out because the hub said it had no watchers (WatchInterest); revisions up to
    `revision` are then in the store only, and a watcher that needs them reads
    them there."""

    revision: int
    events: tuple[Event, ...]
    elided: bool = False


@dataclass(frozen=True, slots=True)
class AppliedWanted:
    """frontend -> apply: answer with Applied as soon as index is applied (at
    once if it is). Apply tells its frontend of batches that answer none of
    its requests only once a tick; a frontend whose linearizable reads (or
    member changes) wait for an index asks with this."""

    index: Uint64


@dataclass(frozen=True, slots=True)
class WatchInterest:
    """watch -> apply: whether the hub has watchers, so whether apply should send
    each batch's events (encoding them was a quarter of apply's CPU under load
    with nobody watching). Sent on change and repeated every few seconds, so an
    apply that restarted (it assumes watchers until told) learns it again."""

    watching: bool


@dataclass(frozen=True, slots=True)
class RaftBatch:
    """raft -> raft of another member (tcp): every message for that peer from one
    Ready, in one frame."""

    sender: Uint64
    messages: tuple[raft_messages.RaftMessage, ...]


@dataclass(frozen=True, slots=True)
class Failpoint:
    """test -> raft: drop traffic to and from these peers (a partition), or heal
    with empty tuples. delay_ms holds outgoing traffic to them for that long."""

    drop_peers: tuple[Uint64, ...] = ()
    delay_peers: tuple[Uint64, ...] = ()
    delay_ms: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    """raft -> raft (tcp): one piece of a keyspace snapshot (an LMDB file)
    streamed to a follower that needs entries the leader has compacted away.
    `message` is the core's MSG_SNAP, stepped on the follower once installed."""

    sender: Uint64
    snapshot_id: Uint64
    offset: int
    data: bytes
    last: bool
    total_bytes: int
    message: raft_messages.RaftMessage


@dataclass(frozen=True, slots=True)
class SnapshotChunkAck:
    """raft -> raft (tcp): chunks up to offset arrived (flow control); ok False aborts."""

    sender: Uint64
    snapshot_id: Uint64
    offset: int
    ok: bool = True


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """raft -> apply: replace the keyspace with the LMDB copy in directory path."""

    path: str
    index: Uint64


@dataclass(frozen=True, slots=True)
class SnapshotInstalled:
    """apply -> raft: the keyspace now holds the snapshot; applied is its applied index."""

    index: Uint64
    applied: Uint64
    ok: bool = True
    error: str = ""


# ---------------------------------------------------------------------------
# Watch (etcd's Watch service). One client connection carries many watches:
# every response of a watch travels under the request id of its
# WatchCreateRequest, so the client routes it to that watch's stream.
# ---------------------------------------------------------------------------

WATCH_FILTER_NOPUT = 0
WATCH_FILTER_NODELETE = 1
WatchFilter = enum_of("WatchFilter", (WATCH_FILTER_NOPUT, WATCH_FILTER_NODELETE))


@dataclass(frozen=True, slots=True)
class WatchCreateRequest:
    key: bytes
    range_end: bytes = b""
    start_revision: int = 0
    progress_notify: bool = False
    filters: tuple[WatchFilter, ...] = ()
    prev_kv: bool = False
    watch_id: int = 0
    fragment: bool = False
    # cairn: the client accepts WatchResponses (one response for several of
    # its watches); etcd's clients and older ones leave it False.
    grouped: bool = False


@dataclass(frozen=True, slots=True)
class WatchCancelRequest:
    watch_id: int


@dataclass(frozen=True, slots=True)
class WatchProgressRequest:
    """Ask for a progress notification on every watch of this connection."""


@dataclass(frozen=True, slots=True)
class WatchResponse:
    header: ResponseHeader
    watch_id: int
    created: bool = False
    canceled: bool = False
    compact_revision: int = 0
    cancel_reason: str = ""
    fragment: bool = False
    events: tuple[Event, ...] = ()


@dataclass(frozen=True, slots=True)
class WatchResponses:
    """watch hub -> client: one response that several watches of one
    connection are each due (same events, same header), sent once instead of
    once per watch. The client delivers `response` to each watch as if it had
    come alone, with watch_ids[i] under request_ids[i]; response.watch_id is
    -1. Only to watches created with grouped=True; never a fragment."""

    request_ids: tuple[Uint64, ...]
    watch_ids: tuple[int, ...]
    response: WatchResponse


@dataclass(frozen=True, slots=True)
class ClientRequests:
    """frontend -> watch (or lease): client frames this actor serves, forwarded
    untouched with the identity of the connection they came from."""

    identities: tuple[bytes, ...]
    frames: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class ClientReplies:
    """watch (or lease) -> frontend: frames to send to client connections as they are."""

    identities: tuple[bytes, ...]
    frames: tuple[bytes, ...]


# ---------------------------------------------------------------------------
# Leases (etcd's Lease service)
# ---------------------------------------------------------------------------

# etcd's MaxLeaseTTL: 9,000,000,000 seconds.
MAX_LEASE_TTL_S = 9_000_000_000


@dataclass(frozen=True, slots=True)
class LeaseGrantRequest:
    """ttl in seconds; id 0 lets the member that takes the request choose one."""

    ttl: int
    id: int = 0


@dataclass(frozen=True, slots=True)
class LeaseGrantResponse:
    header: ResponseHeader
    id: int
    ttl: int
    error: str = ""


@dataclass(frozen=True, slots=True)
class LeaseRevokeRequest:
    id: int


@dataclass(frozen=True, slots=True)
class LeaseRevokeResponse:
    header: ResponseHeader


@dataclass(frozen=True, slots=True)
class LeaseKeepAliveRequest:
    id: int


@dataclass(frozen=True, slots=True)
class LeaseKeepAliveResponse:
    """ttl is the renewed TTL in seconds; 0 means the lease is unknown or expired."""

    header: ResponseHeader
    id: int
    ttl: int


@dataclass(frozen=True, slots=True)
class LeaseTimeToLiveRequest:
    id: int
    keys: bool = False


@dataclass(frozen=True, slots=True)
class LeaseTimeToLiveResponse:
    """ttl is the remaining TTL in seconds, -1 when the lease does not exist."""

    header: ResponseHeader
    id: int
    ttl: int
    granted_ttl: int = 0
    keys: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class LeaseLeasesRequest:
    pass


@dataclass(frozen=True, slots=True)
class LeaseLeasesResponse:
    header: ResponseHeader
    leases: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class LeaseExpireRequest:
    """leader's lease actor -> log: revoke these expired leases (each in its own
    revision, as etcd revokes them); many expiries share one entry."""

    ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class LeaseCheckpointRequest:
    """leader's lease actor -> log: remaining TTLs (seconds) to persist, so a new
    leader continues from them instead of granting every lease a fresh TTL."""

    ids: tuple[int, ...]
    remaining_ttls: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class LeasesChanged:
    """apply -> lease: the lease table changed in the batch just applied."""

    granted_ids: tuple[int, ...] = ()
    granted_ttls: tuple[int, ...] = ()
    revoked_ids: tuple[int, ...] = ()


# ---------------------------------------------------------------------------
# Watch keep-alive and flow control (the watch hub, issue 6)
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WatchKeepAlive(WatchProgressRequest):
    """client -> watch hub, on each connection that has watches: every
    interval_ms (the hub drops the watches of a connection silent for three
    intervals) and whenever the application has consumed a share of a watch's
    credit window. For each watch (watch_ids[i], created under request_ids[i]),
    consumed[i] counts the responses the application has taken (events or
    progress; created and canceled responses do not count; fragments of one
    response count once), which returns credit to the hub.

    The hub answers with one WatchResponse(watch_id=-1) under this request's id,
    not with progress notifications, and with a canceled response carrying
    cancel_reason UNKNOWN_WATCH, under the watch's own request id, for each
    watch it does not hold. A subclass of WatchProgressRequest because it is one
    for routing: the frontend hands it to the watch actor like any watch
    request."""

    UNKNOWN_WATCH = "cairn: watch not found on this member"

    interval_ms: int = 2000
    watch_ids: tuple[int, ...] = ()
    request_ids: tuple[Uint64, ...] = ()
    consumed: tuple[int, ...] = ()


# ---------------------------------------------------------------------------
# Lock and Election services (etcd's v3lock and v3election): the recipes of
# cairn/concurrency.py run by a member on a client's behalf, with the client's
# lease. Served by any member's lease actor.
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LockRequest:
    """Hold `name` under `lease` (the caller keeps the lease alive); answered
    once held, with the key that holds it."""

    name: bytes
    lease: int


@dataclass(frozen=True, slots=True)
class LockResponse:
    header: ResponseHeader
    key: bytes
    revision: int = 0


@dataclass(frozen=True, slots=True)
class UnlockRequest:
    key: bytes


@dataclass(frozen=True, slots=True)
class UnlockResponse:
    header: ResponseHeader


@dataclass(frozen=True, slots=True)
class LeaderKey:
    name: bytes
    key: bytes
    rev: int
    lease: int


@dataclass(frozen=True, slots=True)
class CampaignRequest:
    name: bytes
    lease: int
    value: bytes = b""


@dataclass(frozen=True, slots=True)
class CampaignResponse:
    header: ResponseHeader
    leader: LeaderKey


@dataclass(frozen=True, slots=True)
class ProclaimRequest:
    leader: LeaderKey
    value: bytes


@dataclass(frozen=True, slots=True)
class ProclaimResponse:
    header: ResponseHeader


@dataclass(frozen=True, slots=True)
class LeaderRequest:
    name: bytes


@dataclass(frozen=True, slots=True)
class LeaderResponse:
    header: ResponseHeader
    kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class ResignRequest:
    leader: LeaderKey


@dataclass(frozen=True, slots=True)
class ResignResponse:
    header: ResponseHeader


# ---------------------------------------------------------------------------
# Auth (etcd's Auth service and authpb). Changes go through the Raft log, so
# every member holds the same users and roles. Passwords never enter the log:
# the member that takes a UserAdd or UserChangePassword hashes the password
# and proposes the hash (etcd does the same since 3.5).
# ---------------------------------------------------------------------------

PERM_READ = 0
PERM_WRITE = 1
PERM_READWRITE = 2
PERM_NAMES = {PERM_READ: "READ", PERM_WRITE: "WRITE", PERM_READWRITE: "READWRITE"}
PermType = enum_of("PermType", PERM_NAMES)


@dataclass(frozen=True, slots=True)
class Permission:
    """authpb.Permission: perm_type on key (range_end: b"" the key alone,
    b"\\0" every key from key on, else [key, range_end))."""

    perm_type: PermType
    key: bytes
    range_end: bytes = b""


@dataclass(frozen=True, slots=True)
class AuthEnableRequest:
    pass


@dataclass(frozen=True, slots=True)
class AuthDisableRequest:
    pass


@dataclass(frozen=True, slots=True)
class AuthStatusRequest:
    pass


@dataclass(frozen=True, slots=True)
class AuthStatusResponse:
    header: ResponseHeader
    enabled: bool = False
    auth_revision: int = 0


@dataclass(frozen=True, slots=True)
class AuthenticateRequest:
    name: str
    password: str = field(repr=False)  # never in a repr, nor a log


@dataclass(frozen=True, slots=True)
class AuthenticateResponse:
    header: ResponseHeader
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class AuthUserAddRequest:
    """password is the client's; hashed_password what the log carries (the
    member that takes the request fills it and empties password)."""

    name: str
    password: str = field(default="", repr=False)
    hashed_password: str = field(default="", repr=False)
    no_password: bool = False


@dataclass(frozen=True, slots=True)
class AuthUserGetRequest:
    name: str


@dataclass(frozen=True, slots=True)
class AuthUserGetResponse:
    header: ResponseHeader
    roles: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthUserDeleteRequest:
    name: str


@dataclass(frozen=True, slots=True)
class AuthUserChangePasswordRequest:
    name: str
    password: str = field(default="", repr=False)
    hashed_password: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class AuthUserGrantRoleRequest:
    user: str
    role: str


@dataclass(frozen=True, slots=True)
class AuthUserRevokeRoleRequest:
    name: str
    role: str


@dataclass(frozen=True, slots=True)
class AuthUserListRequest:
    pass


@dataclass(frozen=True, slots=True)
class AuthUserListResponse:
    header: ResponseHeader
    users: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthRoleAddRequest:
    name: str


@dataclass(frozen=True, slots=True)
class AuthRoleGetRequest:
    role: str


@dataclass(frozen=True, slots=True)
class AuthRoleGetResponse:
    header: ResponseHeader
    perm: tuple[Permission, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthRoleListRequest:
    pass


@dataclass(frozen=True, slots=True)
class AuthRoleListResponse:
    header: ResponseHeader
    roles: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthRoleDeleteRequest:
    role: str


@dataclass(frozen=True, slots=True)
class AuthRoleGrantPermissionRequest:
    name: str
    perm: Permission


@dataclass(frozen=True, slots=True)
class AuthRoleRevokePermissionRequest:
    role: str
    key: bytes
    range_end: bytes = b""


@dataclass(frozen=True, slots=True)
class AuthResponse:
    """The answer of an auth change that returns nothing but its header
    (etcd's AuthEnableResponse, AuthUserAddResponse, ...)."""

    header: ResponseHeader


quicken_module(globals(), __name__)  # quicker_init (transport/raft_messages.py): built on every hot path
