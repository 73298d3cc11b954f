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

Configuration changes (membership, thesis §4.1) travel as log entries of kind
ENTRY_CONF_CHANGE (etcd's EntryConfChange); every other entry is ENTRY_NORMAL. The
kind is a new field with a default, so entries encoded before it existed (three
fields) still decode, and the state machine's payload format is untouched. The data
of a conf-change entry is ``encode_conf_change(change, conf)``: the change that was
asked for (for the actor: who joins or leaves, and the opaque member record in
``context``) *and* the whole configuration it results in, as LogCabin's entries do.
Carrying the result makes the configuration a function of the log alone: a node
that joins with a different idea of the cluster converges on the first conf-change
entry (or snapshot) it receives, and a restart rebuilds it from the stored log.
The encoding is a small fixed binary layout (no codec: the Raft core decodes it and
must stay free of I/O libraries).
"""

from __future__ import annotations

import dataclasses
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
    (§5.4.2 / thesis §3.6.2); the state machine skips it. kind says how to read data:
    ENTRY_NORMAL (the state machine's payload) or ENTRY_CONF_CHANGE (see
    encode_conf_change)."""

    index: Uint64
    term: Uint64
    data: bytes
    kind: Uint64 = 0


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
    the term of entry `index`; voters and learners are the cluster configuration at
    that point (thesis §4.1: the snapshot carries the configuration, so compacting the
    log never loses it). Snapshots written before learners existed have none."""

    index: Uint64
    term: Uint64
    voters: tuple[Uint64, ...]
    learners: tuple[Uint64, ...] = ()


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


# ---------------------------------------------------------------------------
# Configuration changes
# ---------------------------------------------------------------------------

ENTRY_NORMAL = 0
ENTRY_CONF_CHANGE = 1
ENTRY_KINDS = (ENTRY_NORMAL, ENTRY_CONF_CHANGE)

CONF_ADD_VOTER = 1  # etcd ConfChangeAddNode for a new member
CONF_ADD_LEARNER = 2  # etcd ConfChangeAddLearnerNode
CONF_REMOVE = 3  # etcd ConfChangeRemoveNode (voter or learner)
CONF_PROMOTE = 4  # etcd ConfChangeAddNode for an existing learner
CONF_UPDATE = 5  # etcd ConfChangeUpdateNode: the member record changes, the configuration does not

CONF_CHANGE_NAMES: dict[int, str] = {
    CONF_ADD_VOTER: "add_voter",
    CONF_ADD_LEARNER: "add_learner",
    CONF_REMOVE: "remove",
    CONF_PROMOTE: "promote",
    CONF_UPDATE: "update",
}

# Bounds of the encoding below; far beyond any sensible cluster.
_CONF_FORMAT_VERSION = 1
_CONF_MEMBERS_MAX = 0xFFFF
_ID_BYTES = 8
_COUNT_BYTES = 2


@dataclass(frozen=True, slots=True)
class ConfChange:
    """One single-server change (thesis §4.1). context is opaque to Raft: the actor
    puts the member's record (name, peer URLs) there and reads it back on apply."""

    type: Uint64
    node_id: Uint64
    context: bytes = b""


@dataclass(frozen=True, slots=True)
class ConfState:
    """A configuration: who votes, and who only receives the log (etcd's ConfState)."""

    voters: tuple[Uint64, ...]
    learners: tuple[Uint64, ...] = ()


def encode_conf_change(change: ConfChange, conf: ConfState) -> bytes:
    """The data of a conf-change entry: the change and the configuration after it.
    A follower forwarding a proposal sends an empty configuration; the leader fills
    it in."""
    members = (*conf.voters, *conf.learners)
    assert len(conf.voters) <= _CONF_MEMBERS_MAX and len(conf.learners) <= _CONF_MEMBERS_MAX
    parts = [
        bytes((_CONF_FORMAT_VERSION, change.type)),
        change.node_id.to_bytes(_ID_BYTES, "big"),
        len(conf.voters).to_bytes(_COUNT_BYTES, "big"),
        *(v.to_bytes(_ID_BYTES, "big") for v in conf.voters),
        len(conf.learners).to_bytes(_COUNT_BYTES, "big"),
        *(v.to_bytes(_ID_BYTES, "big") for v in conf.learners),
        change.context,
    ]
    assert all(m > 0 for m in members)
    return b"".join(parts)


def decode_conf_change(data: bytes) -> tuple[ConfChange, ConfState]:
    """Inverse of encode_conf_change; ValueError on anything malformed (the data may
    come from a peer)."""
    if len(data) < 2 + _ID_BYTES + 2 * _COUNT_BYTES or data[0] != _CONF_FORMAT_VERSION:
        raise ValueError("conf change: bad header")
    kind = data[1]
    if kind not in CONF_CHANGE_NAMES:
        raise ValueError(f"conf change: unknown type {kind}")
    position = 2
    node_id = int.from_bytes(data[position : position + _ID_BYTES], "big")
    position += _ID_BYTES
    groups = []
    for _ in range(2):
        if position + _COUNT_BYTES > len(data):
            raise ValueError("conf change: truncated")
        count = int.from_bytes(data[position : position + _COUNT_BYTES], "big")
        position += _COUNT_BYTES
        end = position + count * _ID_BYTES
        if end > len(data):
            raise ValueError("conf change: truncated")
        groups.append(
            tuple(int.from_bytes(data[i : i + _ID_BYTES], "big") for i in range(position, end, _ID_BYTES))
        )
        position = end
    voters, learners = groups
    members = voters + learners
    if node_id == 0 or 0 in members or len(set(members)) != len(members):
        raise ValueError("conf change: node id 0 or a member listed twice")
    return ConfChange(kind, node_id, bytes(data[position:])), ConfState(voters, learners)


# ---------------------------------------------------------------------------
# A quicker __init__ for frozen, slotted dataclasses: the same signature and
# the same instance, built in about half the time. (Here, not in a module of
# its own, because the pure Raft core may import only this module.)
#
# A frozen dataclass's generated __init__ stores each field with
# object.__setattr__(self, "name", value), which looks the name up on every
# call; messages, log entries and Ready are built several times per write in
# every actor turn, and that was ~5% of the raft actor's busy time and ~10% of
# apply's (issue 18). The __init__ made here calls each slot's own descriptor
# (what that lookup finds) directly. The class stays frozen: assignment still
# raises FrozenInstanceError. A class this does not cover (a __post_init__,
# default_factory, init=False, keyword-only or InitVar fields) keeps its
# generated __init__.
# ---------------------------------------------------------------------------


def quicker_init(cls: type) -> type:
    """Give a frozen, slotted dataclass the quicker __init__ (see the module
    docstring); returns cls, so it can be used as a decorator."""
    params = getattr(cls, "__dataclass_params__", None)
    assert params is not None and params.frozen and "__slots__" in cls.__dict__, cls
    fields = dataclasses.fields(cls)
    if (
        hasattr(cls, "__post_init__")
        or len(fields) != sum(1 for f in cls.__dataclass_fields__.values() if f._field_type is not dataclasses._FIELD_CLASSVAR)
        or any(not f.init or f.kw_only or f.default_factory is not dataclasses.MISSING for f in fields)
    ):
        return cls
    namespace: dict[str, object] = {}
    params_text, body = [], []
    for number, f in enumerate(fields):
        setter, default = f"_set{number}", f"_default{number}"
        namespace[setter] = cls.__dict__[f.name].__set__
        if f.default is dataclasses.MISSING:
            params_text.append(f.name)
        else:
            namespace[default] = f.default
            params_text.append(f"{f.name}={default}")
        body.append(f"    {setter}(self, {f.name})")
    source = f"def __init__(self, {', '.join(params_text)}):\n" + ("\n".join(body) or "    pass") + "\n"
    exec(source, namespace)  # noqa: S102 - source built from field names only
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    init.__annotations__ = dict(cls.__init__.__annotations__)  # what inspection of the signature finds
    cls.__init__ = init
    return cls


def quicken_module(namespace: dict, module_name: str) -> None:
    """quicker_init for every frozen, slotted dataclass defined in a module (its
    globals()), called at the module's end."""
    for value in list(namespace.values()):
        params = getattr(value, "__dataclass_params__", None)
        if (isinstance(value, type) and value.__module__ == module_name and params is not None and params.frozen
                and "__slots__" in value.__dict__):
            quicker_init(value)


quicken_module(globals(), __name__)  # quicker_init (transport/raft_messages.py): built on every hot path
