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
hands the batch's events to the watch hub, or, while the hub reports no
watchers (WatchInterest), only the new revision (the events stay in the store).
"""

from __future__ import annotations

import os

from actors.apply_leases import LEASE_WRITES, LeaseChanges, apply_lease_request, min_lease_ttl_s
from actors.base import Actor
from store.alarms import Alarms, bytes_in_use, has_put
from store.environment import open_kv, replicated_databases
from store.mvcc import KeySpace
from store.snapshot_install import replace_keyspace
from transport import codec
from transport.entries import make_payload, split_payload
from transport.errors import CairnError, MalformedRequestError, NoSpaceError
from transport.messages import (
    ALARM_ACTIVATE,
    ALARM_DEACTIVATE,
    ALARM_NOSPACE,
    AlarmRequest,
    AlarmResponse,
    Applied,
    AppliedEvents,
    ApplyNeed,
    CommittedEntries,
    CompactionRequest,
    InstallSnapshot,
    LeaseGrantRequest,
    ProposeBatch,
    ResponseHeader,
    SnapshotInstalled,
    WatchInterest,
)
from transport.sockets import inbox, outbox


# How often the keyspace size is measured against the quota, and how long to
# wait before proposing the alarm again if the first proposal got lost.
QUOTA_CHECK_S = 1.0
# Records a physical compaction examines per write transaction: a compaction of
# a huge history is spread over many short transactions between batches, so it
# never holds up the entries behind it.
COMPACTION_STEP_RECORDS = 5000
ALARM_RETRY_S = 5.0


class ApplyActor(Actor):
    name = "apply"

    def __init__(self, config, member_name: str):
        super().__init__(config, member_name)
        self.env = open_kv(self.data_dir, self.settings.kv_map_bytes)
        self.keyspace = KeySpace(self.env)
        self.alarms = Alarms(self.env)
        self.quota_checked_at = 0.0
        self.alarm_proposed_at = 0.0
        with self.env.begin() as txn:
            self.compaction_pending = self.keyspace.compaction_pending(txn)
            self.applied = self.keyspace.applied_index(txn)
            self.revision = self.keyspace.current_revision(txn)
        hwm = self.limits.socket_hwm
        self.inbox = inbox(self.context, self.data_dir, "apply", hwm)
        self.to_raft = outbox(self.context, self.data_dir, "raft", hwm)
        self.to_frontend = outbox(self.context, self.data_dir, "frontend", hwm)
        self.to_watch = outbox(self.context, self.data_dir, "watch", hwm)
        self.to_lease = outbox(self.context, self.data_dir, "lease", hwm)
        self.min_lease_ttl_s = min_lease_ttl_s(self.settings)
        self.lease_changes = LeaseChanges()
        self.add_reader(self.inbox, self.on_frames)
        self.pending_entries = []
        self.need_sent = False
        # Until the watch hub says otherwise, assume it has watchers: sending
        # events it does not need is only a cost, eliding ones it needs is a gap.
        self.hub_watching = True
        self.log.info("apply_recovered", index=self.applied, revision=self.revision)
        self.send(self.to_raft, ApplyNeed(self.applied + 1))

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
            elif isinstance(message, WatchInterest):
                self.hub_watching = message.watching
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
            self.send(self.to_raft, ApplyNeed(index))
        if contiguous:
            self._apply(contiguous)

    def _apply(self, entries) -> None:
        request_ids, frames, events = [], [], []
        member_id = self.member.id
        self.lease_changes = LeaseChanges()
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
        self.send(self.to_frontend, applied)
        self.send(self.to_raft, Applied(self.applied, self.revision))
        if events:
            # With no watchers the hub only needs to know the revision moved; a
            # watcher created meanwhile reads the elided revisions from the store.
            if self.hub_watching:
                self.send(self.to_watch, AppliedEvents(self.revision, tuple(events)))
            else:
                self.send(self.to_watch, AppliedEvents(self.revision, (), elided=True))
        if self.lease_changes:
            self.send(self.to_lease, self.lease_changes.message())

    def install_snapshot(self, message: InstallSnapshot) -> None:
        """Replace the keyspace with the leader's snapshot (one transaction), then
        tell raft, so it steps the snapshot into its core only once the data is here."""
        self.pending_entries = []  # entries queued before the snapshot are superseded by it
        try:
            applied = replace_keyspace(self.env, self.keyspace, message.path)
        except Exception as error:  # a broken snapshot is refused; the leader sends another
            self.log.error("snapshot_install_failed", index=message.index, error=f"{type(error).__name__}: {error}")
            self.send(self.to_raft, SnapshotInstalled(message.index, self.applied, ok=False, error=str(error)))
            return
        with self.env.begin() as txn:
            self.revision = self.keyspace.current_revision(txn)
        self.applied = applied
        self.log.info("snapshot_installed", index=message.index, applied=applied, revision=self.revision)
        self.send(self.to_raft, SnapshotInstalled(message.index, applied))
        self.send(self.to_frontend, Applied(self.applied, self.revision))

    def _execute(self, txn, header, frame: bytes, index: int):
        try:
            request_id, request = codec.decode(frame)
        except CairnError as error:
            # The frontend validated this frame; a member with an older codec may
            # still meet a newer request. Every member answers the same way.
            self.log.error("entry_undecodable", index=index, error=str(error))
            return codec.peek_request_id(frame), MalformedRequestError(str(error)).to_response(), []
        if isinstance(request, AlarmRequest):
            return request_id, self._alarm(txn, header, request), []
        if (has_put(request) or isinstance(request, LeaseGrantRequest)) and self.alarms.no_space(txn):
            # etcd's capped applier: every member refuses the same writes, since
            # the alarm itself came through the log.
            return request_id, NoSpaceError().to_response(), []
        writer = self.keyspace.writer(txn, header, self.limits.max_txn_ops)
        try:
            if isinstance(request, LEASE_WRITES):
                header = ResponseHeader(header.cluster_id, header.member_id, self.keyspace.current_revision(txn), header.raft_term)
                response, events = apply_lease_request(writer, header, request, self.min_lease_ttl_s, self.lease_changes)
            elif isinstance(request, CompactionRequest):
                response, events = writer.compact(request, max_records=COMPACTION_STEP_RECORDS), []
                self.compaction_pending = True
            else:
                response, events = writer.execute(request)
        except CairnError as error:
            return request_id, error.to_response(), []
        return request_id, response, events

    def _alarm(self, txn, header, request: AlarmRequest) -> AlarmResponse:
        header = ResponseHeader(header.cluster_id, header.member_id, self.keyspace.current_revision(txn), header.raft_term)
        if request.action == ALARM_ACTIVATE:
            self.log.warning("alarm_activated", alarm_member=request.member_id, alarm=request.alarm)
            return AlarmResponse(header, (self.alarms.activate(txn, request.member_id, request.alarm),))
        if request.action == ALARM_DEACTIVATE:
            self.log.warning("alarm_deactivated", alarm_member=request.member_id, alarm=request.alarm)
            return AlarmResponse(header, self.alarms.deactivate(txn, request.member_id, request.alarm))
        return AlarmResponse(header, self.alarms.list(txn, request.member_id))

    def timeout_ms(self) -> int:
        return 0 if self.compaction_pending else self.settings.tick_ms

    def on_timer(self, now: float) -> None:
        if self.compaction_pending and not self.pending_entries:
            self._compaction_step()
        self._check_quota(now)

    def _compaction_step(self) -> None:
        """One bounded step of a physical compaction, in its own transaction."""
        header = ResponseHeader(self.config.id, self.member.id, 0, 0)
        with self.env.begin(write=True) as txn:
            done = self.keyspace.writer(txn, header).compact_step(COMPACTION_STEP_RECORDS)
        self.compaction_pending = not done
        if done:
            self.log.info("compaction_finished", revision=self.revision)

    def _check_quota(self, now: float) -> None:
        """Raise NOSPACE through the log when this member's keyspace outgrows the quota."""
        if now - self.quota_checked_at < QUOTA_CHECK_S:
            return
        self.quota_checked_at = now
        with self.env.begin() as txn:
            used = bytes_in_use(self.env, txn, replicated_databases())
            alarmed = any(a.member_id == self.member.id for a in self.alarms.list(txn, self.member.id))
        if used <= self.limits.quota_backend_bytes or alarmed or now - self.alarm_proposed_at < ALARM_RETRY_S:
            return
        self.alarm_proposed_at = now
        self.log.warning("quota_exceeded", bytes_in_use=used, quota=self.limits.quota_backend_bytes)
        request_id = int.from_bytes(os.urandom(8), "big") >> 1
        frame = codec.encode(AlarmRequest(ALARM_ACTIVATE, self.member.id, ALARM_NOSPACE), request_id)
        self.send(self.to_raft, ProposeBatch((request_id,), (make_payload(self.member.id, frame),)))

    def close(self) -> None:
        self.env.close()

