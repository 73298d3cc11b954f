"""The gRPC door's pure parts: etcd's protobufs <-> cairn's messages
(actors/grpc_wire.py), fragments, errors (actors/etcd_api.py), and the `grpc`
address in the config."""

from __future__ import annotations

import pytest

from actors import etcd_api
from actors import grpc_wire as gw
from actors.etcdpb import kv_pb2
from actors.etcdpb import rpc_pb2 as pb
from cairn import config
from transport import messages as m
from transport.errors import CompactedError, LeaseNotFoundError, NoLeaderError, RequestTooLargeError

HEADER = m.ResponseHeader(11, 22, 33, 44)


def test_compare_takes_the_operand_of_its_target():
    request = pb.TxnRequest(compare=[
        pb.Compare(result=pb.Compare.GREATER, target=pb.Compare.MOD, key=b"k", mod_revision=5),
        pb.Compare(target=pb.Compare.VALUE, key=b"k", value=b"v", range_end=b"l"),
        pb.Compare(target=pb.Compare.VALUE, key=b"k", version=3),  # another member of the union: the zero value
    ], success=[pb.RequestOp(request_put=pb.PutRequest(key=b"k", value=b"1"))])
    txn = gw.txn_request(request)
    assert txn.compare == (m.Compare(m.COMPARE_GREATER, m.TARGET_MOD, b"k", 5, b""),
                           m.Compare(m.COMPARE_EQUAL, m.TARGET_VALUE, b"k", b"v", b"l"),
                           m.Compare(m.COMPARE_EQUAL, m.TARGET_VALUE, b"k", b"", b""))
    assert txn.success == (m.PutRequest(b"k", b"1"),)
    with pytest.raises(gw.BadRequest):
        gw.txn_request(pb.TxnRequest(compare=[pb.Compare(target=7, key=b"k")]))
    with pytest.raises(gw.BadRequest):
        gw.txn_request(pb.TxnRequest(success=[pb.RequestOp()]))


def test_nested_txn_responses_carry_only_their_revision():
    response = m.TxnResponse(HEADER, True, (m.RangeResponse(HEADER, (m.KeyValue(b"k", 1, 2, 1, b"v"),), count=1),
                                            m.TxnResponse(HEADER, False, (m.PutResponse(HEADER),))))
    out = gw.txn_response(response)
    assert out.header == pb.ResponseHeader(cluster_id=11, member_id=22, revision=33, raft_term=44)
    assert out.responses[0].response_range.header == pb.ResponseHeader(revision=33)
    assert out.responses[1].response_txn.responses[0].response_put.header == pb.ResponseHeader(revision=33)


def test_watch_responses_and_compaction_notice():
    event = m.Event(m.EVENT_DELETE, m.KeyValue(b"k", 0, 9, 0, b""), m.KeyValue(b"k", 2, 2, 1, b"v"))
    out = gw.watch_response(m.WatchResponse(HEADER, 0, events=(event,)), 7)
    assert out.watch_id == 7 and out.events[0].type == kv_pb2.Event.DELETE and out.events[0].prev_kv.value == b"v"
    notice = gw.watch_response(m.WatchResponse(HEADER, 0, canceled=True, compact_revision=5, cancel_reason="x"), 1)
    assert notice.canceled and notice.compact_revision == 5 and notice.cancel_reason == "" and notice.header.revision == 0


def test_fragments_split_a_large_response_in_order():
    events = [kv_pb2.Event(kv=kv_pb2.KeyValue(key=b"k%d" % i, value=b"x" * 100)) for i in range(10)]
    response = pb.WatchResponse(header=pb.ResponseHeader(revision=3), watch_id=4, events=events)
    parts = gw.fragments(response, 350)
    assert len(parts) > 1 and [p.fragment for p in parts] == [True] * (len(parts) - 1) + [False]
    assert [e.kv.key for p in parts for e in p.events] == [e.kv.key for e in events]
    assert all(p.watch_id == 4 and p.header.revision == 3 for p in parts)
    assert gw.fragments(response, 10**6) == [response]


def test_watch_requests():
    create = gw.watch_request(pb.WatchRequest(create_request=pb.WatchCreateRequest(
        key=b"a", range_end=b"b", start_revision=3, filters=[pb.WatchCreateRequest.NODELETE], watch_id=9, fragment=True)))
    assert create == m.WatchCreateRequest(b"a", b"b", 3, False, (m.WATCH_FILTER_NODELETE,), False, 9, True)
    assert gw.watch_request(pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=2))) == m.WatchCancelRequest(2)
    assert gw.watch_request(pb.WatchRequest()) is None
    with pytest.raises(gw.BadRequest):
        gw.watch_request(pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"a", filters=[3])))


def test_errors_are_etcds_grpc_statuses():
    assert etcd_api.status_of(LeaseNotFoundError()) == (5, "etcdserver: requested lease not found")
    assert etcd_api.status_of(CompactedError()) == (11, "etcdserver: mvcc: required revision has been compacted")
    assert etcd_api.status_of(NoLeaderError()) == (14, "etcdserver: no leader")
    assert etcd_api.status_of(RequestTooLargeError("request is 9 bytes, more than 8")) == (3, "etcdserver: request is too large")
    assert etcd_api.is_write(m.PutRequest(b"k")) and not etcd_api.is_write(m.RangeRequest(b"k"))
    assert not etcd_api.is_write(m.AlarmRequest(m.ALARM_GET)) and etcd_api.is_write(m.AlarmRequest(m.ALARM_DEACTIVATE))


