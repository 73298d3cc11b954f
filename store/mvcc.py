"""cairn's MVCC keyspace: etcd v3's data model over LMDB.

Theory of operation
-------------------
Pure logic over an LMDB transaction: no sockets, no logging, no clock. The
apply actor opens one write transaction per batch of committed Raft entries,
runs each request through a Writer (store.keyspace_txn), stores the batch's
Raft index with set_applied_index, and commits: the keyspace, the lease table
and the applied index change together or not at all. Frontend and watch
processes read through a Reader in short read transactions; LMDB readers never
block the writer.

The databases and their encodings are written down in store/LAYOUT.md. The
modules, one job each:
  revisions  fixed-width revision and counter encodings
  records    the stored form of one key version
  keys       etcd key ranges, long-key-safe cursor seeks
  reads      lookups, scans, counts and history replay at a revision
  ranges     a RangeRequest answered as etcd answers it
  compare    txn compares
  checks     static request checks (etcd's gRPC-layer rules, checkIntervals)
  keyspace_txn  the Writer: put, delete, txn, compaction, lease table writes
  compaction physical compaction in bounded steps
  leases     the lease table and lease -> keys index
  meta       applied index, current and compact revisions
"""

from __future__ import annotations

import lmdb

from transport.errors import CompactedError
from transport.messages import Event, KeyValue, RangeRequest, RangeResponse, ResponseHeader

from store import compaction, meta
from store.checks import check_range
from store.keys import bounds
from store.keyspace_txn import Writer
from store.leases import LeaseTable
from store.ranges import passes_filters, range_response, without_value
from store.reads import KV_OVERHEAD_BYTES, View

__all__ = ["KeySpace", "Reader", "Writer"]


class KeySpace:
    """Opens (creating if missing) the keyspace's named databases and hands out
    Writers and Readers over caller-owned transactions."""

    # Named databases this module uses: 6; the rest is headroom for the
    # environment's other users (a caller opens the env with max_dbs=MAX_DBS).
    MAX_DBS = 16

    # name -> (dupsort, dupfixed); see store/LAYOUT.md for each one's encoding.
    DATABASES = {
        b"kv_meta": (False, False),
        b"kv_revs": (False, False),
        b"kv_index": (True, True),
        b"kv_live": (False, False),
        b"kv_leases": (False, False),
        b"kv_lease_keys": (True, False),
    }

    def __init__(self, env: lmdb.Environment):
        self.env = env
        # Keys are stored as LMDB keys (live, index) and dupsort values
        # (lease_keys): LMDB's limit for both, 511 bytes in standard builds.
        self.max_key_bytes = env.max_key_size()
        handles = self._open_readonly(env) if env.flags()["readonly"] else self._open(env)
        self.meta_db = handles[b"kv_meta"]
        self.revs_db = handles[b"kv_revs"]
        self.index_db = handles[b"kv_index"]
        self.live_db = handles[b"kv_live"]
        self.leases_db = handles[b"kv_leases"]
        self.lease_keys_db = handles[b"kv_lease_keys"]

    def _open(self, env) -> dict:
        """Open (creating if missing) every db in one explicit write transaction.

        Why a write transaction even for a reader process: py-lmdb's C binding
        closes the handles a read-only transaction opened when that transaction
        ends (it resets read transactions for reuse instead of committing), so
        handles must come from a committed write transaction. Why an explicit
        one: open_db without `txn` begins its own write transaction while
        holding the GIL, which deadlocks a process where another thread holds
        the write lock; env.begin(write=True) waits without the GIL. A reader
        process thus waits at most for the apply actor's current batch, once,
        at start (prepare_member_store creates the dbs before any actor runs).
        Nothing is written when the dbs exist, so the commit costs no fsync."""
        with env.begin(write=True) as txn:
            handles = {
                name: env.open_db(name, txn=txn, dupsort=dupsort, dupfixed=dupfixed)
                for name, (dupsort, dupfixed) in self.DATABASES.items()
            }
            if txn.get(meta.LAYOUT_VERSION, db=handles[b"kv_meta"]) is None:
                meta.put_int(txn, handles[b"kv_meta"], meta.LAYOUT_VERSION, meta.LAYOUT)
        return handles

    def _open_readonly(self, env) -> dict:
        """A read-only environment opens existing dbs with its own read-only
        transaction, which py-lmdb commits, keeping the handles."""
        return {
            name: env.open_db(name, create=False, dupsort=dupsort, dupfixed=dupfixed)
            for name, (dupsort, dupfixed) in self.DATABASES.items()
        }

    # -- sessions over a caller's transaction --

    def writer(self, txn, header: ResponseHeader, max_txn_ops: int = 128) -> Writer:
        return Writer(self, txn, header, max_txn_ops)

    def reader(self, txn, header: ResponseHeader) -> Reader:
        return Reader(self, txn, header)

    # -- meta, stored in the same environment --

    def applied_index(self, txn) -> int:
        return meta.get_int(txn, self.meta_db, meta.APPLIED_INDEX, 0)

    def set_applied_index(self, txn, index: int) -> None:
        meta.put_int(txn, self.meta_db, meta.APPLIED_INDEX, index)

    def current_revision(self, txn) -> int:
        return meta.get_int(txn, self.meta_db, meta.CURRENT_REVISION, meta.FIRST_REVISION)

    def compact_revision(self, txn) -> int:
        return meta.get_int(txn, self.meta_db, meta.COMPACT_REVISION, 0)

    def compaction_pending(self, txn) -> bool:
        """True while a physical compaction has records left to examine
        (Writer.compact_step finishes it; it survives restarts)."""
        return compaction.pending(self, txn)


