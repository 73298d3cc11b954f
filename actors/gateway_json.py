"""etcd v3's JSON mapping of its protocol buffers, for the HTTP gateway.

Pure translation, no I/O: a JSON request body (already parsed by json.loads)
becomes a transport message; a response message becomes the dict etcd 3.4's
grpc-gateway would write. The rules are protobuf's JSON mapping as etcd
configures it (OrigName, no EmitDefaults):

* input: a field may be named as in the .proto (`range_end`) or in lowerCamelCase
  (`rangeEnd`); bytes are base64; int64 is a JSON number or a decimal string;
  enums are names (`"DESCEND"`) or numbers; null means the default.
* output: the .proto's names; int64 as decimal strings; enums by name; zero
  values, empty lists and false are omitted.

One departure from etcd's gateway: a field it does not know is an error here
(400), where etcd silently ignores it. A misspelt `range_end` would otherwise
turn a range into a single-key read without a word.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import re

from actors import etcd_api
from transport import messages as m

INT64_MIN, UINT64_MAX = -(1 << 63), (1 << 64) - 1


class BadRequest(Exception):
    """The body does not map onto the request message: HTTP 400, gRPC code 3."""


# ---------------------------------------------------------------- bodies


class JsonObjects:
    """The JSON objects of a request body, one after another, as its bytes arrive.

    A streaming call's body may hold several request objects and may arrive
    over time (`curl -N ... -d @-` typed by hand), so objects are handed out as
    soon as each is complete. Text that does not parse yet is kept until more
    comes, up to `max_pending_bytes`; whatever is left unparsed at the end of
    the body is malformed."""

    def __init__(self, max_pending_bytes: int):
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._json = json.JSONDecoder()
        self._text = ""
        self._max = max_pending_bytes

    def feed(self, data: bytes) -> list[dict]:
        try:
            self._text += self._decoder.decode(data)
        except UnicodeDecodeError:
            raise BadRequest("the body is not UTF-8") from None
        objects = self._parse(final=False)
        if len(self._text) > self._max:
            raise BadRequest(f"a request object is larger than {self._max} bytes or malformed")
        return objects

    def finish(self) -> list[dict]:
        """The body ended: the last objects, or BadRequest for what is left over."""
        try:
            self._text += self._decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise BadRequest("the body is not UTF-8") from None
        return self._parse(final=True)

    def _parse(self, final: bool) -> list[dict]:
        objects, text, position = [], self._text, 0
        while True:
            while position < len(text) and text[position].isspace():
                position += 1
            if position == len(text):
                break
            try:
                value, position = self._json.raw_decode(text, position)
            except json.JSONDecodeError as error:
                if final:
                    raise BadRequest(f"malformed JSON: {error}") from None
                break  # perhaps incomplete: wait for more
            except RecursionError:  # "[[[[..." deeper than the parser's stack: no request nests so
                raise BadRequest("malformed JSON: nested too deeply") from None
            if not isinstance(value, dict):
                raise BadRequest(f"expected a JSON object, got {_json_type(value)}")
            objects.append(value)
        self._text = text[position:]
        return objects


# ---------------------------------------------------------------- field kinds


def _bytes(value, where: str) -> bytes:
    if not isinstance(value, str):
        raise BadRequest(f"{where}: expected a base64 string, got {_json_type(value)}")
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        position = next((i for i, c in enumerate(value) if not re.match(r"[A-Za-z0-9+/=]", c)), len(value))
        raise BadRequest(f"{where}: illegal base64 data at input byte {position}") from None


def _int(value, where: str) -> int:
    if isinstance(value, bool):
        raise BadRequest(f"{where}: expected an integer, got {_json_type(value)}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and re.fullmatch(r"-?\d{1,20}", value):
        number = int(value)
    else:
        raise BadRequest(f"{where}: expected an integer (a number or a decimal string), got {value!r}")
    if not INT64_MIN <= number <= UINT64_MAX:
        raise BadRequest(f"{where}: {number} is out of the 64-bit range")
    return number


def _bool(value, where: str) -> bool:
    if not isinstance(value, bool):
        raise BadRequest(f"{where}: expected true or false, got {_json_type(value)}")
    return value


def _string(value, where: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{where}: expected a string, got {_json_type(value)}")
    return value


def _enum(names: dict[str, int]):
    numbers = set(names.values())

    def parse(value, where: str) -> int:
        if isinstance(value, str) and value in names:
            return names[value]
        if isinstance(value, int) and not isinstance(value, bool) and value in numbers:
            return value
        raise BadRequest(f"{where}: {value!r} is not one of {', '.join(names)}")

    return parse


def _json_type(value) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array",
            dict: "an object"}.get(type(value), type(value).__name__)


SORT_ORDERS = {"NONE": m.SORT_NONE, "ASCEND": m.SORT_ASCEND, "DESCEND": m.SORT_DESCEND}
SORT_TARGETS = {"KEY": m.SORT_BY_KEY, "VERSION": m.SORT_BY_VERSION, "CREATE": m.SORT_BY_CREATE,
                "MOD": m.SORT_BY_MOD, "VALUE": m.SORT_BY_VALUE}
COMPARE_RESULTS = {"EQUAL": m.COMPARE_EQUAL, "GREATER": m.COMPARE_GREATER, "LESS": m.COMPARE_LESS,
                   "NOT_EQUAL": m.COMPARE_NOT_EQUAL}
COMPARE_TARGETS = {"VERSION": m.TARGET_VERSION, "CREATE": m.TARGET_CREATE, "MOD": m.TARGET_MOD,
                   "VALUE": m.TARGET_VALUE, "LEASE": m.TARGET_LEASE}
WATCH_FILTERS = {"NOPUT": m.WATCH_FILTER_NOPUT, "NODELETE": m.WATCH_FILTER_NODELETE}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _fields(body, message: str, kinds: dict) -> dict:
    """{proto field name: parsed value} for the fields present in `body`."""
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise BadRequest(f"{message}: expected a JSON object, got {_json_type(body)}")
    by_name = {}
    for name in kinds:
        by_name[name] = name
        by_name[_camel(name)] = name
    values = {}
    for key, value in body.items():
        name = by_name.get(key)
        if name is None:
            raise BadRequest(f"{message}: unknown field {key!r}")
        if name in values:
            raise BadRequest(f"{message}: field {name!r} given twice")
        if value is None:
            continue
        values[name] = kinds[name](value, f"{message}.{name}")
    return values


def _list(kind):
    def parse(value, where: str) -> list:
        if not isinstance(value, list):
            raise BadRequest(f"{where}: expected an array, got {_json_type(value)}")
        return [kind(item, f"{where}[{i}]") for i, item in enumerate(value)]

    return parse


# ---------------------------------------------------------------- requests


def range_request(body) -> m.RangeRequest:
    values = _fields(body, "RangeRequest", {
        "key": _bytes, "range_end": _bytes, "limit": _int, "revision": _int,
        "sort_order": _enum(SORT_ORDERS), "sort_target": _enum(SORT_TARGETS),
        "serializable": _bool, "keys_only": _bool, "count_only": _bool,
        "min_mod_revision": _int, "max_mod_revision": _int, "min_create_revision": _int, "max_create_revision": _int,
    })
    return m.RangeRequest(**{"key": b"", **values})


def put_request(body) -> m.PutRequest:
    values = _fields(body, "PutRequest", {
        "key": _bytes, "value": _bytes, "lease": _int, "prev_kv": _bool, "ignore_value": _bool, "ignore_lease": _bool,
    })
    return m.PutRequest(**{"key": b"", **values})


def delete_range_request(body) -> m.DeleteRangeRequest:
    values = _fields(body, "DeleteRangeRequest", {"key": _bytes, "range_end": _bytes, "prev_kv": _bool})
    return m.DeleteRangeRequest(**{"key": b"", **values})


def _compare(body, where: str) -> m.Compare:
    values = _fields(body, where, {
        "result": _enum(COMPARE_RESULTS), "target": _enum(COMPARE_TARGETS), "key": _bytes, "range_end": _bytes,
        "version": _int, "create_revision": _int, "mod_revision": _int, "value": _bytes, "lease": _int,
    })
    target = values.get("target", m.TARGET_VERSION)
    operand_field = {m.TARGET_VERSION: "version", m.TARGET_CREATE: "create_revision", m.TARGET_MOD: "mod_revision",
                     m.TARGET_VALUE: "value", m.TARGET_LEASE: "lease"}[target]
    operands = [name for name in ("version", "create_revision", "mod_revision", "value", "lease") if name in values]
    if any(name != operand_field for name in operands):
        raise BadRequest(f"{where}: target {_name_of(COMPARE_TARGETS, target)} compares {operand_field}, not {operands[0]}")
    operand = values.get(operand_field, b"" if target == m.TARGET_VALUE else 0)
    return m.Compare(values.get("result", m.COMPARE_EQUAL), target, values.get("key", b""), operand,
                     values.get("range_end", b""))


def _request_op(body, where: str):
    values = _fields(body, where, {
        "request_range": lambda v, w: range_request(_object(v, w)),
        "request_put": lambda v, w: put_request(_object(v, w)),
        "request_delete_range": lambda v, w: delete_range_request(_object(v, w)),
        "request_txn": lambda v, w: txn_request(_object(v, w)),
    })
    if len(values) != 1:
        raise BadRequest(f"{where}: give exactly one of request_range, request_put, request_delete_range, request_txn")
    return next(iter(values.values()))


def _object(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise BadRequest(f"{where}: expected a JSON object, got {_json_type(value)}")
    return value


def txn_request(body) -> m.TxnRequest:
    values = _fields(body, "TxnRequest", {
        "compare": _list(_compare), "success": _list(_request_op), "failure": _list(_request_op),
    })
    return m.TxnRequest(tuple(values.get("compare", ())), tuple(values.get("success", ())), tuple(values.get("failure", ())))


def compaction_request(body) -> m.CompactionRequest:
    values = _fields(body, "CompactionRequest", {"revision": _int, "physical": _bool})
    return m.CompactionRequest(values.get("revision", 0), values.get("physical", False))


def lease_grant_request(body) -> m.LeaseGrantRequest:
    values = _fields(body, "LeaseGrantRequest", {"TTL": _int, "ID": _int})
    return m.LeaseGrantRequest(values.get("TTL", 0), values.get("ID", 0))


def lease_revoke_request(body) -> m.LeaseRevokeRequest:
    return m.LeaseRevokeRequest(_fields(body, "LeaseRevokeRequest", {"ID": _int}).get("ID", 0))


def lease_keepalive_request(body) -> m.LeaseKeepAliveRequest:
    return m.LeaseKeepAliveRequest(_fields(body, "LeaseKeepAliveRequest", {"ID": _int}).get("ID", 0))


def lease_time_to_live_request(body) -> m.LeaseTimeToLiveRequest:
    values = _fields(body, "LeaseTimeToLiveRequest", {"ID": _int, "keys": _bool})
    return m.LeaseTimeToLiveRequest(values.get("ID", 0), values.get("keys", False))


def empty_request(message):
    """The parser of a request with no fields that matter (status, member list,
    leases): the body is checked, and `message` is the request."""
    name = type(message).__name__

    def parse(body):
        _fields(body, name, {"linearizable": _bool})
        return message

    return parse


ALARM_ACTIONS = {"GET": m.ALARM_GET, "ACTIVATE": m.ALARM_ACTIVATE, "DEACTIVATE": m.ALARM_DEACTIVATE}
ALARM_TYPES = {"NONE": m.ALARM_NONE, "NOSPACE": m.ALARM_NOSPACE, "CORRUPT": m.ALARM_CORRUPT}


def alarm_request(body) -> m.AlarmRequest:
    values = _fields(body, "AlarmRequest", {"action": _enum(ALARM_ACTIONS), "memberID": _int, "alarm": _enum(ALARM_TYPES)})
    return m.AlarmRequest(values.get("action", m.ALARM_GET), values.get("memberID", 0), values.get("alarm", m.ALARM_NONE))


def lock_request(body) -> m.LockRequest:
    values = _fields(body, "LockRequest", {"name": _bytes, "lease": _int})
    return m.LockRequest(values.get("name", b""), values.get("lease", 0))


def unlock_request(body) -> m.UnlockRequest:
    return m.UnlockRequest(_fields(body, "UnlockRequest", {"key": _bytes}).get("key", b""))


def _leader_key(value, where: str) -> m.LeaderKey:
    values = _fields(_object(value, where), where, {"name": _bytes, "key": _bytes, "rev": _int, "lease": _int})
    return m.LeaderKey(values.get("name", b""), values.get("key", b""), values.get("rev", 0), values.get("lease", 0))


def campaign_request(body) -> m.CampaignRequest:
    values = _fields(body, "CampaignRequest", {"name": _bytes, "lease": _int, "value": _bytes})
    return m.CampaignRequest(values.get("name", b""), values.get("lease", 0), values.get("value", b""))


def proclaim_request(body) -> m.ProclaimRequest:
    values = _fields(body, "ProclaimRequest", {"leader": _leader_key, "value": _bytes})
    if "leader" not in values:
        raise BadRequest("ProclaimRequest.leader: missing")
    return m.ProclaimRequest(values["leader"], values.get("value", b""))


def leader_request(body) -> m.LeaderRequest:
    return m.LeaderRequest(_fields(body, "LeaderRequest", {"name": _bytes}).get("name", b""))


def resign_request(body) -> m.ResignRequest:
    values = _fields(body, "ResignRequest", {"leader": _leader_key})
    if "leader" not in values:
        raise BadRequest("ResignRequest.leader: missing")
    return m.ResignRequest(values["leader"])


def authenticate_request(body) -> tuple[str, str]:
    values = _fields(body, "AuthenticateRequest", {"name": _string, "password": _string})
    return values.get("name", ""), values.get("password", "")


def watch_request(body):
    """One object of a watch stream: a WatchCreateRequest, WatchCancelRequest or
    WatchProgressRequest."""
    values = _fields(body, "WatchRequest", {
        "create_request": lambda v, w: _watch_create(_object(v, w), w),
        "cancel_request": lambda v, w: m.WatchCancelRequest(_fields(_object(v, w), w, {"watch_id": _int}).get("watch_id", 0)),
        "progress_request": lambda v, w: (_fields(_object(v, w), w, {}), m.WatchProgressRequest())[1],
    })
    if len(values) != 1:
        raise BadRequest("WatchRequest: give exactly one of create_request, cancel_request, progress_request")
    return next(iter(values.values()))


def _watch_create(body: dict, where: str) -> m.WatchCreateRequest:
    values = _fields(body, where, {
        "key": _bytes, "range_end": _bytes, "start_revision": _int, "progress_notify": _bool,
        "filters": _list(_enum(WATCH_FILTERS)), "prev_kv": _bool, "watch_id": _int, "fragment": _bool,
    })
    values["filters"] = tuple(values.get("filters", ()))
    return m.WatchCreateRequest(**{"key": b"", **values})


# ---------------------------------------------------------------- responses


def _name_of(names: dict[str, int], number: int) -> str:
    return next((name for name, value in names.items() if value == number), str(number))


def _put_int(out: dict, name: str, value: int) -> None:
    if value:
        out[name] = str(value)


def header(h: m.ResponseHeader, nested: bool = False) -> dict:
    """A response header; responses inside a txn carry only their revision, as etcd's."""
    out: dict = {}
    if not nested:
        _put_int(out, "cluster_id", h.cluster_id)
        _put_int(out, "member_id", h.member_id)
    _put_int(out, "revision", h.revision)
    if not nested:
        _put_int(out, "raft_term", h.raft_term)
    return out


