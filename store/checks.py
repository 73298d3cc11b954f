"""Static request checks: everything etcd rejects before reading the store.

etcd runs these in its gRPC layer (server/etcdserver/api/v3rpc/key.go); cairn
runs them in the apply path too, because every member must reject the same
entries and nothing may be written by a request that errors. Order matters: the
first failing rule is the error the client sees, so the functions follow etcd's
order (checkTxnRequest, then checkIntervals on success, then on failure).
"""

from __future__ import annotations

from transport.errors import (
    DuplicateKeyError,
    InvalidArgumentError,
    KeyTooLongError,
    LeaseProvidedError,
    MalformedRequestError,
    TooManyOpsError,
    ValueProvidedError,
)
from transport.messages import (
    SORT_ASCEND,
    SORT_BY_KEY,
    SORT_BY_VALUE,
    SORT_DESCEND,
    SORT_NONE,
    DeleteRangeRequest,
    PutRequest,
    RangeRequest,
    TxnRequest,
)

from store.compare import check_compare
from store.keys import bounds, require_key


def check_range(request: RangeRequest) -> None:
    require_key(request.key)
    if request.sort_order not in (SORT_NONE, SORT_ASCEND, SORT_DESCEND):
        raise InvalidArgumentError("etcdserver: invalid sort option")
    if not SORT_BY_KEY <= request.sort_target <= SORT_BY_VALUE:
        raise InvalidArgumentError("etcdserver: invalid sort option")


def check_put(request: PutRequest, max_key_bytes: int) -> None:
    require_key(request.key)
    if len(request.key) > max_key_bytes:
        raise KeyTooLongError(f"etcdserver: key is longer than {max_key_bytes} bytes")
    if request.ignore_value and request.value:
        raise ValueProvidedError()
    if request.ignore_lease and request.lease != 0:
        raise LeaseProvidedError()


def check_delete(request: DeleteRangeRequest) -> None:
    require_key(request.key)


def check_txn(request: TxnRequest, max_txn_ops: int, max_key_bytes: int) -> None:
    """etcd checkTxnRequest + checkIntervals. The op limit is etcd's: the
    longest of compare/success/failure must fit max_txn_ops, and a nested txn
    must fit what its parent's longest list leaves (maxTxnOps - opc)."""
    _check_txn_shape(request, max_txn_ops, max_key_bytes)
    check_intervals(request.success)
    check_intervals(request.failure)


def _check_txn_shape(request: TxnRequest, max_txn_ops: int, max_key_bytes: int) -> None:
    longest = max(len(request.compare), len(request.success), len(request.failure))
    if longest > max_txn_ops:
        raise TooManyOpsError()
    for compare in request.compare:
        check_compare(compare)
    for op in request.success + request.failure:
        _check_op(op, max_txn_ops - longest, max_key_bytes)


def _check_op(op, max_txn_ops: int, max_key_bytes: int) -> None:
    kind = type(op)
    if kind is RangeRequest:
        check_range(op)
    elif kind is PutRequest:
        check_put(op, max_key_bytes)
    elif kind is DeleteRangeRequest:
        check_delete(op)
    elif kind is TxnRequest:
        _check_txn_shape(op, max_txn_ops, max_key_bytes)
    else:
        raise MalformedRequestError(f"not a txn operation: {kind.__name__}")


class _Deletes:
    """The delete ranges seen so far, as [start, end) intervals. A range end of
    b"\\0" is unbounded here. (etcd builds the interval [key, "\\x00") for it,
    which is empty, so a from-key delete escapes the check: etcd issues
    #22395/#22445; cairn follows the intended rule.)"""

    __slots__ = ("intervals",)

    def __init__(self):
        self.intervals: list[tuple[bytes, bytes | None]] = []

    def add(self, request: DeleteRangeRequest) -> None:
        self.intervals.append(bounds(request.key, request.range_end))

    def union(self, other: _Deletes) -> None:
        self.intervals.extend(other.intervals)

    def covers(self, key: bytes) -> bool:
        if not self.intervals:
            return False  # most txns delete nothing: no generator to build
        return any(start <= key and (end is None or key < end) for start, end in self.intervals)


def check_intervals(ops) -> tuple[set[bytes], _Deletes]:
    """etcd checkIntervals: no key may be put twice, or put and deleted, by the
    ops of one level and the nested txns below it. Returns (puts, deletes) of
    this level for the parent's check. Mirrors etcd's order exactly: this
    level's deletes first, then each nested txn's puts against the puts and
    deletes gathered so far (then/else of one nested txn may put the same key:
    only one branch runs), then this level's puts against everything."""
    deletes = _Deletes()
    if len(ops) == 1 and type(ops[0]) is not TxnRequest:
        # One op cannot clash with itself (most txn branches): its key or range only.
        op = ops[0]
        if type(op) is PutRequest:
            return {op.key}, deletes
        if type(op) is DeleteRangeRequest:
            deletes.add(op)
        return set(), deletes
    for op in ops:
        if type(op) is DeleteRangeRequest:
            deletes.add(op)
    puts: set[bytes] = set()
    for op in ops:
        if type(op) is TxnRequest:
            _merge_nested(op, puts, deletes)
    for op in ops:
        if type(op) is PutRequest:
            _claim(op.key, puts, deletes)
    return puts, deletes


def _merge_nested(request: TxnRequest, puts: set[bytes], deletes: _Deletes) -> None:
    puts_then, deletes_then = check_intervals(request.success)
    puts_else, deletes_else = check_intervals(request.failure)
    for key in puts_then:
        _claim(key, puts, deletes)
    for key in puts_else:
        if key in puts and key not in puts_then:
            raise DuplicateKeyError()
        if deletes.covers(key):
            raise DuplicateKeyError()
        puts.add(key)
    deletes.union(deletes_then)
    deletes.union(deletes_else)


def _claim(key: bytes, puts: set[bytes], deletes: _Deletes) -> None:
    if key in puts or deletes.covers(key):
        raise DuplicateKeyError()
    puts.add(key)
