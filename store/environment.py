"""Opening a member's two LMDB environments.

<data_dir>/raft  the Raft log and hard state, written only by the raft actor.
<data_dir>/kv    the MVCC keyspace and lease table, written only by the apply actor
                 and read concurrently by frontend and watch (LMDB readers never
                 block the single writer, so reads need not hop through apply).

Every writer commits once per batch, so there is one sync per batch, never one
per request. The Raft log syncs fully (data and meta page): an entry a member
acknowledged must survive any crash. The keyspace skips the meta-page sync
(LMDB's NOMETASYNC keeps the database intact; an OS crash may undo only the last
committed batch): that batch is applied again from the Raft log, which is
durable on a majority, and apply skips entries it already holds.
"""

from __future__ import annotations

import os

import lmdb

RAFT_MAX_DBS = 4


def kv_path(data_dir: str) -> str:
    return os.path.join(data_dir, "kv")


def raft_path(data_dir: str) -> str:
    return os.path.join(data_dir, "raft")


def replicated_databases() -> dict:
    """Every named database of the keyspace environment that Raft entries
    change: what a snapshot carries and what the quota measures."""
    from store import alarms, auth
    from store.mvcc import KeySpace

    return {**KeySpace.DATABASES, **alarms.DATABASES, **auth.DATABASES}


def open_kv(data_dir: str, map_bytes: int, readonly: bool = False) -> lmdb.Environment:
    from store.mvcc import KeySpace

    os.makedirs(kv_path(data_dir), exist_ok=True)
    env = lmdb.open(
        kv_path(data_dir),
        map_size=map_bytes,
        max_dbs=KeySpace.MAX_DBS,
        sync=True,
        metasync=False,
        readahead=False,
        max_readers=256,
        # Readers in other processes (frontend, watch) must not keep stale
        # snapshots of freed pages alive: every read txn is short.
        lock=True,
    )
    env.reader_check()  # clear reader slots of processes killed with kill -9
    return env


def open_raft(data_dir: str, map_bytes: int) -> lmdb.Environment:
    os.makedirs(raft_path(data_dir), exist_ok=True)
    env = lmdb.open(raft_path(data_dir), map_size=map_bytes, max_dbs=RAFT_MAX_DBS, sync=True, metasync=True, readahead=False)
    env.reader_check()
    return env


def prepare_member_store(config, member_name: str) -> None:
    """Create both environments and their databases before any actor starts, so
    readers in other processes never race the creation of a named database."""
    from store.alarms import Alarms
    from store.auth import AuthStore
    from store.mvcc import KeySpace
    from store.raftlog import RaftLogStore

    data_dir = config.data_dir(member_name)
    settings = config.settings
    kv = open_kv(data_dir, settings.kv_map_bytes)
    KeySpace(kv)
    Alarms(kv)
    AuthStore(kv)
    kv.close()
    raft = open_raft(data_dir, settings.raft_map_bytes)
    RaftLogStore(raft)
    raft.close()