def key_value(kv: m.KeyValue) -> dict:
    out: dict = {}
    if kv.key:
        out["key"] = _b64(kv.key)
    _put_int(out, "create_revision", kv.create_revision)
    _put_int(out, "mod_revision", kv.mod_revision)
    _put_int(out, "version", kv.version)
    if kv.value:
        out["value"] = _b64(kv.value)
    _put_int(out, "lease", kv.lease)
    return out


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def range_response(r: m.RangeResponse, nested: bool = False) -> dict:
    out = {"header": header(r.header, nested)}
    if r.kvs:
        out["kvs"] = [key_value(kv) for kv in r.kvs]
    if r.more:
        out["more"] = True
    _put_int(out, "count", r.count)
    return out


def put_response(r: m.PutResponse, nested: bool = False) -> dict:
    out = {"header": header(r.header, nested)}
    if r.prev_kv is not None:
        out["prev_kv"] = key_value(r.prev_kv)
    return out


def delete_range_response(r: m.DeleteRangeResponse, nested: bool = False) -> dict:
    out = {"header": header(r.header, nested)}
    _put_int(out, "deleted", r.deleted)
    if r.prev_kvs:
        out["prev_kvs"] = [key_value(kv) for kv in r.prev_kvs]
    return out


_RESPONSE_OPS = {
    m.RangeResponse: ("response_range", range_response),
    m.PutResponse: ("response_put", put_response),
    m.DeleteRangeResponse: ("response_delete_range", delete_range_response),
}


