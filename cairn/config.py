"""Cluster and member configuration: one YAML file, validated on load.

A config file has two sections:

    cluster:                      # who is in the cluster
      name: local
      security:                   # transport security (transport/curve.py); required in effect:
        mode: curve               # curve (the default) or plaintext, which must be said
        client_keys: [...]        # optional: only these client public keys (and the members') may connect
      members:
        - {name: n1, peer: tcp://127.0.0.1:2380, client: tcp://127.0.0.1:2379,
           public_key: "...",     # the member's CURVE public key (`cairn keygen`), or its .pub file
           http: https://127.0.0.1:2378,  # optional: etcd's JSON gateway (actors/gateway.py)
           grpc: https://127.0.0.1:2377}  # optional: etcd's gRPC API (actors/grpc_gateway.py)
    member:                       # how every member runs (optional; defaults below)
      data_dir: data/{name}       # {name} is the member's name; relative to the file
      secret_key_file: keys/{name}.key    # the member's CURVE secret key (mode curve), 0600
      tls: {cert_file: ..., key_file: ..., client_ca_file: ...}  # for https:// gateways
      log_level: info
      ...

With mode curve every tcp:// door is CURVE (clients and peers), and the
gateways must be https://; with mode plaintext nothing is encrypted, which only
a local development config should say.

Every limit of the system lives here, each with the reason for its default, and
relations between them are checked (STYLE.md: "a limit on everything, in one
validated config"). Any problem raises ConfigError with a one-line message naming
the file and the field; `cairn node` prints it and exits with status 2 before
anything starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import os
import re
from dataclasses import dataclass, field

import yaml
from transport.limits import limit, limits

EXIT_CONFIG_ERROR = 2


class ConfigError(Exception):
    """One line: '<file>: <field>: <problem>'."""


@limits()
class Limits:
    max_request_bytes: int = limit(
        1536 * 1024,
        "etcd's default --max-request-bytes: big enough for any sane value, small enough that one request cannot "
        "stall a batch.")
    max_txn_ops: int = limit(
        128,
        "etcd's default --max-txn-ops.")
    max_pending_requests: int = limit(
        20000,
        "Requests a frontend holds in flight; past it clients get TooManyRequests instead of the member queueing "
        "without bound.")
    max_batch_messages: int = limit(
        4096,
        "Messages drained from one socket per loop turn: bounds a batch's latency.")
    socket_hwm: int = limit(
        100000,
        "ZeroMQ high-water marks (messages): a slow peer costs at most this much memory.")
    max_entries_per_message: int = limit(
        1024,
        "Raft: entries in one AppendEntries, bounding a follower's batch.")
    max_bytes_per_message: int = limit(
        4 * 1024 * 1024,
        "Raft: bytes of entries in one AppendEntries, bounding one peer frame.")
    max_inflight_messages: int = limit(
        256,
        "Raft: AppendEntries in flight per peer, bounding what a slow follower costs the leader.")
    max_uncommitted_bytes: int = limit(
        64 * 1024 * 1024,
        "Raft: uncommitted bytes a leader accepts before refusing proposals (TooManyRequests).")
    max_apply_inflight_entries: int = limit(
        16384,
        "Committed entries handed to apply and not yet acknowledged.")
    max_retained_log_bytes: int = limit(
        64 * 1024 * 1024,
        "Payload bytes of applied entries the raft actor keeps in memory for followers that fall a little behind "
        "(snapshot_entries counts them too): past it the log is compacted early, so its memory stays bounded whatever "
        "the size of the requests.")
    quota_backend_bytes: int = limit(
        2 * 1024 * 1024 * 1024,
        "A database larger than this raises the NOSPACE alarm (etcd's default quota is 2 GiB).")
    range_chunk_bytes: int = limit(
        1024 * 1024,
        "Bytes of keys and values in one chunk of a large range response.")


@dataclass(frozen=True, slots=True)
class AutoCompaction:
    mode: str = "off"  # "off" | "revision" | "periodic"
    retention: int = 0  # revisions kept ("revision") or seconds kept ("periodic")


@dataclass(frozen=True, slots=True)
class Tls:
    # PEM files of the member's https:// gateways ({name} and relative paths as data_dir).
    cert_file: str = ""
    key_file: str = ""
    # With a CA file, clients of the gateways must present a certificate it
    # signed (etcd's --client-cert-auth with --trusted-ca-file).
    client_ca_file: str = ""


@dataclass(frozen=True, slots=True)
class MemberSettings:
    data_dir: str = "data/{name}"
    # The member's CURVE secret key, written by `cairn keygen` (security mode curve).
    secret_key_file: str = "keys/{name}.key"
    tls: Tls = field(default_factory=Tls)
    log_level: str = "info"
    # One Raft tick. etcd's default heartbeat is 100 ms and election 1000 ms.
    tick_ms: int = 100
    heartbeat_ticks: int = 1
    election_ticks: int = 10
    # How long a frontend waits for a request's outcome before answering Timeout.
    request_timeout_ms: int = 7000
    # How long a proposal waits for a leader before failing with NoLeader.
    no_leader_wait_ms: int = 3000
    # etcd's --auth-token-ttl: an authentication token unused this long expires
    # (each use restarts it, as etcd's simple tokens do).
    auth_token_ttl_s: int = 300
    # After a failed authentication the user and the connection are refused
    # (AuthFailed, the password unchecked) for this long, doubling with each
    # further failure up to 64 times it; a success clears it.
    auth_failure_delay_ms: int = 500
    # How often the apply actor makes the keyspace durable (env.sync) off the
    # reply path; its commits do not sync, the Raft log is what makes a write
    # durable (store/environment.py). 0 = sync on every commit, on the write's
    # path: integrity across a power loss on any file system (LMDB without
    # MDB_NOSYNC), at the cost of one more fdatasync per write.
    keyspace_sync_ms: int = 100
    # Applied entries kept in the Raft log before it is compacted behind a snapshot.
    snapshot_entries: int = 10000
    # The keyspace's LMDB map size: address space reserved, not disk used.
    kv_map_bytes: int = 8 * 1024 * 1024 * 1024
    # Unused since the Raft log became a write-ahead log (store/raftlog.py) rather
    # than an LMDB environment; still accepted, so existing configs load.
    raft_map_bytes: int = 4 * 1024 * 1024 * 1024
    # Corruption checks (etcd's --experimental-corrupt-check-time and
    # --experimental-initial-corrupt-check): the leader compares every member's
    # HashKV at a common revision this often (0 = never), and each member
    # compares itself with its peers once when it starts; a member whose hash
    # differs raises the CORRUPT alarm (actors/corruption.py).
    corruption_check_interval_s: int = 60
    initial_corruption_check: bool = True
    auto_compaction: AutoCompaction = field(default_factory=AutoCompaction)
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True, slots=True)
class MemberSpec:
    name: str
    peer: str
    client: str
    id: int
    # etcd's HTTP JSON gateway of this member ("" = none): http://HOST:PORT
    http: str = ""
    # etcd's gRPC API of this member ("" = none): http://HOST:PORT, as etcd's client URLs
    grpc: str = ""
    # The member's CURVE public key (Z85, as `cairn keygen` prints it; "" in plaintext mode).
    public_key: str = ""


SECURITY_MODES = ("curve", "plaintext")


@dataclass(frozen=True, slots=True)
class Security:
    mode: str = "curve"
    # Client public keys allowed on the client door (besides the members' own);
    # empty: any client that knows the member's public key.
    client_keys: tuple[bytes, ...] = ()

    @property
    def curve(self) -> bool:
        return self.mode == "curve"


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    path: str
    name: str
    id: int
    members: tuple[MemberSpec, ...]
    settings: MemberSettings
    security: Security = field(default_factory=Security)
    # etcd's --initial-cluster-state: "new" bootstraps a cluster from the members
    # listed; "existing" (or `cairn node --join`) joins a running cluster that
    # added this member (cairnctl member add): no bootstrap, the member starts as
    # a learner with an empty log and learns the membership from the leader.
    state: str = "new"

    def member(self, name: str) -> MemberSpec:
        for member in self.members:
            if member.name == name:
                return member
        raise ConfigError(f"{self.path}: cluster.members: no member named {name!r}")

    def member_by_id(self, member_id: int) -> MemberSpec | None:
        return next((m for m in self.members if m.id == member_id), None)

    def data_dir(self, name: str) -> str:
        """The member's data dir, absolute; relative paths are taken from the config file's directory."""
        return self.member_path(self.settings.data_dir, name)

    def member_path(self, template: str, name: str) -> str:
        """A path setting for member `name`: {name} replaced, relative to the config file's directory."""
        if not template:
            return ""
        path = template.replace("{name}", name)
        if not os.path.isabs(path):
            path = os.path.join(os.path.dirname(os.path.abspath(self.path)), path)
        return os.path.normpath(path)

    def secret_key_file(self, name: str) -> str:
        return self.member_path(self.settings.secret_key_file, name)

    def member_keys(self, name: str):
        """The CURVE key pair of member `name` (transport.curve.KeyPair), read from
        its secret key file and checked against its public_key in the config;
        None in plaintext mode. Raises ConfigError, which never shows the secret."""
        if not self.security.curve:
            return None
        from transport.curve import KeyFileError, read_secret_key

        member = self.member(name)
        path = self.secret_key_file(name)
        try:
            keys = read_secret_key(path)
        except KeyFileError as error:
            raise ConfigError(f"{self.path}: member.secret_key_file: {error}") from None
        if keys.public.decode() != member.public_key:
            raise ConfigError(f"{self.path}: member.secret_key_file: {path} is not the key of member {name}: its public "
                              f"key is {keys.public.decode()}, the config says {member.public_key}")
        return keys

    def member_public_keys(self) -> dict[bytes, str]:
        """{public key: member name} of every member (mode curve)."""
        return {member.public_key.encode(): member.name for member in self.members}

    def tls_files(self, name: str) -> Tls:
        """The member's TLS files, as absolute paths ("" where not set)."""
        tls = self.settings.tls
        return Tls(*(self.member_path(value, name) for value in (tls.cert_file, tls.key_file, tls.client_ca_file)))

    def client_endpoints(self) -> list[str]:
        return [member.client for member in self.members]


