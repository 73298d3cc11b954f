"""etcd v3's gRPC API as protobuf messages <-> cairn's transport messages.

Pure translation, no I/O, for the gRPC door (actors/grpc_gateway.py): a request
message of etcd's .proto (actors/etcdpb/) becomes the transport message the
frontend serves; a response becomes etcd's protobuf. Protobuf has already
checked the wire types, so what is left to check is what etcd's server checks
itself (the rest the member checks, as for every client).

SERVICES lists every method served: its full gRPC name, its kind (unary or a
stream) and its request and response types; actors/grpc_gateway.py builds the
server from it, and tests build their stubs from it.
"""

from __future__ import annotations

from actors.etcdpb import auth_pb2, kv_pb2, rpc_pb2, v3election_pb2, v3lock_pb2
from transport import messages as m

UNARY, STREAM_STREAM, UNARY_STREAM = "unary", "stream_stream", "unary_stream"


class BadRequest(Exception):
    """The request does not make sense: INVALID_ARGUMENT."""


# ---------------------------------------------------------------- requests


def range_request(r: rpc_pb2.RangeRequest) -> m.RangeRequest:
    return m.RangeRequest(
        key=r.key, range_end=r.range_end, limit=r.limit, revision=r.revision, sort_order=r.sort_order,
        sort_target=r.sort_target, serializable=r.serializable, keys_only=r.keys_only, count_only=r.count_only,
        min_mod_revision=r.min_mod_revision, max_mod_revision=r.max_mod_revision,
        min_create_revision=r.min_create_revision, max_create_revision=r.max_create_revision)


def put_request(r: rpc_pb2.PutRequest) -> m.PutRequest:
    return m.PutRequest(r.key, r.value, r.lease, r.prev_kv, r.ignore_value, r.ignore_lease)


def delete_range_request(r: rpc_pb2.DeleteRangeRequest) -> m.DeleteRangeRequest:
    return m.DeleteRangeRequest(r.key, r.range_end, r.prev_kv)


_OPERAND_FIELDS = {m.TARGET_VERSION: "version", m.TARGET_CREATE: "create_revision", m.TARGET_MOD: "mod_revision",
                   m.TARGET_VALUE: "value", m.TARGET_LEASE: "lease"}


def _compare(c: rpc_pb2.Compare) -> m.Compare:
    field = _OPERAND_FIELDS.get(c.target)
    if field is None:
        raise BadRequest(f"etcdserver: unknown compare target {c.target}")
    if c.result not in (m.COMPARE_EQUAL, m.COMPARE_GREATER, m.COMPARE_LESS, m.COMPARE_NOT_EQUAL):
        raise BadRequest(f"etcdserver: unknown compare result {c.result}")
    # The operand of the target compared; another member of the union set instead
    # compares with the target's zero value, as etcd's server does.
    operand = getattr(c, field) if c.WhichOneof("target_union") == field else (b"" if field == "value" else 0)
    return m.Compare(c.result, c.target, c.key, operand, c.range_end)


def _request_op(op: rpc_pb2.RequestOp):
    kind = op.WhichOneof("request")
    if kind == "request_range":
        return range_request(op.request_range)
    if kind == "request_put":
        return put_request(op.request_put)
    if kind == "request_delete_range":
        return delete_range_request(op.request_delete_range)
    if kind == "request_txn":
        return txn_request(op.request_txn)
    raise BadRequest("etcdserver: a txn operation is empty")


def txn_request(r: rpc_pb2.TxnRequest) -> m.TxnRequest:
    return m.TxnRequest(tuple(_compare(c) for c in r.compare), tuple(_request_op(op) for op in r.success),
                        tuple(_request_op(op) for op in r.failure))


def compaction_request(r: rpc_pb2.CompactionRequest) -> m.CompactionRequest:
    return m.CompactionRequest(r.revision, r.physical)


def lease_grant_request(r: rpc_pb2.LeaseGrantRequest) -> m.LeaseGrantRequest:
    return m.LeaseGrantRequest(r.TTL, r.ID)


def lease_revoke_request(r: rpc_pb2.LeaseRevokeRequest) -> m.LeaseRevokeRequest:
    return m.LeaseRevokeRequest(r.ID)


def lease_keepalive_request(r: rpc_pb2.LeaseKeepAliveRequest) -> m.LeaseKeepAliveRequest:
    return m.LeaseKeepAliveRequest(r.ID)