class Reader:
    """Reads of the committed keyspace through one (short) read transaction."""

    def __init__(self, space: KeySpace, txn, header: ResponseHeader):
        self._space = space
        self._txn = txn
        self._header = header
        revision = space.current_revision(txn)
        self._view = View(txn, space, revision, space.compact_revision(txn))
        self.revision = revision  # the store revision this read transaction sees
        self.compact_revision = self._view.compact_revision

    def range(self, request: RangeRequest) -> RangeResponse:
        check_range(request)
        header = self._header
        return range_response(
            self._view, request, ResponseHeader(header.cluster_id, header.member_id, self.revision, header.raft_term)
        )

    def range_page(
        self, request: RangeRequest, revision: int, after_key: bytes | None, max_bytes: int
    ) -> tuple[list[KeyValue], bytes | None]:
        """One page of a large range at a fixed revision (0 = latest), in key
        order, starting after `after_key` (None: at request.key). Applies the
        request's mod/create filters and keys_only; ignores limit, sort and
        count_only (the caller assembles pages). A page holds at least one kv
        and stops once it reaches max_bytes. Returns (kvs, resume key: pass it
        back as after_key; None when the range is done)."""
        check_range(request)
        revision = self._view.resolve(revision)
        start, end = bounds(request.key, request.range_end)
        if after_key is not None and after_key + b"\0" > start:
            start = after_key + b"\0"  # the smallest key after after_key
        kvs, size = [], 0
        scan = self._view.iterate(start, end, revision)
        for kv in scan:
            if not passes_filters(request, kv):
                continue
            kvs.append(without_value(kv) if request.keys_only else kv)
            size += len(kv.key) + len(kvs[-1].value) + KV_OVERHEAD_BYTES
            if size >= max_bytes:
                break
        else:
            return kvs, None
        return kvs, (kvs[-1].key if next(scan, None) is not None else None)

    def count(self, request: RangeRequest, revision: int) -> int:
        """Keys in the request's range at revision (0 = latest): etcd's `count`."""
        check_range(request)
        start, end = bounds(request.key, request.range_end)
        return self._view.count(start, end, self._view.resolve(revision))

    def events_since(
        self, start_revision: int, key: bytes, range_end: bytes, max_events: int, prev_kv: bool, max_records: int = 0
    ) -> tuple[list[Event], int]:
        """History replay for a watch on (key, range_end) from start_revision.

        Events come in revision order and, within a revision, in the order the
        request made them (sub revision: etcd's watch order; key order for a
        delete range or a lease revoke). Whole revisions only: stops before the
        revision that would pass max_events (one revision is returned whole
        even if bigger), or after about max_records stored records (0 = no
        limit) so a narrow watch over a long history cannot hold the read
        transaction for long. Returns (events, next revision to read);
        next > current revision means the replay has caught up.

        CompactedError when start_revision < the compact revision, as etcd's
        watch (watcherGroup.chooseAll: minRev < compactRev); replay from the
        compact revision itself is served."""
        view = self._view
        start_revision = max(start_revision, 1)
        key = key or b"\0"  # etcd's watch: an empty key means the smallest key
        if view.compact_revision and start_revision < view.compact_revision:
            raise CompactedError(compact_revision=view.compact_revision)
        start, end = bounds(key, range_end)
        return view.events(start_revision, start, end, max(max_events, 1), prev_kv, max_records)

    # -- lease table --

    def lease(self, lease_id: int) -> tuple[int, int] | None:
        """(granted ttl, remaining-ttl checkpoint or 0), None if no such lease."""
        return LeaseTable(self._txn, self._space.leases_db, self._space.lease_keys_db).get(lease_id)

    def leases(self) -> list[int]:
        return LeaseTable(self._txn, self._space.leases_db, self._space.lease_keys_db).ids()

    def lease_keys(self, lease_id: int) -> list[bytes]:
        return LeaseTable(self._txn, self._space.leases_db, self._space.lease_keys_db).keys(lease_id)