LOG_LEVELS = ("debug", "info", "warning", "error")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")


def member_id_for(cluster_name: str, member_name: str) -> int:
    """Stable 63-bit id derived from names, as etcd derives ids from its config."""
    digest = hashlib.sha256(f"{cluster_name}/{member_name}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)) or 1


def parse_address(text: str) -> tuple[str, int]:
    """('127.0.0.1', 2379) from 'tcp://127.0.0.1:2379'; ValueError otherwise."""
    match = re.fullmatch(r"tcp://(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})", text)
    if not match:
        raise ValueError(f"{text!r} is not tcp://HOST:PORT")
    host, port = match.group(1), int(match.group(2))
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    if host.startswith("["):
        ipaddress.IPv6Address(host[1:-1])
    return host, port


def parse_http_address(text: str) -> tuple[str, int]:
    """('127.0.0.1', 2378) from 'http://127.0.0.1:2378' (or https://); ValueError otherwise."""
    match = re.fullmatch(r"https?://(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})/?", text)
    if not match:
        raise ValueError(f"{text!r} is not http://HOST:PORT or https://HOST:PORT")
    return parse_address(f"tcp://{match.group(1)}:{match.group(2)}")


def load(path: str) -> ClusterConfig:
    try:
        with open(path, encoding="utf-8") as handle:
            document = yaml.safe_load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "?"
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}: {where}: invalid YAML: {problem}") from None
    return from_document(document, path)