def txn_response(r: m.TxnResponse, nested: bool = False) -> dict:
    out = {"header": header(r.header, nested)}
    if r.succeeded:
        out["succeeded"] = True
    if r.responses:
        ops = []
        for response in r.responses:
            if isinstance(response, m.TxnResponse):
                ops.append({"response_txn": txn_response(response, nested=True)})
            else:
                name, encode = _RESPONSE_OPS[type(response)]
                ops.append({name: encode(response, nested=True)})
        out["responses"] = ops
    return out


def header_only(r) -> dict:
    return {"header": header(r.header)}


def lease_grant_response(r: m.LeaseGrantResponse) -> dict:
    out = {"header": header(r.header)}
    _put_int(out, "ID", r.id)
    _put_int(out, "TTL", r.ttl)
    if r.error:
        out["error"] = r.error
    return out


def lease_keepalive_response(r: m.LeaseKeepAliveResponse) -> dict:
    """etcd's gateway streams keep-alives: each answer is wrapped in "result". A
    lease that is gone answers with no TTL (TTL 0 is omitted)."""
    out = {"header": header(r.header)}
    _put_int(out, "ID", r.id)
    _put_int(out, "TTL", max(r.ttl, 0))
    return {"result": out}


def lease_time_to_live_response(r: m.LeaseTimeToLiveResponse) -> dict:
    out = {"header": header(r.header)}
    _put_int(out, "ID", r.id)
    _put_int(out, "TTL", r.ttl)
    _put_int(out, "grantedTTL", r.granted_ttl)
    if r.keys:
        out["keys"] = [_b64(key) for key in r.keys]
    return out


