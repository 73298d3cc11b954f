"""Alarms (etcd's NOSPACE and CORRUPT), stored in the keyspace environment and changed only
by applying Raft entries, so every member refuses the same writes.

db "alarms": key = member id (8 bytes, big-endian) + alarm type (1 byte), value = b"".
"""

from __future__ import annotations

import struct

from transport.messages import (
    ALARM_CORRUPT,
    ALARM_NOSPACE,
    AlarmMember,
    CompactionRequest,
    DeleteRangeRequest,
    LeaseGrantRequest,
    LeaseRevokeRequest,
    PutRequest,
    RangeRequest,
    TxnRequest,
)

_KEY = struct.Struct(">QB")
DATABASES = {b"alarms": (False, False)}


class Alarms:
    def __init__(self, env):
        self.db = env.open_db(b"alarms")

    def list(self, txn, member_id: int = 0) -> tuple[AlarmMember, ...]:
        found = []
        for key, _ in txn.cursor(db=self.db):
            alarm_member, alarm = _KEY.unpack(key)
            if not member_id or alarm_member == member_id:
                found.append(AlarmMember(alarm_member, alarm))
        return tuple(found)

    def activate(self, txn, member_id: int, alarm: int) -> AlarmMember:
        txn.put(_KEY.pack(member_id, alarm), b"", db=self.db)
        return AlarmMember(member_id, alarm)

    def deactivate(self, txn, member_id: int, alarm: int) -> tuple[AlarmMember, ...]:
        if txn.delete(_KEY.pack(member_id, alarm), db=self.db):
            return (AlarmMember(member_id, alarm),)
        return ()

    def raised(self, txn) -> frozenset[int]:
        """The alarm types raised on any member."""
        return frozenset(member.alarm for member in self.list(txn))

    def no_space(self, txn) -> bool:
        return ALARM_NOSPACE in self.raised(txn)

    def corrupt(self, txn) -> bool:
        return ALARM_CORRUPT in self.raised(txn)


def bytes_in_use(env, txn, databases: dict) -> int:
    """Pages used by the named databases ({name: (dupsort, dupfixed)}), times
    the page size: what the quota
    is measured against. Unlike the file size it shrinks after a compaction
    (freed pages are reused), so an alarm can be disarmed without a defrag."""
    page_size = env.stat()["psize"]
    pages = 0
    for name, (dupsort, dupfixed) in databases.items():
        stat = txn.stat(env.open_db(name, txn=txn, dupsort=dupsort, dupfixed=dupfixed))
        pages += stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
    return pages * page_size


def corrupt_refuses(request) -> bool:
    """etcd's corrupt applier (applierV3Corrupt): while CORRUPT is raised on any
    member, Put, Range, DeleteRange, Txn, Compaction, LeaseGrant and
    LeaseRevoke fail with "etcdserver: corrupt cluster" on every member."""
    return isinstance(request, (PutRequest, RangeRequest, DeleteRangeRequest, TxnRequest, CompactionRequest,
                                LeaseGrantRequest, LeaseRevokeRequest))


def has_put(request) -> bool:
    """Whether a request could grow the keyspace: etcd's capped applier refuses
    puts, and txns holding a put anywhere, while NOSPACE is raised."""
    if isinstance(request, PutRequest):
        return True
    if isinstance(request, TxnRequest):
        return any(has_put(op) for op in request.success + request.failure)
    return False
