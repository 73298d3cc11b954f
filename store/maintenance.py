"""Maintenance over a keyspace environment: Hash, HashKV, snapshot status and
restoring a snapshot into a new member's data dir.

Hashes are zlib.crc32 (stdlib), fed with length-prefixed fields so different
contents never feed the same byte stream.

* store_hash (etcd's Hash): every replicated database, every key and value, in
  LMDB order. Equal on members that applied the same entries; a snapshot file's
  hash (`cairnctl snapshot status`) is the store_hash of its copy.
* hash_kv (etcd's HashKV): the MVCC history up to a revision, independent of
  how far each member's physical compaction has got (it runs in budgeted steps,
  so members hold different leftovers below the compact revision C): it hashes
  the keyspace as it stood at C (each visible key's KeyValue), then every
  record with C < revision <= the requested one, in revision order. Same
  history => same hash on every member.

Restore (`cairn snapshot restore`, offline, as etcdutl snapshot restore): the
member's new data dir gets the snapshot's keyspace, with the applied index set
to the snapshot index S shared by every member restored from the same file, and
a Raft log that is empty and begins after (S, term 1) with the new config's
members as voters; the old cluster's alarms are dropped (they name its member
ids). By default the revision is bumped (etcd's --bump-revision) and marked
compacted (--mark-compacted), so a watcher of the old cluster that resumes from
its last revision gets a compacted error, never revisions going backwards.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import zlib

import lmdb

from transport import snapshot_file
from store import meta
from store.environment import replicated_databases
from store.mvcc import KeySpace
from store.reads import View
from store.revisions import revision_bytes, revision_main
from transport.errors import CompactedError, FutureRevisionError

DEFAULT_BUMP_REVISION = 1_000_000
_LENGTH = struct.Struct(">I")
_KV = struct.Struct(">QQQq")


def _feed(crc: int, data: bytes) -> int:
    return zlib.crc32(data, zlib.crc32(_LENGTH.pack(len(data)), crc))


def store_hash(env: lmdb.Environment, txn) -> tuple[int, int]:
    """(crc32 over every replicated database, total keys in them)."""
    crc, total = 0, 0
    for name, (dupsort, dupfixed) in sorted(replicated_databases().items()):
        try:
            db = env.open_db(name, txn=txn, create=False, dupsort=dupsort, dupfixed=dupfixed)
        except lmdb.NotFoundError:
            continue
        crc = _feed(crc, name)
        for key, value in txn.cursor(db=db).iternext(keys=True, values=True):
            crc = _feed(_feed(crc, key), value)
            total += 1
    return crc, total


def hash_kv(space: KeySpace, txn, revision: int = 0) -> tuple[int, int, int]:
    """(hash, compact_revision, hash_revision) of the history up to revision
    (0 = latest). Raises CompactedError below the compact revision and
    FutureRevisionError past the current one, as etcd's HashKV."""
    current = space.current_revision(txn)
    compact = space.compact_revision(txn)
    if revision <= 0:
        revision = current
    if revision > current:
        raise FutureRevisionError()
    if revision < compact:
        raise CompactedError(compact_revision=compact)
    crc = 0
    if compact:
        view = View(txn, space, current, compact)
        for kv in view.iterate(b"\x00", None, compact):
            crc = _feed(_feed(crc, _KV.pack(kv.create_revision, kv.mod_revision, kv.version, kv.lease) + kv.key), kv.value)
    cursor = txn.cursor(db=space.revs_db)
    if cursor.set_range(revision_bytes(compact + 1)):
        for key, value in cursor.iternext(keys=True, values=True):
            if revision_main(key) > revision:
                break
            crc = _feed(_feed(crc, key), value)
    return crc, compact, revision


def open_snapshot(path: str, workdir: str) -> lmdb.Environment:
    """Verify a snapshot file and open its copy (written under workdir) read-only."""
    payload = snapshot_file.verify(path)
    directory = snapshot_file.copy_payload(path, payload, workdir)
    try:
        return lmdb.open(directory, readonly=True, lock=False, max_dbs=KeySpace.MAX_DBS, subdir=True)
    except lmdb.Error as error:
        raise snapshot_file.SnapshotFileError(f"{path} is not a cairn snapshot: {error}") from None


