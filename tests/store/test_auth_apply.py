"""Auth checked by the state machine: each entry runs as the user its payload
names (transport/entries.py) and is checked against the auth state as of that
entry; the payload's older form (no user) is a member's own proposal and is
not checked. Also the frontend's pieces that need no process
(actors/auth_door.py): password hashes, tokens, the throttle."""

from __future__ import annotations

import pytest

from actors.auth_door import Throttle, Tokens, hash_password, service_needs, verify_password
from tests.store.test_auth import Member, setup_users
from transport import codec
from transport import messages as m
from transport.entries import make_payload, split_payload, split_payload_user
from transport.raft_messages import Entry


def test_payloads_with_and_without_a_user():
    frame = codec.encode(m.PutRequest(b"k", b"v"), 5)
    assert split_payload_user(make_payload(9, frame)) == (9, None, frame)
    assert split_payload_user(make_payload(9, frame, "alice")) == (9, "alice", frame)
    assert split_payload_user(make_payload(9, frame, "")) == (9, "", frame)
    assert split_payload(make_payload(9, frame, "ünï")) == (9, frame)


def apply_as(member: Member, user, request):
    member.index += 1
    entry = Entry(member.index, 1, make_payload(1, codec.encode(request, member.index), user))
    batch = member.state.apply_committed([entry])
    assert batch.failures == []
    return batch.answers[0][1]


def test_entries_are_checked_as_their_user_as_of_the_entry(tmp_path):
    member = Member(tmp_path)
    setup_users(member)
    member.apply(m.AuthRoleAddRequest("writer"))
    member.apply(m.AuthRoleGrantPermissionRequest("writer", m.Permission(m.PERM_READWRITE, b"c/", b"c0")))
    member.apply(m.AuthUserGrantRoleRequest("alice", "writer"))
    denied = m.ErrorResponse("PermissionDenied", "etcdserver: permission denied")
    assert apply_as(member, "alice", m.PutRequest(b"c/1", b"v")).header.revision == 2
    assert apply_as(member, "alice", m.PutRequest(b"a/1", b"v")) == denied
    assert apply_as(member, "", m.PutRequest(b"c/1", b"v")) == denied  # no token
    assert apply_as(member, "ghost", m.PutRequest(b"c/1", b"v")) == denied
    txn = m.TxnRequest(success=(m.PutRequest(b"c/2", b"v"), m.PutRequest(b"b/2", b"v")))
    assert apply_as(member, "alice", txn) == denied
    assert apply_as(member, "alice", m.CompactionRequest(1)) == denied
    assert apply_as(member, "alice", m.AuthUserListRequest()) == denied
    assert apply_as(member, "alice", m.AuthUserGetRequest("alice")).roles == ("reader", "writer")
    assert apply_as(member, "", m.AuthStatusRequest()).enabled
    assert isinstance(apply_as(member, "root", m.PutRequest(b"b/2", b"v")), m.PutResponse)
    assert isinstance(apply_as(member, None, m.PutRequest(b"b/3", b"v")), m.PutResponse)  # a member's own
    # revoked in one entry, refused in the next
    member.apply(m.AuthUserRevokeRoleRequest("alice", "writer"))
    assert apply_as(member, "alice", m.PutRequest(b"c/1", b"v")) == denied
    # lease revoke needs write on every attached key
    lease = apply_as(member, "alice", m.LeaseGrantRequest(60, 77)).id
    apply_as(member, "root", m.PutRequest(b"b/leased", b"v", lease=lease))
    assert apply_as(member, "alice", m.LeaseRevokeRequest(lease)) == denied
    assert isinstance(apply_as(member, "root", m.LeaseRevokeRequest(lease)), m.LeaseRevokeResponse)
    # auth disabled: nothing is checked
    apply_as(member, "root", m.AuthDisableRequest())
    assert isinstance(apply_as(member, "", m.PutRequest(b"a/1", b"v")), m.PutResponse)


def test_password_hashes():
    encoded = hash_password("s3cret")
    assert encoded.startswith("scrypt$16384$8$1$") and "s3cret" not in encoded
    assert verify_password("s3cret", encoded) and not verify_password("s3cret!", encoded)
    assert encoded != hash_password("s3cret")  # salted
    assert not verify_password("x", "garbage") and not verify_password("x", "")