def lease_leases_response(r: m.LeaseLeasesResponse) -> dict:
    out = {"header": header(r.header)}
    if r.leases:
        out["leases"] = [{"ID": str(lease)} for lease in r.leases]
    return out


def member_add_request(body) -> m.MemberAddRequest:
    """etcd's MemberAddRequest, and cairn's `name` (the new member's id derives
    from it), `clientURLs` and `curveKey` (its CURVE public key)."""
    values = _fields(body, "MemberAddRequest", {"peerURLs": _list(_string), "isLearner": _bool, "name": _string,
                                                "clientURLs": _list(_string), "curveKey": _string})
    return m.MemberAddRequest(tuple(values.get("peerURLs", ())), values.get("isLearner", False), values.get("name", ""),
                              tuple(values.get("clientURLs", ())), values.get("curveKey", ""))


def member_remove_request(body) -> m.MemberRemoveRequest:
    return m.MemberRemoveRequest(_fields(body, "MemberRemoveRequest", {"ID": _int}).get("ID", 0))


def member_update_request(body) -> m.MemberUpdateRequest:
    values = _fields(body, "MemberUpdateRequest", {"ID": _int, "peerURLs": _list(_string)})
    return m.MemberUpdateRequest(values.get("ID", 0), tuple(values.get("peerURLs", ())))