def _snapshot_meta(path: str, workdir: str) -> dict:
    """The keyspace's hash, revisions and applied index of a verified snapshot
    file, read from its copy under workdir (left there for a restore)."""
    env = open_snapshot(path, workdir)
    try:
        return _keyspace_meta(env, path)
    finally:
        env.close()


def _keyspace_meta(env: lmdb.Environment, path: str) -> dict:
    with env.begin() as txn:
        try:
            meta_db = env.open_db(b"kv_meta", txn=txn, create=False)
        except lmdb.NotFoundError:
            raise snapshot_file.SnapshotFileError(f"{path} is not a cairn snapshot (no keyspace in it)") from None
        crc, total = store_hash(env, txn)
        return {
            "hash": crc,
            "total_keys": total,
            "revision": meta.get_int(txn, meta_db, meta.CURRENT_REVISION, meta.FIRST_REVISION),
            "compact_revision": meta.get_int(txn, meta_db, meta.COMPACT_REVISION, 0),
            "applied_index": meta.get_int(txn, meta_db, meta.APPLIED_INDEX, 0),
            "layout_version": meta.get_int(txn, meta_db, meta.LAYOUT_VERSION, 0),
        }


def snapshot_status(path: str) -> dict:
    """etcdutl snapshot status: hash, revision, total keys, total size (+ more)."""
    workdir = tempfile.mkdtemp(prefix="cairn-snapshot-")
    try:
        status = _snapshot_meta(path, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    status["total_size"] = os.path.getsize(path)
    return status


class RestoreError(Exception):
    pass


def restore_member(path: str, config, name: str, bump_revision: int = DEFAULT_BUMP_REVISION,
                   mark_compacted: bool = True) -> dict:
    """Create member `name`'s data dir (from config) holding the snapshot at
    path; see the module docstring. Returns what was restored."""
    from store.environment import open_kv, open_raft_log, prepare_member_store
    from store.snapshot_install import replace_keyspace
    from transport.raft_messages import HardState, SnapshotMeta

    member = config.member(name)
    data_dir = config.data_dir(name)
    if os.path.exists(data_dir) and os.listdir(data_dir):
        raise RestoreError(f"data dir {data_dir} exists and is not empty: restore creates a new member's data dir")
    if bump_revision < 0:
        raise RestoreError("--bump-revision must be >= 0")
    workdir = tempfile.mkdtemp(prefix="cairn-restore-")
    created = not os.path.exists(data_dir)
    try:
        status = _snapshot_meta(path, workdir)
        index = max(status["applied_index"], 1)  # the same on every member restored from this file
        revision = status["revision"] + bump_revision
        prepare_member_store(config, name)
        kv = open_kv(data_dir, config.settings.kv_map_bytes)
        try:
            space = KeySpace(kv)
            replace_keyspace(kv, space, workdir)
            with kv.begin(write=True) as txn:
                space.set_applied_index(txn, index)
                meta.put_int(txn, space.meta_db, meta.CURRENT_REVISION, revision)
                if mark_compacted and bump_revision:
                    meta.put_int(txn, space.meta_db, meta.COMPACT_REVISION, revision)
                from store import alarms

                for alarm_db in alarms.DATABASES:
                    txn.drop(kv.open_db(alarm_db, txn=txn), delete=False)
            kv.sync(True)  # the keyspace does not sync on commit (store/environment.py)
        finally:
            kv.close()
        raft_log = open_raft_log(data_dir)
        try:
            voters = tuple(m.id for m in config.members)
            raft_log.save(HardState(term=1, vote=0, commit=index), (), SnapshotMeta(index, 1, voters))
        finally:
            raft_log.close()
    except BaseException:
        if created:
            shutil.rmtree(data_dir, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"member": name, "member_id": member.id, "cluster_id": config.id, "data_dir": data_dir,
            "index": index, "revision": revision, "snapshot_revision": status["revision"],
            "compact_revision": revision if (mark_compacted and bump_revision) else status["compact_revision"]}