def lease_time_to_live_request(r: rpc_pb2.LeaseTimeToLiveRequest) -> m.LeaseTimeToLiveRequest:
    return m.LeaseTimeToLiveRequest(r.ID, r.keys)


def alarm_request(r: rpc_pb2.AlarmRequest) -> m.AlarmRequest:
    if r.action not in (m.ALARM_GET, m.ALARM_ACTIVATE, m.ALARM_DEACTIVATE):
        raise BadRequest(f"etcdserver: unknown alarm action {r.action}")
    return m.AlarmRequest(r.action, r.memberID, r.alarm)


def move_leader_request(r: rpc_pb2.MoveLeaderRequest) -> m.MoveLeaderRequest:
    return m.MoveLeaderRequest(r.targetID)


def peer_urls(urls) -> tuple[str, ...]:
    """etcdctl takes only http(s):// peer URLs; cairn's peers speak ZeroMQ over
    TCP (CURVE when the cluster is secure), so http://HOST:PORT and
    https://HOST:PORT mean tcp://HOST:PORT."""
    out = []
    for url in urls:
        for scheme in ("http://", "https://"):
            if url.startswith(scheme):
                url = "tcp://" + url[len(scheme):].rstrip("/")
        out.append(url)
    return tuple(out)


def member_add_request(r: rpc_pb2.MemberAddRequest) -> m.MemberAddRequest:
    """etcd's MemberAdd carries no name (etcd learns it when the member starts);
    cairn derives the member's id from its name at add time, so without cairn's
    `name` field (etcdctl member add sends none) the member is named after its
    first peer URL (tcp://HOST:PORT), and its YAML must use that name."""
    urls = peer_urls(r.peerURLs)
    if not urls:
        raise BadRequest("etcdserver: member add needs at least one peer URL")
    return m.MemberAddRequest(urls, r.isLearner, r.name or urls[0], tuple(r.clientURLs))


def member_remove_request(r: rpc_pb2.MemberRemoveRequest) -> m.MemberRemoveRequest:
    return m.MemberRemoveRequest(r.ID)


def member_update_request(r: rpc_pb2.MemberUpdateRequest) -> m.MemberUpdateRequest:
    return m.MemberUpdateRequest(r.ID, peer_urls(r.peerURLs))


def member_promote_request(r: rpc_pb2.MemberPromoteRequest) -> m.MemberPromoteRequest:
    return m.MemberPromoteRequest(r.ID)


def hash_kv_request(r: rpc_pb2.HashKVRequest) -> m.HashKVRequest:
    return m.HashKVRequest(r.revision)


_PERM_TYPES = (m.PERM_READ, m.PERM_WRITE, m.PERM_READWRITE)


def user_add_request(r: rpc_pb2.AuthUserAddRequest) -> m.AuthUserAddRequest:
    return m.AuthUserAddRequest(r.name, r.password, "", r.options.no_password)


def role_grant_permission_request(r: rpc_pb2.AuthRoleGrantPermissionRequest) -> m.AuthRoleGrantPermissionRequest:
    if not r.HasField("perm"):
        raise BadRequest("etcdserver: permission not given")
    if r.perm.permType not in _PERM_TYPES:
        raise BadRequest(f"etcdserver: unknown permission type {r.perm.permType}")
    return m.AuthRoleGrantPermissionRequest(r.name, m.Permission(r.perm.permType, r.perm.key, r.perm.range_end))


