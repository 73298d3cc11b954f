"""Membership records, the config's join keys, the gateway's member calls, the
learner's door (issue 15): the parts that need no process."""

from __future__ import annotations

import pytest

from actors import gateway_json as gj
from actors.frontend import FrontendActor
from cairn.config import ConfigError, from_document
from store import members as records
from store.apply import ApplyRules, StateMachine
from store.environment import open_kv
from transport import messages as m
from transport.raft_messages import (
    CONF_ADD_LEARNER,
    CONF_PROMOTE,
    CONF_REMOVE,
    CONF_UPDATE,
    ENTRY_CONF_CHANGE,
    ConfChange,
    ConfState,
    Entry,
    encode_conf_change,
)

N1 = m.Member(1, "n1", ("tcp://h:1",), ("tcp://h:2",))
N2 = m.Member(2, "n2", ("tcp://h:3",), ("tcp://h:4",))


def test_after_change_add_promote_update_remove():
    added = records.after_change((N1, N2), ConfChange(CONF_ADD_LEARNER, 3, records.encode_context("n3", ["tcp://h:5"], [])))
    assert added[-1] == m.Member(3, "n3", ("tcp://h:5",), (), True)
    promoted = records.after_change(added, ConfChange(CONF_PROMOTE, 3))
    assert promoted[-1].is_learner is False
    updated = records.after_change(promoted, ConfChange(CONF_UPDATE, 3, records.encode_context("", ["tcp://h:9"], [])))
    assert updated[-1].peer_urls == ("tcp://h:9",) and updated[-1].name == "n3"
    assert records.after_change(updated, ConfChange(CONF_REMOVE, 1)) == (N2, updated[-1])


def test_public_keys_of_members_added_at_run_time_follow_the_membership(tmp_path):
    from store.mvcc import KeySpace

    env = open_kv(str(tmp_path), 1 << 26)
    meta_db = KeySpace(env).meta_db
    key = "k" * 40
    with env.begin(write=True) as txn:
        records.apply_change(txn, meta_db, (N1, N2), ConfChange(
            CONF_ADD_LEARNER, 3, records.encode_context("n3", ["tcp://h:5"], [], public_key=key)))
        records.apply_change(txn, meta_db, (N1, N2), ConfChange(CONF_PROMOTE, 3))
        assert records.public_keys(txn, meta_db) == {3: key}
        assert [m.id for m in records.load(txn, meta_db)] == [1, 2, 3]
        records.apply_change(txn, meta_db, (N1, N2), ConfChange(CONF_REMOVE, 3))
        assert records.public_keys(txn, meta_db) == {}  # a removed member's key is let go with it
        assert records.removed(txn, meta_db) == {3}
    env.close()


def test_an_unreadable_context_keeps_the_change():
    assert records.decode_context(b"\xff\x00") == {}
    assert records.after_change((N1,), ConfChange(CONF_ADD_LEARNER, 2, b"\xff"))[-1].id == 2


def test_apply_keeps_the_records_and_removed_ids(tmp_path):
    env = open_kv(str(tmp_path), 1 << 26)
    state = StateMachine(env, ApplyRules(7, 1, 8, 1, initial_members=(N1, N2)))

    def entry(index, change, conf):
        return Entry(index, 1, encode_conf_change(change, conf), ENTRY_CONF_CHANGE)

    state.apply_committed([
        entry(1, ConfChange(CONF_ADD_LEARNER, 3, records.encode_context("n3", ["tcp://h:5"], ["tcp://h:6"])), ConfState((1, 2), (3,))),
        entry(2, ConfChange(CONF_REMOVE, 2), ConfState((1,), (3,))),
    ])
    with env.begin() as txn:
        assert records.load(txn, state.keyspace.meta_db) == (N1, m.Member(3, "n3", ("tcp://h:5",), ("tcp://h:6",), True))
        assert records.removed(txn, state.keyspace.meta_db) == {2}
        assert state.keyspace.applied_index(txn) == 2


def _document(**cluster):
    return {"cluster": {"name": "c", "members": [{"name": "n1", "peer": "tcp://127.0.0.1:1", "client": "tcp://127.0.0.1:2"}],
                        "security": {"mode": "plaintext"}, **cluster}}


def test_config_state_and_id():
    assert from_document(_document()).state == "new"
    config = from_document(_document(state="existing", id="abc"))
    assert (config.state, config.id) == ("existing", 0xABC)
    with pytest.raises(ConfigError, match="cluster.state"):
        from_document(_document(state="joining"))
    with pytest.raises(ConfigError, match="cluster.id"):
        from_document(_document(id="xyz"))


def test_gateway_member_requests_and_response():
    add = gj.member_add_request({"peerURLs": ["tcp://h:5"], "isLearner": True, "name": "n3"})
    assert add == m.MemberAddRequest(("tcp://h:5",), True, "n3", ())
    keyed = gj.member_add_request({"peerURLs": ["tcp://h:5"], "name": "n3", "curveKey": "k" * 40})
    assert keyed.public_key == "k" * 40
    assert gj.member_remove_request({"ID": "12"}) == m.MemberRemoveRequest(12)
    assert gj.member_update_request({"ID": 3, "peerURLs": ["tcp://h:9"]}) == m.MemberUpdateRequest(3, ("tcp://h:9",))
    assert gj.member_promote_request({"ID": "3"}) == m.MemberPromoteRequest(3)
    with pytest.raises(gj.BadRequest):
        gj.member_add_request({"peerURLs": "tcp://h:5"})
    header = m.ResponseHeader(7, 1, 5, 2)
    out = gj.member_change_response(m.MemberAddResponse(header, N2, (N1, N2)), {})
    assert out["member"]["ID"] == "2" and [x["name"] for x in out["members"]] == ["n1", "n2"]
    assert out["header"]["revision"] == "5"


def test_what_a_learner_serves():
    serves = FrontendActor.learner_serves
    assert serves(m.RangeRequest(b"k", serializable=True))
    assert not serves(m.RangeRequest(b"k"))
    assert not serves(m.PutRequest(b"k", b"v"))
    assert not serves(m.MemberAddRequest(("tcp://h:1",), name="x"))
    assert serves(m.StatusRequest()) and serves(m.MemberListRequest())
