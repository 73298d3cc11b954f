"""Opening a member's stores: the Raft log and the keyspace's LMDB environment.

<data_dir>/wal   the Raft log and hard state, an append-only write-ahead log
                 (store/raftlog.py), written only by the raft actor.
<data_dir>/kv    the MVCC keyspace and lease table, written only by the apply actor
                 and read concurrently by frontend and watch (LMDB readers never
                 block the single writer, so reads need not hop through apply).

Every writer writes once per batch, so there is at most one sync per batch,
never one per request. The Raft log's one fdatasync per Ready makes an entry a
member acknowledged survive any crash, and the log is what makes a write
durable on a majority.

The keyspace does not sync on commit (LMDB's MDB_NOSYNC, as etcd's backend
commits in batches behind its WAL): the apply actor commits each batch, which
readers in other processes see at once through the shared page cache, answers
the batch's requests, and makes the keyspace durable with `env.sync()` off its
reply path (actors/keyspace_sync.py: on a timer, after a number of entries, at
close, and before it reports an installed snapshot). Whatever reads the file
reads a committed transaction and so never depends on the sync: reads and
HashKV in read transactions, and the copies of a snapshot for a follower
(actors/raft/snapshots.py), of Maintenance's snapshot (actors/maintenance.py)
and of a defragment (below), which use mdb_env_copy with compaction: a read
transaction's view, written out in full (the defragment's copy is then synced
before it replaces the file). What a crash does:

* a process crash (kill -9 of any or every actor, of the whole member) loses
  nothing: a committed transaction is in the kernel's page cache, which
  outlives the process, and the next sync writes it out;
* an OS crash or power loss may undo the batches committed since the last
  sync. The keyspace records the applied index in the same transaction as the
  writes, so it comes back consistent at some older applied index A; the raft
  actor never compacts its log past the index apply reported DURABLE (synced),
  so entries A+1... are still in the log and apply asks for them (ApplyNeed)
  at start, exactly as after a clean restart. Nothing acknowledged is lost:
  an acknowledged write is in the synced log of a majority.
* integrity: LMDB documents MDB_NOSYNC (without MDB_WRITEMAP) as keeping
  the database intact -- losing only the last transactions -- *if the file
  system preserves write order*. Where it does not, a power loss between two
  syncs could leave on disk a meta page whose pages did not make it, or pages
  of the last synced tree that a later transaction reused. The sync period
  bounds that window, not the risk; MDB_NOMETASYNC alone (synced pages, an
  unsynced meta page, as before) had no such window but put an fdatasync on
  every write's path, and MDB_WRITEMAP|MDB_NOSYNC would be worse (no write
  order at all), so neither writemap nor mapasync is used. A keyspace torn
  that way usually fails to open or read (MDB_CORRUPTED, MDB_PAGE_NOTFOUND: the apply
  actor stops in a crash loop the supervisor reports) and otherwise differs
  from the others' HashKV (the corruption check raises CORRUPT); the member is
  then rebuilt as one that lost its data dir (`cairn node --rejoin`, README).
  In practice the window is small: the kernel writes a dirty page back on its
  own only once it is ~30 s old (vm.dirty_expire_centisecs) or under memory
  pressure, and every sync comes 100 ms after the last. Where even that is too
  much (a whole cluster on one power feed and a file system without ordered
  writes), `member.keyspace_sync_ms: 0` opens the keyspace with LMDB's sync on
  every commit (MDB_NOMETASYNC, as before): one more fdatasync on each write's
  path, and the raft log's compaction is then bounded by apply alone.
"""

from __future__ import annotations

import os
import shutil

import lmdb

from store.raftlog import fsync_path

def kv_path(data_dir: str) -> str:
    return os.path.join(data_dir, "kv")


def wal_path(data_dir: str) -> str:
    return os.path.join(data_dir, "wal")


def replicated_databases() -> dict:
    """Every named database of the keyspace environment that Raft entries
    change: what a snapshot carries and what the quota measures."""
    from store import alarms, auth
    from store.mvcc import KeySpace

    return {**KeySpace.DATABASES, **alarms.DATABASES, **auth.DATABASES}


def open_kv(data_dir: str, map_bytes: int, readonly: bool = False, sync_on_commit: bool = False) -> lmdb.Environment:
    from store.mvcc import KeySpace

    os.makedirs(kv_path(data_dir), exist_ok=True)
    env = lmdb.open(
        kv_path(data_dir),
        map_size=map_bytes,
        max_dbs=KeySpace.MAX_DBS,
        # no sync on commit unless asked (member.keyspace_sync_ms: 0): see the
        # module docstring; the apply actor syncs
        sync=sync_on_commit,
        metasync=False,
        readahead=False,
        max_readers=256,
        # Readers in other processes (frontend, watch) must not keep stale
        # snapshots of freed pages alive: every read txn is short.
        lock=True,
    )
    env.reader_check()  # clear reader slots of processes killed with kill -9
    return env