def test_tokens_expire_unless_used():
    tokens = Tokens(ttl_s=10)
    token = tokens.issue("alice", 3, now=0.0, password_hash="h")
    assert token.endswith(".1")
    assert tokens.resolve(token, 9.0)[0] == "alice"
    assert tokens.resolve(token, 18.0)[0] == "alice"  # each use restarts the TTL
    assert tokens.resolve(token, 28.5) is None
    assert tokens.resolve("forged.1", 0.0) is None and tokens.resolve(None, 0.0) is None
    other = tokens.issue("bob", 3, now=100.0)
    tokens.sweep(111.0)
    assert tokens.resolve(other, 111.0) is None


def test_the_throttle_doubles_and_a_success_clears_it():
    throttle = Throttle(delay_s=1.0)
    keys = (("user", "u"), ("connection", b"c"))
    assert throttle.allowed(keys, 0.0)
    throttle.failed(keys, 0.0)
    assert not throttle.allowed(keys, 0.9) and throttle.allowed(keys, 1.0)
    throttle.failed(keys, 1.0)
    assert not throttle.allowed(keys, 2.9) and throttle.allowed(keys, 3.0)
    assert not throttle.allowed((("user", "u"), ("connection", b"other")), 2.0)  # the user's count
    throttle.succeeded(keys)
    assert throttle.allowed(keys, 3.0)
    for i in range(20):
        throttle.failed(keys, 0.0)
    assert throttle.allowed(keys, 64.0)  # capped at 64x
    throttle.busy.add(("user", "u"))
    assert not throttle.allowed(keys, 100.0)
    # being verified is not being throttled: such an attempt waits, it is not refused
    assert throttle.verifying(keys) and not throttle.throttled(keys, 100.0)
    assert throttle.verifying((("user", "u"), ("connection", b"other")))
    assert throttle.throttled(keys, 1.0) and not throttle.verifying((("user", "v"), ("connection", b"d")))


def test_lock_and_election_calls_need_their_keys():
    lock = service_needs(m.LockRequest(b"jobs", 1))
    assert lock.success == (m.RangeRequest(b"jobs/", b"jobs0"), m.DeleteRangeRequest(b"jobs/", b"jobs0"))
    assert service_needs(m.UnlockRequest(b"jobs/1")) == m.DeleteRangeRequest(b"jobs/1")
    assert service_needs(m.LeaderRequest(b"e")) == m.RangeRequest(b"e/", b"e0")
    assert service_needs(m.RangeRequest(b"k")) is None


def test_the_password_is_in_no_repr():
    assert "pw" not in repr(m.AuthenticateRequest("alice", "pw"))
    assert "pw" not in repr(m.AuthUserAddRequest("alice", "pw"))
    assert "pw" not in repr(m.AuthUserChangePasswordRequest("alice", "pw"))
    assert "tok" not in repr(m.AuthenticateResponse(m.ResponseHeader(1, 2, 3, 4), "tok"))


if __name__ == "__main__":
    pytest.main([__file__])


def test_auth_enabled_and_disabled_within_one_batch_takes_effect_at_the_next_entry(tmp_path):
    """The state machine reads whether auth is on once and keeps it (store/apply.py);
    an Auth* entry of the batch makes the entries after it read it again."""
    member = Member(tmp_path)
    setup_users(member)
    requests = [("", m.PutRequest(b"x", b"1")), ("root", m.AuthDisableRequest()), ("", m.PutRequest(b"x", b"2")),
                ("root", m.AuthEnableRequest()), ("", m.PutRequest(b"x", b"3"))]
    entries = [Entry(member.index + i + 1, 1, make_payload(1, codec.encode(request, i), user))
               for i, (user, request) in enumerate(requests)]
    answers = dict(member.state.apply_committed(entries).answers)
    assert answers[0].code == "PermissionDenied" and answers[4].code == "PermissionDenied"
    assert isinstance(answers[2], m.PutResponse)
