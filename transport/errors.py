"""Operating errors: typed results that travel to the client.

Each class has a stable `code` (the wire name in ErrorResponse.code) and may carry
typed details. Programmer errors are not here: those are assertions that crash
the actor (see STYLE.md, "Two kinds of errors").

Messages follow etcd's wording (rpctypes/error.go) where etcd has one, so users
searching for an etcd error find the same meaning here.
"""

from __future__ import annotations

from transport.messages import ErrorResponse


class CairnError(Exception):
    """Base of every operating error. `retryable` marks errors that prove the
    request never reached the Raft log, so a client may safely send it again."""

    code = "Unknown"
    retryable = False
    default_text = ""  # etcd's wording where etcd has one; the code otherwise

    def __init__(self, message: str = "", **details):
        self.message = message or self.default_text or self.code
        super().__init__(self.message)
        self.details = details

    def to_response(self) -> ErrorResponse:
        return ErrorResponse(code=self.code, message=self.message, details=self.details or None)

    def __getattr__(self, name):
        # details are exposed as attributes: err.compact_revision, err.leader_hint
        try:
            return self.__dict__["details"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __reduce__(self):
        return (_rebuild, (self.code, self.message, self.details))


def _rebuild(code, message, details):
    return from_response(ErrorResponse(code, message, details))


class InvalidArgumentError(CairnError):
    code = "InvalidArgument"


class EmptyKeyError(InvalidArgumentError):
    code = "EmptyKey"
    default_text = "etcdserver: key is not provided"


class KeyTooLongError(InvalidArgumentError):
    code = "KeyTooLong"


class DuplicateKeyError(InvalidArgumentError):
    code = "DuplicateKey"
    default_text = "etcdserver: duplicate key given in txn request"


class TooManyOpsError(InvalidArgumentError):
    code = "TooManyOps"
    default_text = "etcdserver: too many operations in txn request"


class ValueProvidedError(InvalidArgumentError):
    code = "ValueProvided"
    default_text = "etcdserver: value is provided"


class LeaseProvidedError(InvalidArgumentError):
    code = "LeaseProvided"
    default_text = "etcdserver: lease is provided"


class KeyNotFoundError(CairnError):
    """ignore_value / ignore_lease on a key that does not exist."""

    code = "KeyNotFound"
    default_text = "etcdserver: key not found"


class CompactedError(CairnError):
    """details: compact_revision."""

    code = "Compacted"
    default_text = "etcdserver: mvcc: required revision has been compacted"


class FutureRevisionError(CairnError):
    code = "FutureRevision"
    default_text = "etcdserver: mvcc: required revision is a future revision"


class LeaseNotFoundError(CairnError):
    code = "LeaseNotFound"
    default_text = "etcdserver: requested lease not found"


class LeaseExistsError(CairnError):
    code = "LeaseExists"
    default_text = "etcdserver: lease already exists"


class LeaseTTLTooLargeError(CairnError):
    code = "LeaseTTLTooLarge"
    default_text = "etcdserver: too large lease TTL"


class RequestTooLargeError(CairnError):
    code = "RequestTooLarge"
    retryable = False
    default_text = "etcdserver: request is too large"


class MalformedRequestError(InvalidArgumentError):
    """A frame that does not follow the schema: not CBOR, a wrong type, an
    unknown message. An invalid argument in etcd's terms (gRPC INVALID_ARGUMENT)."""

    code = "MalformedRequest"


class UnsupportedVersionError(MalformedRequestError):
    code = "UnsupportedVersion"


class NoSpaceError(CairnError):
    code = "NoSpace"
    default_text = "etcdserver: mvcc: database space exceeded"


class CorruptError(CairnError):
    """etcd's corrupt applier: while a CORRUPT alarm is raised (a member's
    HashKV differed from the others'), the cluster refuses KV and lease
    requests until `cairnctl alarm disarm`."""

    code = "Corrupt"
    default_text = "etcdserver: corrupt cluster"


class NoLeaderError(CairnError):
    """The request never reached a leader's log: safe to retry."""

    code = "NoLeader"
    retryable = True
    default_text = "etcdserver: no leader"


class NotLeaderError(CairnError):
    code = "NotLeader"
    retryable = True
    default_text = "etcdserver: not leader"


class TooManyRequestsError(CairnError):
    """A queue is at its limit; the request was not accepted: safe to retry."""

    code = "TooManyRequests"
    retryable = True
    default_text = "etcdserver: too many requests"


class TimeoutError_(CairnError):
    """The member took the request but gave no answer in time: the outcome of a
    write is unknown (see IndeterminateError in the client)."""

    code = "Timeout"
    default_text = "etcdserver: request timed out"


class Unavailable(CairnError):
    """No endpoint could be reached."""

    code = "Unavailable"
    retryable = True


class AuthenticationFailed(CairnError):
    """Client side only: the CURVE handshake with a member failed (the member
    refused this client's key, the member's key is not the one this client was
    given, or one side is plaintext). Not retried: no other attempt would fare
    better until the configuration changes. The message says which case, and
    never holds a secret key."""

    code = "AuthenticationFailed"


class ConnectionLostError(CairnError):
    """Client side only: the connection a request left on dropped before the
    answer came. Handled like a timeout after sending: a read is sent again,
    a write becomes IndeterminateError."""

    code = "ConnectionLost"


class IndeterminateError(CairnError):
    """A write was sent but its outcome is unknown: it may or may not have been
    applied. Never retried silently."""

    code = "Indeterminate"


class StoppingError(CairnError):
    code = "Stopping"
    retryable = True
    default_text = "etcdserver: server stopped"


class LockLostError(CairnError):
    """The lease behind a lock (or a campaign) expired while waiting: not held."""

    code = "LockLost"


class ElectionNotLeaderError(CairnError):
    """proclaim or resign by a candidate that does not lead (any more)."""

    code = "ElectionNotLeader"


class AuthError(CairnError):
    """Base of etcd's auth errors; each keeps etcd's code and message."""

    code = "Auth"


def _auth_error(name: str, code: str, message: str, base=AuthError) -> type:
    return type(name, (base,), {"code": code, "default_text": message, "__doc__": message})


class InvalidAuthManagementError(InvalidArgumentError):
    code = "InvalidAuthManagement"
    default_text = "etcdserver: invalid auth management"


class PermissionDeniedError(AuthError):
    code = "PermissionDenied"
    default_text = "etcdserver: permission denied"


class AuthFailedError(AuthError):
    """Wrong user or password; also what a rate-limited attempt gets."""

    code = "AuthFailed"
    default_text = "etcdserver: authentication failed, invalid user ID or password"


class InvalidAuthTokenError(AuthError):
    """Unknown or expired token: the client authenticates again and retries once."""

    code = "InvalidAuthToken"
    default_text = "etcdserver: invalid auth token"


class AuthNotEnabledError(AuthError):
    code = "AuthNotEnabled"
    default_text = "etcdserver: authentication is not enabled"


# etcd's remaining auth errors (rpctypes), by code and message.
RootUserNotExistError = _auth_error("RootUserNotExistError", "RootUserNotExist", "etcdserver: root user does not exist")
RootRoleNotExistError = _auth_error("RootRoleNotExistError", "RootRoleNotExist", "etcdserver: root user does not have root role")
UserAlreadyExistError = _auth_error("UserAlreadyExistError", "UserAlreadyExist", "etcdserver: user name already exists")
UserEmptyError = _auth_error("UserEmptyError", "UserEmpty", "etcdserver: user name is empty", InvalidArgumentError)
UserNotFoundError = _auth_error("UserNotFoundError", "UserNotFound", "etcdserver: user name not found")
RoleAlreadyExistError = _auth_error("RoleAlreadyExistError", "RoleAlreadyExist", "etcdserver: role name already exists")
RoleNotFoundError = _auth_error("RoleNotFoundError", "RoleNotFound", "etcdserver: role name not found")
RoleEmptyError = _auth_error("RoleEmptyError", "RoleEmpty", "etcdserver: role name is empty", InvalidArgumentError)
RoleNotGrantedError = _auth_error("RoleNotGrantedError", "RoleNotGranted", "etcdserver: role is not granted to the user")
PermissionNotGrantedError = _auth_error(
    "PermissionNotGrantedError", "PermissionNotGranted", "etcdserver: permission is not granted to the role")
NoPasswordUserError = _auth_error(
    "NoPasswordUserError", "NoPasswordUser", "etcdserver: authentication failed, password was given for no password user")


class MemberError(CairnError):
    """A refused membership change (etcd's etcdserver/errors.go texts)."""


class MemberIDExistsError(MemberError):
    code = "MemberIDExists"
    default_text = "etcdserver: member ID already exist"


class PeerURLExistsError(MemberError):
    code = "PeerURLExists"
    default_text = "etcdserver: Peer URLs already exists"


class MemberNotFoundError(MemberError):
    code = "MemberNotFound"
    default_text = "etcdserver: member not found"


class NotEnoughStartedMembersError(MemberError):
    code = "NotEnoughStartedMembers"
    default_text = "etcdserver: re-configuration failed due to not enough started members"


class LearnerNotReadyError(MemberError):
    code = "LearnerNotReady"
    default_text = "etcdserver: can only promote a learner member which is in sync with leader"


class MemberNotLearnerError(MemberError):
    code = "MemberNotLearner"
    default_text = "etcdserver: can only promote a learner member"


class ConfChangePendingError(MemberError):
    """Raft changes one member at a time (etcd's raft drops a second change
    while one is pending; cairn says so)."""

    code = "ConfChangePending"
    retryable = True  # never reached a log
    default_text = "etcdserver: a membership change is already in progress"


class UnhealthyClusterError(MemberError):
    code = "UnhealthyCluster"
    default_text = "etcdserver: unhealthy cluster"


class LearnerNotSupportedError(CairnError):
    """A learner takes no writes and no linearizable reads (etcd's
    ErrGRPCNotSupportedForLearner): retryable, so the client moves to another
    member; the request never reached a log."""

    code = "NotSupportedForLearner"
    retryable = True
    default_text = "etcdserver: rpc not supported for learner"


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


ERRORS_BY_CODE: dict[str, type[CairnError]] = {c.code: c for c in _all_subclasses(CairnError)}
ERRORS_BY_CODE[CairnError.code] = CairnError


def from_response(response: ErrorResponse) -> CairnError:
    """The exception an ErrorResponse stands for (CairnError for unknown codes)."""
    cls = ERRORS_BY_CODE.get(response.code, CairnError)
    error = cls(response.message, **(response.details or {}))
    if cls is CairnError:
        error.code = response.code
    return error