def from_document(document, path: str = "<config>") -> ClusterConfig:
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: top level: expected a mapping with 'cluster' and 'member'")
    _no_unknown_keys(document, {"cluster", "member"}, path, "")
    cluster = _require(document, "cluster", dict, path, "")
    _no_unknown_keys(cluster, {"name", "members", "security", "state", "id"}, path, "cluster")
    name = _require(cluster, "name", str, path, "cluster")
    if not _NAME.match(name):
        raise ConfigError(f"{path}: cluster.name: {name!r} must be 1-32 letters, digits, '.', '_' or '-'")
    members = _members(_require(cluster, "members", list, path, "cluster"), name, path)
    settings = _settings(document.get("member") or {}, path)
    state = cluster.get("state", "new")
    if state not in ("new", "existing"):
        raise ConfigError(f"{path}: cluster.state: {state!r} must be 'new' or 'existing'")
    cluster_id = int.from_bytes(
        hashlib.sha256(("cluster:" + name + "/" + ",".join(sorted(m.name for m in members))).encode()).digest()[:8], "big"
    ) & ((1 << 63) - 1)
    if "id" in cluster:
        # A cluster whose membership changed keeps the id it was created with
        # (cairnctl member add prints it): the members listed no longer give it.
        try:
            cluster_id = int(str(cluster["id"]), 16)
        except ValueError:
            raise ConfigError(f"{path}: cluster.id: {cluster['id']!r} must be the cluster id in hex") from None
    security, members = _security(cluster.get("security"), members, settings, path)
    return ClusterConfig(path=path, name=name, id=cluster_id, members=members, settings=settings, security=security,
                         state=state)


def _public_key(value: str, path: str, where: str) -> str:
    """A public key given as itself (Z85) or as the path of a .pub file `cairn
    keygen` wrote (relative to the config file's directory)."""
    from transport.curve import KeyFileError, is_key, read_public_key

    if is_key(value):
        return value
    if not os.path.isabs(value):
        value = os.path.join(os.path.dirname(os.path.abspath(path)), value)
    try:
        return read_public_key(value).decode()
    except KeyFileError as error:
        raise ConfigError(f"{path}: {where}: {error}") from None


