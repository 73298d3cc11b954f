"""Raft's peer protocol: the log entry, the durable state, and the one message type.

Theory of operation
-------------------
These are the only values that cross between two Raft cores (through the raft actor
and the transport) or between a core and its disk. Like transport/messages.py they
are frozen, slotted dataclasses whose field annotations are the wire schema read by
the CBOR codec, so fields use only int, bool, bytes, str, tuples, nested dataclasses
and `X | None`. Message kinds are plain int constants (MSG_*), stored in an int field.

One message class carries every kind, as etcd's raftpb.Message does; which fields
mean something depends on `type`:

=====================  =====================================================================
type                   fields used (besides type/to/sender/term)
=====================  =====================================================================
MSG_APP                index/log_term: the entry preceding `entries` (§5.3 consistency
                       check); entries; commit: the leader's commit index.
MSG_APP_RESP           index: the follower's last matching index (accept), or the
                       rejected `index` of the MsgApp; reject; reject_hint/log_term: on
                       reject, the follower's guess of the last index that may match and
                       its term there (fast backtracking, thesis §5.3 "optimization").
MSG_VOTE, MSG_PRE_VOTE index/log_term: the candidate's last entry (§5.4.1);
                       context == CAMPAIGN_TRANSFER when the election is a leadership
                       transfer (voters then ignore their leader lease). For a pre-vote,
                       term is the term the candidate *would* use (its term + 1).
MSG_VOTE_RESP,         reject. A granted pre-vote response carries the pre-vote's term.
MSG_PRE_VOTE_RESP
MSG_HEARTBEAT          commit: min(follower's match, leader's commit) so the follower never
                       commits an index it may not hold; context: the leader's ReadIndex
                       round id (b"" if no read is pending).
MSG_HEARTBEAT_RESP     context echoed.
MSG_SNAP               snapshot: the metadata of the leader's latest snapshot; the data
                       travels out of band (the actor streams it).
MSG_PROP               entries: proposals forwarded by a follower (index/term unset);
                       term is 0: a forwarded proposal is a local request, not a
                       statement about the sender's term.
MSG_PROP_RESP          entries: the entries of a MSG_PROP the recipient dropped (not
                       leader, no leader, transfer in progress, uncommitted limit),
                       echoed back; reject is always True; term is 0 as for MSG_PROP.
                       Sent only at the moment of dropping, so it proves those entries
                       never entered any log (given a transport that never duplicates
                       a MSG_PROP): the sender's client may safely retry them.
MSG_READ_INDEX         context: the requester's id for the read (echoed back, opaque to the
                       leader); term 0 for the same reason as MSG_PROP.
MSG_READ_INDEX_RESP    index: the read index; context: as in the request.
MSG_TIMEOUT_NOW        (none): "campaign now, skipping pre-vote" (leadership transfer).
MSG_TRANSFER_LEADER    index: the id of the node that should become leader.
=====================  =====================================================================

Node id 0 means "nobody" (no vote, no leader), as in etcd.
"""

from __future__ import annotations

from dataclasses import dataclass

from transport.wire_types import Uint64, enum_of

MSG_APP = 1
MSG_APP_RESP = 2
MSG_VOTE = 3
MSG_VOTE_RESP = 4
MSG_PRE_VOTE = 5
MSG_PRE_VOTE_RESP = 6
MSG_HEARTBEAT = 7
MSG_HEARTBEAT_RESP = 8
MSG_SNAP = 9
MSG_PROP = 10
MSG_READ_INDEX = 11
MSG_READ_INDEX_RESP = 12
MSG_TIMEOUT_NOW = 13
MSG_TRANSFER_LEADER = 14
MSG_PROP_RESP = 15

MESSAGE_TYPE_NAMES: dict[int, str] = {
    MSG_APP: "MSG_APP",
    MSG_APP_RESP: "MSG_APP_RESP",
    MSG_VOTE: "MSG_VOTE",
    MSG_VOTE_RESP: "MSG_VOTE_RESP",
    MSG_PRE_VOTE: "MSG_PRE_VOTE",
    MSG_PRE_VOTE_RESP: "MSG_PRE_VOTE_RESP",
    MSG_HEARTBEAT: "MSG_HEARTBEAT",
    MSG_HEARTBEAT_RESP: "MSG_HEARTBEAT_RESP",
    MSG_SNAP: "MSG_SNAP",
    MSG_PROP: "MSG_PROP",
    MSG_READ_INDEX: "MSG_READ_INDEX",
    MSG_READ_INDEX_RESP: "MSG_READ_INDEX_RESP",
    MSG_TIMEOUT_NOW: "MSG_TIMEOUT_NOW",
    MSG_TRANSFER_LEADER: "MSG_TRANSFER_LEADER",
    MSG_PROP_RESP: "MSG_PROP_RESP",
}

MessageType = enum_of("MessageType", MESSAGE_TYPE_NAMES)

# MSG_VOTE / MSG_PRE_VOTE context marking a leadership-transfer election (etcd's
# campaignTransfer): voters must not ignore it because of their leader lease.
CAMPAIGN_TRANSFER = b"CampaignTransfer"


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. data == b"" is the no-op a leader appends when elected
    (§5.4.2 / thesis §3.6.2); the state machine skips it."""

    index: Uint64
    term: Uint64
    data: bytes


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on disk before any message that depends on it leaves (§5.1 'updated
    on stable storage before responding to RPCs')."""

    term: Uint64 = 0
    vote: Uint64 = 0
    commit: Uint64 = 0


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Identifies a state-machine snapshot: it contains every entry <= index; term is
    the term of entry `index`; voters is the cluster configuration at that point."""

    index: Uint64
    term: Uint64
    voters: tuple[Uint64, ...]


@dataclass(frozen=True, slots=True)
class RaftMessage:
    type: MessageType
    to: Uint64
    sender: Uint64
    term: Uint64
    log_term: Uint64 = 0
    index: Uint64 = 0
    entries: tuple[Entry, ...] = ()
    commit: Uint64 = 0
    reject: bool = False
    reject_hint: Uint64 = 0
    context: bytes = b""
    snapshot: SnapshotMeta | None = None
