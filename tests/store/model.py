"""A pure-Python reference model of the etcd v3 keyspace, with full history.

Deliberately naive: the state at every revision is kept as a whole dict, and
every rule is written the way etcd's Go code reads (apply.go, kvstore_txn.go,
v3rpc/key.go), not the way the LMDB store computes it. The property tests
drive the store and this model with the same requests and compare everything:
responses, events, errors, and every range at every readable revision.
"""

from __future__ import annotations

from transport import errors
from transport import messages as m

MAX_KEY = 511


def in_range(key: bytes, start: bytes, range_end: bytes) -> bool:
    if range_end == b"":
        return key == start
    if range_end == b"\0":
        return key >= start
    return start <= key < range_end


class Model:
    def __init__(self, header: m.ResponseHeader, max_txn_ops: int = 128):
        self.header = header
        self.max_txn_ops = max_txn_ops
        self.revision = 1
        self.compacted = 0
        self.states: dict[int, dict[bytes, m.KeyValue]] = {1: {}}
        self.history: list[tuple[int, int, bytes, m.KeyValue | None]] = []  # (main, sub, key, kv or None=deleted)
        self.leases: dict[int, int] = {}
        self.lease_of: dict[bytes, int] = {}

    def hdr(self, revision: int) -> m.ResponseHeader:
        return m.ResponseHeader(self.header.cluster_id, self.header.member_id, revision, self.header.raft_term)

    # ------------------------------------------------------------------ writes

    def execute(self, request):
        if isinstance(request, m.PutRequest):
            return self._write(lambda work: self._checked_put(work, request))
        if isinstance(request, m.DeleteRangeRequest):
            return self._write(lambda work: self._checked_delete(work, request))
        if isinstance(request, m.TxnRequest):
            return self._write(lambda work: self._checked_txn(work, request))
        if isinstance(request, m.CompactionRequest):
            return self.compact(request.revision), []
        if isinstance(request, m.RangeRequest):
            return self.range(request), []
        raise AssertionError(request)

    def _write(self, body):
        work = _Work(self)
        response = body(work)  # may raise before any change is kept
        if work.changes:
            self.revision += 1
            self.states[self.revision] = work.state
            for sub, (key, kv) in enumerate(work.changes):
                self.history.append((self.revision, sub, key, kv))
            self.lease_of = work.lease_of
        return response, work.events

    def _checked_put(self, work, request: m.PutRequest):
        self._check_put(request)
        if request.lease and request.lease not in self.leases:
            raise errors.LeaseNotFoundError()
        if (request.ignore_value or request.ignore_lease) and request.key not in work.state:
            raise errors.KeyNotFoundError()
        return work.put(request)

    def _checked_delete(self, work, request: m.DeleteRangeRequest):
        if not request.key:
            raise errors.EmptyKeyError()
        return work.delete(request)

    def _checked_txn(self, work, request: m.TxnRequest):
        self._check_txn(request, self.max_txn_ops)
        _dup_check(request.success)
        _dup_check(request.failure)
        before = dict(self.states[self.revision])
        path = self._path(request, before)
        self._path_put_checks(path, before)
        self._path_range_checks(path)
        responses = work.run(path)
        rev = self.revision + (1 if work.changes else 0)
        return m.TxnResponse(self.hdr(rev), path[0], responses)

    @staticmethod
    def _check_put(request: m.PutRequest):
        if not request.key:
            raise errors.EmptyKeyError()
        if len(request.key) > MAX_KEY:
            raise errors.KeyTooLongError()
        if request.ignore_value and request.value:
            raise errors.ValueProvidedError()
        if request.ignore_lease and request.lease:
            raise errors.LeaseProvidedError()

    def _check_txn(self, request: m.TxnRequest, budget: int):
        opc = max(len(request.compare), len(request.success), len(request.failure))
        if opc > budget:
            raise errors.TooManyOpsError()
        for c in request.compare:
            if not c.key:
                raise errors.EmptyKeyError()
        for op in request.success + request.failure:
            if isinstance(op, m.RangeRequest) or isinstance(op, m.DeleteRangeRequest):
                if not op.key:
                    raise errors.EmptyKeyError()
            elif isinstance(op, m.PutRequest):
                self._check_put(op)
            else:
                self._check_txn(op, budget - opc)

    def _path(self, request: m.TxnRequest, before):
        """(succeeded, ops, [nested paths]) with every compare on `before`."""
        ok = all(_compare(c, before) for c in request.compare)
        ops = request.success if ok else request.failure
        return (ok, ops, [self._path(op, before) for op in ops if isinstance(op, m.TxnRequest)])

    def _path_put_checks(self, path, before):
        nested = iter(path[2])
        for op in path[1]:
            if isinstance(op, m.TxnRequest):
                self._path_put_checks(next(nested), before)
            elif isinstance(op, m.PutRequest):
                if (op.ignore_value or op.ignore_lease) and op.key not in before:
                    raise errors.KeyNotFoundError()
                if op.lease and op.lease not in self.leases:
                    raise errors.LeaseNotFoundError()

    def _path_range_checks(self, path):
        nested = iter(path[2])
        for op in path[1]:
            if isinstance(op, m.TxnRequest):
                self._path_range_checks(next(nested))
            elif isinstance(op, m.RangeRequest) and op.revision != 0:
                if op.revision > self.revision:
                    raise errors.FutureRevisionError()
                if op.revision < (self.compacted or -1):
                    raise errors.CompactedError(compact_revision=self.compacted)

    def compact(self, revision: int) -> m.CompactionResponse:
        if revision <= self.compacted:
            raise errors.CompactedError(compact_revision=self.compacted)
        if revision > self.revision:
            raise errors.FutureRevisionError()
        self.compacted = revision
        return m.CompactionResponse(self.hdr(self.revision))

    # ------------------------------------------------------------------ leases

    def lease_grant(self, lease_id: int, ttl: int):
        if lease_id == 0:
            raise errors.LeaseNotFoundError()
        if lease_id in self.leases:
            raise errors.LeaseExistsError()
        self.leases[lease_id] = ttl

    def lease_revoke(self, lease_id: int):
        if lease_id not in self.leases:
            raise errors.LeaseNotFoundError()
        keys = sorted(k for k, lease in self.lease_of.items() if lease == lease_id)

        def body(work):
            for key in keys:
                work.delete(m.DeleteRangeRequest(key))
            return None

        _, events = self._write(body)
        del self.leases[lease_id]
        return self.revision, events

    def lease_keys(self, lease_id: int):
        return sorted(k for k, lease in self.lease_of.items() if lease == lease_id)

    # ------------------------------------------------------------------ reads

    def range(self, request: m.RangeRequest, latest=None, latest_revision=None,
              header_revision=None) -> m.RangeResponse:
        if not request.key:
            raise errors.EmptyKeyError()
        latest_revision = self.revision if latest_revision is None else latest_revision
        rev = request.revision
        if rev > latest_revision:
            raise errors.FutureRevisionError()
        if rev <= 0:
            rev = latest_revision
        if rev < self.compacted:
            raise errors.CompactedError(compact_revision=self.compacted)
        state = latest if (latest is not None and rev == latest_revision) else self.states[rev]
        header = self.hdr(latest_revision if header_revision is None else header_revision)
        kvs = [state[k] for k in sorted(state) if in_range(k, request.key, request.range_end)]
        count = len(kvs)
        if request.count_only:
            return m.RangeResponse(header, (), False, count)
        if request.limit > 0 and request.sort_order == m.SORT_NONE and not _filtered(request):
            kvs = kvs[: request.limit + 1]
        kvs = [kv for kv in kvs if _keep(request, kv)]
        order = request.sort_order
        if request.sort_target != m.SORT_BY_KEY and order == m.SORT_NONE:
            order = m.SORT_ASCEND
        if order != m.SORT_NONE:
            field = {
                m.SORT_BY_KEY: lambda kv: kv.key,
                m.SORT_BY_VERSION: lambda kv: kv.version,
                m.SORT_BY_CREATE: lambda kv: kv.create_revision,
                m.SORT_BY_MOD: lambda kv: kv.mod_revision,
                m.SORT_BY_VALUE: lambda kv: kv.value,
            }[request.sort_target]
            kvs.sort(key=field, reverse=order == m.SORT_DESCEND)  # input in key order: ties stay in key order
        more = False
        if request.limit > 0 and len(kvs) > request.limit:
            kvs, more = kvs[: request.limit], True
        if request.keys_only:
            kvs = [m.KeyValue(kv.key, kv.create_revision, kv.mod_revision, kv.version, b"", kv.lease) for kv in kvs]
        return m.RangeResponse(header, tuple(kvs), more, count)

    def events_since(self, start: int, key: bytes, range_end: bytes, prev_kv: bool) -> list[m.Event]:
        start = max(start, 1)
        if self.compacted and start < self.compacted:
            raise errors.CompactedError(compact_revision=self.compacted)
        result = []
        last: dict[bytes, tuple[int, m.KeyValue | None]] = {}
        for main, sub, k, kv in self.history:
            previous = last.get(k)
            last[k] = (main, kv)
            if main < start or not in_range(k, key, range_end):
                continue
            prev = None
            if prev_kv and previous is not None and previous[1] is not None:
                # at exactly the compact revision an older version may be gone
                if not (main == self.compacted and previous[0] < main):
                    prev = previous[1]
            if kv is None:
                result.append(m.Event(m.EVENT_DELETE, m.KeyValue(k, 0, main, 0, b"", 0), prev))
            else:
                result.append(m.Event(m.EVENT_PUT, kv, prev))
        return result


