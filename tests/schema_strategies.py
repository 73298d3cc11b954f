"""Hypothesis strategies derived from the message dataclasses' wire schema.

Why: a property over "every request the codec accepts" must not depend on a
hand-written list that drifts from transport/messages.py. Each field's
strategy comes from its annotation, as the codec's converters do: a plain int
is any int64 (edges favoured), Uint64 any uint64, an enumeration its values,
bytes short keys from a small alphabet (so requests collide on keys and
ranges) plus edge values, nested messages and unions recursively, with a depth
bound for TxnRequest in TxnRequest.
"""

from __future__ import annotations

import dataclasses
import types
import typing

from hypothesis import strategies as st

from transport.wire_types import INT64, IntRange, OneOf

_EDGE_INTS = (0, 1, -1, 2, 3, 5, 100, INT64.high, INT64.low, INT64.high - 1, INT64.low + 1, 1 << 32, -(1 << 32))
_EDGE_BYTES = (b"", b"\0", b"\xff", b"\xff" * 8, b"a", b"a\0", b"b", b"z" * 600)


def _ints(allowed: IntRange | OneOf):
    if isinstance(allowed, OneOf):
        return st.sampled_from(sorted(allowed.values))
    edges = [v for v in _EDGE_INTS + (allowed.high, allowed.low, allowed.high - 1) if allowed.allows(v)]
    return st.one_of(st.sampled_from(edges), st.integers(min_value=-3, max_value=12).filter(allowed.allows),
                     st.integers(min_value=allowed.low, max_value=allowed.high))


_KEYS = st.one_of(st.binary(min_size=0, max_size=3).map(lambda b: bytes(97 + x % 4 for x in b)), st.sampled_from(_EDGE_BYTES))


def strategy_for(annotation, depth: int = 0, keys=_KEYS):
    """A strategy of values the codec accepts for a field of this annotation."""
    if annotation is int:
        return _ints(INT64)
    if annotation is bool:
        return st.booleans()
    if annotation is bytes:
        return keys
    if annotation is str:
        return st.text(max_size=8)
    if annotation is type(None):
        return st.none()
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _ints(typing.get_args(annotation)[1])
    if origin in (typing.Union, types.UnionType):
        options = [o for o in typing.get_args(annotation) if not (depth >= 2 and _is_nested_txn(o))]
        return st.one_of(*[strategy_for(o, depth, keys) for o in options])
    if origin is tuple:
        return st.lists(strategy_for(typing.get_args(annotation)[0], depth + 1, keys), max_size=3).map(tuple)
    if origin is dict:
        key_type, value_type = typing.get_args(annotation)
        return st.dictionaries(strategy_for(key_type, depth, keys), strategy_for(value_type, depth, keys), max_size=2)
    if dataclasses.is_dataclass(annotation):
        return message_strategy(annotation, depth, keys)
    raise TypeError(f"no strategy for {annotation!r}")


def _is_nested_txn(option) -> bool:
    return dataclasses.is_dataclass(option) and option.__name__ == "TxnRequest"


def message_strategy(cls, depth: int = 0, keys=_KEYS):
    """Instances of a message class with every field drawn from its schema."""
    import sys

    hints = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]), include_extras=True)
    fields = {f.name: strategy_for(hints[f.name], depth, keys) for f in dataclasses.fields(cls)}
    return st.builds(cls, **fields)