def _security(document, members, settings: MemberSettings, path: str) -> tuple[Security, tuple[MemberSpec, ...]]:
    """cluster.security, checked last so other problems are named first, and the
    members with their public keys read (from .pub files where given as paths)."""
    from transport.curve import is_key


    document = {} if document is None else document
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: cluster.security: expected a mapping such as {{mode: curve}}")
    _no_unknown_keys(document, {"mode", "client_keys"}, path, "cluster.security")
    mode = document.get("mode", "curve")
    if mode not in SECURITY_MODES:
        raise ConfigError(f"{path}: cluster.security.mode: must be curve or plaintext, got {mode!r}")
    client_keys = document.get("client_keys") or []
    if not isinstance(client_keys, list) or not all(isinstance(key, str) for key in client_keys):
        raise ConfigError(f"{path}: cluster.security.client_keys: expected a list of public keys "
                          f"(40 characters of Z85 each, as `cairn keygen` prints, or .pub files)")
    for position, member in enumerate(members):
        for door in ("http", "grpc"):
            if getattr(member, door).startswith("https://") and not settings.tls.cert_file:
                raise ConfigError(f"{path}: cluster.members[{position}].{door}: https:// needs member.tls.cert_file and key_file")
    if mode == "plaintext":
        return Security(mode), members
    client_keys = [_public_key(key, path, f"cluster.security.client_keys[{i}]") for i, key in enumerate(client_keys)]
    seen, resolved = {}, []
    for position, member in enumerate(members):
        where = f"cluster.members[{position}]"
        if member.public_key:
            member = dataclasses.replace(member, public_key=_public_key(member.public_key, path, f"{where}.public_key"))
        resolved.append(member)
        if not member.public_key:
            raise ConfigError(f"{path}: {where}.public_key: missing: cluster.security.mode is curve (the default), so "
                              f"every member needs a key pair (`cairn keygen keys/{member.name}.key`); "
                              f"a config without security says `security: {{mode: plaintext}}`")
        if not is_key(member.public_key):
            raise ConfigError(f"{path}: {where}.public_key: not a public key (40 characters of Z85, as `cairn keygen` prints)")
        if member.public_key in seen:
            raise ConfigError(f"{path}: {where}.public_key: the same key as member {seen[member.public_key]}")
        seen[member.public_key] = member.name
        for door in ("http", "grpc"):
            url = getattr(member, door)
            if url and not url.startswith("https://"):
                raise ConfigError(f"{path}: {where}.{door}: {url} is plaintext: with security mode curve the "
                                  f"gateways are https:// (with member.tls), or the config says mode: plaintext")
    if not settings.secret_key_file:
        raise ConfigError(f"{path}: member.secret_key_file: missing: security mode curve needs each member's secret key")
    return Security(mode, tuple(key.encode() for key in client_keys)), tuple(resolved)


def _members(items: list, cluster_name: str, path: str) -> tuple[MemberSpec, ...]:
    if not items:
        raise ConfigError(f"{path}: cluster.members: at least one member is required")
    members, names, addresses = [], set(), {}
    for position, item in enumerate(items):
        where = f"cluster.members[{position}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{path}: {where}: expected a mapping with name, peer, client")
        _no_unknown_keys(item, {"name", "peer", "client", "http", "grpc", "public_key"}, path, where)
        name = _require(item, "name", str, path, where)
        if not _NAME.match(name):
            raise ConfigError(f"{path}: {where}.name: {name!r} must be 1-32 letters, digits, '.', '_' or '-'")
        if name in names:
            raise ConfigError(f"{path}: {where}.name: duplicate member name {name!r}")
        names.add(name)
        urls = {}
        for key in ("peer", "client", "http", "grpc"):
            if key in ("http", "grpc") and item.get(key) is None:
                urls[key] = ""
                continue
            url = _require(item, key, str, path, where)
            try:
                host_port = parse_http_address(url) if key in ("http", "grpc") else parse_address(url)
            except ValueError as error:
                raise ConfigError(f"{path}: {where}.{key}: {error}") from None
            if host_port in addresses:
                raise ConfigError(f"{path}: {where}.{key}: address {url} already used by {addresses[host_port]}")
            addresses[host_port] = f"{where}.{key}"
            urls[key] = url
        public_key = item.get("public_key") or ""
        if not isinstance(public_key, str):
            raise ConfigError(f"{path}: {where}.public_key: expected a string (40 characters of Z85)")
        members.append(MemberSpec(name=name, peer=urls["peer"], client=urls["client"], id=member_id_for(cluster_name, name),
                                  http=urls["http"].rstrip("/"), grpc=urls["grpc"].rstrip("/"), public_key=public_key))
    return tuple(members)


