"""The write path: etcd's apply rules for put, delete, txn, compaction and the
lease table, over the apply actor's LMDB write transaction.

Theory of operation
-------------------
A request that changes anything gets ONE new main revision, current + 1; its
changes are numbered by sub revision in execution order (etcd storeTxnWrite:
revision{main: beginRev + 1, sub: len(changes)}). A request that changes
nothing (a read-only txn, a delete matching no key) leaves the revision alone.

Every write is three LMDB puts: the record under its revision in `revs`
(appended: revisions only grow), an entry in the key's `index` duplicates, and
the `live` pointer (set on put, removed on delete); plus the lease attachment
when it changes. See store/LAYOUT.md.

Errors are raised before the first write: static checks (store.checks), then
the checks that read the store (lease exists, ignore_* key exists, txn range
revisions), then execution, which cannot fail. So a failing request leaves the
shared batch transaction exactly as it found it.

A Writer is cheap (the apply actor makes one per request) and must not outlive
its transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from transport.errors import (
    CompactedError,
    FutureRevisionError,
    KeyNotFoundError,
    LeaseExistsError,
    LeaseNotFoundError,
    MalformedRequestError,
)
from transport.messages import (
    EVENT_DELETE,
    EVENT_PUT,
    CompactionRequest,
    CompactionResponse,
    DeleteRangeRequest,
    DeleteRangeResponse,
    Event,
    KeyValue,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    ResponseHeader,
    TxnRequest,
    TxnResponse,
)

from store import compaction, meta, records
from store.checks import check_delete, check_put, check_range, check_txn
from store.compare import compare_holds
from store.keys import bounds, seek
from store.leases import NO_LEASE, LeaseTable
from store.ranges import range_response
from store.reads import View
from store.revisions import MARK_PUT, MARK_TOMBSTONE, revision_bytes


@dataclass(frozen=True, slots=True)
class _Branch:
    """A txn's outcome decided before execution (etcd compareToPath): which
    branch runs, and the outcomes of the nested txns in that branch, in order."""

    succeeded: bool
    ops: tuple
    nested: tuple[_Branch, ...]


class Writer:
    """Runs keyspace requests inside one caller-owned LMDB write transaction;
    returns (response, events) and leaves the commit to the caller."""

    def __init__(self, space, txn, header: ResponseHeader, max_txn_ops: int = 128):
        self._space = space
        self._txn = txn
        self._header = header
        self._max_txn_ops = max_txn_ops
        self._leases = LeaseTable(txn, space.leases_db, space.lease_keys_db)
        self._view: View | None = None
        self._begin = 0  # store revision before the current request
        self._changes = 0  # changes made by the current request (next sub revision)
        self._events: list[Event] = []

    # -- requests --------------------------------------------------------

    def execute(self, request):
        """(response, events) for any keyspace request (the apply actor's entry)."""
        kind = type(request)
        if kind is PutRequest:
            return self.put(request)
        if kind is TxnRequest:
            return self.txn(request)
        if kind is DeleteRangeRequest:
            return self.delete_range(request)
        if kind is CompactionRequest:
            return self.compact(request), []
        if kind is RangeRequest:
            return self.range(request), []
        raise MalformedRequestError(f"not a keyspace request: {kind.__name__}")

    def put(self, request: PutRequest) -> tuple[PutResponse, list[Event]]:
        check_put(request, self._space.max_key_bytes)
        view = self._start()
        # etcd applierV3backend.Put checks the lease before the key.
        if request.lease != NO_LEASE and not self._leases.exists(request.lease):
            raise LeaseNotFoundError()
        if (request.ignore_value or request.ignore_lease) and view.current_pointer(request.key) is None:
            raise KeyNotFoundError()
        response = self._put(request)
        return response, self._finish()

    def delete_range(self, request: DeleteRangeRequest) -> tuple[DeleteRangeResponse, list[Event]]:
        check_delete(request)
        self._start()
        response = self._delete_range(request)
        return response, self._finish()

    def range(self, request: RangeRequest) -> RangeResponse:
        """A read inside the write transaction (sees this batch's writes)."""
        check_range(request)
        view = self._start()
        return range_response(view, request, self._header_at(view.revision))

    def txn(self, request: TxnRequest) -> tuple[TxnResponse, list[Event]]:
        check_txn(request, self._max_txn_ops, self._space.max_key_bytes)
        self._start()
        branch = self._decide(request)  # every compare sees the state before the txn
        self._check_puts(branch)
        self._check_ranges(branch)
        responses = self._run(branch)
        header = self._header_at(self._revision_now())
        return TxnResponse(header, branch.succeeded, responses), self._finish()

    def compact(self, request: CompactionRequest, max_records: int = 0) -> CompactionResponse:
        """Compact at request.revision. With max_records 0 the physical removal
        runs to completion here; otherwise it examines at most max_records
        records and the caller finishes with compact_step (see store.compaction).
        physical=True and False behave alike: etcd's flag only makes the reply
        wait for the removal, and the removal is never observable by reads."""
        view = self._start()
        if request.revision <= view.compact_revision:
            raise CompactedError(compact_revision=view.compact_revision)
        if request.revision > view.revision:
            raise FutureRevisionError()
        compaction.begin(self._space, self._txn, request.revision)
        compaction.step(self._space, self._txn, max_records)
        self._finish()
        return CompactionResponse(self._header_at(view.revision))

    def compact_step(self, max_records: int) -> bool:
        """Continue an unfinished physical compaction by up to max_records
        records; True when none is left (KeySpace.compaction_pending)."""
        return compaction.step(self._space, self._txn, max_records)

    # -- lease table -----------------------------------------------------

    def lease_grant(self, lease_id: int, ttl: int) -> None:
        if lease_id == NO_LEASE:
            raise LeaseNotFoundError()  # etcd lessor.Grant: NoLease is not a lease id
        if self._leases.exists(lease_id):
            raise LeaseExistsError()
        self._leases.grant(lease_id, ttl)

    def lease_revoke(self, lease_id: int) -> tuple[int, list[Event]]:
        """Delete every key attached to the lease in ONE revision, in key order
        (etcd lessor.Revoke sorts them so every member deletes alike), and the
        lease. Returns (store revision after, DELETE events)."""
        if not self._leases.exists(lease_id):
            raise LeaseNotFoundError()
        view = self._start()
        for key in self._leases.keys(lease_id):
            previous = view.current(key)
            assert previous is not None, "the lease index names only live keys"
            self._tombstone(key, previous, detach=False)
        self._leases.remove(lease_id)
        revision = self._revision_now()
        return revision, self._finish()

    def lease_checkpoint(self, lease_id: int, remaining_ttl: int) -> None:
        """Persist a remaining-ttl checkpoint; an unknown lease is ignored, as
        etcd's lessor.Checkpoint does (the lease may be revoked meanwhile)."""
        if self._leases.exists(lease_id):
            self._leases.checkpoint(lease_id, remaining_ttl)

    # -- request bookkeeping ---------------------------------------------

    def _start(self) -> View:
        space, txn = self._space, self._txn
        self._begin = space.current_revision(txn)
        self._changes = 0
        self._events = []
        if self._view is None:
            self._view = View(txn, space, self._begin, space.compact_revision(txn))
        else:
            self._view.revision = self._begin
            self._view.compact_revision = space.compact_revision(txn)
        return self._view

    def _finish(self) -> list[Event]:
        if self._changes:
            meta.put_int(self._txn, self._space.meta_db, meta.CURRENT_REVISION, self._begin + 1)
        events, self._events = self._events, []
        return events

    def _revision_now(self) -> int:
        return self._begin + 1 if self._changes else self._begin

    def _header_at(self, revision: int) -> ResponseHeader:
        header = self._header
        return ResponseHeader(header.cluster_id, header.member_id, revision, header.raft_term)

    def _next_revision(self) -> tuple[int, bytes]:
        """(main, revision bytes) for the next change of this request."""
        main = self._begin + 1
        pointer = revision_bytes(main, self._changes)
        self._changes += 1
        self._view.revision = main  # reads at "latest" now include this change
        return main, pointer

    # -- changes ---------------------------------------------------------

    def _put(self, request: PutRequest) -> PutResponse:
        """etcd storeTxnWrite.put: a live key keeps its create_revision and
        counts versions up; an absent (or deleted) key starts at version 1."""
        key = request.key
        previous = self._view.current(key)
        value = previous.value if request.ignore_value else request.value
        lease = previous.lease if request.ignore_lease else request.lease
        main, pointer = self._next_revision()
        create, version = (main, 1) if previous is None else (previous.create_revision, previous.version + 1)
        space, txn = self._space, self._txn
        appended = txn.put(pointer, records.encode_put(key, create, version, lease, value), db=space.revs_db, append=True)
        assert appended, "revisions must only grow"
        txn.put(key, pointer + MARK_PUT, db=space.index_db)
        txn.put(key, pointer, db=space.live_db)
        self._move_lease(key, previous.lease if previous is not None else NO_LEASE, lease)
        self._events.append(Event(EVENT_PUT, KeyValue(key, create, main, version, value, lease), previous))
        return PutResponse(self._header_at(main), previous if request.prev_kv else None)

    def _move_lease(self, key: bytes, old_lease: int, new_lease: int) -> None:
        """A put detaches the key from its old lease and attaches it to the new
        one; lease 0 leaves it unattached (etcd: Detach(old) then Attach(new))."""
        if old_lease == new_lease:
            return
        if old_lease != NO_LEASE:
            self._leases.detach(old_lease, key)
        if new_lease != NO_LEASE:
            self._leases.attach(new_lease, key)

    def _delete_range(self, request: DeleteRangeRequest) -> DeleteRangeResponse:
        start, end = bounds(request.key, request.range_end)
        view = self._view
        targets = _live_keys(view.cursor("live"), start, end, self._space.max_key_bytes)
        deleted = []
        for key, pointer in targets:
            previous = view.record(pointer)
            self._tombstone(key, previous, detach=True)
            deleted.append(previous)
        # etcd storeTxnWrite.DeleteRange: the revision is begin + 1 once this
        # request changed anything (even before this delete), else begin.
        header = self._header_at(self._revision_now())
        return DeleteRangeResponse(header, len(deleted), tuple(deleted) if request.prev_kv else ())

    def _tombstone(self, key: bytes, previous: KeyValue, detach: bool) -> None:
        main, pointer = self._next_revision()
        space, txn = self._space, self._txn
        appended = txn.put(pointer, records.encode_tombstone(key), db=space.revs_db, append=True)
        assert appended, "revisions must only grow"
        txn.put(key, pointer + MARK_TOMBSTONE, db=space.index_db)
        txn.delete(key, db=space.live_db)
        if detach and previous.lease != NO_LEASE:
            self._leases.detach(previous.lease, key)
        self._events.append(Event(EVENT_DELETE, KeyValue(key, 0, main, 0, b"", 0), previous))

    # -- txn -------------------------------------------------------------

    def _decide(self, request: TxnRequest) -> _Branch:
        """etcd compareToPath: compares of the txn and of every nested txn in
        the chosen branch are all evaluated against the state before the txn."""
        view = self._view
        succeeded = True
        for compare in request.compare:  # all must hold; stop at the first that fails
            start, end = bounds(compare.key, compare.range_end)
            if not compare_holds(compare, view.iterate(start, end, view.revision)):
                succeeded = False
                break
        ops = request.success if succeeded else request.failure
        nested = tuple(self._decide(op) for op in ops if type(op) is TxnRequest)
        return _Branch(succeeded, ops, nested)

    def _check_puts(self, branch: _Branch) -> None:
        """etcd checkRequestPut over the chosen path, before anything runs: an
        ignore_* put needs its key (in the state before the txn), then a lease
        must exist."""
        nested = iter(branch.nested)
        for op in branch.ops:
            kind = type(op)
            if kind is TxnRequest:
                self._check_puts(next(nested))
            elif kind is PutRequest:
                if (op.ignore_value or op.ignore_lease) and self._view.current_pointer(op.key) is None:
                    raise KeyNotFoundError()
                if op.lease != NO_LEASE and not self._leases.exists(op.lease):
                    raise LeaseNotFoundError()

    def _check_ranges(self, branch: _Branch) -> None:
        """etcd checkRequestRange: a range's revision is judged against the
        store before the txn (so the txn's own new revision is a future one)."""
        first = self._view.compact_revision or -1  # etcd's compactMainRev is -1 until compacted
        nested = iter(branch.nested)
        for op in branch.ops:
            kind = type(op)
            if kind is TxnRequest:
                self._check_ranges(next(nested))
            elif kind is RangeRequest and op.revision != 0:
                if op.revision > self._begin:
                    raise FutureRevisionError()
                if op.revision < first:
                    raise CompactedError(compact_revision=self._view.compact_revision)

    def _run(self, branch: _Branch) -> tuple:
        """Execute the chosen ops in order; reads see the writes before them."""
        responses = []
        nested = iter(branch.nested)
        for op in branch.ops:
            kind = type(op)
            if kind is PutRequest:
                responses.append(self._put(op))
            elif kind is DeleteRangeRequest:
                responses.append(self._delete_range(op))
            elif kind is RangeRequest:
                responses.append(range_response(self._view, op, self._header_at(self._revision_now())))
            else:
                inner = next(nested)
                # etcd gives a nested TxnResponse an empty header (revision 0);
                # only the outermost header carries the txn's revision.
                responses.append(TxnResponse(self._header_at(0), inner.succeeded, self._run(inner)))
        return tuple(responses)


def _live_keys(live, start: bytes, end: bytes | None, max_key_bytes: int) -> list[tuple[bytes, bytes]]:
    """(key, pointer) of the live keys in [start, end), read before deleting."""
    if not seek(live, start, max_key_bytes):
        return []
    found = []
    for key, pointer in live.iternext():
        if end is not None and key >= end:
            break
        found.append((key, pointer))
    return found
