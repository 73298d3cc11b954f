"""The codec: round trips, and every kind of bad frame rejected at the boundary."""

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transport import codec
from transport import messages as m
from transport.errors import InvalidArgumentError, MalformedRequestError, RequestTooLargeError, UnsupportedVersionError
from transport.raft_messages import Entry, RaftMessage, SnapshotMeta

HEADER = m.ResponseHeader(1, 2, 3, 4)


@pytest.mark.parametrize(
    "message",
    [
        m.PutRequest(b"k", b"v", lease=7, prev_kv=True),
        m.RangeRequest(b"a", b"\0", limit=3, sort_order=m.SORT_DESCEND, sort_target=m.SORT_BY_MOD),
        m.TxnRequest(
            compare=(m.Compare(m.COMPARE_GREATER, m.TARGET_MOD, b"k", 3), m.Compare(m.COMPARE_EQUAL, m.TARGET_VALUE, b"k", b"v")),
            success=(m.PutRequest(b"a", b"b"), m.TxnRequest(success=(m.DeleteRangeRequest(b"x"),))),
            failure=(m.RangeRequest(b"k"),),
        ),
        m.RangeResponse(HEADER, (m.KeyValue(b"k", 1, 2, 3, b"v", 9),), more=True, count=5),
        m.PutResponse(HEADER, None),
        m.TxnResponse(HEADER, True, (m.PutResponse(HEADER), m.RangeResponse(HEADER))),
        m.ErrorResponse("Compacted", "gone", {"compact_revision": 5}),
        m.StatusResponse(HEADER, "0.1.0", 100, 2, 10, 3, 9, ("no leader",)),
        RaftMessage(type=1, to=2, sender=1, term=3, entries=(Entry(1, 1, b"x"), Entry(2, 1, b"")), snapshot=SnapshotMeta(0, 0, (1, 2))),
        m.AppliedEvents(5, (m.Event(m.EVENT_DELETE, m.KeyValue(b"k", 0, 5, 0, b""), m.KeyValue(b"k", 2, 4, 2, b"v")),)),
        m.AppliedEvents(9, (), elided=True),
        m.WatchProgressRequest(),  # no fields at all
        m.WatchInterest(False),  # one field
        m.ProposeBatch((1, 2), (b"a", b"b")),
        m.Applied(3, 4, (5,), (b"frame",)),
        m.Applied(3, 4, durable_index=2),
    ],
)
def test_round_trip(message):
    request_id, decoded = codec.decode(codec.encode(message, 12345))
    assert request_id == 12345
    assert decoded == message


def test_omitted_trailing_defaults_are_filled():
    frame = cbor2.dumps([m.PROTOCOL_VERSION, 1, ["PutRequest", b"k"]])
    assert codec.decode(frame) == (1, m.PutRequest(b"k"))


@pytest.mark.parametrize(
    "frame, message",
    [
        (b"", "not CBOR"),
        (b"\xff\x00garbage", "not CBOR"),
        (cbor2.dumps({"a": 1}), "expected [version, request_id, body]"),
        (cbor2.dumps([1, 2]), "expected [version, request_id, body]"),
        (cbor2.dumps([1, -1, ["PutRequest", b"k"]]), "request_id"),
        (cbor2.dumps([1, 1, "PutRequest"]), "body is not"),
        (cbor2.dumps([1, 1, ["NoSuchThing", b"k"]]), "unknown message type"),
        (cbor2.dumps([1, 1, ["PutRequest"]]), "expected 1..6 fields, got 0"),
        (cbor2.dumps([1, 1, ["PutRequest", "text-not-bytes"]]), "PutRequest.key: expected bytes"),
        (cbor2.dumps([1, 1, ["PutRequest", b"k", b"v", True]]), "PutRequest.lease: expected int"),
        (cbor2.dumps([1, 1, ["TxnRequest", [], [["KeyValue", b"k", 1, 1, 1, b""]]]]), "expected RangeRequest"),
        (cbor2.dumps([1, 1, ["RangeResponse", ["ResponseHeader", 1, 2, 3, 4], "not-a-list"]]), "expected array"),
        (cbor2.dumps([1, 1, ["ProposeBatch", [1, "2"], [b"a", b"b"]]]), "ProposeBatch.request_ids: expected int, got str"),
        (cbor2.dumps([1, 1, ["ProposeBatch", [1, 2], [b"a", 3]]]), "ProposeBatch.payloads: expected bytes, got int"),
        (cbor2.dumps([1, 1, ["ProposeBatch", [1, True], [b"a", b"b"]]]), "expected int, got bool"),
    ],
)
def test_malformed_frames_are_rejected_with_a_clear_message(frame, message):
    with pytest.raises(MalformedRequestError) as caught:
        codec.decode(frame)
    assert message in str(caught.value)


def test_wrong_protocol_version():
    with pytest.raises(UnsupportedVersionError):
        codec.decode(cbor2.dumps([99, 1, ["PutRequest", b"k"]]))


def test_oversized_frame_is_rejected_before_parsing():
    frame = codec.encode(m.PutRequest(b"k", b"x" * 2000), 1)
    with pytest.raises(RequestTooLargeError):
        codec.decode(frame, max_bytes=1000)
    assert codec.decode(frame, max_bytes=len(frame))[1].value == b"x" * 2000


def test_deep_nesting_is_rejected_not_a_crash():
    body = ["TxnRequest", [], [], []]
    for _ in range(200):
        body = ["TxnRequest", [], [body], []]
    with pytest.raises(MalformedRequestError):
        codec.decode(cbor2.dumps([1, 1, body]))


def test_peek_request_id_survives_garbage():
    assert codec.peek_request_id(b"\xff") == 0
    assert codec.peek_request_id(cbor2.dumps([1, 77, ["Nope"]])) == 77


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_operating_errors(data):
    try:
        codec.decode(data, max_bytes=150)
    except (MalformedRequestError, RequestTooLargeError):
        pass


@settings(max_examples=200, deadline=None)
@given(
    key=st.binary(min_size=1, max_size=64),
    value=st.binary(max_size=256),
    lease=st.integers(min_value=0, max_value=2**63 - 1),
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans()),
)
def test_put_round_trip_property(key, value, lease, flags):
    message = m.PutRequest(key, value, lease, *flags)
    assert codec.decode(codec.encode(message, 3))[1] == message


@pytest.mark.parametrize("options", [None, {"require_leader": True}])
def test_encode_checked_is_encode_after_check(options):
    message = m.TxnRequest(compare=(m.Compare(m.COMPARE_EQUAL, m.TARGET_VALUE, b"k", b"v"),),
                           success=(m.PutRequest(b"a", b"b", lease=7),))
    assert codec.encode_checked(message, 99, options) == codec.encode(message, 99, options)
    out_of_range = m.TxnRequest(success=(m.PutRequest(b"a", b"b", lease=1 << 63),))
    with pytest.raises(InvalidArgumentError) as checked:
        codec.check(out_of_range)
    with pytest.raises(InvalidArgumentError) as encoded:
        codec.encode_checked(out_of_range, 99, options)
    assert encoded.value.message == checked.value.message
    assert "lease" in encoded.value.message
