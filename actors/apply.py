"""The apply actor: owns the MVCC keyspace and applies committed entries in log order.

Theory of operation
-------------------
The raft actor sends CommittedEntries; everything drained in one loop turn is
applied in ONE LMDB write transaction that also stores the applied index, so a
crash (even kill -9) leaves either the whole batch applied or none of it, and a
restart resumes exactly after the last applied entry: nothing is applied twice
and nothing is skipped. Entries at or below the applied index are duplicates
(raft resends after a restart) and are skipped; an entry past applied + 1 means
a message was lost, so the batch stops there and apply asks raft to resend
(ApplyNeed). After the commit, apply answers its own member's requests through
the frontend, tells raft how far it got (flow control and log compaction), and
hands the batch's events to the watch hub.
"""

from __future__ import annotations

import zmq

from actors.base import Actor
from store.environment import open_kv
from store.mvcc import KeySpace
from transport import codec
from transport.entries import split_payload
from transport.errors import CairnError, MalformedRequestError
from store.snapshot_install import replace_keyspace
from transport.messages import (
    Applied,
    AppliedEvents,
    ApplyNeed,
    CommittedEntries,
    InstallSnapshot,
    ResponseHeader,
    SnapshotInstalled,
)
from transport.sockets import inbox, outbox


class ApplyActor(Actor):
    name = "apply"

    def __init__(self, config, member_name: str):
        super().__init__(config, member_name)
        self.env = open_kv(self.data_dir, self.settings.kv_map_bytes)
        self.keyspace = KeySpace(self.env)
        with self.env.begin() as txn:
            self.applied = self.keyspace.applied_index(txn)
            self.revision = self.keyspace.current_revision(txn)
        hwm = self.limits.socket_hwm
        self.inbox = inbox(self.context, self.data_dir, "apply", hwm)
        self.to_raft = outbox(self.context, self.data_dir, "raft", hwm)
        self.to_frontend = outbox(self.context, self.data_dir, "frontend", hwm)
        self.to_watch = outbox(self.context, self.data_dir, "watch", hwm)
        self.add_reader(self.inbox, self.on_frames)
        self.pending_entries = []
        self.need_sent = False
        self.log.info("apply_recovered", index=self.applied, revision=self.revision)
        self._send(self.to_raft, ApplyNeed(self.applied + 1))

    def on_frames(self, frames: list[bytes]) -> None:
        for frame in frames:
            try:
                _, message = codec.decode(frame)
            except CairnError as error:
                self.log.error("bad_frame_dropped", error=str(error))
                continue
            if isinstance(message, CommittedEntries):
                self.pending_entries.extend(message.entries)
            elif isinstance(message, InstallSnapshot):
                self.install_snapshot(message)
            else:
                self.log.warning("unexpected_message", type=type(message).__name__)

    def on_batch_end(self) -> None:
        if not self.pending_entries:
            return
        entries, self.pending_entries = self.pending_entries, []
        by_index = {entry.index: entry for entry in entries if entry.index > self.applied}
        contiguous, index = [], self.applied + 1
        while index in by_index:
            contiguous.append(by_index[index])
            index += 1
        if len(contiguous) < len(by_index):
            self.log.warning("apply_gap", applied=self.applied, missing=index)
            self._send(self.to_raft, ApplyNeed(index))
        if contiguous:
            self._apply(contiguous)

    def _apply(self, entries) -> None:
        request_ids, frames, events = [], [], []
        member_id = self.member.id
        with self.env.begin(write=True) as txn:
            for entry in entries:
                if not entry.data:
                    continue  # a leader's no-op
                origin, frame = split_payload(entry.data)
                header = ResponseHeader(self.config.id, member_id, 0, entry.term)
                request_id, response, entry_events = self._execute(txn, header, frame, entry.index)
                events.extend(entry_events)
                if origin == member_id:
                    request_ids.append(request_id)
                    frames.append(codec.encode(response, request_id))
            self.keyspace.set_applied_index(txn, entries[-1].index)
            self.revision = self.keyspace.current_revision(txn)
        self.applied = entries[-1].index
        self.log.info(
            "applied", index=self.applied, entries=len(entries), revision=self.revision, request_ids=request_ids or None
        )
        applied = Applied(self.applied, self.revision, tuple(request_ids), tuple(frames))
        self._send(self.to_frontend, applied)
        self._send(self.to_raft, Applied(self.applied, self.revision))
        if events:
            self._send(self.to_watch, AppliedEvents(self.revision, tuple(events)))

    def install_snapshot(self, message: InstallSnapshot) -> None:
        """Replace the keyspace with the leader's snapshot (one transaction), then
        tell raft, so it steps the snapshot into its core only once the data is here."""
        self.pending_entries = []  # entries queued before the snapshot are superseded by it
        try:
            applied = replace_keyspace(self.env, self.keyspace, message.path)
        except Exception as error:  # a broken snapshot is refused; the leader sends another
            self.log.error("snapshot_install_failed", index=message.index, error=f"{type(error).__name__}: {error}")
            self._send(self.to_raft, SnapshotInstalled(message.index, self.applied, ok=False, error=str(error)))
            return
        with self.env.begin() as txn:
            self.revision = self.keyspace.current_revision(txn)
        self.applied = applied
        self.log.info("snapshot_installed", index=message.index, applied=applied, revision=self.revision)
        self._send(self.to_raft, SnapshotInstalled(message.index, applied))
        self._send(self.to_frontend, Applied(self.applied, self.revision))

    def _execute(self, txn, header, frame: bytes, index: int):
        try:
            request_id, request = codec.decode(frame)
        except CairnError as error:
            # The frontend validated this frame; a member with an older codec may
            # still meet a newer request. Every member answers the same way.
            self.log.error("entry_undecodable", index=index, error=str(error))
            return codec.peek_request_id(frame), MalformedRequestError(str(error)).to_response(), []
        writer = self.keyspace.writer(txn, header, self.limits.max_txn_ops)
        try:
            response, events = writer.execute(request)
        except CairnError as error:
            return request_id, error.to_response(), []
        return request_id, response, events

    def _send(self, socket, message) -> None:
        try:
            socket.send(codec.encode(message), zmq.NOBLOCK)
        except zmq.Again:
            # The receiver is gone or far behind; what it misses it asks for again
            # (raft resends on ApplyNeed, frontend times requests out).
            self.log.warning("send_queue_full", to=message.__class__.__name__)

    def close(self) -> None:
        self.env.close()

