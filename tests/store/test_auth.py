"""etcd v3 auth: the permission rules (store/auth_rules.py) and the auth store
as the state machine applies it (store/auth.py through store/apply.py).

Scenarios from etcd's auth guide and design: a user with read on a/ cannot
read b/ nor write a/; a txn touching one forbidden key is refused whole;
range permissions that meet cover the range they span; revoking a permission
takes effect at once; the root user and role cannot be removed while auth is
enabled; every change bumps the auth revision; two members that apply the
same entries hold the same auth state.
"""

from __future__ import annotations

import lmdb
import pytest

from store.apply import ApplyRules, StateMachine
from store.auth_rules import READ, WRITE, Grant, covered, permitted, required_access
from store.mvcc import KeySpace
from transport import codec
from transport import messages as m
from transport.entries import make_payload
from transport.errors import PermissionDeniedError
from transport.raft_messages import Entry

R, W, RW = m.PERM_READ, m.PERM_WRITE, m.PERM_READWRITE


# ----------------------------------------------------------------- the rules


def test_a_single_key_grant_covers_that_key_only():
    grants = [Grant(R, b"a", b"")]
    assert covered(grants, READ, b"a", b"")
    assert not covered(grants, READ, b"a\0", b"")
    assert not covered(grants, READ, b"a", b"b")  # the range [a, b) holds more than a
    assert not covered(grants, WRITE, b"a", b"")


def test_a_prefix_grant_covers_keys_and_ranges_inside_it():
    grants = [Grant(RW, b"a/", b"a0")]  # the prefix a/
    assert covered(grants, READ, b"a/x", b"") and covered(grants, WRITE, b"a/x", b"")
    assert covered(grants, READ, b"a/", b"a0") and covered(grants, READ, b"a/b", b"a/c")
    assert not covered(grants, READ, b"b/x", b"")
    assert not covered(grants, READ, b"a/", b"\0")  # from a/ to the end reaches past a0


def test_grants_that_meet_cover_the_range_they_span_and_a_gap_does_not():
    assert covered([Grant(R, b"a", b"c"), Grant(R, b"c", b"e")], READ, b"b", b"d")
    assert covered([Grant(R, b"c", b"e"), Grant(R, b"a", b"c")], READ, b"a", b"e")  # order does not matter
    assert not covered([Grant(R, b"a", b"c"), Grant(R, b"d", b"e")], READ, b"b", b"e")


def test_a_from_key_grant_covers_everything_after_its_key():
    grants = [Grant(R, b"m", b"\0")]
    assert covered(grants, READ, b"z", b"") and covered(grants, READ, b"m", b"\0")
    assert not covered(grants, READ, b"a", b"\0")


def test_readwrite_grants_both_and_write_only_does_not_grant_read():
    assert covered([Grant(RW, b"k", b"")], READ, b"k", b"") and covered([Grant(RW, b"k", b"")], WRITE, b"k", b"")
    assert covered([Grant(W, b"k", b"")], WRITE, b"k", b"") and not covered([Grant(W, b"k", b"")], READ, b"k", b"")


def test_a_txn_needs_every_compare_and_every_op_of_both_branches():
    txn = m.TxnRequest(
        compare=(m.Compare(m.COMPARE_EQUAL, m.TARGET_VALUE, b"a/1", b"x"),),
        success=(m.PutRequest(b"a/2", b"v"),),
        failure=(m.RangeRequest(b"b/1"),),
    )
    assert required_access(txn) == [(READ, b"a/1", b""), (WRITE, b"a/2", b""), (READ, b"b/1", b"")]
    assert not permitted(("u",), [Grant(RW, b"a/", b"a0")], required_access(txn))
    assert permitted(("u",), [Grant(RW, b"a/", b"a0"), Grant(R, b"b/", b"b0")], required_access(txn))


def test_prev_kv_needs_read_too_and_admin_requests_need_root():
    assert required_access(m.PutRequest(b"k", prev_kv=True)) == [(WRITE, b"k", b""), (READ, b"k", b"")]
    assert not permitted(("u",), [Grant(W, b"k", b"")], required_access(m.PutRequest(b"k", prev_kv=True)))
    assert not permitted(("u",), [Grant(RW, b"", b"\0")], required_access(m.CompactionRequest(5)))
    assert permitted(("root",), [], required_access(m.CompactionRequest(5)))


# ----------------------------------------------------------------- the store, through the state machine


class Member:
    """A member's state machine over a real LMDB environment; each call is one committed entry."""

    def __init__(self, path, member_id: int = 1):
        env = lmdb.open(str(path), map_size=1 << 26, max_dbs=KeySpace.MAX_DBS)
        self.state = StateMachine(env, ApplyRules(7, member_id, 128, 1))
        self.index = 0

    def apply(self, request):
        self.index += 1
        entry = Entry(self.index, 1, make_payload(1, codec.encode(request, self.index)))
        batch = self.state.apply_committed([entry])
        assert batch.failures == []
        return batch.answers[0][1] if batch.answers else None

    def check(self, user: str, request) -> None:
        with self.state.env.begin() as txn:
            self.state.auth.check(txn, user, request)


def setup_users(member: Member) -> list:
    return [member.apply(r) for r in (
        m.AuthRoleAddRequest("root"),
        m.AuthUserAddRequest("root", hashed_password="h-root"),
        m.AuthUserGrantRoleRequest("root", "root"),
        m.AuthRoleAddRequest("reader"),
        m.AuthRoleGrantPermissionRequest("reader", m.Permission(R, b"a/", b"a0")),
        m.AuthUserAddRequest("alice", hashed_password="h-alice"),
        m.AuthUserGrantRoleRequest("alice", "reader"),
        m.AuthEnableRequest(),
    )]


