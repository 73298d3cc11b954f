"""Integer wire types: etcd's int64 and uint64, and enumerations.

Why: etcd's API fields are protobuf int64, uint64 or enums, so a value outside
them cannot even be written on etcd's wire. cairn's CBOR carries any integer,
and one that only the state machine could trip over (a lease id of 2**63 packed
as int64) used to reach the Raft log and stop every member's apply. The message
dataclasses therefore say each integer field's etcd type with these
annotations, and the codec (transport/codec.py) checks them where every frame
is decoded: at each door (frontend, gateway, peers) and again in apply.

A plain `int` field is int64, the type of most of etcd's fields (revisions,
lease ids, TTLs, limits); fields etcd declares uint64 (member and cluster ids,
raft terms and indexes, request ids) are `Uint64`; enumerations are
`enum_of(...)`. This module has no dependencies, so messages.py can import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated


@dataclass(frozen=True, slots=True)
class IntRange:
    """An integer field's inclusive bounds, named as etcd's proto names the type."""

    name: str
    low: int
    high: int

    def allows(self, value: int) -> bool:
        return self.low <= value <= self.high

    def describe(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class OneOf:
    """An enumeration field: only the listed values are meaningful."""

    name: str
    values: frozenset[int]
    # etcd's error text for a value outside the enumeration, where etcd has one
    etcd_message: str = ""

    def allows(self, value: int) -> bool:
        return value in self.values

    def describe(self) -> str:
        return f"{self.name} ({', '.join(str(v) for v in sorted(self.values))})"


INT64 = IntRange("int64", -(1 << 63), (1 << 63) - 1)
UINT64 = IntRange("uint64", 0, (1 << 64) - 1)

Int64 = Annotated[int, INT64]
Uint64 = Annotated[int, UINT64]


def enum_of(name: str, values, etcd_message: str = "") -> object:
    """The annotation of an enumeration field with these values."""
    return Annotated[int, OneOf(name, frozenset(values), etcd_message)]
