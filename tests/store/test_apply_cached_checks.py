"""What every entry checks, kept across batches (store/apply.py): the alarms
raised and whether auth is enabled are read once and kept by the
StateMachine, so each place that can change them must make it read them
again: an AlarmRequest or Auth* entry in a later batch, a batch aborted after
reading them (the entry-failure path), a snapshot install, a defragment (a
new StateMachine over the new file)."""

from __future__ import annotations

import lmdb
import pytest

from store.apply import ApplyRules, StateMachine
from store.environment import defragment_kv, open_kv
from store.mvcc import KeySpace
from tests.store.test_auth import Member, setup_users
from tests.store.test_apply_total import MEMBER, entries_for, open_state
from transport import codec
from transport import messages as m
from transport.entries import make_payload
from transport.errors import NoSpaceError
from transport.raft_messages import Entry

NOSPACE_ON = m.AlarmRequest(m.ALARM_ACTIVATE, MEMBER, m.ALARM_NOSPACE)
NOSPACE_OFF = m.AlarmRequest(m.ALARM_DEACTIVATE, MEMBER, m.ALARM_NOSPACE)


class Applier:
    """One batch per call, indexes and request ids running on."""

    def __init__(self, state: StateMachine, index: int = 0):
        self.state = state
        self.index = index

    def batch(self, *requests):
        batch = self.state.apply_committed(entries_for(requests, first_index=self.index + 1))
        self.index += len(requests)
        assert batch.failures == [], batch.failures
        return [response for _, response in batch.answers]

    def put_answer(self) -> str:
        (response,) = self.batch(m.PutRequest(b"k", b"v"))
        return type(response).__name__ if isinstance(response, m.PutResponse) else response.code


def test_an_alarm_raised_or_cleared_in_one_batch_takes_effect_in_the_next(tmp_path):
    applier = Applier(open_state(tmp_path, MEMBER))
    assert applier.put_answer() == "PutResponse"  # no alarm: read, and kept
    applier.batch(NOSPACE_ON)
    assert applier.put_answer() == "NoSpace"
    assert applier.put_answer() == "NoSpace"  # kept
    applier.batch(NOSPACE_OFF)
    assert applier.put_answer() == "PutResponse"


def test_auth_enabled_or_disabled_in_one_batch_takes_effect_in_the_next(tmp_path):
    member = Member(tmp_path)
    setup_users(member)  # its last entry enables auth

    def put_as(user):
        member.index += 1
        entry = Entry(member.index, 1, make_payload(1, codec.encode(m.PutRequest(b"x", b"1"), member.index), user))
        (answer,) = member.state.apply_committed([entry]).answers
        return answer[1].code if isinstance(answer[1], m.ErrorResponse) else "ok"

    assert put_as("") == "PermissionDenied"  # enabled: read, and kept
    member.apply(m.AuthDisableRequest())  # (a member's own entry: not checked)
    assert put_as("") == "ok"
    assert put_as("") == "ok"  # kept
    member.apply(m.AuthEnableRequest())
    assert put_as("") == "PermissionDenied"


class AlarmThenBug(StateMachine):
    """A state machine with a bug: an AlarmRequest activates its alarm, a put
    reads the alarms (which keeps them), then it raises; the batch is aborted
    and applied again with the entry skipped (the entry-failure path)."""

    def _execute(self, txn, header, request, batch):
        if isinstance(request, m.AlarmRequest) and request.action == m.ALARM_ACTIVATE:
            super()._execute(txn, header, request, batch)
            with pytest.raises(NoSpaceError):  # reads the alarms, NOSPACE in this txn, and keeps them
                super()._execute(txn, header, m.PutRequest(b"inside", b"x"), batch)
            raise ValueError("a bug after the alarm")
        return super()._execute(txn, header, request, batch)


def test_alarms_read_in_an_aborted_batch_are_forgotten(tmp_path):
    env = lmdb.open(str(tmp_path), map_size=1 << 26, max_dbs=KeySpace.MAX_DBS)
    state = AlarmThenBug(env, ApplyRules(7, MEMBER, 8, 1))
    batch = state.apply_committed(entries_for([NOSPACE_ON, m.PutRequest(b"k", b"v")]))
    assert [failure.index for failure in batch.failures] == [1]  # the alarm never took effect
    answers = dict(batch.answers)
    assert isinstance(answers[1001], m.PutResponse), answers[1001]  # not the aborted attempt's NOSPACE
    assert Applier(state, 2).put_answer() == "PutResponse"


def test_a_snapshot_install_reads_the_alarms_of_the_new_keyspace(tmp_path):
    leader = Applier(open_state(tmp_path / "leader", MEMBER))
    leader.batch(m.PutRequest(b"a", b"1"), NOSPACE_ON)
    follower = Applier(open_state(tmp_path / "follower", MEMBER))
    assert follower.put_answer() == "PutResponse"  # no alarm here: kept
    (tmp_path / "snap").mkdir()
    leader.state.env.copy(str(tmp_path / "snap"))
    follower.index = follower.state.install_snapshot(str(tmp_path / "snap"))
    assert follower.index == 2
    assert follower.put_answer() == "NoSpace"
    # and back: a snapshot without the alarm lifts it
    leader.batch(NOSPACE_OFF)
    (tmp_path / "snap2").mkdir()
    leader.state.env.copy(str(tmp_path / "snap2"))
    follower.index = follower.state.install_snapshot(str(tmp_path / "snap2"))
    assert follower.put_answer() == "PutResponse"


def test_a_defragmented_keyspace_gets_a_state_machine_that_reads_its_alarms(tmp_path):
    """As actors/apply.py does: a defragment replaces the environment and makes
    a new StateMachine over it, which keeps nothing of the old one's."""
    env = open_kv(str(tmp_path), 1 << 26)
    rules = ApplyRules(7, MEMBER, 8, 1)
    applier = Applier(StateMachine(env, rules))
    assert applier.put_answer() == "PutResponse"
    applier.batch(NOSPACE_ON)
    assert applier.put_answer() == "NoSpace"
    env = defragment_kv(applier.state.env, str(tmp_path), 1 << 26)
    applier.state = StateMachine(env, rules)
    assert applier.put_answer() == "NoSpace"
    applier.batch(NOSPACE_OFF)
    assert applier.put_answer() == "PutResponse"
    env.close()
