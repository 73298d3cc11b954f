"""Replacing a member's keyspace with a snapshot received from the leader.

The snapshot is an LMDB copy of the leader's keyspace environment. Its
databases are copied into the live environment in ONE write transaction, so
readers in other processes (frontend, watch) see either the old keyspace or the
new one, never a mix, and a crash mid-install leaves the old one intact. The
copy carries its own applied index, which becomes this member's.
"""

from __future__ import annotations

import lmdb

from store.environment import replicated_databases
from store.mvcc import KeySpace


def replace_keyspace(env: lmdb.Environment, keyspace: KeySpace, snapshot_path: str) -> int:
    """Copy every keyspace database from the LMDB environment at snapshot_path
    into env; returns the applied index the snapshot carries."""
    source = lmdb.open(snapshot_path, readonly=True, lock=False, max_dbs=KeySpace.MAX_DBS, subdir=True)
    try:
        with env.begin(write=True) as txn, source.begin() as source_txn:
            for name, (dupsort, dupfixed) in replicated_databases().items():
                target = env.open_db(name, txn=txn, dupsort=dupsort, dupfixed=dupfixed)
                try:
                    origin = source.open_db(name, txn=source_txn, create=False, dupsort=dupsort, dupfixed=dupfixed)
                except lmdb.NotFoundError:  # a leader whose store predates this database
                    txn.drop(target, delete=False)
                    continue
                txn.drop(target, delete=False)
                items = source_txn.cursor(db=origin).iternext(keys=True, values=True)
                # dupsort databases take their duplicates one by one; the others
                # are appended in key order, LMDB's fastest way to load.
                txn.cursor(db=target).putmulti(items, dupdata=dupsort, append=not dupsort)
            return keyspace.applied_index(txn)
    finally:
        source.close()