# Auth requests whose fields map one to one (name -> the message's constructor).
AUTH_REQUESTS = {
    "AuthEnable": (rpc_pb2.AuthEnableRequest, lambda r: m.AuthEnableRequest()),
    "AuthDisable": (rpc_pb2.AuthDisableRequest, lambda r: m.AuthDisableRequest()),
    "AuthStatus": (rpc_pb2.AuthStatusRequest, lambda r: m.AuthStatusRequest()),
    "UserAdd": (rpc_pb2.AuthUserAddRequest, user_add_request),
    "UserGet": (rpc_pb2.AuthUserGetRequest, lambda r: m.AuthUserGetRequest(r.name)),
    "UserList": (rpc_pb2.AuthUserListRequest, lambda r: m.AuthUserListRequest()),
    "UserDelete": (rpc_pb2.AuthUserDeleteRequest, lambda r: m.AuthUserDeleteRequest(r.name)),
    "UserChangePassword": (rpc_pb2.AuthUserChangePasswordRequest,
                           lambda r: m.AuthUserChangePasswordRequest(r.name, r.password)),
    "UserGrantRole": (rpc_pb2.AuthUserGrantRoleRequest, lambda r: m.AuthUserGrantRoleRequest(r.user, r.role)),
    "UserRevokeRole": (rpc_pb2.AuthUserRevokeRoleRequest, lambda r: m.AuthUserRevokeRoleRequest(r.name, r.role)),
    "RoleAdd": (rpc_pb2.AuthRoleAddRequest, lambda r: m.AuthRoleAddRequest(r.name)),
    "RoleGet": (rpc_pb2.AuthRoleGetRequest, lambda r: m.AuthRoleGetRequest(r.role)),
    "RoleList": (rpc_pb2.AuthRoleListRequest, lambda r: m.AuthRoleListRequest()),
    "RoleDelete": (rpc_pb2.AuthRoleDeleteRequest, lambda r: m.AuthRoleDeleteRequest(r.role)),
    "RoleGrantPermission": (rpc_pb2.AuthRoleGrantPermissionRequest, role_grant_permission_request),
    "RoleRevokePermission": (rpc_pb2.AuthRoleRevokePermissionRequest,
                             lambda r: m.AuthRoleRevokePermissionRequest(r.role, r.key, r.range_end)),
}


def lock_request(r: v3lock_pb2.LockRequest) -> m.LockRequest:
    return m.LockRequest(r.name, r.lease)


def unlock_request(r: v3lock_pb2.UnlockRequest) -> m.UnlockRequest:
    return m.UnlockRequest(r.key)


def _leader_key(k: v3election_pb2.LeaderKey) -> m.LeaderKey:
    return m.LeaderKey(k.name, k.key, k.rev, k.lease)


def campaign_request(r: v3election_pb2.CampaignRequest) -> m.CampaignRequest:
    return m.CampaignRequest(r.name, r.lease, r.value)


def proclaim_request(r: v3election_pb2.ProclaimRequest) -> m.ProclaimRequest:
    if not r.HasField("leader"):
        raise BadRequest("etcdserver: ProclaimRequest.leader is not provided")
    return m.ProclaimRequest(_leader_key(r.leader), r.value)


def leader_request(r: v3election_pb2.LeaderRequest) -> m.LeaderRequest:
    return m.LeaderRequest(r.name)


def resign_request(r: v3election_pb2.ResignRequest) -> m.ResignRequest:
    if not r.HasField("leader"):
        raise BadRequest("etcdserver: ResignRequest.leader is not provided")
    return m.ResignRequest(_leader_key(r.leader))


def watch_request(r: rpc_pb2.WatchRequest):
    """One message of a watch stream: a WatchCreateRequest, WatchCancelRequest or
    WatchProgressRequest; None for an empty one (etcd ignores it)."""
    kind = r.WhichOneof("request_union")
    if kind == "create_request":
        c = r.create_request
        filters = tuple(c.filters)
        if any(f not in (m.WATCH_FILTER_NOPUT, m.WATCH_FILTER_NODELETE) for f in filters):
            raise BadRequest("etcdserver: unknown watch filter")
        return m.WatchCreateRequest(key=c.key, range_end=c.range_end, start_revision=c.start_revision,
                                    progress_notify=c.progress_notify, filters=filters, prev_kv=c.prev_kv,
                                    watch_id=c.watch_id, fragment=c.fragment)
    if kind == "cancel_request":
        return m.WatchCancelRequest(r.cancel_request.watch_id)
    if kind == "progress_request":
        return m.WatchProgressRequest()
    return None


# ---------------------------------------------------------------- responses


def header(h: m.ResponseHeader, nested: bool = False) -> rpc_pb2.ResponseHeader:
    """A response header; responses inside a txn carry only their revision, as etcd's."""
    if nested:
        return rpc_pb2.ResponseHeader(revision=h.revision)
    return rpc_pb2.ResponseHeader(cluster_id=h.cluster_id, member_id=h.member_id, revision=h.revision,
                                  raft_term=h.raft_term)


