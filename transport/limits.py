"""One way to declare bounds: each limit with its reason, the relations between
them checked whenever a set of them is made.

Theory of operation: every actor, the client's I/O thread and the member's config
keep their bounds in one frozen dataclass (TigerStyle's "a limit on everything").
Made with `@limits(...)`, each field is `limit(default, why)`, so the reason is
part of the declaration (`reasons(LeaseLimits)` lists them; a test checks that no
limit goes without one), and the class's relations — `holds(predicate, why)`,
`positive(*names)` — are checked on construction, so a set that tests shrink
still holds together. A broken relation is a programmer error: AssertionError
with the class and the reason (the member's YAML is checked by cairn/config.py
first, with a ConfigError naming the field)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple


class Relation(NamedTuple):
    why: str
    holds: Callable[[Any], bool]


def limit(default, why: str):
    """A bound's default value and why it is what it is (kept in the field's metadata)."""
    assert why.strip(), "every limit says why"
    return dataclasses.field(default=default, metadata={"why": " ".join(why.split())})


def holds(predicate: Callable[[Any], bool], why: str) -> Relation:
    """A relation between limits: predicate(limits) must be true."""
    return Relation(why, predicate)


def positive(*names: str) -> Relation:
    """Periods and counts that must be above zero: zero would spin a loop or stall it."""
    return Relation(f"{', '.join(names)} must be above zero",
                    lambda values: all(getattr(values, name) > 0 for name in names))


def limits(*relations: Relation):
    """Make the decorated class a frozen, slotted dataclass of limits whose
    construction checks every relation."""

    def make(cls):
        def __post_init__(self):
            for relation in relations:
                if not relation.holds(self):
                    raise AssertionError(f"{type(self).__name__}: {relation.why}")

        cls.__post_init__ = __post_init__
        cls.relations = relations
        return dataclasses.dataclass(frozen=True, slots=True)(cls)

    return make


def reasons(cls) -> dict[str, str]:
    """Each limit's name and its reason ('' for a field declared without limit())."""
    return {field.name: field.metadata.get("why", "") for field in dataclasses.fields(cls)}
