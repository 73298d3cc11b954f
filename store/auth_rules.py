"""etcd v3 auth's permission rules, as pure functions over an auth state.

Theory of operation
-------------------
A user holds roles; a role holds permissions, each a type (READ, WRITE or
READWRITE) on a key range written as etcd writes ranges: range_end b"" is the
single key, b"\\0" every key from `key` on, otherwise [key, range_end). The
role `root` may do anything, including what needs no key (compaction,
membership, maintenance, auth management: `ADMIN`).

A request is allowed when every range it touches, for the access it needs, is
covered by the union of the ranges the user's roles grant for that access
(etcd's checkKeyInterval over its per-user interval tree): two permissions
[a, b) and [b, c) together cover [a, c). What each request needs is
`required_access`: a range reads its range; a put writes its key, and reads it
too when it asks for prev_kv; a txn needs what every compare and every op of
both branches needs, whichever branch runs (etcd checks them all up front).

No I/O: the state comes in as plain values, so every rule is tested without a
store (tests/store/test_auth_rules.py), and the state machine and the doors
check with the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

from store.keys import bounds
from transport.messages import (
    PERM_READ,
    PERM_READWRITE,
    CompactionRequest,
    DeleteRangeRequest,
    PutRequest,
    RangeRequest,
    TxnRequest,
    WatchCreateRequest,
)

ROOT = "root"
ADMIN = "admin"  # an access that needs the root role, not a key
READ, WRITE = "read", "write"


@dataclass(frozen=True, slots=True)
class Grant:
    """One permission of a role: an access type on [key, end); end None = no end."""

    perm_type: int
    key: bytes
    range_end: bytes


def _allows(perm_type: int, access: str) -> bool:
    return perm_type == PERM_READWRITE or (perm_type == PERM_READ) == (access == READ)


def covered(grants: list[Grant], access: str, key: bytes, range_end: bytes) -> bool:
    """Whether the grants of this access type together cover [key, range_end)."""
    start, end = bounds(key, range_end)
    if end is not None and end <= start:
        return True  # an empty range touches nothing
    intervals = sorted(bounds(g.key, g.range_end) for g in grants if _allows(g.perm_type, access))
    reach = start  # everything in [start, reach) is covered so far
    for low, high in intervals:
        if low > reach:
            break  # a gap before this interval; later ones start later still
        if high is None:
            return True
        if high > reach:
            reach = high
        if end is not None and reach >= end:
            return True
    return False


def required_access(request) -> list[tuple[str, bytes, bytes]]:
    """[(READ | WRITE | ADMIN, key, range_end)] a request needs; ADMIN entries
    carry empty keys."""
    if isinstance(request, RangeRequest):
        return [(READ, request.key, request.range_end)]
    if isinstance(request, PutRequest):
        needs = [(WRITE, request.key, b"")]
        if request.prev_kv:
            needs.append((READ, request.key, b""))
        return needs
    if isinstance(request, DeleteRangeRequest):
        needs = [(WRITE, request.key, request.range_end)]
        if request.prev_kv:
            needs.append((READ, request.key, request.range_end))
        return needs
    if isinstance(request, TxnRequest):
        needs = [(READ, compare.key, compare.range_end) for compare in request.compare]
        for op in request.success + request.failure:
            needs.extend(required_access(op))
        return needs
    if isinstance(request, WatchCreateRequest):
        return [(READ, request.key, request.range_end)]
    if isinstance(request, CompactionRequest):
        return [(ADMIN, b"", b"")]
    return [(ADMIN, b"", b"")]


def permitted(roles: tuple[str, ...], grants: list[Grant], needs: list[tuple[str, bytes, bytes]]) -> bool:
    """Whether a user with these roles (and their roles' grants) may do all of needs."""
    if ROOT in roles:
        return True
    for access, key, range_end in needs:
        if access == ADMIN or not covered(grants, access, key, range_end):
            return False
    return True


def grants_of(role_permissions: dict[str, tuple], roles: tuple[str, ...]) -> list[Grant]:
    """The grants of the user's roles (permissions as (perm_type, key, range_end))."""
    return [Grant(*permission) for role in roles for permission in role_permissions.get(role, ())]
