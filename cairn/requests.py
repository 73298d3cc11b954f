"""Building request messages from a caller's arguments, once for every client.

The blocking client (cairn/client.py), the asyncio one (cairn/aio.py), the
watch manager (cairn/watch.py), the recipes (cairn/concurrency.py) and
cairnctl's txn syntax all turn keys, ranges and options into the messages of
transport/messages.py here, so they agree on every rule (etcd clientv3's):

    Op.put(b"k", b"v"), Op.get(b"k", prefix=True), Op.delete(b"k"), Op.txn(...)
    Compare.value(b"k") == b"v", Compare.mod_revision(b"k") > 3
    range_request(b"k", prefix=True, sort_order="descend")
    watch_request(b"k", None, True, 0, False, False, ("noput",), False, 0)

Nothing here does I/O.
"""

from __future__ import annotations

from transport import messages as m
from transport.codec import check
from transport.key_ranges import prefix_range_end

_SORT_ORDERS = {None: m.SORT_NONE, "none": m.SORT_NONE, "ascend": m.SORT_ASCEND, "descend": m.SORT_DESCEND}
_SORT_TARGETS = {
    None: m.SORT_BY_KEY, "key": m.SORT_BY_KEY, "version": m.SORT_BY_VERSION, "create": m.SORT_BY_CREATE,
    "mod": m.SORT_BY_MOD, "value": m.SORT_BY_VALUE,
}

WATCH_FILTERS = {"noput": m.WATCH_FILTER_NOPUT, "nodelete": m.WATCH_FILTER_NODELETE}


def to_bytes(value) -> bytes:
    """Keys and values are bytes; str is accepted and encoded as UTF-8."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"expected bytes or str, got {type(value).__name__}")


def resolve_range(key: bytes, range_end, prefix: bool, from_key: bool) -> tuple[bytes, bytes]:
    """(key, range_end) as etcd's clientv3 sets them: an empty key with prefix or
    from_key means every key, which etcd spells key = range_end = "\0"."""
    if prefix:
        return (key, prefix_range_end(key)) if key else (b"\0", b"\0")
    if from_key:
        return key or b"\0", b"\0"
    return key, to_bytes(range_end) if range_end is not None else b""


class _CompareTarget:
    def __init__(self, target: int, key, range_end=None):
        self.target = target
        self.key = to_bytes(key)
        self.range_end = to_bytes(range_end) if range_end is not None else b""

    def _make(self, result: int, operand) -> m.Compare:
        operand = to_bytes(operand) if self.target == m.TARGET_VALUE else int(operand)
        return m.Compare(result, self.target, self.key, operand, self.range_end)

    def __eq__(self, operand):  # type: ignore[override]
        return self._make(m.COMPARE_EQUAL, operand)

    def __ne__(self, operand):  # type: ignore[override]
        return self._make(m.COMPARE_NOT_EQUAL, operand)

    def __gt__(self, operand):
        return self._make(m.COMPARE_GREATER, operand)

    def __lt__(self, operand):
        return self._make(m.COMPARE_LESS, operand)

    __hash__ = None


class Compare:
    """Txn guards: Compare.value(k) == v, Compare.mod_revision(k) > 3, ..."""

    value = staticmethod(lambda key, range_end=None: _CompareTarget(m.TARGET_VALUE, key, range_end))
    version = staticmethod(lambda key, range_end=None: _CompareTarget(m.TARGET_VERSION, key, range_end))
    create_revision = staticmethod(lambda key, range_end=None: _CompareTarget(m.TARGET_CREATE, key, range_end))
    mod_revision = staticmethod(lambda key, range_end=None: _CompareTarget(m.TARGET_MOD, key, range_end))
    lease = staticmethod(lambda key, range_end=None: _CompareTarget(m.TARGET_LEASE, key, range_end))


def range_request(key, range_end=None, prefix=False, from_key=False, revision=0, limit=0, keys_only=False,
                  count_only=False, serializable=False, sort_order=None, sort_target=None, min_mod_revision=0,
                  max_mod_revision=0, min_create_revision=0, max_create_revision=0) -> m.RangeRequest:
    key = to_bytes(key)
    if sort_order not in _SORT_ORDERS:
        raise ValueError(f"sort_order must be one of ascend, descend, none; got {sort_order!r}")
    if sort_target not in _SORT_TARGETS:
        raise ValueError(f"sort_target must be one of key, version, create, mod, value; got {sort_target!r}")
    key, range_end = resolve_range(key, range_end, prefix, from_key)
    return m.RangeRequest(
        key=key, range_end=range_end, limit=limit, revision=revision,
        sort_order=_SORT_ORDERS[sort_order], sort_target=_SORT_TARGETS[sort_target], serializable=serializable,
        keys_only=keys_only, count_only=count_only, min_mod_revision=min_mod_revision, max_mod_revision=max_mod_revision,
        min_create_revision=min_create_revision, max_create_revision=max_create_revision,
    )


def watch_request(key, range_end, prefix: bool, start_revision: int, prev_kv: bool, progress_notify: bool,
                  filters, fragment: bool, watch_id: int) -> m.WatchCreateRequest:
    """The WatchCreateRequest of Client.watch's arguments. filters: "noput",
    "nodelete" (any case) or their WATCH_FILTER_* codes."""
    key, range_end = resolve_range(to_bytes(key), range_end, prefix, False)
    codes = []
    for item in filters:
        code = WATCH_FILTERS.get(item.lower()) if isinstance(item, str) else item
        if code not in (m.WATCH_FILTER_NOPUT, m.WATCH_FILTER_NODELETE):
            raise ValueError(f"unknown watch filter {item!r}: use noput or nodelete")
        codes.append(code)
    if start_revision < 0:
        raise ValueError("start_revision must not be negative")
    request = m.WatchCreateRequest(key=key, range_end=range_end, start_revision=start_revision, progress_notify=progress_notify,
                                   filters=tuple(codes), prev_kv=prev_kv, watch_id=watch_id, fragment=fragment, grouped=True)
    check(request)  # values outside their etcd types are refused here, unsent
    return request


class Op:
    """Txn operations: Op.put, Op.get, Op.delete, Op.txn."""

    @staticmethod
    def put(key, value, lease=0, prev_kv=False, ignore_value=False, ignore_lease=False) -> m.PutRequest:
        return m.PutRequest(to_bytes(key), to_bytes(value), lease, prev_kv, ignore_value, ignore_lease)

    @staticmethod
    def get(key, **options) -> m.RangeRequest:
        return range_request(key, **options)

    @staticmethod
    def delete(key, range_end=None, prefix=False, from_key=False, prev_kv=False) -> m.DeleteRangeRequest:
        key, range_end = resolve_range(to_bytes(key), range_end, prefix, from_key)
        return m.DeleteRangeRequest(key, range_end, prev_kv)

    @staticmethod
    def txn(compare=(), success=(), failure=()) -> m.TxnRequest:
        return m.TxnRequest(tuple(compare), tuple(success), tuple(failure))


__all__ = ["Compare", "Op", "WATCH_FILTERS", "prefix_range_end", "range_request", "resolve_range", "to_bytes",
           "watch_request"]
