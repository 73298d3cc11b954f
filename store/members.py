"""The cluster's membership records, replicated through the Raft log.

Theory of operation
-------------------
Raft's configuration (actors/raft/membership.py) says only who votes and who
learns, by id. A member's record — name, peer URLs, client URLs, learner or
not — rides in the ConfChange's ``context`` (CBOR, ``encode_context``) of the
conf-change entry that adds or updates it, and every member's apply writes the
whole resulting membership into the keyspace's ``kv_meta`` db under MEMBERS_KEY,
in the same transaction as the applied index. So every member knows it, a
restart keeps it, and a snapshot install (a copy of the keyspace LMDB) carries
it. Until the first change is applied the key is absent and the membership is
the YAML's (the bootstrap configuration; ``initial`` below).

Removed ids are kept too (REMOVED_KEY), as etcd does: a removed member's id is
never a member again, and a member restarted with the data dir of a removed one
finds its id there.
"""

from __future__ import annotations

import cbor2

from transport.messages import Member
from transport.raft_messages import (
    CONF_ADD_LEARNER,
    CONF_ADD_VOTER,
    CONF_PROMOTE,
    CONF_REMOVE,
    CONF_UPDATE,
    ConfChange,
)

MEMBERS_KEY = b"members"
REMOVED_KEY = b"removed_members"


def encode_context(name: str, peer_urls, client_urls) -> bytes:
    return cbor2.dumps({"name": name, "peer_urls": list(peer_urls), "client_urls": list(client_urls)})


def decode_context(context: bytes) -> dict:
    """The record a ConfChange carries ({} if none or unreadable: the change
    still happens, the record keeps what it had)."""
    if not context:
        return {}
    try:
        record = cbor2.loads(context)
    except Exception:  # a record from a newer member: keep the change, skip the record
        return {}
    return record if isinstance(record, dict) else {}


def load(txn, meta_db) -> tuple[Member, ...] | None:
    raw = txn.get(MEMBERS_KEY, db=meta_db)
    if raw is None:
        return None
    return tuple(Member(r[0], r[1], tuple(r[2]), tuple(r[3]), bool(r[4])) for r in cbor2.loads(raw))


def removed(txn, meta_db) -> frozenset[int]:
    raw = txn.get(REMOVED_KEY, db=meta_db)
    return frozenset(cbor2.loads(raw)) if raw is not None else frozenset()


def save(txn, meta_db, members, removed_ids) -> None:
    txn.put(MEMBERS_KEY, cbor2.dumps([[m.id, m.name, list(m.peer_urls), list(m.client_urls), m.is_learner] for m in members]),
            db=meta_db)
    txn.put(REMOVED_KEY, cbor2.dumps(sorted(removed_ids)), db=meta_db)


def after_change(members: tuple[Member, ...], change: ConfChange) -> tuple[Member, ...]:
    """The membership records after a committed change."""
    record = decode_context(change.context)
    node, t = change.node_id, change.type
    if t in (CONF_ADD_VOTER, CONF_ADD_LEARNER):
        kept = tuple(m for m in members if m.id != node)
        return kept + (Member(node, str(record.get("name", "")), tuple(record.get("peer_urls", ())),
                              tuple(record.get("client_urls", ())), t == CONF_ADD_LEARNER),)
    if t == CONF_REMOVE:
        return tuple(m for m in members if m.id != node)
    out = []
    for m in members:
        if m.id == node and t == CONF_PROMOTE:
            m = Member(m.id, m.name, m.peer_urls, m.client_urls, False)
        elif m.id == node and t == CONF_UPDATE and "peer_urls" in record:
            m = Member(m.id, m.name, tuple(record["peer_urls"]), m.client_urls, m.is_learner)
        out.append(m)
    return tuple(out)
