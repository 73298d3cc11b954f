"""etcd's JSON mapping (actors/gateway_json.py): requests in, responses out,
checked against what etcd 3.4.23's gateway reads and writes."""

import base64

import pytest

from actors import gateway_json as gj
from transport import messages as m

HEADER = m.ResponseHeader(cluster_id=12101053776118486841 >> 1, member_id=7, revision=6, raft_term=2)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ---------------------------------------------------------------- requests


def test_range_request_takes_proto_and_camel_case_names_and_int64_as_string_or_number():
    request = gj.range_request({"key": "Zm9v", "rangeEnd": "Zm9w", "limit": "10", "revision": 3, "sort_order": "DESCEND",
                                "sortTarget": 3, "serializable": True, "keys_only": True, "minModRevision": "2"})
    assert request == m.RangeRequest(key=b"foo", range_end=b"fop", limit=10, revision=3, sort_order=m.SORT_DESCEND,
                                     sort_target=m.SORT_BY_MOD, serializable=True, keys_only=True, min_mod_revision=2)


def test_missing_and_null_fields_take_their_defaults():
    assert gj.range_request({"key": "Zm9v", "limit": None}) == m.RangeRequest(key=b"foo")
    assert gj.range_request({}) == m.RangeRequest(key=b"")
    assert gj.put_request({"key": "Zm9v"}) == m.PutRequest(key=b"foo", value=b"")


@pytest.mark.parametrize("body, problem", [
    ({"key": "Zm9v!"}, "illegal base64 data at input byte 4"),
    ({"key": 5}, "expected a base64 string, got a number"),
    ({"key": "Zm9v", "limit": "abc"}, "expected an integer"),
    ({"key": "Zm9v", "limit": 1.5}, "expected an integer"),
    ({"key": "Zm9v", "limit": True}, "expected an integer"),
    ({"key": "Zm9v", "limit": str(1 << 70)}, "expected an integer"),
    ({"key": "Zm9v", "limit": 1 << 70}, "out of the 64-bit range"),
    ({"key": "Zm9v", "serializable": "true"}, "expected true or false"),
    ({"key": "Zm9v", "sort_order": "SIDEWAYS"}, "is not one of NONE, ASCEND, DESCEND"),
    ({"key": "Zm9v", "sort_order": 7}, "is not one of"),
    ({"key": "Zm9v", "rangeend": "Zm9w"}, "unknown field 'rangeend'"),
    ({"key": "Zm9v", "range_end": "Zm9w", "rangeEnd": "Zm9w"}, "given twice"),
])
def test_bad_fields_are_refused_with_the_field_named(body, problem):
    with pytest.raises(gj.BadRequest, match=problem) as raised:
        gj.range_request(body)
    assert "RangeRequest." in str(raised.value) or "RangeRequest:" in str(raised.value)


def test_txn_request_maps_compares_and_nested_operations():
    request = gj.txn_request({
        "compare": [
            {"target": "CREATE", "key": "Zm9v", "createRevision": "0"},
            {"result": "NOT_EQUAL", "target": "VALUE", "key": "Zm9v", "value": "YmFy"},
            {"version": "4", "result": "EQUAL", "target": "VERSION", "key": "Zm9v"},
            {"target": "LEASE", "key": "Zm9v", "lease": "77", "range_end": "Zm9w"},
        ],
        "success": [{"requestPut": {"key": "Zm9v", "value": "YmFy", "lease": "77"}}],
        "failure": [{"request_range": {"key": "Zm9v"}},
                    {"request_txn": {"success": [{"request_delete_range": {"key": "Zm9v", "prev_kv": True}}]}}],
    })
    assert request.compare == (
        m.Compare(m.COMPARE_EQUAL, m.TARGET_CREATE, b"foo", 0),
        m.Compare(m.COMPARE_NOT_EQUAL, m.TARGET_VALUE, b"foo", b"bar"),
        m.Compare(m.COMPARE_EQUAL, m.TARGET_VERSION, b"foo", 4),
        m.Compare(m.COMPARE_EQUAL, m.TARGET_LEASE, b"foo", 77, b"fop"),
    )
    assert request.success == (m.PutRequest(b"foo", b"bar", lease=77),)
    assert request.failure == (m.RangeRequest(b"foo"),
                               m.TxnRequest(success=(m.DeleteRangeRequest(b"foo", prev_kv=True),)))


