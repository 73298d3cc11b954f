"""Structural rules of the Raft core, checked by reading its source.

The core must stay a pure function of (config, persisted state, inputs, seeded rng):
no I/O, clock, threads or global randomness can leak in. The peer-protocol types must
stay codec-friendly: frozen, slotted dataclasses with simple annotated field types.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

import actors.raft.core as core
import transport.messages as messages
import transport.raft_messages as raft_messages
from tests.import_reader import ROOT, imports

CORE_MODULES = (
    "actors/raft/core.py",
    "actors/raft/log.py",
    "actors/raft/membership.py",
    "actors/raft/progress.py",
    "actors/raft/read_only.py",
)
CORE_ALLOWED = {
    "__future__",
    "dataclasses",
    "typing",
    "collections",
    "enum",
    "transport.raft_messages",
    "actors.raft.core",
    "actors.raft.log",
    "actors.raft.membership",
    "actors.raft.progress",
    "actors.raft.read_only",
}
# transport.wire_types: the int64/uint64/enum annotations the codec checks; it has no imports itself.
MESSAGES_ALLOWED = {"__future__", "dataclasses", "enum", "typing", "transport.wire_types"}


def _imports(path: pathlib.Path) -> list[tuple[str, bool]]:
    """(module, only_for_type_checking) for every import in the file."""
    return [(found.module, found.type_only) for found in imports(path)]


def test_the_core_imports_nothing_that_does_io_or_keeps_time():
    for rel in CORE_MODULES:
        for module, type_only in _imports(ROOT / rel):
            if module == "random":
                # The type of the injected rng may be named, never used at runtime:
                # the module-level functions share global state.
                assert type_only, f"{rel} imports random at runtime"
                continue
            assert module in CORE_ALLOWED, f"{rel} imports {module}"


def test_the_core_never_calls_the_random_module_directly():
    for rel in CORE_MODULES:
        source = (ROOT / rel).read_text()
        assert not re.search(r"\brandom\.(?!Random\b)\w+\(", source), f"{rel} uses the random module"


def test_the_message_module_imports_only_dataclasses_enum_typing():
    for module, _ in _imports(ROOT / "transport/raft_messages.py"):
        assert module in MESSAGES_ALLOWED, module


SIMPLE_TYPE = re.compile(r"^(int|bool|bytes|str|None|[A-Z]\w*|tuple\[.+, \.\.\.\]|tuple\[.+\])$")


def _check_annotation(annotation: str) -> None:
    for part in (p.strip() for p in annotation.split("|")):
        assert SIMPLE_TYPE.match(part), annotation
        assert not re.search(r"\b(dict|list|set|frozenset|Dict|List|Set)\b", part), annotation
        inner = re.match(r"^tuple\[(.+?)(, \.\.\.)?\]$", part)
        if inner:
            for element in inner.group(1).split(","):
                _check_annotation(element.strip())


def test_peer_protocol_types_are_frozen_slotted_dataclasses_with_simple_fields():
    classes = [
        obj
        for obj in vars(raft_messages).values()
        if isinstance(obj, type) and obj.__module__ == raft_messages.__name__
    ]
    assert {c.__name__ for c in classes} >= {"Entry", "HardState", "SnapshotMeta", "RaftMessage"}
    for cls in classes:
        assert dataclasses.is_dataclass(cls), cls
        assert cls.__dataclass_params__.frozen, cls
        assert "__slots__" in cls.__dict__, cls
        for f in dataclasses.fields(cls):
            assert isinstance(f.type, str), "use `from __future__ import annotations`"
            _check_annotation(f.type)
            # Enum members would need the codec to know the class; use int constants.
            default = f.default
            if default is not dataclasses.MISSING and default is not None:
                assert type(default) in (int, bool, bytes, str, tuple), (cls, f.name)


def test_every_message_type_has_a_name():
    constants = {v for k, v in vars(raft_messages).items() if k.startswith("MSG_")}
    assert constants == set(raft_messages.MESSAGE_TYPE_NAMES)
    assert len(constants) == 15


def test_the_role_names_raft_status_carries_are_the_cores():
    # The core keeps its own role constants (it may not import transport.messages);
    # RaftStatus.role carries core.role, so the two sets of names must agree.
    assert (core.FOLLOWER, core.PRE_CANDIDATE, core.CANDIDATE, core.LEADER) == messages.ROLES
    assert messages.ROLE_LEADER == core.LEADER and messages.ROLE_FOLLOWER == core.FOLLOWER
