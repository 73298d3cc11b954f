"""The apply actor: the shell around the state machine (store/apply.py), which
applies committed entries to the MVCC keyspace in log order.

Theory of operation
-------------------
The raft actor sends CommittedEntries; everything drained in one loop turn is
applied by StateMachine.apply_committed in ONE LMDB write transaction that also
stores the applied index, so a crash (even kill -9) leaves either the whole
batch applied or none of it, and a restart resumes exactly after the last
applied entry: nothing is applied twice and nothing is skipped. Entries at or
below the applied index are duplicates (raft resends after a restart) and are
skipped; an entry past applied + 1 means a message was lost, so the batch stops
there and apply asks raft to resend (ApplyNeed). Applying never raises for a
property of an entry (see store/apply.py, "Totality"); an entry that failed is
logged with its index. After the commit, apply answers its own member's
requests through the frontend (a batch that answers none is told to the
frontend once a tick, or at once when the frontend waits for its index:
AppliedWanted; a message per write woke every member's frontend once per
write for nothing: its reads find the applied index in the keyspace),
hands the batch's events to the watch hub, or,
while the hub reports no watchers (WatchInterest), only the new revision, once
a tick (the events stay in the store), and tells raft how far it got. Raft needs that only
for flow control (max_apply_inflight_entries) and log compaction, so it goes
once a tick, or at once when a quarter of the window is unacknowledged: one
message per batch woke every member's raft actor once more per write, and on
the leader's member right when the frontend answers the client.

The commit does not wait for the disk (etcd's backend does the same behind its
WAL): readers in other processes see it at once, and the Raft log, synced on
a majority, is what makes the write durable. A thread of this process syncs
the keyspace every member.keyspace_sync_ms (actors/keyspace_sync.py; 0: LMDB
syncs each commit itself, on the reply path); apply reports the
index it made durable to raft (Applied.durable_index), which compacts its log
only behind it, so after an OS crash that undid the last batches the entries
are still there to apply again (store/environment.py). At start apply syncs
what a killed predecessor committed, so its applied index is durable.
"""

from __future__ import annotations

import os
import threading
import time

from actors.base import Actor
from actors.keyspace_sync import KeyspaceSyncer
from store.alarms import bytes_in_use
from store.apply import ApplyRules, StateMachine
from store.apply_leases import min_lease_ttl_s
from store.environment import defragment_kv, kv_file, open_kv, recover_defragment, replicated_databases
from transport import codec
from transport.entries import make_payload
from transport.limits import holds, limit, limits, positive
from transport.messages import (
    ALARM_ACTIVATE,
    ALARM_NOSPACE,
    Member,
    AlarmRequest,
    Applied,
    AppliedEvents,
    AppliedWanted,
    ApplyNeed,
    CommittedEntries,
    Defragment,
    InstallSnapshot,
    KeyspaceReplaced,
    ProposeBatch,
    SnapshotInstalled,
    WatchInterest,
)
from transport.sockets import inbox, outbox


@limits(
    positive("quota_check_s", "retired_file_hold_s"),
    holds(lambda l: l.alarm_retry_s >= l.quota_check_s, "a retry is only noticed at a quota check"),
)
class ApplyLimits:
    """The apply actor's own periods, each with its reason (the member's limits,
    such as quota_backend_bytes, are cairn/config.py's Limits)."""

    quota_check_s: float = limit(
        1.0,
        "How often the keyspace size is measured against the quota: a read transaction over the databases' stats, "
        "cheap once a second, and a NOSPACE alarm raised a second late is within the quota's purpose.")
    alarm_retry_s: float = limit(
        5.0,
        "How long to wait before proposing the alarm again if the first proposal got lost (a leader change): longer "
        "than a proposal takes to be applied.")
    retired_file_hold_s: float = limit(
        10.0,
        "A defragment's replaced file gives its disk blocks back when its last user closes it, which for a GiB takes "
        "the closing thread about a second. Apply holds it open this long, well past the reopen of frontend, watch, "
        "lease and raft (one turn of their loops each), then closes it on a thread of its own, so no actor's loop "
        "pays for it (tests/defrag_pause.py).")


