"""A real LMDB environment per test, and a small harness over KeySpace."""

from __future__ import annotations

import contextlib

import lmdb
import pytest

from store.mvcc import KeySpace
from transport.messages import (
    CompactionRequest,
    DeleteRangeRequest,
    PutRequest,
    RangeRequest,
    ResponseHeader,
)

HEADER = ResponseHeader(cluster_id=7, member_id=8, revision=0, raft_term=9)
MAP_BYTES = 256 * 1024 * 1024  # sparse file: costs only what is written


def header(revision: int) -> ResponseHeader:
    return ResponseHeader(HEADER.cluster_id, HEADER.member_id, revision, HEADER.raft_term)


def open_env(path, map_bytes: int = MAP_BYTES) -> lmdb.Environment:
    return lmdb.open(str(path), map_size=map_bytes, max_dbs=KeySpace.MAX_DBS, sync=False, metasync=False)


class Harness:
    """Each call is its own committed write (or read) transaction, unless made
    on the writer of `batch()`, which shares one transaction like the apply actor."""

    def __init__(self, env: lmdb.Environment, max_txn_ops: int = 128):
        self.env = env
        self.space = KeySpace(env)
        self.max_txn_ops = max_txn_ops

    def execute(self, request):
        with self.env.begin(write=True) as txn:
            return self.space.writer(txn, HEADER, self.max_txn_ops).execute(request)

    @contextlib.contextmanager
    def batch(self):
        with self.env.begin(write=True) as txn:
            yield self.space.writer(txn, HEADER, self.max_txn_ops)

    @contextlib.contextmanager
    def reading(self):
        with self.env.begin() as txn:
            yield self.space.reader(txn, HEADER)

    def put(self, key: bytes, value: bytes = b"", **options):
        return self.execute(PutRequest(key, value, **options))

    def delete(self, key: bytes, range_end: bytes = b"", **options):
        return self.execute(DeleteRangeRequest(key, range_end, **options))

    def range(self, key: bytes, range_end: bytes = b"", **options):
        with self.reading() as reader:
            return reader.range(RangeRequest(key, range_end, **options))

    def get(self, key: bytes, revision: int = 0):
        kvs = self.range(key, revision=revision).kvs
        return kvs[0] if kvs else None

    def revision(self) -> int:
        with self.env.begin() as txn:
            return self.space.current_revision(txn)

    def compact(self, revision: int, max_records: int = 0):
        with self.env.begin(write=True) as txn:
            return self.space.writer(txn, HEADER).compact(CompactionRequest(revision), max_records)

    def lease(self, method: str, *args):
        with self.env.begin(write=True) as txn:
            return getattr(self.space.writer(txn, HEADER), method)(*args)

    def entries(self, db_name: str) -> int:
        with self.env.begin() as txn:
            return txn.stat(getattr(self.space, db_name))["entries"]


@pytest.fixture
def env(tmp_path):
    environment = open_env(tmp_path / "kv")
    yield environment
    environment.close()


@pytest.fixture
def store(env):
    return Harness(env)
