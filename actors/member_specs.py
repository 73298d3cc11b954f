"""A member's addresses and CURVE key, wherever they are written down.

The YAML lists the members a cluster started with; a member added at run time
(cairnctl member add) is known only from the membership the log keeps
(store/members.py: its record and, in security mode curve, its public key).
Actors that reach another member's frontend -- the lease actor forwarding to
the leader, the corruption check asking for HashKV -- look it up here, so a
replaced or added member is reachable without restarting anyone with a new YAML.
"""

from __future__ import annotations

from cairn.config import MemberSpec
from store import members as member_records


def member_spec(config, env, meta_db, member_id: int) -> MemberSpec | None:
    """The YAML's spec of member_id, else one made from the log's record (None
    if neither knows it, or it has no client URL). The keyspace is read only
    for a member the YAML does not list: a lease forward asks once per request."""
    spec = config.member_by_id(member_id)
    if spec is not None or not member_id:
        return spec
    with env.begin() as txn:
        for record in member_records.load(txn, meta_db) or ():
            if record.id == member_id and record.client_urls:
                key = member_records.public_keys(txn, meta_db).get(member_id, "")
                return MemberSpec(record.name, record.peer_urls[0] if record.peer_urls else "", record.client_urls[0],
                                  record.id, public_key=key)
    return None