def key_value(kv: m.KeyValue) -> kv_pb2.KeyValue:
    return kv_pb2.KeyValue(key=kv.key, create_revision=kv.create_revision, mod_revision=kv.mod_revision,
                           version=kv.version, value=kv.value, lease=kv.lease)


def range_response(r: m.RangeResponse, nested: bool = False) -> rpc_pb2.RangeResponse:
    return rpc_pb2.RangeResponse(header=header(r.header, nested), kvs=[key_value(kv) for kv in r.kvs], more=r.more,
                                 count=r.count)


def put_response(r: m.PutResponse, nested: bool = False) -> rpc_pb2.PutResponse:
    out = rpc_pb2.PutResponse(header=header(r.header, nested))
    if r.prev_kv is not None:
        out.prev_kv.CopyFrom(key_value(r.prev_kv))
    return out


def delete_range_response(r: m.DeleteRangeResponse, nested: bool = False) -> rpc_pb2.DeleteRangeResponse:
    return rpc_pb2.DeleteRangeResponse(header=header(r.header, nested), deleted=r.deleted,
                                       prev_kvs=[key_value(kv) for kv in r.prev_kvs])


def txn_response(r: m.TxnResponse, nested: bool = False) -> rpc_pb2.TxnResponse:
    ops = []
    for response in r.responses:
        if isinstance(response, m.RangeResponse):
            ops.append(rpc_pb2.ResponseOp(response_range=range_response(response, True)))
        elif isinstance(response, m.PutResponse):
            ops.append(rpc_pb2.ResponseOp(response_put=put_response(response, True)))
        elif isinstance(response, m.DeleteRangeResponse):
            ops.append(rpc_pb2.ResponseOp(response_delete_range=delete_range_response(response, True)))
        else:
            ops.append(rpc_pb2.ResponseOp(response_txn=txn_response(response, True)))
    return rpc_pb2.TxnResponse(header=header(r.header, nested), succeeded=r.succeeded, responses=ops)


def header_only(response_class):
    return lambda r: response_class(header=header(r.header))


def lease_grant_response(r: m.LeaseGrantResponse) -> rpc_pb2.LeaseGrantResponse:
    return rpc_pb2.LeaseGrantResponse(header=header(r.header), ID=r.id, TTL=r.ttl, error=r.error)


def lease_keepalive_response(r: m.LeaseKeepAliveResponse) -> rpc_pb2.LeaseKeepAliveResponse:
    """A lease that is gone answers TTL 0, as etcd's."""
    return rpc_pb2.LeaseKeepAliveResponse(header=header(r.header), ID=r.id, TTL=max(r.ttl, 0))


def lease_time_to_live_response(r: m.LeaseTimeToLiveResponse) -> rpc_pb2.LeaseTimeToLiveResponse:
    return rpc_pb2.LeaseTimeToLiveResponse(header=header(r.header), ID=r.id, TTL=r.ttl, grantedTTL=r.granted_ttl,
                                           keys=list(r.keys))


def lease_leases_response(r: m.LeaseLeasesResponse) -> rpc_pb2.LeaseLeasesResponse:
    return rpc_pb2.LeaseLeasesResponse(header=header(r.header), leases=[rpc_pb2.LeaseStatus(ID=i) for i in r.leases])


def member_list_response(r: m.MemberListResponse, grpc_urls: dict[int, str]) -> rpc_pb2.MemberListResponse:
    """Members' clientURLs are their gRPC doors' URLs where they have one, so that
    gRPC clients (etcdctl, clientv3's endpoint sync) find the others; the header
    has no revision, as etcd's."""
    return rpc_pb2.MemberListResponse(header=_no_revision(r.header), members=members(r.members, grpc_urls))


def members(members, grpc_urls: dict[int, str]) -> list[rpc_pb2.Member]:
    out = []
    for member in members:
        client_urls = [grpc_urls[member.id]] if grpc_urls.get(member.id) else list(member.client_urls)
        out.append(rpc_pb2.Member(ID=member.id, name=member.name, peerURLs=list(member.peer_urls),
                                  clientURLs=client_urls, isLearner=member.is_learner))
    return out


def _no_revision(h: m.ResponseHeader) -> rpc_pb2.ResponseHeader:
    return header(m.ResponseHeader(h.cluster_id, h.member_id, 0, h.raft_term))