class _Work:
    """One request's changes on a copy of the latest state."""

    def __init__(self, model: Model):
        self.model = model
        self.state = dict(model.states[model.revision])
        self.lease_of = dict(model.lease_of)
        self.changes: list[tuple[bytes, m.KeyValue | None]] = []
        self.events: list[m.Event] = []

    @property
    def main(self):
        return self.model.revision + 1

    def now(self):
        return self.model.revision + (1 if self.changes else 0)

    def put(self, request: m.PutRequest) -> m.PutResponse:
        old = self.state.get(request.key)
        value = old.value if request.ignore_value else request.value
        lease = old.lease if request.ignore_lease else request.lease
        if old is None:
            kv = m.KeyValue(request.key, self.main, self.main, 1, value, lease)
        else:
            kv = m.KeyValue(request.key, old.create_revision, self.main, old.version + 1, value, lease)
        self.state[request.key] = kv
        self.lease_of.pop(request.key, None)
        if lease:
            self.lease_of[request.key] = lease
        self.changes.append((request.key, kv))
        self.events.append(m.Event(m.EVENT_PUT, kv, old))
        return m.PutResponse(self.model.hdr(self.main), old if request.prev_kv else None)

    def delete(self, request: m.DeleteRangeRequest) -> m.DeleteRangeResponse:
        keys = sorted(k for k in self.state if in_range(k, request.key, request.range_end))
        prevs = []
        for k in keys:
            old = self.state.pop(k)
            self.lease_of.pop(k, None)
            prevs.append(old)
            self.changes.append((k, None))
            self.events.append(m.Event(m.EVENT_DELETE, m.KeyValue(k, 0, self.main, 0, b"", 0), old))
        return m.DeleteRangeResponse(self.model.hdr(self.now()), len(keys), tuple(prevs) if request.prev_kv else ())

    def run(self, path):
        ok, ops, nested_paths = path
        nested = iter(nested_paths)
        out = []
        for op in ops:
            if isinstance(op, m.PutRequest):
                out.append(self.put(op))
            elif isinstance(op, m.DeleteRangeRequest):
                out.append(self.delete(op))
            elif isinstance(op, m.RangeRequest):
                now = self.now()
                out.append(self.model.range(op, latest=self.state, latest_revision=now, header_revision=now))
            else:
                inner = next(nested)
                out.append(m.TxnResponse(self.model.hdr(0), inner[0], self.run(inner)))
        return tuple(out)