class ApplyActor(Actor):
    name = "apply"
    apply_limits = ApplyLimits()

    def __init__(self, config, member_name: str):
        super().__init__(config, member_name)
        recover_defragment(self.data_dir)  # a defragment this actor was making when it died
        self.sync_on_commit = self.settings.keyspace_sync_ms == 0
        self.env = open_kv(self.data_dir, self.settings.kv_map_bytes, sync_on_commit=self.sync_on_commit)
        self.rules = rules = ApplyRules(config.id, self.member.id, self.limits.max_txn_ops,
                                        min_lease_ttl_s(self.settings), initial_members=configured_members(config))
        self.state = StateMachine(self.env, rules)
        self.keyspace = self.state.keyspace
        self.quota_checked_at = 0.0
        self.alarm_proposed_at = 0.0
        with self.env.begin() as txn:
            self.compaction_pending = self.keyspace.compaction_pending(txn)
            self.applied = self.keyspace.applied_index(txn)
            self.revision = self.keyspace.current_revision(txn)
        # What a killed predecessor committed is in the page cache: make it
        # durable before raft may compact behind it.
        self.env.sync(True)
        self.syncer = KeyspaceSyncer(self.env, self.applied, self.settings.keyspace_sync_ms / 1000)
        self.reported_durable = self.applied
        self.reported_applied = self.applied
        self.raft_report_due = 0.0
        self.frontend_told = self.applied  # the last index sent to the frontend
        self.frontend_wants = 0  # the index the frontend waits for (AppliedWanted); 0: none
        self.frontend_due = 0.0  # when a batch that answers nothing is told at the latest
        # Unacknowledged entries past which raft hears at once rather than at the
        # next tick: a quarter of its window, so it never stalls waiting for us.
        self.raft_report_entries = max(1, self.limits.max_apply_inflight_entries // 4)
        hwm = self.limits.socket_hwm
        self.inbox = inbox(self.context, self.data_dir, "apply", hwm)
        self.to_raft = outbox(self.context, self.data_dir, "raft", hwm)
        self.to_frontend = outbox(self.context, self.data_dir, "frontend", hwm)
        self.to_watch = outbox(self.context, self.data_dir, "watch", hwm)
        self.to_lease = outbox(self.context, self.data_dir, "lease", hwm)
        self.metrics_outbox = self.to_frontend
        self.commit_duration = self.metrics.histogram("etcd_disk_backend_commit_duration_seconds")
        self.add_inbox(self.inbox)
        self.on_message(CommittedEntries, lambda message: self.pending_entries.extend(message.entries))
        self.on_message(InstallSnapshot, self.install_snapshot)
        self.on_message(WatchInterest, self.on_watch_interest)
        self.on_message(AppliedWanted, self.on_applied_wanted)
        self.on_message(Defragment, self.defragment)
        self.pending_entries = []
        self.retired_file: tuple[int, float] | None = None  # (fd, close at) of a file a defragment replaced
        # Until the watch hub says otherwise, assume it has watchers: sending
        # events it does not need is only a cost, eliding ones it needs is a gap.
        self.hub_watching = True
        self.elided_revision = 0  # the revision of elided batches the hub has not been told of
        self.elided_report_due = 0.0
        self.log.info("apply_recovered", index=self.applied, revision=self.revision)
        self.send(self.to_raft, ApplyNeed(self.applied + 1))
        self.send(self.to_raft, Applied(self.applied, self.revision, durable_index=self.applied))
        self._tell_frontend()  # waits the frontend asked a predecessor about are answered too

    def on_watch_interest(self, message: WatchInterest) -> None:
        self.hub_watching = message.watching
        if self.hub_watching:
            self._report_elided()  # in revision order, before the next batch's events

    def on_batch_end(self) -> None:
        if self.syncer.error is not None:
            raise self.syncer.error  # the disk failed: restart and recover from the log
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
        self.current_input = f"CommittedEntries {entries[0].index}..{entries[-1].index}"
        started = time.perf_counter()
        batch = self.state.apply_committed(entries)
        self.commit_duration.observe(time.perf_counter() - started)
        for failure in batch.failures:
            self.log.error(
                "entry_failed", index=failure.index, request_id=failure.request_id,
                request_type=failure.request_type, error=failure.error,
            )
        for event, fields in batch.notes:
            self.log.warning(event, **fields)
        self.compaction_pending = self.compaction_pending or batch.compaction_started
        self.applied, self.revision = batch.index, batch.revision
        self.syncer.committed(self.applied)
        request_ids = tuple(request_id for request_id, _ in batch.answers)
        self.log.info(
            "applied", index=self.applied, entries=len(entries), revision=self.revision, request_ids=request_ids or None
        )
        if request_ids:
            frames = tuple(codec.encode(response, request_id) for request_id, response in batch.answers)
            self._tell_frontend(request_ids, frames)
        elif self.frontend_wants and self.applied >= self.frontend_wants:
            self._tell_frontend()
        if batch.events:
            # With no watchers the hub only needs to know the revision moved, and
            # not at once (once a tick: a message per batch woke every member's
            # watch actor once per write); a watcher created meanwhile starts at
            # the store's revision and reads the elided ones from the store.
            if self.hub_watching:
                self._report_elided()
                self.send(self.to_watch, AppliedEvents(self.revision, tuple(batch.events)))
            else:
                self.elided_revision = self.revision
        if batch.lease_changes:
            self.send(self.to_lease, batch.lease_changes.message())
        if self.applied - self.reported_applied >= self.raft_report_entries:
            self._report_to_raft()

    def install_snapshot(self, message: InstallSnapshot) -> None:
        """Replace the keyspace with the leader's snapshot (one transaction), then
        tell raft, so it steps the snapshot into its core only once the data is here."""
        self.pending_entries = []  # entries queued before the snapshot are superseded by it
        try:
            with self.syncer.paused():
                applied = self.state.install_snapshot(message.path)
                # durable before raft drops its log for the snapshot
                self.env.sync(True)
                self.syncer.replaced(self.env, applied)
        except Exception as error:  # a broken snapshot is refused; the leader sends another
            self.log.error("snapshot_install_failed", index=message.index, error=f"{type(error).__name__}: {error}")
            self.send(self.to_raft, SnapshotInstalled(message.index, self.applied, ok=False, error=str(error)))
            return
        with self.env.begin() as txn:
            self.revision = self.keyspace.current_revision(txn)
        self.applied = applied
        self.log.info("snapshot_installed", index=message.index, applied=applied, revision=self.revision)
        self.reported_durable = self.reported_applied = applied  # SnapshotInstalled tells raft both
        self.send(self.to_raft, SnapshotInstalled(message.index, applied))
        self._tell_frontend()

    def defragment(self, message: Defragment) -> None:
        """etcd's Defragment on this member: the keyspace file is replaced by its
        compacted copy (store/environment.py: defragment_kv) while this actor,
        the only writer, applies nothing: the pause is the copy's time. Then
        frontend, watch and lease are told to reopen (KeyspaceReplaced), on the
        same pipes as, and before, any Applied of a later entry, so none of
        them reads an entry it cannot find; until they reopen they read the old
        file, which holds everything applied so far."""
        started = time.monotonic()
        path = kv_file(self.data_dir)
        before = os.path.getsize(path)
        self.current_input = f"Defragment {message.request_id}"
        old_file = os.open(path, os.O_RDONLY)  # held past the readers' reopen (ApplyLimits.retired_file_hold_s)
        try:
            with self.syncer.paused():  # the copy is synced, and holds every commit
                self.env = defragment_kv(self.env, self.data_dir, self.settings.kv_map_bytes, self.sync_on_commit)
                self.syncer.replaced(self.env, self.applied)
        except Exception as error:  # the old keyspace stays in use
            os.close(old_file)
            self.log.error("defragment_failed", error=f"{type(error).__name__}: {error}")
            if not _is_open(self.env):
                raise  # the environment is gone: the supervisor restarts this actor, which recovers
            self.send(self.to_frontend, KeyspaceReplaced(message.request_id, f"{type(error).__name__}: {error}"))
            return
        self.state = StateMachine(self.env, self.rules)
        self.keyspace = self.state.keyspace
        self._close_retired_file()  # an earlier defragment's, if still held
        self.retired_file = (old_file, time.monotonic() + self.apply_limits.retired_file_hold_s)
        after = os.path.getsize(path)
        pause_ms = round((time.monotonic() - started) * 1000)
        self.log.info("defragmented", size_before=before, size_after=after, pause_ms=pause_ms)
        replaced = KeyspaceReplaced(message.request_id, "", before, after, pause_ms)
        for outbox_ in (self.to_frontend, self.to_watch, self.to_lease, self.to_raft):
            self.send(outbox_, replaced)

    def timeout_ms(self) -> int:
        return 0 if self.compaction_pending else self.settings.tick_ms

    def queue_depth(self) -> int:
        return len(self.pending_entries)

    def on_timer(self, now: float) -> None:
        if self.compaction_pending and not self.pending_entries:
            self._compaction_step()
        self._check_quota(now)
        if self.syncer.error is not None:
            raise self.syncer.error
        if now >= self.raft_report_due and (self.applied > self.reported_applied or self.syncer.durable > self.reported_durable):
            self._report_to_raft()
        if self.applied > self.frontend_told and now >= self.frontend_due:
            self._tell_frontend()
        if self.elided_revision and now >= self.elided_report_due:
            self._report_elided()
        if self.retired_file is not None and now >= self.retired_file[1]:
            self._close_retired_file()

    def _report_to_raft(self) -> None:
        """Tell raft how far apply got (its flow control) and how far the
        keyspace is synced (raft compacts its log only behind it)."""
        self.reported_applied = self.applied
        self.reported_durable = max(self.reported_durable, self.syncer.durable)
        self.raft_report_due = time.monotonic() + self.settings.tick_ms / 1000
        self.send(self.to_raft, Applied(self.applied, self.revision, durable_index=self.reported_durable))

    def on_applied_wanted(self, message: AppliedWanted) -> None:
        if self.applied >= message.index:
            self._tell_frontend()
        elif not self.frontend_wants or message.index < self.frontend_wants:
            self.frontend_wants = message.index  # the earliest wait first; the frontend asks again for the next

    def _tell_frontend(self, request_ids: tuple = (), frames: tuple = ()) -> None:
        """Applied to the frontend: the answers of a batch, or how far apply got."""
        self.frontend_told = self.applied
        if self.applied >= self.frontend_wants:
            self.frontend_wants = 0
        self.frontend_due = time.monotonic() + self.settings.tick_ms / 1000
        self.send(self.to_frontend, Applied(self.applied, self.revision, request_ids, frames))

    def _report_elided(self) -> None:
        """The revision of the batches whose events were elided, to the watch hub."""
        if self.elided_revision:
            self.send(self.to_watch, AppliedEvents(self.elided_revision, (), elided=True))
            self.elided_revision = 0
            self.elided_report_due = time.monotonic() + self.settings.tick_ms / 1000

    def _close_retired_file(self) -> None:
        """The last close of a replaced keyspace file, off this loop (os.close
        releases the GIL while the kernel frees the blocks)."""
        if self.retired_file is not None:
            threading.Thread(target=os.close, args=(self.retired_file[0],), name="retired-keyspace", daemon=True).start()
            self.retired_file = None

    def _compaction_step(self) -> None:
        """One bounded step of a physical compaction, in its own transaction."""
        done = self.state.compact_step()
        self.compaction_pending = not done
        if done:
            self.log.info("compaction_finished", revision=self.revision)

    def _check_quota(self, now: float) -> None:
        """Raise NOSPACE through the log when this member's keyspace outgrows the quota."""
        if now - self.quota_checked_at < self.apply_limits.quota_check_s:
            return
        self.quota_checked_at = now
        with self.env.begin() as txn:
            used = bytes_in_use(self.env, txn, replicated_databases())
            alarmed = any(a.member_id == self.member.id for a in self.state.alarms.list(txn, self.member.id))
        if used <= self.limits.quota_backend_bytes or alarmed or now - self.alarm_proposed_at < self.apply_limits.alarm_retry_s:
            return
        self.alarm_proposed_at = now
        self.log.warning("quota_exceeded", bytes_in_use=used, quota=self.limits.quota_backend_bytes)
        request_id = int.from_bytes(os.urandom(8), "big") >> 1
        frame = codec.encode(AlarmRequest(ALARM_ACTIVATE, self.member.id, ALARM_NOSPACE), request_id)
        self.send(self.to_raft, ProposeBatch((request_id,), (make_payload(self.member.id, frame),)))

    def release(self) -> None:
        self.syncer.close()
        if self.retired_file is not None:
            os.close(self.retired_file[0])
        self.env.close()


def _is_open(env) -> bool:
    try:
        env.info()
        return True
    except Exception:
        return False


def configured_members(config) -> tuple:
    """The YAML's members as member records: the membership before any change."""
    return tuple(Member(spec.id, spec.name, (spec.peer,), (spec.client,)) for spec in config.members)