def member_change_response(response_class, grpc_urls: dict[int, str]):
    """MemberAdd/Remove/Update/PromoteResponse: the members after the change
    (and MemberAdd's new member), as member list renders them."""

    def convert(r):
        out = response_class(header=_no_revision(r.header), members=members(r.members, grpc_urls))
        if isinstance(r, m.MemberAddResponse):
            out.member.CopyFrom(members([r.member], grpc_urls)[0])
        return out

    return convert


def hash_response(r: m.HashResponse) -> rpc_pb2.HashResponse:
    return rpc_pb2.HashResponse(header=header(r.header), hash=r.hash)


def hash_kv_response(r: m.HashKVResponse) -> rpc_pb2.HashKVResponse:
    return rpc_pb2.HashKVResponse(header=header(r.header), hash=r.hash, compact_revision=r.compact_revision)


def snapshot_response(r: m.SnapshotResponse) -> rpc_pb2.SnapshotResponse:
    """A piece of the member's copy; remaining_bytes counts what follows it,
    not the digest the stream ends with (as etcd's)."""
    return rpc_pb2.SnapshotResponse(header=header(r.header), remaining_bytes=r.remaining_bytes, blob=r.blob)


def snapshot_digest(r: m.SnapshotResponse) -> rpc_pb2.SnapshotResponse:
    """The stream's last message: the SHA-256 of the copy, so what a client
    saves is exactly cairn's snapshot file (LMDB bytes + 32-byte SHA-256),
    which is also etcd's layout (data + its SHA-256)."""
    return rpc_pb2.SnapshotResponse(header=header(r.header), remaining_bytes=0, blob=r.sha256)


def auth_status_response(r: m.AuthStatusResponse) -> rpc_pb2.AuthStatusResponse:
    return rpc_pb2.AuthStatusResponse(header=header(r.header), enabled=r.enabled, authRevision=r.auth_revision)


def user_get_response(r: m.AuthUserGetResponse) -> rpc_pb2.AuthUserGetResponse:
    return rpc_pb2.AuthUserGetResponse(header=header(r.header), roles=list(r.roles))


def user_list_response(r: m.AuthUserListResponse) -> rpc_pb2.AuthUserListResponse:
    return rpc_pb2.AuthUserListResponse(header=header(r.header), users=list(r.users))


def role_get_response(r: m.AuthRoleGetResponse) -> rpc_pb2.AuthRoleGetResponse:
    return rpc_pb2.AuthRoleGetResponse(header=header(r.header), perm=[
        auth_pb2.Permission(permType=p.perm_type, key=p.key, range_end=p.range_end) for p in r.perm])


def role_list_response(r: m.AuthRoleListResponse) -> rpc_pb2.AuthRoleListResponse:
    return rpc_pb2.AuthRoleListResponse(header=header(r.header), roles=list(r.roles))


# Auth responses other than a header alone.
AUTH_RESPONSES = {"AuthStatus": auth_status_response, "UserGet": user_get_response, "UserList": user_list_response,
                  "RoleGet": role_get_response, "RoleList": role_list_response}


def status_response(r: m.StatusResponse, version: str) -> rpc_pb2.StatusResponse:
    return rpc_pb2.StatusResponse(header=header(r.header), version=version, dbSize=r.db_size, leader=r.leader,
                                  raftIndex=r.raft_index, raftTerm=r.raft_term, raftAppliedIndex=r.raft_applied_index,
                                  errors=list(r.errors), dbSizeInUse=r.db_size, isLearner=r.is_learner)


def alarm_response(r: m.AlarmResponse) -> rpc_pb2.AlarmResponse:
    return rpc_pb2.AlarmResponse(header=header(r.header),
                                 alarms=[rpc_pb2.AlarmMember(memberID=a.member_id, alarm=a.alarm) for a in r.alarms])


def lock_response(r: m.LockResponse) -> v3lock_pb2.LockResponse:
    return v3lock_pb2.LockResponse(header=header(r.header), key=r.key)


def campaign_response(r: m.CampaignResponse) -> v3election_pb2.CampaignResponse:
    k = r.leader
    return v3election_pb2.CampaignResponse(
        header=header(r.header), leader=v3election_pb2.LeaderKey(name=k.name, key=k.key, rev=k.rev, lease=k.lease))


def leader_response(r: m.LeaderResponse) -> v3election_pb2.LeaderResponse:
    out = v3election_pb2.LeaderResponse(header=header(r.header))
    if r.kv is not None:
        out.kv.CopyFrom(key_value(r.kv))
    return out