def test_a_compare_on_value_without_a_value_compares_with_empty():
    assert gj.txn_request({"compare": [{"target": "VALUE", "key": "Zm9v"}]}).compare[0].operand == b""


@pytest.mark.parametrize("body, problem", [
    ({"compare": [{"target": "MOD", "key": "Zm9v", "version": "1"}]}, "target MOD compares mod_revision, not version"),
    ({"success": [{}]}, "exactly one of request_range"),
    ({"success": [{"request_put": {"key": "Zm9v"}, "request_range": {"key": "Zm9v"}}]}, "exactly one"),
    ({"success": {"request_put": {}}}, "expected an array"),
    ({"success": [{"request_put": "Zm9v"}]}, "expected a JSON object"),
    ({"compare": [{"target": "NEWEST", "key": "Zm9v"}]}, "is not one of VERSION"),
])
def test_bad_txns_are_refused(body, problem):
    with pytest.raises(gj.BadRequest, match=problem):
        gj.txn_request(body)


def test_lease_requests_use_etcds_capitalised_names():
    assert gj.lease_grant_request({"TTL": "30"}) == m.LeaseGrantRequest(30, 0)
    assert gj.lease_grant_request({"TTL": 30, "ID": 99}) == m.LeaseGrantRequest(30, 99)
    assert gj.lease_keepalive_request({"ID": "99"}) == m.LeaseKeepAliveRequest(99)
    assert gj.lease_time_to_live_request({"ID": "99", "keys": True}) == m.LeaseTimeToLiveRequest(99, True)
    assert gj.lease_revoke_request({"ID": 5}) == m.LeaseRevokeRequest(5)
    with pytest.raises(gj.BadRequest, match="unknown field 'ttl'"):
        gj.lease_grant_request({"ttl": 30})


def test_watch_requests():
    create = gj.watch_request({"create_request": {"key": "d2E=", "range_end": "d2I=", "start_revision": "2",
                                                  "filters": ["NOPUT", 1], "prev_kv": True, "progressNotify": True}})
    assert create == m.WatchCreateRequest(key=b"wa", range_end=b"wb", start_revision=2, progress_notify=True,
                                          filters=(m.WATCH_FILTER_NOPUT, m.WATCH_FILTER_NODELETE), prev_kv=True)
    assert gj.watch_request({"cancel_request": {"watch_id": "3"}}) == m.WatchCancelRequest(3)
    assert gj.watch_request({"progress_request": {}}) == m.WatchProgressRequest()
    with pytest.raises(gj.BadRequest, match="exactly one of create_request"):
        gj.watch_request({})
    with pytest.raises(gj.BadRequest, match="is not one of NOPUT, NODELETE"):
        gj.watch_request({"create_request": {"key": "d2E=", "filters": ["NOTHING"]}})


# ---------------------------------------------------------------- responses


def test_zero_values_are_omitted_and_int64s_are_strings():
    kv = m.KeyValue(b"foo", 2, 2, 1, b"bar")
    assert gj.range_response(m.RangeResponse(HEADER, (kv,), count=1)) == {
        "header": {"cluster_id": str(HEADER.cluster_id), "member_id": "7", "revision": "6", "raft_term": "2"},
        "kvs": [{"key": "Zm9v", "create_revision": "2", "mod_revision": "2", "version": "1", "value": "YmFy"}],
        "count": "1",
    }
    assert gj.range_response(m.RangeResponse(m.ResponseHeader(1, 2, 0, 0))) == {"header": {"cluster_id": "1", "member_id": "2"}}
    assert gj.key_value(m.KeyValue(b"k", 2, 3, 1, b"", lease=9)) == {
        "key": "aw==", "create_revision": "2", "mod_revision": "3", "version": "1", "lease": "9"}