def member_promote_request(body) -> m.MemberPromoteRequest:
    return m.MemberPromoteRequest(_fields(body, "MemberPromoteRequest", {"ID": _int}).get("ID", 0))


def member_change_response(r, http_urls: dict[int, str]) -> dict:
    """MemberAdd/Remove/Update/PromoteResponse: the header and the members after
    the change (and MemberAdd's `member`), as member list renders them."""
    out = member_list_response(m.MemberListResponse(r.header, r.members), http_urls)
    out["header"] = header(r.header)
    if isinstance(r, m.MemberAddResponse):
        out["member"] = member_list_response(m.MemberListResponse(r.header, (r.member,)), http_urls)["members"][0]
    return out


def member_list_response(r: m.MemberListResponse, http_urls: dict[int, str]) -> dict:
    """Members' clientURLs are their gateways' http URLs where they have one, so
    that HTTP clients (Patroni) discover the others; the header has no revision, as etcd's."""
    h = r.header
    out = {"header": header(m.ResponseHeader(h.cluster_id, h.member_id, 0, h.raft_term))}
    members = []
    for member in r.members:
        entry: dict = {}
        _put_int(entry, "ID", member.id)
        if member.name:
            entry["name"] = member.name
        if member.peer_urls:
            entry["peerURLs"] = list(member.peer_urls)
        client_urls = [http_urls[member.id]] if http_urls.get(member.id) else list(member.client_urls)
        if client_urls:
            entry["clientURLs"] = client_urls
        if member.is_learner:
            entry["isLearner"] = True
        members.append(entry)
    if members:
        out["members"] = members
    return out