def event(e: m.Event) -> kv_pb2.Event:
    out = kv_pb2.Event(type=e.type, kv=key_value(e.kv))
    if e.prev_kv is not None:
        out.prev_kv.CopyFrom(key_value(e.prev_kv))
    return out


def watch_response(r: m.WatchResponse, watch_id: int) -> rpc_pb2.WatchResponse:
    """One message of the watch stream, with the watch's id within this stream."""
    h = r.header
    if r.compact_revision:  # etcd's compaction notice carries no revision and no reason
        h = m.ResponseHeader(h.cluster_id, h.member_id, 0, h.raft_term)
    return rpc_pb2.WatchResponse(
        header=header(h), watch_id=watch_id, created=r.created, canceled=r.canceled,
        compact_revision=r.compact_revision, cancel_reason="" if r.compact_revision else r.cancel_reason,
        fragment=r.fragment, events=[event(e) for e in r.events])


def fragments(response: rpc_pb2.WatchResponse, limit: int) -> list[rpc_pb2.WatchResponse]:
    """A watch response larger than `limit` bytes split as etcd splits it for a
    watch created with fragment: events in order, each part but the last marked
    fragment, every part at least one event."""
    if response.ByteSize() < limit or len(response.events) < 2:
        return [response]
    parts, current, size = [], [], 0
    base = rpc_pb2.WatchResponse(header=response.header, watch_id=response.watch_id)
    for e in response.events:
        event_size = e.ByteSize() + 8
        if current and size + event_size > limit:
            parts.append(current)
            current, size = [], 0
        current.append(e)
        size += event_size
    parts.append(current)
    out = []
    for index, events in enumerate(parts):
        part = rpc_pb2.WatchResponse()
        part.CopyFrom(base)
        part.events.extend(events)
        part.fragment = index < len(parts) - 1
        out.append(part)
    return out


# ---------------------------------------------------------------- services

