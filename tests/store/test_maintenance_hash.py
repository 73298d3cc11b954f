"""HashKV is a function of the history alone: members whose physical compaction
has got to different points (it runs in budgeted steps) agree; any change of a
record below the hashed revision changes it."""

from __future__ import annotations

import pytest

from store.maintenance import hash_kv, store_hash
from tests.store.conftest import HEADER, Harness, open_env
from transport.errors import CompactedError, FutureRevisionError
from transport.messages import CompactionRequest


def _history(harness: Harness) -> None:
    for i in range(30):
        harness.put(f"k{i % 7}".encode(), f"v{i}".encode())
        if i % 5 == 4:
            harness.delete(f"k{(i + 1) % 7}".encode())


def _hash(harness: Harness, revision: int = 0):
    with harness.env.begin() as txn:
        return hash_kv(harness.space, txn, revision)


def test_hash_kv_ignores_how_far_physical_compaction_got(tmp_path):
    envs = [open_env(tmp_path / name) for name in ("a", "b", "c")]
    try:
        a, b, c = (Harness(env) for env in envs)
        for harness in (a, b, c):
            _history(harness)
        assert _hash(a) == _hash(b) == _hash(c)
        before = _hash(a, 20)
        with a.env.begin(write=True) as txn:  # a: the whole walk at once
            a.space.writer(txn, HEADER).compact(CompactionRequest(15))
        with b.env.begin(write=True) as txn:  # b: only a few records of it
            b.space.writer(txn, HEADER).compact(CompactionRequest(15), max_records=3)
        with c.env.begin(write=True) as txn:  # c: logically only, nothing removed yet
            c.space.writer(txn, HEADER).compact(CompactionRequest(15), max_records=1)
        assert _hash(a, 20) == _hash(b, 20) == _hash(c, 20)
        assert _hash(a, 20)[1:] == (15, 20)
        assert _hash(a, 20)[0] != before[0]  # below the compact revision only the state at it counts
        assert _hash(a, 15) == _hash(b, 15)
        with pytest.raises(CompactedError):
            _hash(a, 14)
        with pytest.raises(FutureRevisionError):
            _hash(a, 10_000)
        # the same writes after the compaction keep the members equal; a different one does not
        for harness in (a, b, c):
            harness.put(b"after", b"x")
        c.put(b"only-c", b"y")
        assert _hash(a) == _hash(b) != _hash(c)
        assert _hash(c, _hash(a)[2]) == _hash(a)
    finally:
        for env in envs:
            env.close()


def test_store_hash_covers_every_database(tmp_path):
    env = open_env(tmp_path / "a")
    try:
        harness = Harness(env)
        _history(harness)
        with env.begin() as txn:
            first, keys = store_hash(env, txn)
        harness.put(b"k1", b"changed")
        with env.begin() as txn:
            second, more_keys = store_hash(env, txn)
        assert first != second and more_keys > keys
    finally:
        env.close()
