"""Applying lease requests: the part of the state machine that changes the lease table.

Grants, revokes, expiries and checkpoints reach every member through the log and
change the lease table in the same transaction as the batch, so all members
agree on which leases exist. Deadlines are not replicated: only the leader's
lease actor keeps them (see actors/lease.py), and it is told of each change.
"""

from __future__ import annotations

import math

from transport.errors import LeaseNotFoundError, LeaseTTLTooLargeError
from transport.messages import (
    MAX_LEASE_TTL_S,
    LeaseCheckpointRequest,
    LeaseExpireRequest,
    LeaseGrantRequest,
    LeaseGrantResponse,
    LeaseRevokeRequest,
    LeaseRevokeResponse,
    LeasesChanged,
    ResponseHeader,
)

LEASE_WRITES = (LeaseGrantRequest, LeaseRevokeRequest, LeaseExpireRequest, LeaseCheckpointRequest)


def min_lease_ttl_s(settings) -> int:
    """etcd's minimum TTL: 1.5 election timeouts, rounded up to whole seconds, so a
    lease cannot expire merely because leadership moved."""
    return math.ceil(3 * settings.election_ticks * settings.tick_ms / 2 / 1000)


class LeaseChanges:
    """What one batch did to the lease table, for the lease actor."""

    def __init__(self):
        self.granted: dict[int, int] = {}
        self.revoked: list[int] = []

    def __bool__(self) -> bool:
        return bool(self.granted or self.revoked)

    def message(self) -> LeasesChanged:
        return LeasesChanged(tuple(self.granted), tuple(self.granted.values()), tuple(self.revoked))


def apply_lease_request(writer, header: ResponseHeader, request, min_ttl_s: int, changes: LeaseChanges):
    """(response, events) of one lease request; operating errors are raised
    before anything is written."""
    if isinstance(request, LeaseGrantRequest):
        if request.ttl > MAX_LEASE_TTL_S:
            raise LeaseTTLTooLargeError()
        ttl = max(request.ttl, min_ttl_s)
        writer.lease_grant(request.id, ttl)
        changes.granted[request.id] = ttl
        return LeaseGrantResponse(header, request.id, ttl), []
    if isinstance(request, LeaseRevokeRequest):
        revision, events = writer.lease_revoke(request.id)
        changes.revoked.append(request.id)
        return LeaseRevokeResponse(_at(header, revision)), events
    if isinstance(request, LeaseExpireRequest):
        events, revision = [], header.revision
        for lease_id in request.ids:
            try:
                revision, lease_events = writer.lease_revoke(lease_id)
            except LeaseNotFoundError:
                continue  # revoked by a client meanwhile
            events.extend(lease_events)
            changes.revoked.append(lease_id)
        return LeaseRevokeResponse(_at(header, revision)), events
    assert isinstance(request, LeaseCheckpointRequest), request
    for lease_id, remaining in zip(request.ids, request.remaining_ttls):
        try:
            writer.lease_checkpoint(lease_id, remaining)
        except LeaseNotFoundError:
            continue
    return LeaseRevokeResponse(header), []


def _at(header: ResponseHeader, revision: int) -> ResponseHeader:
    return ResponseHeader(header.cluster_id, header.member_id, revision, header.raft_term)
