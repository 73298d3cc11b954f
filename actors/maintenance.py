"""The frontend's maintenance requests: Snapshot (etcd's Maintenance.Snapshot),
Hash and HashKV. Part of the frontend actor (it owns the client socket and the
read-only view of the keyspace); kept apart so the frontend only routes.

Snapshot, pulled by the client piece by piece (transport/messages.py:
SnapshotRequest): the first request starts a compacting copy of the keyspace
environment (mdb_env_copy: one read transaction, so the copy is exactly the
keyspace at one revision whatever apply writes meanwhile) in a background
thread, so the frontend keeps serving; once the copy is made and hashed, the
request is answered with the first piece. Memory is bounded by one piece per
request; disk by MAX_TRANSFERS copies under <data_dir>/backups, each removed
after its last piece or after IDLE_S without a request, and all of them when
the frontend starts.

Hash and HashKV are answered at once from this member's keyspace (local, as in
etcd: comparing members' answers is their point).

Defragment (etcd's, one member per request): handed to the apply actor, the
keyspace's only writer, which replaces the file by its compacted copy and
tells frontend, watch and lease to reopen it (actors/apply.py: defragment);
its KeyspaceReplaced answers the client. One at a time per member.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time

import lmdb

from store import maintenance
from store.mvcc import KeySpace
from transport.errors import CairnError, InvalidArgumentError, TooManyRequestsError
from transport.messages import (
    Defragment,
    DefragmentRequest,
    DefragmentResponse,
    KeyspaceReplaced,
    HashKVRequest,
    HashKVResponse,
    HashRequest,
    HashResponse,
    ResponseHeader,
    SnapshotRequest,
    SnapshotResponse,
)

MAINTENANCE_REQUESTS = (SnapshotRequest, HashRequest, HashKVRequest, DefragmentRequest)
PIECE_BYTES = 1024 * 1024
MAX_TRANSFERS = 2
IDLE_S = 60.0


def backups_dir(data_dir: str) -> str:
    return os.path.join(data_dir, "backups")


class _Transfer:
    __slots__ = ("id", "directory", "path", "ready", "error", "size", "sha256", "revision", "waiting", "last_used")

    def __init__(self, transfer_id: int, directory: str):
        self.id = transfer_id
        self.directory = directory
        self.path = os.path.join(directory, "data.mdb")
        self.ready = threading.Event()
        self.error = ""
        self.size = 0
        self.sha256 = b""
        self.revision = 0
        self.waiting: tuple[bytes, int] | None = None  # the first request, answered once the copy is ready
        self.last_used = time.monotonic()


class Maintenance:
    def __init__(self, frontend):
        self.frontend = frontend
        self.directory = backups_dir(frontend.data_dir)
        shutil.rmtree(self.directory, ignore_errors=True)  # copies of a previous run are useless
        self.transfers: dict[int, _Transfer] = {}
        self.next_id = int.from_bytes(os.urandom(6), "big") << 8
        self.defragmenting: tuple[bytes, int] | None = None  # the client waiting for apply's KeyspaceReplaced

    def defragmented(self, message: KeyspaceReplaced) -> None:
        if self.defragmenting is None or self.defragmenting[1] != message.request_id:
            return  # the frontend restarted meanwhile: nobody waits
        identity, request_id = self.defragmenting
        self.defragmenting = None
        if message.error:
            self.frontend.reply_error(identity, request_id, CairnError(f"etcdserver: defragment failed: {message.error}"))
            return
        self.frontend.log.info("defragment_finished", request_id=request_id, size_before=message.size_before,
                               size_after=message.size_after, pause_ms=message.pause_ms)
        self.frontend.reply(identity, request_id, DefragmentResponse(self.header(self.frontend.revision)))

    def copying(self) -> bool:
        """Whether a snapshot copy thread may be reading the keyspace environment."""
        return any(not transfer.ready.is_set() for transfer in self.transfers.values())

    # ------------------------------------------------------------------ requests

    def handle(self, identity: bytes, request_id: int, request) -> None:
        if isinstance(request, DefragmentRequest):
            if self.defragmenting is not None:
                raise TooManyRequestsError("etcdserver: a defragment is already running on this member")
            self.defragmenting = (identity, request_id)
            self.frontend.log.info("defragment_started", request_id=request_id)
            self.frontend.send(self.frontend.to_apply, Defragment(request_id))
        elif isinstance(request, SnapshotRequest):
            if request.snapshot_id == 0:
                self.start_snapshot(identity, request_id)
            else:
                self.frontend.reply(identity, request_id, self.piece(request))
        elif isinstance(request, HashKVRequest):
            front = self.frontend
            with front.env.begin() as txn:
                crc, compact, revision = maintenance.hash_kv(front.keyspace, txn, request.revision)
                current = front.keyspace.current_revision(txn)
            front.reply(identity, request_id, HashKVResponse(self.header(current), crc, compact, revision))
        else:
            front = self.frontend
            with front.env.begin() as txn:
                crc, _ = maintenance.store_hash(front.env, txn)
                current = front.keyspace.current_revision(txn)
            front.reply(identity, request_id, HashResponse(self.header(current), crc))

    def header(self, revision: int) -> ResponseHeader:
        front = self.frontend
        return ResponseHeader(front.config.id, front.member.id, revision, front.raft.term)

    def start_snapshot(self, identity: bytes, request_id: int) -> None:
        if len(self.transfers) >= MAX_TRANSFERS:
            raise TooManyRequestsError(f"etcdserver: too many snapshots in progress on this member (at most {MAX_TRANSFERS})")
        self.next_id += 1
        transfer = _Transfer(self.next_id, os.path.join(self.directory, f"snapshot-{self.next_id:x}"))
        transfer.waiting = (identity, request_id)
        self.transfers[transfer.id] = transfer
        self.frontend.log.info("snapshot_copy_started", request_id=request_id, snapshot_id=transfer.id)
        threading.Thread(target=self._copy, args=(transfer,), name="backup-copy", daemon=True).start()

    def _copy(self, transfer: _Transfer) -> None:
        try:
            os.makedirs(transfer.directory, exist_ok=True)
            self.frontend.env.copy(transfer.directory, compact=True)
            transfer.size = os.path.getsize(transfer.path)
            digest = hashlib.sha256()
            with open(transfer.path, "rb") as handle:
                while data := handle.read(PIECE_BYTES):
                    digest.update(data)
            transfer.sha256 = digest.digest()
            copy = lmdb.open(transfer.directory, readonly=True, lock=False, max_dbs=KeySpace.MAX_DBS)
            try:
                space = KeySpace(copy)
                with copy.begin() as txn:
                    transfer.revision = space.current_revision(txn)
            finally:
                copy.close()
        except Exception as error:  # answered as an error; the member keeps serving
            transfer.error = f"{type(error).__name__}: {error}"
        transfer.ready.set()

    def piece(self, request: SnapshotRequest) -> SnapshotResponse:
        transfer = self.transfers.get(request.snapshot_id)
        if transfer is None or not transfer.ready.is_set() or transfer.error:
            raise InvalidArgumentError(f"etcdserver: snapshot {request.snapshot_id:x} is unknown or expired on this member")
        if request.offset > transfer.size:
            raise InvalidArgumentError(f"etcdserver: offset {request.offset} is past the snapshot's {transfer.size} bytes")
        with open(transfer.path, "rb") as handle:
            handle.seek(request.offset)
            blob = handle.read(PIECE_BYTES)
        transfer.last_used = time.monotonic()
        remaining = transfer.size - request.offset - len(blob)
        if remaining == 0:
            self.frontend.log.info("snapshot_sent", snapshot_id=transfer.id, bytes=transfer.size, revision=transfer.revision)
            self._drop(transfer.id)
        return SnapshotResponse(self.header(transfer.revision), transfer.id, request.offset, blob, transfer.size,
                                remaining, transfer.sha256)

    # ------------------------------------------------------------------ timers

    def on_timer(self, now: float) -> None:
        for transfer in list(self.transfers.values()):
            if transfer.waiting is not None and transfer.ready.is_set():
                identity, request_id = transfer.waiting
                transfer.waiting = None
                transfer.last_used = now
                if transfer.error:
                    self.frontend.log.error("snapshot_copy_failed", request_id=request_id, error=transfer.error)
                    self._drop(transfer.id)
                    self.frontend.reply_error(identity, request_id, CairnError(f"etcdserver: snapshot failed: {transfer.error}"))
                    continue
                self.frontend.log.info("snapshot_copied", request_id=request_id, snapshot_id=transfer.id,
                                       bytes=transfer.size, revision=transfer.revision)
                try:
                    self.frontend.reply(identity, request_id, self.piece(SnapshotRequest(transfer.id, 0)))
                except CairnError as error:
                    self.frontend.reply_error(identity, request_id, error)
            elif transfer.ready.is_set() and now - transfer.last_used > IDLE_S:
                self.frontend.log.warning("snapshot_abandoned", snapshot_id=transfer.id)
                self._drop(transfer.id)

    def answer_pending(self, error: CairnError) -> int:
        answered = 0
        if self.defragmenting is not None:
            self.frontend.reply_error(*self.defragmenting, error)
            self.defragmenting = None
            answered += 1
        for transfer in self.transfers.values():
            if transfer.waiting is not None:
                self.frontend.reply_error(*transfer.waiting, error)
                transfer.waiting = None
                answered += 1
        return answered

    def _drop(self, transfer_id: int) -> None:
        transfer = self.transfers.pop(transfer_id, None)
        if transfer is not None:
            shutil.rmtree(transfer.directory, ignore_errors=True)

    def close(self) -> None:
        for transfer in list(self.transfers.values()):
            transfer.ready.wait(30)  # the copy thread uses the environment being closed
            self._drop(transfer.id)