def test_txn_response_nests_as_etcds():
    """The shape etcd 3.4.23 answered for a failed VERSION compare with a range and a nested txn."""
    kv = m.KeyValue(b"foo", 6, 6, 1, b"bar")
    response = m.TxnResponse(
        m.ResponseHeader(1, 2, 7, 2), succeeded=False,
        responses=(m.RangeResponse(m.ResponseHeader(1, 2, 6, 2), (kv,), count=1),
                   m.TxnResponse(m.ResponseHeader(1, 2, 0, 2), succeeded=True,
                                 responses=(m.DeleteRangeResponse(m.ResponseHeader(1, 2, 7, 2), deleted=1),))))
    assert gj.txn_response(response) == {
        "header": {"cluster_id": "1", "member_id": "2", "revision": "7", "raft_term": "2"},
        "responses": [
            {"response_range": {"header": {"revision": "6"}, "kvs": [gj.key_value(kv)], "count": "1"}},
            {"response_txn": {"header": {}, "succeeded": True,
                              "responses": [{"response_delete_range": {"header": {"revision": "7"}, "deleted": "1"}}]}},
        ],
    }


def test_a_keepalive_of_a_dead_lease_answers_without_ttl():
    assert gj.lease_keepalive_response(m.LeaseKeepAliveResponse(HEADER, 98, 0)) == {
        "result": {"header": gj.header(HEADER), "ID": "98"}}
    assert gj.lease_keepalive_response(m.LeaseKeepAliveResponse(HEADER, 99, 30))["result"]["TTL"] == "30"


def test_time_to_live_lists_keys_in_base64_and_unknown_leases_as_ttl_minus_one():
    out = gj.lease_time_to_live_response(m.LeaseTimeToLiveResponse(HEADER, 99, 29, 30, (b"foo",)))
    assert (out["ID"], out["TTL"], out["grantedTTL"], out["keys"]) == ("99", "29", "30", ["Zm9v"])
    assert gj.lease_time_to_live_response(m.LeaseTimeToLiveResponse(HEADER, 98, -1))["TTL"] == "-1"


def test_member_list_gives_gateway_urls_as_client_urls():
    members = (m.Member(11, "n1", ("tcp://127.0.0.1:2380",), ("tcp://127.0.0.1:2379",)),
               m.Member(12, "n2", ("tcp://127.0.0.1:22380",), ("tcp://127.0.0.1:22379",)))
    out = gj.member_list_response(m.MemberListResponse(HEADER, members), {11: "http://127.0.0.1:2378", 12: ""})
    assert "revision" not in out["header"]
    assert out["members"] == [
        {"ID": "11", "name": "n1", "peerURLs": ["tcp://127.0.0.1:2380"], "clientURLs": ["http://127.0.0.1:2378"]},
        {"ID": "12", "name": "n2", "peerURLs": ["tcp://127.0.0.1:22380"], "clientURLs": ["tcp://127.0.0.1:22379"]},
    ]


def test_watch_events_name_only_deletes_and_compaction_gives_no_reason_nor_revision():
    put = m.Event(m.EVENT_PUT, m.KeyValue(b"wa", 8, 8, 1, b"1"))
    delete = m.Event(m.EVENT_DELETE, m.KeyValue(b"wa", 0, 10, 0, b""), prev_kv=m.KeyValue(b"wa", 8, 9, 2, b"2"))
    out = gj.watch_response(m.WatchResponse(HEADER, 5, events=(put, delete)), 0)["result"]
    assert "watch_id" not in out
    assert out["events"] == [{"kv": gj.key_value(put.kv)},
                             {"type": "DELETE", "kv": {"key": "d2E=", "mod_revision": "10"}, "prev_kv": gj.key_value(delete.prev_kv)}]
    compacted = gj.watch_response(m.WatchResponse(HEADER, 5, canceled=True, compact_revision=3, cancel_reason="compacted"), 1)
    no_revision = {key: value for key, value in gj.header(HEADER).items() if key != "revision"}
    assert compacted == {"result": {"header": no_revision, "watch_id": "1", "canceled": True, "compact_revision": "3"}}


