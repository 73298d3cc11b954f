"""Streaming keyspace snapshots between raft actors, in chunks, with bounded memory.

Theory of operation
-------------------
When the leader's core wants to send MSG_SNAP (a follower needs entries that
were compacted away, or lost its data dir), the raft actor does not put a whole
keyspace in one message. The sender makes a consistent copy of the LMDB
keyspace (mdb_env_copy, in a background thread so heartbeats keep flowing),
then streams the file in pieces (RaftLimits.snapshot_chunk_bytes) with at
most snapshot_window_chunks unacknowledged, so memory is bounded by their
product per transfer. The receiver writes the chunks to a file, fsyncs it, and hands it to
its apply actor, which replaces the keyspace in one transaction; only then is
the MSG_SNAP stepped into the follower's core.

The copy carries its own applied index A, which may be past the snapshot's
index S (apply kept going while the copy was made). The follower's apply actor
skips entries up to A when the leader then sends S+1..., so nothing is applied
twice.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from dataclasses import dataclass, field

from actors.raft.limits import RaftLimits
from transport.messages import InstallSnapshot, SnapshotChunk, SnapshotChunkAck



def snapshot_dir(data_dir: str) -> str:
    return os.path.join(data_dir, "snapshots")


@dataclass
class _Outgoing:
    snapshot_id: int
    message: object
    directory: str
    ready: threading.Event = field(default_factory=threading.Event)
    error: str = ""
    size: int = 0
    next_offset: int = 0
    acked_offset: int = 0
    last_progress: float = field(default_factory=time.monotonic)


class SnapshotSender:
    def __init__(self, data_dir: str, kv_env, member_id: int, log, limits: RaftLimits = RaftLimits()):
        self.limits = limits
        self.data_dir = data_dir
        self.kv_env = kv_env
        self.member_id = member_id
        self.log = log
        self.transfers: dict[int, _Outgoing] = {}
        self.next_id = int(time.time() * 1000) << 8

    def start(self, message) -> None:
        peer = message.to
        if peer in self.transfers:
            return  # one transfer per peer at a time; the core retries after report_snapshot
        self.next_id += 1
        directory = os.path.join(snapshot_dir(self.data_dir), f"out-{peer:x}-{self.next_id}")
        transfer = _Outgoing(self.next_id, message, directory)
        self.transfers[peer] = transfer
        self.log.info("snapshot_send_started", peer=peer, index=message.snapshot.index, term=message.snapshot.term)
        threading.Thread(target=self._copy, args=(transfer,), name="snapshot-copy", daemon=True).start()

    def _copy(self, transfer: _Outgoing) -> None:
        try:
            os.makedirs(transfer.directory, exist_ok=True)
            self.kv_env.copy(transfer.directory, compact=True)
            transfer.size = os.path.getsize(os.path.join(transfer.directory, "data.mdb"))
        except Exception as error:  # reported to the core as a failed snapshot, never fatal
            transfer.error = f"{type(error).__name__}: {error}"
        transfer.ready.set()

    def pump(self, send_frame, encode) -> list[tuple[int, bool]]:
        """Send what the windows allow; returns [(peer, ok)] of finished transfers."""
        finished = []
        now = time.monotonic()
        for peer, transfer in list(self.transfers.items()):
            if not transfer.ready.is_set():
                continue
            if transfer.error or now - transfer.last_progress > self.limits.snapshot_stall_s:
                self.log.warning("snapshot_send_failed", peer=peer, error=transfer.error or "stalled")
                finished.append((peer, False))
                self._drop(peer)
                continue
            if transfer.acked_offset >= transfer.size and transfer.next_offset >= transfer.size:
                self.log.info("snapshot_sent", peer=peer, bytes=transfer.size, index=transfer.message.snapshot.index)
                finished.append((peer, True))
                self._drop(peer)
                continue
            if now - transfer.last_progress > self.limits.snapshot_resend_after_s and transfer.next_offset > transfer.acked_offset:
                transfer.next_offset = transfer.acked_offset  # a chunk was lost: go back to the last ack
            path = os.path.join(transfer.directory, "data.mdb")
            with open(path, "rb") as handle:
                while (
                    transfer.next_offset < transfer.size
                    and transfer.next_offset - transfer.acked_offset < self.limits.snapshot_window_chunks * self.limits.snapshot_chunk_bytes
                ):
                    handle.seek(transfer.next_offset)
                    data = handle.read(self.limits.snapshot_chunk_bytes)
                    last = transfer.next_offset + len(data) >= transfer.size
                    chunk = SnapshotChunk(self.member_id, transfer.snapshot_id, transfer.next_offset, data, last,
                                          transfer.size, transfer.message)
                    if not send_frame(peer, encode(chunk)):
                        break
                    transfer.next_offset += len(data)
        return finished

    def on_ack(self, ack: SnapshotChunkAck) -> None:
        transfer = self.transfers.get(ack.sender)
        if transfer is None or transfer.snapshot_id != ack.snapshot_id:
            return
        if not ack.ok:
            transfer.error = "receiver refused the snapshot"
            return
        if ack.offset > transfer.acked_offset:
            transfer.acked_offset = ack.offset
            transfer.last_progress = time.monotonic()

    def _drop(self, peer: int) -> None:
        transfer = self.transfers.pop(peer)
        shutil.rmtree(transfer.directory, ignore_errors=True)

    def close(self) -> None:
        for peer in list(self.transfers):
            self._drop(peer)


class SnapshotReceiver:
    """Follower side: chunks to a file; when complete, an InstallSnapshot for apply."""

    def __init__(self, data_dir: str, member_id: int, log):
        self.data_dir = data_dir
        self.member_id = member_id
        self.log = log
        self.current: tuple[int, str, object] | None = None  # (snapshot id, directory, file handle)
        self.expected_offset = 0
        shutil.rmtree(snapshot_dir(data_dir), ignore_errors=True)  # leftovers of a crash are useless

    def on_chunk(self, chunk: SnapshotChunk):
        """(ack, install request or None, the MSG_SNAP to step once installed)."""
        if self.current is None or self.current[0] != chunk.snapshot_id:
            if chunk.offset != 0:
                return SnapshotChunkAck(self.member_id, chunk.snapshot_id, 0, ok=False), None, None
            self._reset()
            directory = os.path.join(snapshot_dir(self.data_dir), f"in-{chunk.snapshot_id}")
            os.makedirs(directory, exist_ok=True)
            self.current = (chunk.snapshot_id, directory, open(os.path.join(directory, "data.mdb"), "wb"))
            self.expected_offset = 0
            self.log.info("snapshot_receive_started", sender=chunk.sender, index=chunk.message.snapshot.index, bytes=chunk.total_bytes)
        if chunk.offset != self.expected_offset:
            # a duplicate or a gap (a lost frame): ack what we have, the sender resumes
            return SnapshotChunkAck(self.member_id, chunk.snapshot_id, self.expected_offset), None, None
        _, directory, handle = self.current
        handle.write(chunk.data)
        self.expected_offset += len(chunk.data)
        ack = SnapshotChunkAck(self.member_id, chunk.snapshot_id, self.expected_offset)
        if not chunk.last:
            return ack, None, None
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        self.current = (chunk.snapshot_id, directory, None)
        self.log.info("snapshot_received", sender=chunk.sender, index=chunk.message.snapshot.index, bytes=self.expected_offset)
        return ack, InstallSnapshot(directory, chunk.message.snapshot.index), chunk.message

    def _reset(self) -> None:
        if self.current is not None:
            _, directory, handle = self.current
            if handle is not None:
                handle.close()
            shutil.rmtree(directory, ignore_errors=True)
        self.current = None

    def installed(self) -> None:
        self._reset()