def _settings(document, path: str) -> MemberSettings:
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: member: expected a mapping")
    values = _dataclass_values(MemberSettings, document, path, "member")
    settings = MemberSettings(**values)
    _check_relations(settings, path)
    return settings


def _dataclass_values(cls, document: dict, path: str, where: str) -> dict:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _no_unknown_keys(document, set(fields), path, where)
    values = {}
    for key, value in document.items():
        spec = fields[key]
        default = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: {where}.{key}: expected a mapping")
            values[key] = type(default)(**_dataclass_values(type(default), value, path, f"{where}.{key}"))
            continue
        expected = type(default)
        if expected is int and (type(value) is not int):
            raise ConfigError(f"{path}: {where}.{key}: expected an integer, got {value!r}")
        if expected is int and value < 0:
            raise ConfigError(f"{path}: {where}.{key}: must not be negative, got {value}")
        if expected is bool and type(value) is not bool:
            raise ConfigError(f"{path}: {where}.{key}: expected true or false, got {value!r}")
        if expected is str and type(value) is not str:
            raise ConfigError(f"{path}: {where}.{key}: expected a string, got {value!r}")
        values[key] = value
    return values


def _check_relations(settings: MemberSettings, path: str) -> None:
    problems = []
    if settings.log_level not in LOG_LEVELS:
        problems.append(("member.log_level", f"must be one of {', '.join(LOG_LEVELS)}"))
    if settings.tick_ms < 1:
        problems.append(("member.tick_ms", "must be at least 1"))
    if settings.heartbeat_ticks < 1:
        problems.append(("member.heartbeat_ticks", "must be at least 1"))
    # Raft needs several heartbeats per election timeout or followers start
    # elections while the leader is healthy (etcd's tuning guide says 5-10x).
    if settings.election_ticks <= 2 * settings.heartbeat_ticks:
        problems.append(("member.election_ticks", "must be more than 2 * heartbeat_ticks"))
    if settings.auth_token_ttl_s < 1:
        problems.append(("member.auth_token_ttl_s", "must be at least 1"))
    if settings.snapshot_entries < 1:
        problems.append(("member.snapshot_entries", "must be at least 1"))
    if bool(settings.tls.cert_file) != bool(settings.tls.key_file):
        problems.append(("member.tls", "cert_file and key_file go together"))
    if settings.tls.client_ca_file and not settings.tls.cert_file:
        problems.append(("member.tls.client_ca_file", "needs cert_file and key_file"))
    if settings.auto_compaction.mode not in ("off", "revision", "periodic"):
        problems.append(("member.auto_compaction.mode", "must be off, revision or periodic"))
    limits = settings.limits
    if limits.max_request_bytes < 1024:
        problems.append(("member.limits.max_request_bytes", "must be at least 1024"))
    if limits.max_bytes_per_message < limits.max_request_bytes:
        problems.append(("member.limits.max_bytes_per_message", "must be at least max_request_bytes"))
    if limits.max_retained_log_bytes < limits.max_request_bytes:
        problems.append(("member.limits.max_retained_log_bytes", "must be at least max_request_bytes"))
    if limits.max_txn_ops < 1:
        problems.append(("member.limits.max_txn_ops", "must be at least 1"))
    for key in ("max_pending_requests", "max_batch_messages", "socket_hwm", "max_entries_per_message", "max_inflight_messages"):
        if getattr(limits, key) < 1:
            problems.append((f"member.limits.{key}", "must be at least 1"))
    if problems:
        where, problem = problems[0]
        raise ConfigError(f"{path}: {where}: {problem}")


def _no_unknown_keys(document: dict, allowed: set, path: str, where: str) -> None:
    for key in document:
        if key not in allowed:
            prefix = f"{where}." if where else ""
            raise ConfigError(f"{path}: {prefix}{key}: unknown key (allowed: {', '.join(sorted(allowed))})")


def _require(document: dict, key: str, kind: type, path: str, where: str):
    prefix = f"{where}." if where else ""
    if key not in document or document[key] is None:
        raise ConfigError(f"{path}: {prefix}{key}: missing")
    value = document[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{path}: {prefix}{key}: expected {kind.__name__}, got {type(value).__name__}")
    return value