def kv_file(data_dir: str) -> str:
    return os.path.join(kv_path(data_dir), "data.mdb")


def defragment_kv(env: lmdb.Environment, data_dir: str, map_bytes: int, sync_on_commit: bool = False) -> lmdb.Environment:
    """Replace the keyspace file by its compacted copy (mdb_env_copy with
    compaction: no free pages) and return the environment opened on it; env is
    closed. Only the writer (apply) calls this, between transactions, so the
    copy is the whole keyspace. The copy goes to <kv>.defrag/ and the
    directories are swapped by renames: a crash before the first rename leaves
    the old keyspace (the partial copy is removed next time), a crash between
    them is finished by recover_defragment at the next start. Readers in other
    processes that still have the old files open read them unchanged until they
    reopen (the renamed-away files live on until their last user closes them);
    the new directory gets a fresh lock file."""
    directory = kv_path(data_dir)
    copy_dir, old_dir = directory + ".defrag", directory + ".old"
    shutil.rmtree(copy_dir, ignore_errors=True)
    shutil.rmtree(old_dir, ignore_errors=True)
    os.makedirs(copy_dir)
    try:
        env.copy(copy_dir, compact=True)
    except BaseException:
        shutil.rmtree(copy_dir, ignore_errors=True)
        raise
    fsync_path(os.path.join(copy_dir, "data.mdb"))
    env.close()
    os.rename(directory, old_dir)
    os.rename(copy_dir, directory)
    fsync_path(os.path.dirname(directory))
    # The old data file goes now (its readers keep it until they reopen); its lock
    # file stays until the next defragment: LMDB refuses to open, in a process
    # that still has the old environment open, a lock file whose inode is the
    # old one's, and a lock file removed now could hand its inode to the new one.
    try:
        os.unlink(os.path.join(old_dir, "data.mdb"))
    except FileNotFoundError:
        pass
    return open_kv(data_dir, map_bytes, sync_on_commit=sync_on_commit)


def recover_defragment(data_dir: str) -> None:
    """Finish a defragment cut short between its two renames (see defragment_kv),
    or drop a partial copy."""
    directory = kv_path(data_dir)
    copy_dir, old_dir = directory + ".defrag", directory + ".old"
    if os.path.exists(copy_dir) and os.path.exists(old_dir):  # the first rename was made: the copy is whole
        if os.path.exists(directory):
            shutil.rmtree(directory)  # an empty keyspace a restarted reader opened in between
        os.rename(copy_dir, directory)
    shutil.rmtree(copy_dir, ignore_errors=True)
    shutil.rmtree(old_dir, ignore_errors=True)


def open_raft_log(data_dir: str):
    """The member's Raft log (store/raftlog.py), moved first from the LMDB
    environment that held it before the WAL, if the data dir still has one.
    Its `repairs` say what opening it did (migrated, torn tail cut off), for
    the caller to log; CorruptLog means the member must not start."""
    from store.raftlog import RaftLogStore
    from store.raftlog_lmdb import migrate_legacy

    os.makedirs(data_dir, exist_ok=True)
    notes = migrate_legacy(data_dir, wal_path(data_dir))
    store = RaftLogStore(wal_path(data_dir))
    store.repairs[:0] = notes
    return store


def check_raft_log(data_dir: str) -> list[str]:
    """Migrate the Raft log from LMDB if needed, verify the checksum of every
    frame and cut off a torn tail, without decoding the records (the raft
    actor does that when it opens the log): what was done, for the caller to
    log. Raises CorruptLog on damage."""
    from store.raftlog import check_segments
    from store.raftlog_lmdb import migrate_legacy

    os.makedirs(data_dir, exist_ok=True)
    return migrate_legacy(data_dir, wal_path(data_dir)) + check_segments(wal_path(data_dir))


def prepare_member_store(config, member_name: str) -> list[str]:
    """Create the keyspace's databases before any actor starts, so readers in
    other processes never race the creation of a named database; migrate,
    verify and repair the Raft log (check_raft_log), so a damaged log stops
    the member here (CorruptLog) rather than in a crash-looping raft actor.
    Returns the Raft log's repairs, for the caller to log."""
    from store.alarms import Alarms
    from store.auth import AuthStore
    from store.mvcc import KeySpace

    data_dir = config.data_dir(member_name)
    settings = config.settings
    if os.path.exists(data_dir):
        recover_defragment(data_dir)
    kv = open_kv(data_dir, settings.kv_map_bytes)
    KeySpace(kv)
    Alarms(kv)
    AuthStore(kv)
    kv.sync(True)  # the keyspace does not sync on commit (see the module docstring)
    kv.close()
    return check_raft_log(data_dir)
