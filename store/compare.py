"""Txn compares, evaluated exactly as etcd's applyCompare / compareKV do.

Rules (etcd server/etcdserver/txn: applyCompare):
- A compare reads [key, range_end) at the store state *before* the txn; with a
  range, every key in it must satisfy the compare.
- If no key matches: a VALUE compare is false (a missing value cannot be
  represented: nil == empty string in protobuf), every other target compares
  the zero KeyValue, i.e. version/create/mod/lease of a missing key are 0.
- Values compare as bytes (bytes.Compare), the others as integers.
"""

from __future__ import annotations

from collections.abc import Iterable

from transport.errors import InvalidArgumentError
from transport.messages import (
    COMPARE_EQUAL,
    COMPARE_GREATER,
    COMPARE_LESS,
    COMPARE_NOT_EQUAL,
    TARGET_CREATE,
    TARGET_LEASE,
    TARGET_MOD,
    TARGET_VALUE,
    TARGET_VERSION,
    Compare,
    KeyValue,
)

from store.keys import require_key

_ZERO = KeyValue(b"", 0, 0, 0, b"", 0)

_FIELD = {
    TARGET_VERSION: lambda kv: kv.version,
    TARGET_CREATE: lambda kv: kv.create_revision,
    TARGET_MOD: lambda kv: kv.mod_revision,
    TARGET_VALUE: lambda kv: kv.value,
    TARGET_LEASE: lambda kv: kv.lease,
}

_RESULT = {
    COMPARE_EQUAL: lambda order: order == 0,
    COMPARE_NOT_EQUAL: lambda order: order != 0,
    COMPARE_GREATER: lambda order: order > 0,
    COMPARE_LESS: lambda order: order < 0,
}


def check_compare(compare: Compare) -> None:
    """Reject what etcd's protobuf types could not carry: an unknown target or
    result, or an operand of the wrong kind for the target."""
    require_key(compare.key)
    if compare.target not in _FIELD or compare.result not in _RESULT:
        raise InvalidArgumentError("etcdserver: invalid compare target or result")
    wants_bytes = compare.target == TARGET_VALUE
    if isinstance(compare.operand, (bytes, bytearray)) != wants_bytes or isinstance(compare.operand, bool):
        raise InvalidArgumentError("etcdserver: compare operand does not match its target")


def compare_holds(compare: Compare, kvs: Iterable[KeyValue]) -> bool:
    """True when every kv of the compare's range satisfies it (see module doc)."""
    field, result, operand = _FIELD[compare.target], _RESULT[compare.result], compare.operand
    matched = False
    for kv in kvs:
        matched = True
        if not result(_order(field(kv), operand)):
            return False
    if matched:
        return True
    if compare.target == TARGET_VALUE:
        return False  # etcd: "Always fail if comparing a value on a key/keys that doesn't exist"
    return result(_order(field(_ZERO), operand))


def _order(left, right) -> int:
    return (left > right) - (left < right)
