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

In security mode curve a member added at run time brings its CURVE public key
(``public_key`` in the context): PUBLIC_KEYS_KEY maps the ids of such members
to their keys, dropped with the member, so every member's peer door admits the
keys of the current members and no others (actors/raft/actor.py). The YAML's
members keep their keys in the YAML.
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
PUBLIC_KEYS_KEY = b"member_public_keys"


def encode_context(name: str, peer_urls, client_urls, public_key: str = "") -> bytes:
    record = {"name": name, "peer_urls": list(peer_urls), "client_urls": list(client_urls)}
    if public_key:
        record["public_key"] = public_key
    return cbor2.dumps(record)


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


def public_keys(txn, meta_db) -> dict[int, str]:
    """{member id: CURVE public key} of the members added at run time with one."""
    raw = txn.get(PUBLIC_KEYS_KEY, db=meta_db)
    return {int(k): str(v) for k, v in cbor2.loads(raw).items()} if raw is not None else {}


def apply_change(txn, meta_db, initial_members, change: ConfChange) -> None:
    """Keep the records, removed ids and public keys in step with a committed change
    (apply's transaction); `initial_members`: the YAML's, until the first change."""
    current = load(txn, meta_db)
    if current is None:
        current = tuple(initial_members)
    gone = set(removed(txn, meta_db))
    keys = public_keys(txn, meta_db)
    if change.type == CONF_REMOVE:
        gone.add(change.node_id)
        keys.pop(change.node_id, None)
    elif change.type in (CONF_ADD_VOTER, CONF_ADD_LEARNER):
        key = decode_context(change.context).get("public_key")
        if isinstance(key, str) and key:
            keys[change.node_id] = key
    save(txn, meta_db, after_change(current, change), gone)
    txn.put(PUBLIC_KEYS_KEY, cbor2.dumps(keys), db=meta_db)


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
