"""A RangeRequest answered exactly as etcd's applierV3backend.Range answers it.

etcd's rules, in its order:
1. The revision: future -> FutureRevisionError; 0 -> latest; below the compact
   revision -> CompactedError (see View.resolve).
2. count_only: only `count`, no kvs, more false.
3. Fetch: everything when sorting (sort_order != NONE) or filtering by
   mod/create revision, else limit + 1 keys (the extra one sets `more`).
   `count` is always the number of keys in the range at that revision, before
   filters and limit.
4. Filters prune the fetched kvs (max_mod, min_mod, max_create, min_create).
5. Sort: order NONE with a target other than KEY sorts ASCEND; KEY + ASCEND is
   already the scan order. (So NONE + VERSION + limit sorts only the limit + 1
   fetched keys: etcd does exactly that.) Ties keep key order (etcd's sort is
   not stable, so any order is etcd-valid; key order is deterministic).
6. limit: more = more kvs survived than the limit; truncate.
7. keys_only: values dropped.
"""

from __future__ import annotations

from transport.messages import (
    SORT_ASCEND,
    SORT_BY_CREATE,
    SORT_BY_KEY,
    SORT_BY_MOD,
    SORT_BY_VALUE,
    SORT_BY_VERSION,
    SORT_DESCEND,
    SORT_NONE,
    KeyValue,
    RangeRequest,
    RangeResponse,
    ResponseHeader,
)

from store.keys import bounds
from store.reads import View

_SORT_FIELD = {
    SORT_BY_VERSION: lambda kv: kv.version,
    SORT_BY_CREATE: lambda kv: kv.create_revision,
    SORT_BY_MOD: lambda kv: kv.mod_revision,
    SORT_BY_VALUE: lambda kv: kv.value,
}


def range_response(view: View, request: RangeRequest, header: ResponseHeader) -> RangeResponse:
    """Answer an already checked request (store.checks.check_range)."""
    revision = view.resolve(request.revision)
    start, end = bounds(request.key, request.range_end)
    if request.count_only:
        return RangeResponse(header, (), False, view.count(start, end, revision))
    limit = request.limit
    filtered = _has_filters(request)
    fetch_limit = limit + 1 if limit > 0 and request.sort_order == SORT_NONE and not filtered else 0
    kvs, total = view.scan(start, end, revision, fetch_limit)
    if filtered:
        kvs = [kv for kv in kvs if passes_filters(request, kv)]
    kvs = _sorted(kvs, request)
    more = limit > 0 and len(kvs) > limit
    if more:
        kvs = kvs[:limit]
    if request.keys_only:
        kvs = [without_value(kv) for kv in kvs]
    return RangeResponse(header, tuple(kvs), more, total)


def _has_filters(request: RangeRequest) -> bool:
    return bool(
        request.min_mod_revision or request.max_mod_revision or request.min_create_revision or request.max_create_revision
    )


def passes_filters(request: RangeRequest, kv: KeyValue) -> bool:
    """etcd pruneKVs: a bound of 0 is no bound."""
    if request.max_mod_revision and kv.mod_revision > request.max_mod_revision:
        return False
    if request.min_mod_revision and kv.mod_revision < request.min_mod_revision:
        return False
    if request.max_create_revision and kv.create_revision > request.max_create_revision:
        return False
    if request.min_create_revision and kv.create_revision < request.min_create_revision:
        return False
    return True


def _sorted(kvs: list[KeyValue], request: RangeRequest) -> list[KeyValue]:
    order, target = request.sort_order, request.sort_target
    if target != SORT_BY_KEY and order == SORT_NONE:
        order = SORT_ASCEND
    if order == SORT_NONE or (target == SORT_BY_KEY and order == SORT_ASCEND):
        return kvs  # scans return key order
    if target == SORT_BY_KEY:
        return kvs[::-1]
    return sorted(kvs, key=_SORT_FIELD[target], reverse=order == SORT_DESCEND)


def without_value(kv: KeyValue) -> KeyValue:
    return KeyValue(kv.key, kv.create_revision, kv.mod_revision, kv.version, b"", kv.lease)

