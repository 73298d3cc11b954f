"""The Raft log's former home, an LMDB environment, read once to move it into
the write-ahead log (store/raftlog.py) when a member made before the WAL starts.

Layout of the environment <data_dir>/raft (synced data and meta page: two syncs
per Ready, which is why it was replaced):
  db "entries": key = index as 8-byte big-endian, value = CBOR [term, data], or
                [term, data, kind] for an entry whose kind is not ENTRY_NORMAL
  db "meta":    b"hard_state" -> CBOR [term, vote, commit]
                b"snapshot"   -> CBOR [index, term, [voters...]] or, with learners,
                                 [index, term, [voters...], [learners...]]

Migration is crash-safe by renames: the WAL is written whole in <data_dir>/wal.migrating,
synced, renamed to <data_dir>/wal (the directory synced), and only then is the
LMDB environment removed. A crash before the rename leaves the LMDB log to be
migrated again (the partial copy is discarded); a crash after it leaves a WAL
that is complete, and the LMDB files are removed at the next open.
"""

from __future__ import annotations

import os
import shutil
import struct

import cbor2

from store.raftlog import RaftLogStore, fsync_path, segment_seqs
from store.wal_format import entry_from_record, snapshot_from_record
from transport.raft_messages import Entry, HardState, SnapshotMeta

LEGACY_DIRECTORY = "raft"
_INDEX = struct.Struct(">Q")
HARD_STATE_KEY = b"hard_state"
SNAPSHOT_KEY = b"snapshot"
RAFT_MAX_DBS = 4


def legacy_path(data_dir: str) -> str:
    return os.path.join(data_dir, LEGACY_DIRECTORY)


def load_legacy(path: str) -> tuple[HardState, SnapshotMeta | None, tuple[Entry, ...]]:
    """The hard state, snapshot and entries of an LMDB Raft log."""
    import lmdb

    # The map must cover the file; LMDB's own default (10 MiB) may not.
    map_bytes = max(os.path.getsize(os.path.join(path, "data.mdb")), 1 << 20)
    env = lmdb.open(path, map_size=map_bytes, max_dbs=RAFT_MAX_DBS, readahead=False)
    try:
        with env.begin(write=True) as txn:  # py-lmdb keeps handles opened in a write txn
            entries_db = env.open_db(b"entries", txn=txn)
            meta_db = env.open_db(b"meta", txn=txn)
        with env.begin() as txn:
            raw = txn.get(HARD_STATE_KEY, db=meta_db)
            hard_state = HardState(*cbor2.loads(raw)) if raw else HardState()
            raw = txn.get(SNAPSHOT_KEY, db=meta_db)
            snapshot = snapshot_from_record(cbor2.loads(raw)) if raw else None
            first = snapshot.index + 1 if snapshot else 1
            entries = []
            cursor = txn.cursor(db=entries_db)
            if cursor.set_range(_INDEX.pack(first)):
                for key, value in cursor:
                    entries.append(entry_from_record(_INDEX.unpack(key)[0], cbor2.loads(value)))
    finally:
        env.close()
    return hard_state, snapshot, tuple(entries)


def migrate_legacy(data_dir: str, wal_dir: str) -> list[str]:
    """Move an LMDB Raft log in data_dir into the WAL at wal_dir (see the module
    docstring); what was done, for the caller to log ([] if there was nothing)."""
    legacy = legacy_path(data_dir)
    if not os.path.exists(os.path.join(legacy, "data.mdb")):
        return []
    if os.path.isdir(wal_dir) and segment_seqs(wal_dir):
        shutil.rmtree(legacy)  # migrated before a crash that came ahead of this removal
        return [f"{legacy}: removed the LMDB Raft log, already migrated to {wal_dir}"]
    staging = wal_dir + ".migrating"
    shutil.rmtree(staging, ignore_errors=True)
    hard_state, snapshot, entries = load_legacy(legacy)
    store = RaftLogStore(staging)
    try:
        # One record: the snapshot (the log's start), then the entries after it.
        store.save(hard_state, entries, snapshot)
    finally:
        store.close()
    if os.path.isdir(wal_dir):
        os.rmdir(wal_dir)  # an empty one; a WAL with segments was handled above
    os.rename(staging, wal_dir)
    fsync_path(data_dir)
    shutil.rmtree(legacy)
    first = entries[0].index if entries else None
    last = entries[-1].index if entries else (snapshot.index if snapshot else 0)
    return [f"{legacy}: migrated the LMDB Raft log to {wal_dir} (term {hard_state.term}, "
            f"entries {first}..{last}, snapshot at {snapshot.index if snapshot else 0}) and removed it"]