def test_a_reader_of_a_may_read_a_but_not_b_nor_write_a_and_a_mixed_txn_is_refused_whole(tmp_path):
    member = Member(tmp_path)
    assert all(isinstance(answer, m.AuthResponse) for answer in setup_users(member))
    member.check("alice", m.RangeRequest(b"a/x"))
    member.check("alice", m.RangeRequest(b"a/", b"a0"))
    member.check("alice", m.WatchCreateRequest(b"a/", b"a0"))
    for forbidden in (
        m.RangeRequest(b"b/x"), m.PutRequest(b"a/x", b"v"), m.WatchCreateRequest(b"b/", b"b0"),
        m.TxnRequest(success=(m.RangeRequest(b"a/x"), m.RangeRequest(b"b/x"))),
        m.CompactionRequest(1),
    ):
        with pytest.raises(PermissionDeniedError):
            member.check("alice", forbidden)
    member.check("root", m.TxnRequest(success=(m.PutRequest(b"anything", b"v"),)))


def test_revoking_a_permission_takes_effect_at_once_and_every_change_bumps_the_revision(tmp_path):
    member = Member(tmp_path)
    setup_users(member)
    before = member.apply(m.AuthStatusRequest())
    assert before.enabled and before.auth_revision == 8
    member.apply(m.AuthRoleRevokePermissionRequest("reader", b"a/", b"a0"))
    with pytest.raises(PermissionDeniedError):
        member.check("alice", m.RangeRequest(b"a/x"))
    assert member.apply(m.AuthStatusRequest()).auth_revision == 9
    assert member.apply(m.AuthRoleGetRequest("reader")).perm == ()


def test_etcds_errors_for_auth_management(tmp_path):
    member = Member(tmp_path)
    assert member.apply(m.AuthEnableRequest()).message == "etcdserver: root user does not exist"
    member.apply(m.AuthUserAddRequest("root", hashed_password="h"))
    assert member.apply(m.AuthEnableRequest()).message == "etcdserver: root user does not have root role"
    assert member.apply(m.AuthUserGrantRoleRequest("root", "root")).message == "etcdserver: role name not found"
    member.apply(m.AuthRoleAddRequest("root"))
    member.apply(m.AuthUserGrantRoleRequest("root", "root"))
    assert isinstance(member.apply(m.AuthEnableRequest()), m.AuthResponse)
    answers = {
        "user add again": member.apply(m.AuthUserAddRequest("root", hashed_password="h")),
        "empty user": member.apply(m.AuthUserAddRequest("", hashed_password="h")),
        "unknown user": member.apply(m.AuthUserGetRequest("nobody")),
        "unknown role": member.apply(m.AuthRoleGetRequest("nobody")),
        "role not granted": member.apply(m.AuthUserRevokeRoleRequest("root", "other")),
        "delete root": member.apply(m.AuthUserDeleteRequest("root")),
        "root loses root": member.apply(m.AuthUserRevokeRoleRequest("root", "root")),
        "plaintext in the log": member.apply(m.AuthUserAddRequest("bob", password="secret")),
    }
    assert {k: (a.code, a.message) for k, a in answers.items()} == {
        "user add again": ("UserAlreadyExist", "etcdserver: user name already exists"),
        "empty user": ("UserEmpty", "etcdserver: user name is empty"),
        "unknown user": ("UserNotFound", "etcdserver: user name not found"),
        "unknown role": ("RoleNotFound", "etcdserver: role name not found"),
        "role not granted": ("RoleNotGranted", "etcdserver: role is not granted to the user"),
        "delete root": ("InvalidAuthManagement", "etcdserver: invalid auth management"),
        "root loses root": ("InvalidAuthManagement", "etcdserver: invalid auth management"),
        "plaintext in the log": ("InvalidArgument", "cairn: a password must be hashed before it is proposed"),
    }
    assert "secret" not in repr(answers["plaintext in the log"])


def test_deleting_a_role_revokes_it_from_every_user_and_lists_are_sorted(tmp_path):
    member = Member(tmp_path)
    setup_users(member)
    member.apply(m.AuthUserAddRequest("bob", hashed_password="h"))
    member.apply(m.AuthUserGrantRoleRequest("bob", "reader"))
    member.apply(m.AuthRoleDeleteRequest("reader"))
    assert member.apply(m.AuthUserGetRequest("alice")).roles == ()
    assert member.apply(m.AuthUserListRequest()).users == ("alice", "bob", "root")
    assert member.apply(m.AuthRoleListRequest()).roles == ("root",)


def test_two_members_that_apply_the_same_entries_hold_the_same_auth_state(tmp_path):
    one, two = Member(tmp_path / "one", 1), Member(tmp_path / "two", 2)
    for member in (one, two):
        setup_users(member)
        member.apply(m.AuthRoleGrantPermissionRequest("reader", m.Permission(W, b"w", b"")))
    with one.state.env.begin() as a, two.state.env.begin() as b:
        for db in (b"auth_users", b"auth_roles", b"auth_meta"):
            left = list(a.cursor(db=one.state.env.open_db(db, txn=a, create=False)))
            right = list(b.cursor(db=two.state.env.open_db(db, txn=b, create=False)))
            assert left == right and left
