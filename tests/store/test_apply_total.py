"""Applying committed entries is total (store/apply.py, issue 13).

Properties over requests drawn from the wire schema itself
(tests/schema_strategies.py): whatever the codec lets into the log, applying
it never raises, never needs the entry-failure fallback, answers every request
of the member, and leaves two members that apply the same entries with the
same state. Then the fallback itself: an entry whose execution raises is
answered InvalidArgument, has no effect on any member, and the entries around
it are applied.
"""

from __future__ import annotations

import tempfile

import lmdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.apply import ApplyRules, StateMachine
from store.mvcc import KeySpace
from tests.schema_strategies import message_strategy
from transport import codec
from transport import messages as m
from transport.entries import make_payload
from transport.raft_messages import Entry

MEMBER, OTHER = 11, 12
LOGGED_REQUESTS = (
    m.PutRequest, m.DeleteRangeRequest, m.TxnRequest, m.CompactionRequest, m.RangeRequest,
    m.LeaseGrantRequest, m.LeaseRevokeRequest, m.LeaseExpireRequest, m.LeaseCheckpointRequest, m.AlarmRequest,
)
# A few puts and grants in every run, so later requests meet keys and leases.
_SEED = [m.LeaseGrantRequest(60, 5), m.PutRequest(b"a", b"1", lease=5), m.PutRequest(b"b", b"2"), m.PutRequest(b"ab", b"3")]


def open_state(path, member_id: int) -> StateMachine:
    env = lmdb.open(str(path), map_size=1 << 28, max_dbs=KeySpace.MAX_DBS, sync=False, metasync=False)
    return StateMachine(env, ApplyRules(cluster_id=7, member_id=member_id, max_txn_ops=8, min_lease_ttl_s=1))


def entries_for(requests, origin: int = MEMBER, first_index: int = 1) -> list[Entry]:
    return [
        Entry(first_index + i, 1, make_payload(origin, codec.encode(request, 1000 + i)))
        for i, request in enumerate(requests)
    ]


def dump(state: StateMachine) -> dict:
    """Every record of every database of the member's environment."""
    contents = {}
    with state.env.begin() as txn:
        names = [key for key, _ in txn.cursor()]
        for name in names:
            db = state.env.open_db(name, txn=txn, create=False, dupsort=name in (b"kv_index", b"kv_lease_keys"))
            contents[name] = list(txn.cursor(db=db).iternext(keys=True, values=True))
    return contents


requests_strategy = st.lists(st.one_of(*[message_strategy(cls) for cls in LOGGED_REQUESTS]), min_size=1, max_size=10)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(requests=requests_strategy, split=st.integers(min_value=1, max_value=10))
def test_any_schema_valid_requests_apply_without_raising_and_the_same_on_every_member(requests, split):
    requests = _SEED + requests
    with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as two:
        member, other = open_state(one, MEMBER), open_state(two, OTHER)
        entries = entries_for(requests)
        answers = []
        # two batches on this member, one on the other: batching must not change the outcome
        for batch_entries in (entries[:split], entries[split:]):
            if batch_entries:
                batch = member.apply_committed(batch_entries)
                assert batch.failures == [], batch.failures
                answers += batch.answers
        other_batch = other.apply_committed(entries)
        assert other_batch.failures == []
        assert other_batch.answers == []  # only the member that took a request answers it
        assert [request_id for request_id, _ in answers] == [1000 + i for i in range(len(requests))]
        assert dump(member) == dump(other)
        member.env.close()
        other.env.close()


class ExplodingStateMachine(StateMachine):
    """A state machine with a bug: a put of key b"boom" writes, then raises."""

    def _execute(self, txn, header, request, batch):
        if isinstance(request, m.PutRequest) and request.key == b"boom":
            self.keyspace.writer(txn, header).execute(m.PutRequest(b"half-done", b"x"))
            raise ValueError("a bug in the state machine")
        return super()._execute(txn, header, request, batch)


