"""etcd's Cluster service in the frontend: MemberAdd, MemberRemove, MemberUpdate,
MemberPromote, and MemberList from the replicated member records.

Theory of operation
-------------------
A change request becomes a ConfChangeProposal for this member's raft actor: the
request's kind (transport.raft_messages CONF_*), the member's id, and the member
record (store/members.py) that rides in the ConfChange's context. The raft actor
makes etcd's checks and proposes it if it leads; otherwise it answers NotLeader or
NoLeader, which the client library retries on another endpoint (the change never
reached a log). Once the change's entry is committed, raft answers
ConfChangeResult(index); the frontend waits until its apply has applied that
index (apply writes the member records in the same transaction) and answers
with etcd's response: the header and the members after the change.

The request waits in the frontend's pending_writes, so its deadline and an
answer of Timeout work as for any write.

A new member's id derives from the cluster name and the member's name, as a
YAML member's does (cairn/config.py member_id_for): the member's own YAML then
gives it its id. The raft actor refuses an id that is or was a member (etcd
never reuses a removed member's id), so an id cannot collide.
"""

from __future__ import annotations

from cairn.config import member_id_for, parse_address
from store import members as member_records
from transport import curve
from transport.errors import ERRORS_BY_CODE, CairnError, InvalidArgumentError, MalformedRequestError, TooManyRequestsError
from transport.messages import (
    ConfChangeProposal,
    ConfChangeResult,
    Member,
    MemberAddRequest,
    MemberAddResponse,
    MemberListResponse,
    MemberPromoteRequest,
    MemberPromoteResponse,
    MemberRemoveRequest,
    MemberRemoveResponse,
    MemberUpdateRequest,
    MemberUpdateResponse,
    ResponseHeader,
)
from transport.raft_messages import CONF_ADD_LEARNER, CONF_ADD_VOTER, CONF_PROMOTE, CONF_REMOVE, CONF_UPDATE