# (service, method) -> (kind, request type, response type, to message, to protobuf).
# to message and to protobuf are None where the door handles the method itself.
def services(grpc_urls: dict[int, str], version: str) -> dict:
    E, L = v3election_pb2, v3lock_pb2
    P = rpc_pb2
    return {
        ("etcdserverpb.KV", "Range"): (UNARY, P.RangeRequest, P.RangeResponse, range_request, range_response),
        ("etcdserverpb.KV", "Put"): (UNARY, P.PutRequest, P.PutResponse, put_request, put_response),
        ("etcdserverpb.KV", "DeleteRange"): (UNARY, P.DeleteRangeRequest, P.DeleteRangeResponse, delete_range_request,
                                             delete_range_response),
        ("etcdserverpb.KV", "Txn"): (UNARY, P.TxnRequest, P.TxnResponse, txn_request, txn_response),
        ("etcdserverpb.KV", "Compact"): (UNARY, P.CompactionRequest, P.CompactionResponse, compaction_request,
                                         header_only(P.CompactionResponse)),
        ("etcdserverpb.Watch", "Watch"): (STREAM_STREAM, P.WatchRequest, P.WatchResponse, None, None),
        ("etcdserverpb.Lease", "LeaseGrant"): (UNARY, P.LeaseGrantRequest, P.LeaseGrantResponse, lease_grant_request,
                                               lease_grant_response),
        ("etcdserverpb.Lease", "LeaseRevoke"): (UNARY, P.LeaseRevokeRequest, P.LeaseRevokeResponse,
                                                lease_revoke_request, header_only(P.LeaseRevokeResponse)),
        ("etcdserverpb.Lease", "LeaseKeepAlive"): (STREAM_STREAM, P.LeaseKeepAliveRequest, P.LeaseKeepAliveResponse,
                                                   None, None),
        ("etcdserverpb.Lease", "LeaseTimeToLive"): (UNARY, P.LeaseTimeToLiveRequest, P.LeaseTimeToLiveResponse,
                                                    lease_time_to_live_request, lease_time_to_live_response),
        ("etcdserverpb.Lease", "LeaseLeases"): (UNARY, P.LeaseLeasesRequest, P.LeaseLeasesResponse,
                                                lambda r: m.LeaseLeasesRequest(), lease_leases_response),
        ("etcdserverpb.Cluster", "MemberList"): (UNARY, P.MemberListRequest, P.MemberListResponse,
                                                 lambda r: m.MemberListRequest(),
                                                 lambda r: member_list_response(r, grpc_urls)),
        ("etcdserverpb.Cluster", "MemberAdd"): (UNARY, P.MemberAddRequest, P.MemberAddResponse, member_add_request,
                                                member_change_response(P.MemberAddResponse, grpc_urls)),
        ("etcdserverpb.Cluster", "MemberRemove"): (UNARY, P.MemberRemoveRequest, P.MemberRemoveResponse,
                                                   member_remove_request,
                                                   member_change_response(P.MemberRemoveResponse, grpc_urls)),
        ("etcdserverpb.Cluster", "MemberUpdate"): (UNARY, P.MemberUpdateRequest, P.MemberUpdateResponse,
                                                   member_update_request,
                                                   member_change_response(P.MemberUpdateResponse, grpc_urls)),
        ("etcdserverpb.Cluster", "MemberPromote"): (UNARY, P.MemberPromoteRequest, P.MemberPromoteResponse,
                                                    member_promote_request,
                                                    member_change_response(P.MemberPromoteResponse, grpc_urls)),
        ("etcdserverpb.Maintenance", "Defragment"): (UNARY, P.DefragmentRequest, P.DefragmentResponse,
                                                     lambda r: m.DefragmentRequest(),
                                                     header_only(P.DefragmentResponse)),
        ("etcdserverpb.Maintenance", "Hash"): (UNARY, P.HashRequest, P.HashResponse, lambda r: m.HashRequest(),
                                               hash_response),
        ("etcdserverpb.Maintenance", "HashKV"): (UNARY, P.HashKVRequest, P.HashKVResponse, hash_kv_request,
                                                 hash_kv_response),
        ("etcdserverpb.Maintenance", "Snapshot"): (UNARY_STREAM, P.SnapshotRequest, P.SnapshotResponse, None, None),
        ("etcdserverpb.Maintenance", "Alarm"): (UNARY, P.AlarmRequest, P.AlarmResponse, alarm_request, alarm_response),
        ("etcdserverpb.Maintenance", "Status"): (UNARY, P.StatusRequest, P.StatusResponse, lambda r: m.StatusRequest(),
                                                 lambda r: status_response(r, version)),
        ("etcdserverpb.Maintenance", "MoveLeader"): (UNARY, P.MoveLeaderRequest, P.MoveLeaderResponse,
                                                     move_leader_request, header_only(P.MoveLeaderResponse)),
        ("etcdserverpb.Auth", "Authenticate"): (UNARY, P.AuthenticateRequest, P.AuthenticateResponse, None, None),
        **{("etcdserverpb.Auth", method): (UNARY, request_class, _auth_response_class(method), to_message,
                                           AUTH_RESPONSES.get(method) or header_only(_auth_response_class(method)))
           for method, (request_class, to_message) in AUTH_REQUESTS.items()},
        ("v3lockpb.Lock", "Lock"): (UNARY, L.LockRequest, L.LockResponse, lock_request, lock_response),
        ("v3lockpb.Lock", "Unlock"): (UNARY, L.UnlockRequest, L.UnlockResponse, unlock_request,
                                      header_only(L.UnlockResponse)),
        ("v3electionpb.Election", "Campaign"): (UNARY, E.CampaignRequest, E.CampaignResponse, campaign_request,
                                                campaign_response),
        ("v3electionpb.Election", "Proclaim"): (UNARY, E.ProclaimRequest, E.ProclaimResponse, proclaim_request,
                                                header_only(E.ProclaimResponse)),
        ("v3electionpb.Election", "Leader"): (UNARY, E.LeaderRequest, E.LeaderResponse, leader_request,
                                              leader_response),
        ("v3electionpb.Election", "Observe"): (UNARY_STREAM, E.LeaderRequest, E.LeaderResponse, None, None),
        ("v3electionpb.Election", "Resign"): (UNARY, E.ResignRequest, E.ResignResponse, resign_request,
                                              header_only(E.ResignResponse)),
    }


def _auth_response_class(method: str):
    """AuthEnable -> AuthEnableResponse, UserAdd -> AuthUserAddResponse, ..."""
    return getattr(rpc_pb2, (method if method.startswith("Auth") else "Auth" + method) + "Response")