def test_an_entry_that_raises_is_answered_invalid_argument_and_has_no_effect_on_any_member(tmp_path):
    requests = [m.PutRequest(b"before", b"1"), m.PutRequest(b"boom", b"!"), m.PutRequest(b"after", b"2")]
    states = []
    for member_id in (MEMBER, OTHER):
        env = lmdb.open(str(tmp_path / str(member_id)), map_size=1 << 26, max_dbs=KeySpace.MAX_DBS)
        state = ExplodingStateMachine(env, ApplyRules(7, member_id, 8, 1))
        batch = state.apply_committed(entries_for(requests, first_index=41))
        assert [f.index for f in batch.failures] == [42]
        assert batch.failures[0].request_type == "PutRequest"
        assert batch.failures[0].error == "ValueError: a bug in the state machine"
        assert batch.index == 43
        states.append((state, batch))
    (member, batch), (other, _) = states
    answers = dict(batch.answers)
    assert isinstance(answers[1000], m.PutResponse) and isinstance(answers[1002], m.PutResponse)
    assert answers[1001].code == "InvalidArgument"
    assert "log index 42" in answers[1001].message
    with member.env.begin() as txn:
        reader = member.keyspace.reader(txn, m.ResponseHeader(7, MEMBER, 0, 1))
        keys = [kv.key for kv in reader.range(m.RangeRequest(b"\0", b"\0")).kvs]
        assert keys == [b"after", b"before"]  # no b"half-done", no b"boom"
        assert member.keyspace.applied_index(txn) == 43
        assert member.keyspace.current_revision(txn) == 3  # two puts, nothing from the failed entry
    assert dump(member) == dump(other)


def test_an_alarm_raised_or_cleared_within_one_batch_takes_effect_at_the_next_entry(tmp_path):
    """The state machine reads the raised alarms once and keeps them (store/apply.py);
    an AlarmRequest of the batch makes the entries after it read them again."""
    state = open_state(tmp_path, MEMBER)
    requests = [m.PutRequest(b"k", b"1"), m.AlarmRequest(m.ALARM_ACTIVATE, MEMBER, m.ALARM_NOSPACE),
                m.PutRequest(b"k", b"2"), m.AlarmRequest(m.ALARM_DEACTIVATE, MEMBER, m.ALARM_NOSPACE),
                m.PutRequest(b"k", b"3"), m.AlarmRequest(m.ALARM_ACTIVATE, MEMBER, m.ALARM_CORRUPT),
                m.RangeRequest(b"k")]
    answers = dict(state.apply_committed(entries_for(requests)).answers)
    assert [type(answers[1000 + i]).__name__ for i in (0, 2, 4)] == ["PutResponse", "ErrorResponse", "PutResponse"]
    assert answers[1002].code == "NoSpace"
    assert answers[1006].code == "Corrupt"


def test_an_undecodable_entry_is_answered_malformed_on_its_member_and_skipped_everywhere(tmp_path):
    state = open_state(tmp_path, MEMBER)
    entries = entries_for([m.PutRequest(b"k", b"v")]) + [Entry(2, 1, make_payload(MEMBER, b"\x83\x01\x19\x03\xe7\x82gNoSuchX\x01"))]
    batch = state.apply_committed(entries)
    assert batch.index == 2 and batch.failures == []
    assert [event for event, _ in batch.notes] == ["entry_undecodable"]
    assert batch.answers[1][0] == 999 and batch.answers[1][1].code == "MalformedRequest"


def test_out_of_range_integers_never_reach_the_state_machine():
    """The boundary half of issue 13: the reproduction's frames fail to decode."""
    import pytest

    from transport.errors import InvalidArgumentError

    for request in (
        m.LeaseRevokeRequest(0x8000000000000000),
        m.AlarmRequest(m.ALARM_ACTIVATE, 1 << 64, m.ALARM_NOSPACE),
        m.CompactionRequest(1 << 63),
        m.TxnRequest(success=(m.PutRequest(b"k", lease=-(1 << 63) - 1),)),
        m.RangeRequest(b"k", sort_order=9),
    ):
        with pytest.raises(InvalidArgumentError):
            codec.decode(codec.encode(request, 1))