def test_config_grpc_address():
    member = {"name": "n1", "peer": "tcp://127.0.0.1:1", "client": "tcp://127.0.0.1:2"}
    loaded = config.from_document({"cluster": {"name": "c", "security": {"mode": "plaintext"}, "members": [{**member, "grpc": "http://127.0.0.1:3/"}]}})
    assert loaded.members[0].grpc == "http://127.0.0.1:3"
    assert config.from_document({"cluster": {"name": "c", "security": {"mode": "plaintext"}, "members": [member]}}).members[0].grpc == ""
    with pytest.raises(config.ConfigError, match=r"members\[0\]\.grpc: .* is not http://HOST:PORT"):
        config.from_document({"cluster": {"name": "c", "security": {"mode": "plaintext"}, "members": [{**member, "grpc": "127.0.0.1:3"}]}})
    with pytest.raises(config.ConfigError, match="already used"):
        config.from_document({"cluster": {"name": "c", "security": {"mode": "plaintext"}, "members": [{**member, "grpc": "http://127.0.0.1:2"}]}})


def test_member_changes():
    # etcdctl sends http(s) peer URLs and no name: cairn's tcp:// and the first peer URL as the name
    add = gw.member_add_request(pb.MemberAddRequest(peerURLs=["http://10.0.0.4:2380/"], isLearner=True))
    assert add == m.MemberAddRequest(("tcp://10.0.0.4:2380",), True, "tcp://10.0.0.4:2380", ())
    named = gw.member_add_request(pb.MemberAddRequest(peerURLs=["tcp://h:1"], name="n4", clientURLs=["tcp://h:2"]))
    assert named == m.MemberAddRequest(("tcp://h:1",), False, "n4", ("tcp://h:2",))
    with pytest.raises(gw.BadRequest):
        gw.member_add_request(pb.MemberAddRequest())
    assert gw.member_update_request(pb.MemberUpdateRequest(ID=7, peerURLs=["https://h:3"])) == \
        m.MemberUpdateRequest(7, ("tcp://h:3",))
    members = (m.Member(1, "n1", ("tcp://a:1",), ("tcp://a:2",)), m.Member(9, "new", ("tcp://b:1",), (), True))
    out = gw.services({1: "http://a:3"}, "3.4.0")[("etcdserverpb.Cluster", "MemberAdd")][4](
        m.MemberAddResponse(HEADER, members[1], members))
    assert out.header.revision == 0 and out.member.ID == 9 and out.member.isLearner
    assert [list(mb.clientURLs) for mb in out.members] == [["http://a:3"], []]


def test_snapshot_pieces_then_the_digest():
    piece = m.SnapshotResponse(HEADER, 5, 0, b"lmdb", 10, 6, b"\x01" * 32)
    assert gw.snapshot_response(piece) == pb.SnapshotResponse(header=gw.header(HEADER), remaining_bytes=6, blob=b"lmdb")
    assert gw.snapshot_digest(piece).blob == b"\x01" * 32 and gw.snapshot_digest(piece).remaining_bytes == 0


def test_auth_requests_and_responses():
    from actors.etcdpb import auth_pb2

    table = gw.services({}, "3.4.0")
    kind, request_class, response_class, to_message, to_pb = table[("etcdserverpb.Auth", "UserAdd")]
    assert (request_class, response_class) == (pb.AuthUserAddRequest, pb.AuthUserAddResponse)
    assert to_message(pb.AuthUserAddRequest(name="u", password="p")) == m.AuthUserAddRequest("u", "p")
    assert to_message(pb.AuthUserAddRequest(name="u", options=auth_pb2.UserAddOptions(no_password=True))).no_password
    grant = pb.AuthRoleGrantPermissionRequest(name="r", perm=auth_pb2.Permission(permType=2, key=b"a", range_end=b"b"))
    assert gw.role_grant_permission_request(grant) == m.AuthRoleGrantPermissionRequest(
        "r", m.Permission(m.PERM_READWRITE, b"a", b"b"))
    with pytest.raises(gw.BadRequest):
        gw.role_grant_permission_request(pb.AuthRoleGrantPermissionRequest(name="r"))
    role = table[("etcdserverpb.Auth", "RoleGet")][4](m.AuthRoleGetResponse(HEADER, (m.Permission(m.PERM_READ, b"k"),)))
    assert role.perm[0].permType == auth_pb2.Permission.READ and role.perm[0].key == b"k"
    status = table[("etcdserverpb.Auth", "AuthStatus")][4](m.AuthStatusResponse(HEADER, True, 4))
    assert status.enabled and status.authRevision == 4
    assert table[("etcdserverpb.Auth", "AuthEnable")][4](m.AuthResponse(HEADER)) == \
        pb.AuthEnableResponse(header=gw.header(HEADER))


def test_auth_errors_are_etcds():
    from transport.errors import AuthFailedError, InvalidAuthTokenError, PermissionDeniedError

    assert etcd_api.status_of(PermissionDeniedError()) == (7, "etcdserver: permission denied")
    assert etcd_api.status_of(AuthFailedError()) == (3, "etcdserver: authentication failed, invalid user ID or password")
    assert etcd_api.status_of(InvalidAuthTokenError()) == (16, "etcdserver: invalid auth token")


def test_a_cluster_token_carries_each_members_part():
    from actors.grpc_gateway import cluster_token, member_token

    token = cluster_token({1: "a.1", 0x2F: "b.2"})
    assert token.isascii() and member_token(token, 0x2F) == "b.2" and member_token(token, 1) == "a.1"
    assert member_token(token, 3) == token  # no part for it: the member says InvalidAuthToken
    assert member_token("plain.7", 1) == "plain.7" and member_token(None, 1) is None
    assert member_token("cairn-members.!!not-base64", 1) == "cairn-members.!!not-base64"