class MemberService:
    def __init__(self, front):
        self.front = front
        self.client_door_keys: dict[int, str] = {}  # run-time members' keys the client door admits
        self.requests: dict[int, object] = {}  # request id -> the change request, until answered
        self.at_index: list[tuple[int, int]] = []  # (index, request id): committed, awaiting apply

    # ------------------------------------------------------------------ list

    def members(self) -> tuple[Member, ...]:
        front = self.front
        with front.env.begin() as txn:
            records = member_records.load(txn, front.keyspace.meta_db)
        if records is None:  # no change applied yet: the YAML's members
            records = tuple(Member(m.id, m.name, (m.peer,), (m.client,)) for m in front.config.members)
        return records

    def header(self) -> ResponseHeader:
        front = self.front
        return ResponseHeader(front.config.id, front.member.id, front.revision, front.raft.term)

    def member_list(self) -> MemberListResponse:
        return MemberListResponse(self.header(), self.members())

    def follow_client_keys(self, txn) -> None:
        """With security.client_keys the client door admits the members' keys as
        well (a member's lease actor, doors and `--join` ask as that member):
        the YAML's, and those of the members added at run time, whose records
        the frontend re-reads once a tick (in `txn`)."""
        front = self.front
        security = front.config.security
        if not (security.curve and security.client_keys):
            return
        keys = member_records.public_keys(txn, front.keyspace.meta_db)
        if keys == self.client_door_keys:
            return
        self.client_door_keys = keys
        front.allow_curve_keys("client", {**{key: "client" for key in security.client_keys},
                                          **front.config.member_public_keys(),
                                          **{key.encode(): f"{member_id:x}" for member_id, key in keys.items()}})

    # ------------------------------------------------------------------ changes

    def handle(self, identity: bytes, request_id: int, request, now: float) -> None:
        front = self.front
        if request_id in front.pending_writes:
            raise MalformedRequestError(f"request id {request_id} is already in flight")
        if len(front.pending_writes) >= front.limits.max_pending_requests:
            raise TooManyRequestsError()
        change_type, node_id, context = self.proposal(request)
        deadline = now + front.settings.request_timeout_ms / 1000
        front.pending_writes[request_id] = (identity, deadline)
        front.expiry.append((deadline, request_id))
        self.requests[request_id] = request
        front.log.info("member_change_requested", request_id=request_id, request=type(request).__name__, member_id=f"{node_id:x}")
        front.send_to_raft(ConfChangeProposal(request_id, change_type, node_id, context), (request_id,))

    def proposal(self, request) -> tuple[int, int, bytes]:
        if isinstance(request, (MemberAddRequest, MemberUpdateRequest)):
            _check_urls(request)
        if isinstance(request, MemberAddRequest):
            if not request.peer_urls:
                raise InvalidArgumentError("etcdserver: member peer URLs are required")
            if not request.name:
                raise InvalidArgumentError("cairn: member add needs the member's name (its id derives from it)")
            node = member_id_for(self.front.config.name, request.name)
            kind = CONF_ADD_LEARNER if request.is_learner else CONF_ADD_VOTER
            return kind, node, member_records.encode_context(request.name, request.peer_urls, request.client_urls,
                                                             self._public_key(request))
        if isinstance(request, MemberRemoveRequest):
            return CONF_REMOVE, request.id, b""
        if isinstance(request, MemberUpdateRequest):
            if not request.peer_urls:
                raise InvalidArgumentError("etcdserver: member peer URLs are required")
            return CONF_UPDATE, request.id, member_records.encode_context("", request.peer_urls, ())
        if isinstance(request, MemberPromoteRequest):
            return CONF_PROMOTE, request.id, b""
        raise MalformedRequestError(f"{type(request).__name__} is not a member change")

    def _public_key(self, request: MemberAddRequest) -> str:
        """The new member's CURVE public key: required in security mode curve (the
        other members' peer doors admit only the keys of members), ignored in
        plaintext. etcd's gRPC MemberAdd has no field for it: use cairnctl or the
        HTTP gateway (curveKey)."""
        if not self.front.config.security.curve:
            return ""
        if not request.public_key:
            raise InvalidArgumentError("cairn: the cluster uses CURVE: member add needs the new member's public key "
                                       "(cairnctl member add --curve-key, or curveKey over HTTP)")
        if not curve.is_key(request.public_key):
            raise InvalidArgumentError("cairn: member add: the public key is not a CURVE public key "
                                       "(40 characters of Z85, as `cairn keygen` prints)")
        if request.public_key in {m.public_key for m in self.front.config.members}:
            raise InvalidArgumentError("cairn: member add: that public key is a configured member's")
        return request.public_key

    def on_result(self, message: ConfChangeResult) -> None:
        front = self.front
        if message.code:
            self.requests.pop(message.request_id, None)
            pending = front.pending_writes.pop(message.request_id, None)
            if pending is not None:
                error_class = ERRORS_BY_CODE.get(message.code, CairnError)
                error = error_class(message.message, **({"leader_hint": message.leader_id} if message.leader_id else {}))
                front.reply_error(pending[0], message.request_id, error)
            return
        request = self.requests.get(message.request_id)
        if isinstance(request, MemberRemoveRequest) and request.id == front.member.id:
            # This member's own removal: it will not apply it (the leader no longer
            # sends it the log), so answer now, with the members after the change.
            self.requests.pop(message.request_id, None)
            pending = front.pending_writes.pop(message.request_id, None)
            if pending is not None:
                members = tuple(m for m in self.members() if m.id != request.id)
                front.reply(pending[0], message.request_id, MemberRemoveResponse(self.header(), members))
            return
        self.at_index.append((message.index, message.request_id))
        self.answer_applied()

    def answer_applied(self) -> None:
        """Answer the changes this member has applied (the records are in its LMDB)."""
        front = self.front
        if not self.at_index or min(index for index, _ in self.at_index) > front.applied_index:
            return
        done = [(index, request_id) for index, request_id in self.at_index if index <= front.applied_index]
        self.at_index = [waiting for waiting in self.at_index if waiting[0] > front.applied_index]
        members = self.members()
        for _, request_id in done:
            request = self.requests.pop(request_id, None)
            pending = front.pending_writes.pop(request_id, None)
            if pending is None or request is None:
                continue
            front.reply(pending[0], request_id, self.response(request, members))
            front.log.info("member_change_answered", request_id=request_id)

    def response(self, request, members):
        header = self.header()
        if isinstance(request, MemberAddRequest):
            node = member_id_for(self.front.config.name, request.name)
            added = next((m for m in members if m.id == node),
                         Member(node, request.name, request.peer_urls, request.client_urls, request.is_learner))
            return MemberAddResponse(header, added, members, self.front.config.name)
        if isinstance(request, MemberRemoveRequest):
            return MemberRemoveResponse(header, members)
        if isinstance(request, MemberUpdateRequest):
            return MemberUpdateResponse(header, members)
        return MemberPromoteResponse(header, members)


def _check_urls(request) -> None:
    """Every URL a member change carries must be tcp://HOST:PORT: it goes into the
    log, and every member's raft actor connects to it (etcd: ErrMemberBadURLs)."""
    for url in tuple(request.peer_urls) + tuple(getattr(request, "client_urls", ())):
        try:
            parse_address(url)
        except ValueError:
            raise InvalidArgumentError(f"etcdserver: given member URLs are invalid ({url!r} is not tcp://HOST:PORT)") from None
