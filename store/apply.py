"""The replicated state machine: committed Raft entries applied to the keyspace.

Theory of operation
-------------------
`StateMachine.apply_committed(entries)` applies a contiguous run of committed
entries in ONE LMDB write transaction that also stores the applied index, so a
crash leaves either the whole run applied or none of it, and a restart resumes
exactly after the last applied entry. It returns an AppliedBatch: the answers
to the requests this member took, the batch's events for the watch hub, the
lease table's changes for the lease actor, and what the shell should log. The
apply actor (actors/apply.py) is the shell: it owns the loop, the sockets and
the timers; everything an entry does to the state happens here, with no
sockets, no clock and no logging, so it is tested without processes
(tests/store/test_apply_total.py).

Totality. Every member applies the same entries to the same state, and a
committed entry can never be taken back, so applying an entry must never
raise:

* an operating error (a CairnError: lease not found, compacted, NOSPACE ...)
  is the entry's answer, and the entry has no effect;
* an entry that does not decode (a member with an older codec meeting a newer
  request) is answered MalformedRequest, on every member alike;
* any other exception raised while one entry executes is a property of that
  entry (a value no check caught, or a bug): the transaction is aborted and
  the run applied again with that entry answered InvalidArgument and given no
  effect. Every member meets the same exception at the same entry, so every
  member skips the same entries and the replicas stay identical. The failure
  is returned with the entry's index so the shell logs it;
* only what is not a property of the entry stops the actor: the disk and the
  environment (ENVIRONMENT_ERRORS). It recovers from the log after a restart;
  skipping the entry there could make this member's state differ from the
  others'.

Boundary checks (transport/codec.py: every integer within its etcd type) keep
known poison out of the log; totality is the second line for what they miss.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import lmdb

from store.alarms import Alarms, corrupt_refuses, has_put
from store.auth import AuthStore
from store.auth_rules import ROOT
from store.apply_leases import LEASE_WRITES, LeaseChanges, apply_lease_request
from store import members as member_records
from store.mvcc import KeySpace
from store.snapshot_install import replace_keyspace
from transport import codec
from transport import messages as m
from transport.entries import split_payload, split_payload_user
from transport.errors import CairnError, CorruptError, InvalidArgumentError, MalformedRequestError, NoSpaceError, PermissionDeniedError
from transport.messages import (
    ALARM_ACTIVATE,
    ALARM_CORRUPT,
    ALARM_DEACTIVATE,
    ALARM_GET,
    ALARM_NOSPACE,
    AlarmRequest,
    AlarmResponse,
    CompactionRequest,
    Event,
    LeaseGrantRequest,
    ResponseHeader,
)
from transport.raft_messages import CONF_CHANGE_NAMES, ENTRY_CONF_CHANGE, ENTRY_NORMAL, decode_conf_change

# Failures that say nothing about the entry being applied: the disk, the map,
# the process's memory. They stop the actor instead of skipping the entry.
# BadValsizeError (a key or value LMDB cannot store) is left out on purpose:
# it is a property of the entry, the same on every member.
ENVIRONMENT_ERRORS = (
    OSError,
    MemoryError,
    lmdb.MapFullError,
    lmdb.MapResizedError,
    lmdb.DiskError,
    lmdb.PanicError,
    lmdb.CorruptedError,
    lmdb.PageNotFoundError,
    lmdb.TxnFullError,
    lmdb.ReadersFullError,
    lmdb.BadTxnError,
    lmdb.InvalidError,
    lmdb.ReadonlyError,
    lmdb.LockError,
    lmdb.TlsFullError,
    lmdb.DbsFullError,
    lmdb.CursorFullError,
    lmdb.PageFullError,
    lmdb.VersionMismatchError,
    lmdb.IncompatibleError,
)


@dataclass(frozen=True, slots=True)
class ApplyRules:
    """What applying depends on besides the state; the same on every member
    except member_id, which only goes into answers."""

    cluster_id: int
    member_id: int
    max_txn_ops: int
    min_lease_ttl_s: int
    # Records a physical compaction examines per write transaction: a
    # compaction of a huge history is spread over many short transactions
    # between batches, so it never holds up the entries behind it.
    compaction_step_records: int = 5000
    # The membership before any conf-change entry (the YAML's): the records
    # store/members.py keeps start from it.
    initial_members: tuple = ()


@dataclass(frozen=True, slots=True)
class EntryFailure:
    """An entry whose execution raised something other than an operating error."""

    index: int
    origin: int
    request_id: int
    request_type: str
    error: str

    def response(self):
        return InvalidArgumentError(
            f"cairn: the request could not be applied ({self.error.partition(':')[0]} at log index {self.index});"
            " it had no effect"
        ).to_response()


class EntryFailed(Exception):
    """Raised inside the batch transaction to abort it; carries the failure."""

    def __init__(self, failure: EntryFailure):
        super().__init__(failure.error)
        self.failure = failure


@dataclass(slots=True)
class AppliedBatch:
    index: int = 0  # the last index applied
    revision: int = 0  # the store revision after the batch
    answers: list[tuple[int, object]] = field(default_factory=list)  # (request id, response) of this member's requests
    events: list[Event] = field(default_factory=list)
    lease_changes: LeaseChanges = field(default_factory=LeaseChanges)
    compaction_started: bool = False
    failures: list[EntryFailure] = field(default_factory=list)
    # (event name, fields) for the shell to log: alarms, undecodable entries
    notes: list[tuple[str, dict]] = field(default_factory=list)


class StateMachine:
    """The keyspace, the lease table and the alarms of one member, changed only
    by committed entries."""

    def __init__(self, env: lmdb.Environment, rules: ApplyRules):
        self.env = env
        self.rules = rules
        self.keyspace = KeySpace(env)
        self.alarms = Alarms(env)
        self.auth = AuthStore(env)
        # What every entry checks, read once and kept across batches rather
        # than read per entry or per batch (a cursor over the alarms and a get;
        # at low concurrency a batch is one entry): the alarms raised and
        # whether auth is enabled. Only AlarmRequest and Auth* entries change
        # them, and each sets them back to None (read again when next needed);
        # so do an aborted batch (what it read may be rolled back) and a
        # keyspace replaced under this object (forget_cached: a snapshot install).
        self._alarms_raised: frozenset[int] | None = None
        self._auth_enabled: bool | None = None

    # ------------------------------------------------------------- applying

    def apply_committed(self, entries) -> AppliedBatch:
        """Apply entries (contiguous, in log order) in one transaction; never
        raises for a property of an entry (see the module docstring)."""
        assert entries, "apply_committed needs at least one entry"
        failed: dict[int, EntryFailure] = {}
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    return self.apply_entries(txn, entries, failed)
            except EntryFailed as error:
                assert error.failure.index not in failed, error.failure
                failed[error.failure.index] = error.failure
            except BaseException:
                self.forget_cached()  # the transaction did not commit (its commit may have failed)
                raise

    def forget_cached(self) -> None:
        """Read the alarms and whether auth is enabled again when next needed:
        for a caller whose transaction did not commit, or that replaced the
        keyspace under this object."""
        self._alarms_raised = self._auth_enabled = None

    def apply_entries(self, txn, entries, failed: dict[int, EntryFailure]) -> AppliedBatch:
        """The batch over a caller's write transaction. An entry in `failed` is
        answered with its failure and not executed; another entry that fails
        raises EntryFailed (the caller aborts and calls again). A caller that
        does not commit the transaction calls forget_cached()."""
        try:
            return self._apply_batch(txn, entries, failed)
        except BaseException:
            self.forget_cached()  # read in a transaction about to be aborted
            raise

    def _apply_batch(self, txn, entries, failed: dict[int, EntryFailure]) -> AppliedBatch:
        batch = AppliedBatch()
        for entry in entries:
            if entry.data and entry.kind == ENTRY_CONF_CHANGE:
                self._apply_conf_change(txn, entry, batch)
                continue
            if not entry.data or entry.kind != ENTRY_NORMAL:
                continue  # a leader's no-op
            failure = failed.get(entry.index)
            if failure is not None:
                batch.failures.append(failure)
                self._answer(batch, failure.origin, failure.request_id, failure.response())
                continue
            self._apply_entry(txn, entry, batch)
        self.keyspace.set_applied_index(txn, entries[-1].index)
        batch.index = entries[-1].index
        batch.revision = self.keyspace.current_revision(txn)
        return batch

    def _apply_conf_change(self, txn, entry, batch: AppliedBatch) -> None:
        """The Raft layer changed its configuration at this entry; keep the
        member records (store/members.py) in step, in this transaction."""
        try:
            change, _ = decode_conf_change(entry.data)
        except ValueError as error:
            batch.notes.append(("conf_change_undecodable", {"index": entry.index, "error": str(error)}))
            return
        member_records.apply_change(txn, self.keyspace.meta_db, self.rules.initial_members, change)
        batch.notes.append(("member_change_applied", {"index": entry.index, "type": CONF_CHANGE_NAMES.get(change.type),
                                                      "member_id": f"{change.node_id:x}"}))

    def _apply_entry(self, txn, entry, batch: AppliedBatch) -> None:
        try:
            origin, user, frame = split_payload_user(entry.data)
            request_id, request = codec.decode(frame)
        except (struct.error, UnicodeDecodeError, CairnError) as error:
            # The frontend validated this frame; a member with an older codec
            # may still meet a newer request. Every member answers the same way.
            batch.notes.append(("entry_undecodable", {"index": entry.index, "error": str(error)}))
            if len(entry.data) >= 8:
                origin, frame = split_payload(entry.data)
                self._answer(batch, origin, codec.peek_request_id(frame), MalformedRequestError(str(error)).to_response())
            return
        header = ResponseHeader(self.rules.cluster_id, self.rules.member_id, 0, entry.term)
        try:
            self._authorize(txn, user, request)
            response, events = self._execute(txn, header, request, batch)
        except CairnError as error:
            response, events = error.to_response(), ()
        except ENVIRONMENT_ERRORS:
            raise
        except Exception as error:  # a property of this entry: skipped on every member (see the docstring)
            raise EntryFailed(
                EntryFailure(entry.index, origin, request_id, type(request).__name__, f"{type(error).__name__}: {error}")
            ) from error
        batch.events.extend(events)
        self._answer(batch, origin, request_id, response)

    def _answer(self, batch: AppliedBatch, origin: int, request_id: int, response) -> None:
        if origin == self.rules.member_id:
            batch.answers.append((request_id, response))

    def _authorize(self, txn, user: str | None, request) -> None:
        """etcd's checks in the state machine: with auth enabled, the user the
        entry runs as (transport/entries.py) must be allowed the request by the
        auth state as of this entry, so a revoked permission takes effect at
        once and every member decides the same. user None is a member's own
        proposal (lease expiry, alarms, the lock service), not checked."""
        if user is None or isinstance(request, m.AuthStatusRequest):
            return  # (anyone may ask whether auth is on, as in etcd)
        if self._auth_enabled is None:
            self._auth_enabled = self.auth.enabled(txn)
        if not self._auth_enabled:
            return
        found = self.auth.user(txn, user)
        if found is None:
            raise PermissionDeniedError()
        roles = found[1]
        if ROOT in roles:
            return
        if isinstance(request, LeaseGrantRequest):
            return  # a grant touches no key (etcd checks none; here the user must exist)
        if isinstance(request, m.AuthUserGetRequest) and request.name == user:
            return  # a user may read itself (etcd)
        if isinstance(request, m.AuthRoleGetRequest) and request.role in roles:
            return  # and the roles it holds
        if isinstance(request, AlarmRequest) and request.action == ALARM_GET:
            return
        if isinstance(request, m.LeaseRevokeRequest):
            # etcd: write permission on every key attached to the lease
            for key in self.keyspace.reader(txn, ResponseHeader(0, 0, 0, 0)).lease_keys(request.id):
                self.auth.check(txn, user, m.DeleteRangeRequest(key))
            return
        self.auth.check(txn, user, request)

    def _execute(self, txn, header: ResponseHeader, request, batch: AppliedBatch):
        """(response, events) of one decoded request; operating errors raise."""
        if isinstance(request, AlarmRequest):
            self._alarms_raised = None
            return self._alarm(txn, header, request, batch), ()
        auth = AUTH_REQUESTS.get(type(request))
        if auth is not None:
            self._auth_enabled = None
            return auth(self.auth, txn, request, _at(header, self.keyspace.current_revision(txn))), ()
        raised = self._alarms_raised
        if raised is None:
            raised = self._alarms_raised = self.alarms.raised(txn)
        if raised and ALARM_CORRUPT in raised and corrupt_refuses(request):
            raise CorruptError()  # etcd's corrupt applier, on every member (the alarm came through the log)
        if raised and ALARM_NOSPACE in raised and (has_put(request) or isinstance(request, LeaseGrantRequest)):
            # etcd's capped applier: every member refuses the same writes, since
            # the alarm itself came through the log.
            raise NoSpaceError()
        writer = self.keyspace.writer(txn, header, self.rules.max_txn_ops)
        if isinstance(request, LEASE_WRITES):
            header = _at(header, self.keyspace.current_revision(txn))
            return apply_lease_request(writer, header, request, self.rules.min_lease_ttl_s, batch.lease_changes)
        if isinstance(request, CompactionRequest):
            response = writer.compact(request, max_records=self.rules.compaction_step_records)
            batch.compaction_started = True
            return response, ()
        return writer.execute(request)

    def _alarm(self, txn, header: ResponseHeader, request: AlarmRequest, batch: AppliedBatch) -> AlarmResponse:
        header = _at(header, self.keyspace.current_revision(txn))
        if request.action == ALARM_ACTIVATE:
            batch.notes.append(("alarm_activated", {"alarm_member": request.member_id, "alarm": request.alarm}))
            return AlarmResponse(header, (self.alarms.activate(txn, request.member_id, request.alarm),))
        if request.action == ALARM_DEACTIVATE:
            batch.notes.append(("alarm_deactivated", {"alarm_member": request.member_id, "alarm": request.alarm}))
            return AlarmResponse(header, self.alarms.deactivate(txn, request.member_id, request.alarm))
        return AlarmResponse(header, self.alarms.list(txn, request.member_id))

    # ------------------------------------------------------------- between batches

    def install_snapshot(self, snapshot_path: str) -> int:
        """Replace the keyspace with a leader's snapshot (store/snapshot_install.py);
        returns the applied index it carries. Its alarms and auth state are
        read anew, whether or not the install committed."""
        try:
            return replace_keyspace(self.env, self.keyspace, snapshot_path)
        finally:
            self.forget_cached()

    def compact_step(self) -> bool:
        """One bounded step of a physical compaction in its own transaction;
        True once the compaction is finished."""
        header = ResponseHeader(self.rules.cluster_id, self.rules.member_id, 0, 0)
        with self.env.begin(write=True) as txn:
            return self.keyspace.writer(txn, header).compact_step(self.rules.compaction_step_records)


def _auth_change(change):
    """An auth change answered with a bare AuthResponse."""

    def apply(auth: AuthStore, txn, request, header):
        change(auth, txn, request)
        return m.AuthResponse(header)

    return apply


def _hashed(request) -> str:
    """The hash a UserAdd or ChangePassword carries: the door hashes before
    the log, so a plaintext password here is refused (the same on every member)."""
    if request.password:
        raise InvalidArgumentError("cairn: a password must be hashed before it is proposed")
    return request.hashed_password


# Every auth request goes through the log, reads too (as in etcd, where they are
# raft requests): each answer reflects every change before it.
AUTH_REQUESTS = {
    m.AuthEnableRequest: _auth_change(lambda auth, txn, r: auth.enable(txn)),
    m.AuthDisableRequest: _auth_change(lambda auth, txn, r: auth.disable(txn)),
    m.AuthUserAddRequest: _auth_change(lambda auth, txn, r: auth.user_add(txn, r.name, _hashed(r), r.no_password)),
    m.AuthUserDeleteRequest: _auth_change(lambda auth, txn, r: auth.user_delete(txn, r.name)),
    m.AuthUserChangePasswordRequest: _auth_change(lambda auth, txn, r: auth.user_change_password(txn, r.name, _hashed(r))),
    m.AuthUserGrantRoleRequest: _auth_change(lambda auth, txn, r: auth.user_grant_role(txn, r.user, r.role)),
    m.AuthUserRevokeRoleRequest: _auth_change(lambda auth, txn, r: auth.user_revoke_role(txn, r.name, r.role)),
    m.AuthRoleAddRequest: _auth_change(lambda auth, txn, r: auth.role_add(txn, r.name)),
    m.AuthRoleDeleteRequest: _auth_change(lambda auth, txn, r: auth.role_delete(txn, r.role)),
    m.AuthRoleGrantPermissionRequest: _auth_change(lambda auth, txn, r: auth.role_grant_permission(txn, r.name, r.perm)),
    m.AuthRoleRevokePermissionRequest: _auth_change(
        lambda auth, txn, r: auth.role_revoke_permission(txn, r.role, r.key, r.range_end)),
    m.AuthStatusRequest: lambda auth, txn, r, header: m.AuthStatusResponse(header, auth.enabled(txn), auth.revision(txn)),
    m.AuthUserGetRequest: lambda auth, txn, r, header: m.AuthUserGetResponse(header, auth.existing_user(txn, r.name)[1]),
    m.AuthUserListRequest: lambda auth, txn, r, header: m.AuthUserListResponse(header, auth.users(txn)),
    m.AuthRoleGetRequest: lambda auth, txn, r, header: m.AuthRoleGetResponse(header, auth.existing_role(txn, r.role)),
    m.AuthRoleListRequest: lambda auth, txn, r, header: m.AuthRoleListResponse(header, auth.roles(txn)),
}


def _at(header: ResponseHeader, revision: int) -> ResponseHeader:
    return ResponseHeader(header.cluster_id, header.member_id, revision, header.raft_term)