def status_response(r: m.StatusResponse, version: str) -> dict:
    out: dict = {"header": header(r.header), "version": version}
    _put_int(out, "dbSize", r.db_size)
    _put_int(out, "leader", r.leader)
    _put_int(out, "raftIndex", r.raft_index)
    _put_int(out, "raftTerm", r.raft_term)
    _put_int(out, "raftAppliedIndex", r.raft_applied_index)
    _put_int(out, "dbSizeInUse", r.db_size_in_use)
    if r.errors:
        out["errors"] = list(r.errors)
    if r.is_learner:
        out["isLearner"] = True
    return out


def alarm_response(r: m.AlarmResponse) -> dict:
    out = {"header": header(r.header)}
    if r.alarms:
        out["alarms"] = [{**({"memberID": str(a.member_id)} if a.member_id else {}),
                          **({"alarm": _name_of(ALARM_TYPES, a.alarm)} if a.alarm else {})} for a in r.alarms]
    return out


def lock_response(r: m.LockResponse) -> dict:
    out = {"header": header(r.header)}
    if r.key:
        out["key"] = _b64(r.key)
    return out


def campaign_response(r: m.CampaignResponse) -> dict:
    leader: dict = {}
    if r.leader.name:
        leader["name"] = _b64(r.leader.name)
    if r.leader.key:
        leader["key"] = _b64(r.leader.key)
    _put_int(leader, "rev", r.leader.rev)
    _put_int(leader, "lease", r.leader.lease)
    return {"header": header(r.header), "leader": leader}


def leader_response(r: m.LeaderResponse) -> dict:
    out = {"header": header(r.header)}
    if r.kv is not None:
        out["kv"] = key_value(r.kv)
    return out


def event(e: m.Event) -> dict:
    out: dict = {}
    if e.type == m.EVENT_DELETE:
        out["type"] = "DELETE"
    out["kv"] = key_value(e.kv)
    if e.prev_kv is not None:
        out["prev_kv"] = key_value(e.prev_kv)
    return out


def watch_response(r: m.WatchResponse, watch_id: int) -> dict:
    """One message of the watch stream; `watch_id` is the id within this HTTP
    stream (each stream numbers its watches from 0, as each etcd gRPC stream does)."""
    h = r.header
    if r.compact_revision:  # etcd's compaction notice carries no revision
        h = m.ResponseHeader(h.cluster_id, h.member_id, 0, h.raft_term)
    out: dict = {"header": header(h)}
    _put_int(out, "watch_id", watch_id)
    if r.created:
        out["created"] = True
    if r.canceled:
        out["canceled"] = True
    _put_int(out, "compact_revision", r.compact_revision)
    if r.cancel_reason and not r.compact_revision:  # etcd gives no reason for compaction
        out["cancel_reason"] = r.cancel_reason
    if r.fragment:
        out["fragment"] = True
    if r.events:
        out["events"] = [event(e) for e in r.events]
    return {"result": out}


# ---------------------------------------------------------------- errors