@pytest.mark.parametrize("code, status, grpc", [
    ("LeaseNotFound", 404, 5), ("Compacted", 400, 11), ("FutureRevision", 400, 11), ("EmptyKey", 400, 3),
    ("NoLeader", 503, 14), ("Timeout", 503, 14), ("NoSpace", 429, 8), ("LeaseExists", 412, 9), ("SomethingNew", 500, 2),
])
def test_errors_map_to_etcds_http_status_and_grpc_code(code, status, grpc):
    assert gj.error_for(code, "etcdserver: it went wrong") == (
        status, {"error": "etcdserver: it went wrong", "message": "etcdserver: it went wrong", "code": grpc})


# ---------------------------------------------------------------- bodies


def test_body_objects_are_handed_out_as_soon_as_each_is_complete():
    reader = gj.JsonObjects(1024)
    assert reader.feed(b'{"create_request": {"key": "Zm') == []
    assert reader.feed(b'9v"}}  {"cancel_') == [{"create_request": {"key": "Zm9v"}}]
    assert reader.feed(b'request": {"watch_id": "0"}}\n') == [{"cancel_request": {"watch_id": "0"}}]
    assert reader.finish() == []


def test_utf8_split_between_pieces_is_joined():
    encoded = '{"name": "né"}'.encode()
    split = encoded.index(b"\xc3") + 1
    reader = gj.JsonObjects(1024)
    assert reader.feed(encoded[:split]) == []
    assert reader.feed(encoded[split:]) == [{"name": "né"}]


@pytest.mark.parametrize("pieces, problem", [
    ([b'{"key": "Zm9v", "value":'], "malformed JSON"),
    ([b'{"a": 1]'], "malformed JSON"),
    ([b'["Zm9v"]'], "expected a JSON object, got an array"),
    ([b'\xff\xfe{}'], "not UTF-8"),
    ([b'{"a": "' + b"x" * 2000], "larger than 1024 bytes"),
])
def test_bad_bodies(pieces, problem):
    reader = gj.JsonObjects(1024)
    with pytest.raises(gj.BadRequest, match=problem):
        for piece in pieces:
            reader.feed(piece)
        reader.finish()


# ---------------------------------------------------------------- lock, election, alarm


def test_lock_election_and_alarm_requests():
    assert gj.lock_request({"name": "bXk=", "lease": "7"}) == m.LockRequest(b"my", 7)
    assert gj.unlock_request({"key": "bXkvMQ=="}) == m.UnlockRequest(b"my/1")
    assert gj.campaign_request({"name": "ZQ==", "lease": 7, "value": "djE="}) == m.CampaignRequest(b"e", 7, b"v1")
    leader = {"name": "ZQ==", "key": "ZS8x", "rev": "5", "lease": "7"}
    assert gj.proclaim_request({"leader": leader, "value": "djI="}) == m.ProclaimRequest(m.LeaderKey(b"e", b"e/1", 5, 7), b"v2")
    assert gj.resign_request({"leader": leader}) == m.ResignRequest(m.LeaderKey(b"e", b"e/1", 5, 7))
    assert gj.leader_request({"name": "ZQ=="}) == m.LeaderRequest(b"e")
    assert gj.alarm_request({"action": "DEACTIVATE", "memberID": "9", "alarm": "NOSPACE"}) == m.AlarmRequest(
        m.ALARM_DEACTIVATE, 9, m.ALARM_NOSPACE)
    assert gj.alarm_request({}) == m.AlarmRequest(m.ALARM_GET, 0, m.ALARM_NONE)
    with pytest.raises(gj.BadRequest, match="ResignRequest.leader: missing"):
        gj.resign_request({})


def test_lock_election_and_alarm_responses():
    assert gj.lock_response(m.LockResponse(HEADER, b"my/1", 5)) == {"header": gj.header(HEADER), "key": "bXkvMQ=="}
    assert gj.campaign_response(m.CampaignResponse(HEADER, m.LeaderKey(b"e", b"e/1", 5, 7))) == {
        "header": gj.header(HEADER), "leader": {"name": "ZQ==", "key": "ZS8x", "rev": "5", "lease": "7"}}
    assert gj.leader_response(m.LeaderResponse(HEADER)) == {"header": gj.header(HEADER)}
    assert gj.alarm_response(m.AlarmResponse(HEADER, (m.AlarmMember(9, m.ALARM_NOSPACE),))) == {
        "header": gj.header(HEADER), "alarms": [{"memberID": "9", "alarm": "NOSPACE"}]}