def _filtered(request: m.RangeRequest) -> bool:
    return any((request.min_mod_revision, request.max_mod_revision,
                request.min_create_revision, request.max_create_revision))


def _keep(request: m.RangeRequest, kv: m.KeyValue) -> bool:
    """etcd's pruneKVs, written as the interval each revision must lie in (a
    bound of 0 is no bound), not as store/ranges.py's early returns: the model
    stays an independent reading of etcd."""
    never = 1 << 63
    mod_low, mod_high = request.min_mod_revision, request.max_mod_revision or never
    create_low, create_high = request.min_create_revision, request.max_create_revision or never
    return mod_low <= kv.mod_revision <= mod_high and create_low <= kv.create_revision <= create_high


def _compare(c, state) -> bool:
    kvs = [state[k] for k in sorted(state) if in_range(k, c.key, c.range_end)]
    if not kvs:
        if c.target == m.TARGET_VALUE:
            return False
        kvs = [m.KeyValue(b"", 0, 0, 0, b"", 0)]
    for kv in kvs:
        left = {
            m.TARGET_VALUE: kv.value,
            m.TARGET_VERSION: kv.version,
            m.TARGET_CREATE: kv.create_revision,
            m.TARGET_MOD: kv.mod_revision,
            m.TARGET_LEASE: kv.lease,
        }[c.target]
        right = c.operand
        ok = {
            m.COMPARE_EQUAL: left == right,
            m.COMPARE_NOT_EQUAL: left != right,
            m.COMPARE_GREATER: left > right,
            m.COMPARE_LESS: left < right,
        }[c.result]
        if not ok:
            return False
    return True


def _dup_check(ops):
    """etcd checkIntervals, written as a plain recursion over sets."""
    dels = [(op.key, op.range_end) for op in ops if isinstance(op, m.DeleteRangeRequest)]

    def deleted(key):
        return any(in_range(key, k, e) for k, e in dels)

    puts: set[bytes] = set()
    for op in ops:
        if not isinstance(op, m.TxnRequest):
            continue
        then_puts, then_dels = _dup_check(op.success)
        else_puts, else_dels = _dup_check(op.failure)
        for key in then_puts:
            if key in puts or deleted(key):
                raise errors.DuplicateKeyError()
            puts.add(key)
        for key in else_puts:
            if (key in puts and key not in then_puts) or deleted(key):
                raise errors.DuplicateKeyError()
            puts.add(key)
        dels += then_dels + else_dels
    for op in ops:
        if isinstance(op, m.PutRequest):
            if op.key in puts or deleted(op.key):
                raise errors.DuplicateKeyError()
            puts.add(op.key)
    return puts, dels