# The gRPC codes and etcd's mapping of cairn's errors onto them are shared with
# the gRPC door (actors/etcd_api.py); here they get etcd grpc-gateway's HTTP status.
GRPC_INVALID_ARGUMENT, GRPC_NOT_FOUND, GRPC_FAILED_PRECONDITION = (
    etcd_api.GRPC_INVALID_ARGUMENT, etcd_api.GRPC_NOT_FOUND, etcd_api.GRPC_FAILED_PRECONDITION)
GRPC_RESOURCE_EXHAUSTED, GRPC_OUT_OF_RANGE, GRPC_UNAVAILABLE, GRPC_UNKNOWN = (
    etcd_api.GRPC_RESOURCE_EXHAUSTED, etcd_api.GRPC_OUT_OF_RANGE, etcd_api.GRPC_UNAVAILABLE, etcd_api.GRPC_UNKNOWN)
HTTP_STATUS = {2: 500, 3: 400, 4: 504, 5: 404, 7: 403, 8: 429, 9: 412, 11: 400, 12: 501, 14: 503, 16: 401}
ERROR_CODES = etcd_api.ERROR_CODES
AUTH_NOT_ENABLED = etcd_api.AUTH_NOT_ENABLED


def error_body(grpc_code: int, message: str) -> tuple[int, dict]:
    """(HTTP status, body) of an error, as etcd 3.4's grpc-gateway writes it."""
    return HTTP_STATUS.get(grpc_code, 500), {"error": message, "message": message, "code": grpc_code}


def error_for(code: str, message: str) -> tuple[int, dict]:
    """(HTTP status, body) for one of cairn's error codes (transport/errors.py)."""
    return error_body(*etcd_api.grpc_status(code, message))


def stream_error(grpc_code: int, message: str) -> dict:
    """An error inside a stream (watch, keep-alive), as the gateway writes it there."""
    status, _ = error_body(grpc_code, message)
    return {"error": {"grpc_code": grpc_code, "http_code": status, "message": message,
                      "http_status": _HTTP_REASONS.get(status, "")}}


_HTTP_REASONS = {400: "Bad Request", 404: "Not Found", 412: "Precondition Failed", 429: "Too Many Requests",
                 500: "Internal Server Error", 503: "Service Unavailable", 504: "Gateway Timeout"}


# ---------------------------------------------------------------- maintenance: Hash, HashKV, Snapshot


def hash_kv_request(body) -> m.HashKVRequest:
    return m.HashKVRequest(_fields(body, "HashKVRequest", {"revision": _int}).get("revision", 0))


def hash_response(r: m.HashResponse) -> dict:
    out: dict = {"header": header(r.header)}
    if r.hash:
        out["hash"] = r.hash  # uint32 in etcd's proto: a JSON number
    return out


def hash_kv_response(r: m.HashKVResponse) -> dict:
    out = hash_response(r)
    _put_int(out, "compact_revision", r.compact_revision)
    _put_int(out, "hash_revision", r.hash_revision)
    return out


def snapshot_response(r: m.SnapshotResponse) -> dict:
    """One piece of etcd's Snapshot stream: {"result": {...}} per line."""
    out: dict = {"header": header(r.header)}
    _put_int(out, "remaining_bytes", r.remaining_bytes)
    if r.blob:
        out["blob"] = _b64(r.blob)
    return {"result": out}


# ---------------------------------------------------------------- auth (etcd's /v3/auth/*)

_PERM_TYPES = {name: number for number, name in m.PERM_NAMES.items()}


def _no_fields(message):
    name = type(message).__name__

    def parse(body):
        _fields(body, name, {})
        return message

    return parse


def _one_string(cls, field: str):
    def parse(body):
        return cls(_fields(body, cls.__name__, {field: _string}).get(field, ""))

    return parse


def _permission(value, where: str) -> m.Permission:
    values = _fields(_object(value, where), where, {"permType": _enum(_PERM_TYPES), "key": _bytes, "range_end": _bytes})
    return m.Permission(values.get("permType", m.PERM_READ), values.get("key", b""), values.get("range_end", b""))


