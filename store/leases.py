"""The lease table the keyspace needs, in the keyspace's own LMDB environment.

Two dbs (see store/LAYOUT.md):
  leases      lease id (i64 big-endian) -> granted ttl (i64) | remaining-ttl checkpoint (i64)
  lease_keys  dupsort: lease id -> every key attached to it, sorted by key

Leases live beside the keys so that a put attaching a key, a delete detaching
it and a revoke deleting every attached key commit atomically with the keys
themselves (etcd keeps its lease bucket in the same bolt transaction for the
same reason: "we might end up with not executable expired lease"). Deadlines
are not stored: expiry is the lease actor's business; only the granted ttl and
the last checkpointed remaining ttl are durable, as in etcd's leasepb.Lease.
"""

from __future__ import annotations

import struct

from store.revisions import int64_bytes, int64_value

_ROW = struct.Struct(">qq")
NO_LEASE = 0


class LeaseTable:
    """Lease rows and attachments seen through one LMDB transaction."""

    __slots__ = ("_txn", "_leases_db", "_lease_keys_db")

    def __init__(self, txn, leases_db, lease_keys_db):
        self._txn = txn
        self._leases_db = leases_db
        self._lease_keys_db = lease_keys_db

    def exists(self, lease_id: int) -> bool:
        return lease_id != NO_LEASE and self._txn.get(int64_bytes(lease_id), db=self._leases_db) is not None

    def get(self, lease_id: int) -> tuple[int, int] | None:
        """(granted ttl, remaining-ttl checkpoint; 0 = never checkpointed)."""
        row = self._txn.get(int64_bytes(lease_id), db=self._leases_db)
        return None if row is None else _ROW.unpack(row)

    def ids(self) -> list[int]:
        cursor = self._txn.cursor(db=self._leases_db)
        return sorted(int64_value(key) for key in cursor.iternext(keys=True, values=False))

    def keys(self, lease_id: int) -> list[bytes]:
        """Attached keys in key order (dupsort order is memcmp order)."""
        cursor = self._txn.cursor(db=self._lease_keys_db)
        if not cursor.set_key(int64_bytes(lease_id)):
            return []
        return list(cursor.iternext_dup())

    def grant(self, lease_id: int, ttl: int) -> None:
        self._txn.put(int64_bytes(lease_id), _ROW.pack(ttl, 0), db=self._leases_db)

    def checkpoint(self, lease_id: int, remaining_ttl: int) -> None:
        encoded_id = int64_bytes(lease_id)
        row = self._txn.get(encoded_id, db=self._leases_db)
        ttl = _ROW.unpack(row)[0]
        self._txn.put(encoded_id, _ROW.pack(ttl, remaining_ttl), db=self._leases_db)

    def remove(self, lease_id: int) -> None:
        """Drop the lease row and every attachment (the keys are the caller's)."""
        encoded_id = int64_bytes(lease_id)
        self._txn.delete(encoded_id, db=self._leases_db)
        cursor = self._txn.cursor(db=self._lease_keys_db)
        if cursor.set_key(encoded_id):
            cursor.delete(dupdata=True)

    def attach(self, lease_id: int, key: bytes) -> None:
        self._txn.put(int64_bytes(lease_id), key, db=self._lease_keys_db)

    def detach(self, lease_id: int, key: bytes) -> None:
        self._txn.delete(int64_bytes(lease_id), key, db=self._lease_keys_db)
