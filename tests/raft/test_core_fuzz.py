"""step() must never raise, whatever arrives: random (mostly nonsensical) messages
against cores in every role, interleaved with ticks and local requests."""

from __future__ import annotations

import random

import pytest

from actors.raft.core import CANDIDATE, FOLLOWER, LEADER, PRE_CANDIDATE
from tests.raft.harness import drain, ents, msg, new_core
from tests.raft.test_core_paper import make_candidate, make_leader
from transport.raft_messages import Entry, SnapshotMeta


def _random_message(rng: random.Random, to: int):
    index = rng.randint(0, 8)
    entries = ()
    if rng.random() < 0.5:
        start = index + 1 if rng.random() < 0.8 else rng.randint(0, 9)
        term = rng.randint(0, 6)
        entries = tuple(
            Entry(start + i, term + (rng.random() < 0.2), rng.choice((b"", b"x", b"yy"))) for i in range(rng.randint(1, 3))
        )
    snapshot = None
    if rng.random() < 0.3:
        snapshot = SnapshotMeta(rng.randint(0, 9), rng.randint(0, 6), (1, 2, 3))
    return msg(
        rng.randint(1, 16),  # 16: an unknown type
        to if rng.random() < 0.95 else 9,
        rng.choice((2, 3, 2, 3, 1, 0, 7)),
        rng.randint(0, 6),
        log_term=rng.randint(0, 6),
        index=index,
        entries=entries,
        commit=rng.randint(0, 9),
        reject=rng.random() < 0.3,
        reject_hint=rng.randint(0, 8),
        context=rng.choice((b"", b"c", b"d")),
        snapshot=snapshot,
    )


def _core_in_role(rng: random.Random, role: str):
    core = new_core(1, term=2, entries=ents(1, 1, 2, 2), commit=2, pre_vote=rng.random() < 0.5,
                    check_quorum=rng.random() < 0.5, seed=rng.randint(0, 1 << 30))
    if role == LEADER:
        core = new_core(1, term=2, entries=ents(1, 1, 2, 2), commit=2, check_quorum=rng.random() < 0.5,
                        seed=rng.randint(0, 1 << 30))
        make_leader(core)
    elif role == CANDIDATE:
        core = new_core(1, term=2, entries=ents(1, 1, 2, 2), commit=2, seed=rng.randint(0, 1 << 30))
        make_candidate(core)
    elif role == PRE_CANDIDATE:
        core = new_core(1, term=2, entries=ents(1, 1, 2, 2), commit=2, pre_vote=True, seed=rng.randint(0, 1 << 30))
        core.campaign()
    return core


@pytest.mark.parametrize("role", [FOLLOWER, PRE_CANDIDATE, CANDIDATE, LEADER])
def test_random_messages_never_crash_the_core(role):
    rng = random.Random(role)
    for _ in range(150):
        core = _core_in_role(rng, role)
        drain(core)
        last_term = core.term
        for _ in range(40):
            r = rng.random()
            if r < 0.75:
                core.step(_random_message(rng, 1))
            elif r < 0.85:
                core.tick()
            elif r < 0.9:
                core.propose([b"p"])
            elif r < 0.93:
                core.read_index(b"r%d" % rng.randint(0, 3))
            elif r < 0.95:
                core.transfer_leadership(rng.choice((1, 2, 3, 9)))
            elif r < 0.97 and core.applied_index >= core.first_index:
                core.compact(rng.randint(core.first_index, core.applied_index))
            elif core.role == LEADER:
                core.report_snapshot(rng.choice((2, 3)), rng.random() < 0.5)
            if rng.random() < 0.7:
                drain(core)
            assert core.term >= last_term
            last_term = core.term
            assert core.applied_index <= core.commit_index <= core.last_index