def _user_add(body) -> m.AuthUserAddRequest:
    values = _fields(body, "AuthUserAddRequest", {
        "name": _string, "password": _string, "hashedPassword": _string,
        "options": lambda v, w: _fields(_object(v, w), w, {"no_password": _bool})})
    if values.get("hashedPassword"):
        raise BadRequest("AuthUserAddRequest.hashedPassword: not accepted; send the password")
    no_password = values.get("options", {}).get("no_password", False)
    return m.AuthUserAddRequest(values.get("name", ""), values.get("password", ""), "", no_password)


def _user_changepw(body) -> m.AuthUserChangePasswordRequest:
    values = _fields(body, "AuthUserChangePasswordRequest", {"name": _string, "password": _string})
    return m.AuthUserChangePasswordRequest(values.get("name", ""), values.get("password", ""))


def _user_grant(body) -> m.AuthUserGrantRoleRequest:
    values = _fields(body, "AuthUserGrantRoleRequest", {"user": _string, "role": _string})
    return m.AuthUserGrantRoleRequest(values.get("user", ""), values.get("role", ""))


def _user_revoke(body) -> m.AuthUserRevokeRoleRequest:
    values = _fields(body, "AuthUserRevokeRoleRequest", {"name": _string, "role": _string})
    return m.AuthUserRevokeRoleRequest(values.get("name", ""), values.get("role", ""))


def _role_grant(body) -> m.AuthRoleGrantPermissionRequest:
    values = _fields(body, "AuthRoleGrantPermissionRequest", {"name": _string, "perm": _permission})
    if "perm" not in values:
        raise BadRequest("AuthRoleGrantPermissionRequest.perm: missing")
    return m.AuthRoleGrantPermissionRequest(values.get("name", ""), values["perm"])


def _role_revoke(body) -> m.AuthRoleRevokePermissionRequest:
    values = _fields(body, "AuthRoleRevokePermissionRequest", {"role": _string, "key": _bytes, "range_end": _bytes})
    return m.AuthRoleRevokePermissionRequest(values.get("role", ""), values.get("key", b""), values.get("range_end", b""))


def authenticate_response(r: m.AuthenticateResponse) -> dict:
    return {"header": header(r.header), "token": r.token}


def auth_status_response(r: m.AuthStatusResponse) -> dict:
    out = {"header": header(r.header)}
    if r.enabled:
        out["enabled"] = True
    _put_int(out, "authRevision", r.auth_revision)
    return out


def _names(field: str):
    def render(r) -> dict:
        out = {"header": header(r.header)}
        names = getattr(r, field)
        if names:
            out[field] = list(names)
        return out

    return render


def role_get_response(r: m.AuthRoleGetResponse) -> dict:
    out = {"header": header(r.header)}
    if r.perm:
        out["perm"] = [{"permType": m.PERM_NAMES[p.perm_type], "key": _b64(p.key),
                        **({"range_end": _b64(p.range_end)} if p.range_end else {})} for p in r.perm]
    return out


# path under /v3/auth -> (parse, render)
AUTH_CALLS = {
    "authenticate": (lambda body: m.AuthenticateRequest(*authenticate_request(body)), authenticate_response),
    "enable": (_no_fields(m.AuthEnableRequest()), header_only),
    "disable": (_no_fields(m.AuthDisableRequest()), header_only),
    "status": (_no_fields(m.AuthStatusRequest()), auth_status_response),
    "user/add": (_user_add, header_only),
    "user/get": (_one_string(m.AuthUserGetRequest, "name"), _names("roles")),
    "user/list": (_no_fields(m.AuthUserListRequest()), _names("users")),
    "user/delete": (_one_string(m.AuthUserDeleteRequest, "name"), header_only),
    "user/changepw": (_user_changepw, header_only),
    "user/grant": (_user_grant, header_only),
    "user/revoke": (_user_revoke, header_only),
    "role/add": (_one_string(m.AuthRoleAddRequest, "name"), header_only),
    "role/get": (_one_string(m.AuthRoleGetRequest, "role"), role_get_response),
    "role/list": (_no_fields(m.AuthRoleListRequest()), _names("roles")),
    "role/delete": (_one_string(m.AuthRoleDeleteRequest, "role"), header_only),
    "role/grant": (_role_grant, header_only),
    "role/revoke": (_role_revoke, header_only),
}
