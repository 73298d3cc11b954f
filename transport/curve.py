"""CURVE security of cairn's ZeroMQ doors: key files, the ZAP handler, handshake reports.

Theory of operation
-------------------
In a config with `security: {mode: curve}` (cairn/config.py) every tcp:// socket
of a member is encrypted and authenticated with ZeroMQ's CURVE (RFC 26):

* each member has a key pair: its public key is in the cluster list of the
  config (`public_key`), its secret key in a file only its user can read
  (`member.secret_key_file`, written by `cairn keygen`);
* the member's two listening sockets, the frontend's ROUTER (clients) and the
  raft actor's PULL (peers), are CURVE servers with the member's key. A ZAP
  handler (RFC 27) in the same process decides who may finish the handshake:
  on the peer door only the members of the config, on the client door anyone
  who knows the member's public key, or, with `security.client_keys`, only
  those keys and the members' own;
* every socket that connects to a member (a peer's PUSH, the lease actor's
  link to the leader, the gateways' clients, cairn.Client) is a CURVE client
  that must be given that member's public key, so it talks to no impostor.

Handshake failures are made loud on both sides: the ZAP handler logs each
refused key, a monitor on each listening socket logs the handshakes that fail
before the ZAP step (a plaintext client, a client holding a wrong server key),
rate-limited so a client retrying in a loop costs one line per interval; and
the client turns the same events into AuthenticationFailed at once (see
cairn/transport_thread.py) instead of waiting out its timeout.

Secret keys are never logged, never put into an error message, never shown by
repr(); key files are created owner-only (0600) and refused if others can read them.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass, field

import zmq
import zmq.utils.z85
from zmq.utils.monitor import parse_monitor_message

KEY_LENGTH = 40  # a Curve25519 key in Z85
# The lines of a secret key file (a Z85 key may start with '#': no comment syntax applies to them).
PUBLIC_PREFIX = "public-key = "
SECRET_PREFIX = "secret-key = "
Z85_ALPHABET = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
# libzmq's protocol error codes (zmq.h) reported with EVENT_HANDSHAKE_FAILED_PROTOCOL.
PROTOCOL_ERROR_CRYPTOGRAPHIC = 0x11000001
PROTOCOL_ERROR_MECHANISM_MISMATCH = 0x11000002
HANDSHAKE_FAILURES = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                      | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
# A refused key or a failing handshake is logged at most once per interval
# (with how many were not logged), so a client retrying in a loop cannot flood the log.
LOG_INTERVAL_S = 10.0


class KeyFileError(Exception):
    """A key file that cannot be used; the message names the file, never its content."""


def is_key(text) -> bool:
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            return False
    return isinstance(text, str) and len(text) == KEY_LENGTH and set(text) <= Z85_ALPHABET


def as_key(text) -> bytes:
    """A Z85 key as bytes, as pyzmq's socket options take it; ValueError otherwise."""
    if not is_key(text):
        raise ValueError("not a CURVE public key (40 characters of Z85, as `cairn keygen` prints)")
    return text.encode("ascii") if isinstance(text, str) else bytes(text)


@dataclass(frozen=True, slots=True)
class KeyPair:
    public: bytes
    secret: bytes = field(repr=False)

    def __repr__(self) -> str:  # the secret stays out of logs and tracebacks
        return f"KeyPair(public={self.public.decode()!r})"

    @classmethod
    def generate(cls) -> "KeyPair":
        public, secret = zmq.curve_keypair()
        return cls(public, secret)

    @classmethod
    def from_secret(cls, secret: bytes) -> "KeyPair":
        return cls(zmq.curve_public(secret), secret)


def write_key_pair(path: str, force: bool = False) -> KeyPair:
    """A new key pair: the secret key in `path` (created 0600), the public key in
    `path`.pub. Refuses to overwrite an existing secret key unless force."""
    keys = KeyPair.generate()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        descriptor = os.open(path, flags, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} exists; not overwriting a secret key (use --force)") from None
    os.fchmod(descriptor, 0o600)  # also when force reuses a file that had another mode
    with os.fdopen(descriptor, "w") as handle:
        handle.write("# cairn CURVE key pair: keep this file private (mode 0600)\n")
        handle.write(f"{PUBLIC_PREFIX}{keys.public.decode()}\n")
        handle.write(f"{SECRET_PREFIX}{keys.secret.decode()}\n")
    with open(path + ".pub", "w") as handle:
        handle.write(keys.public.decode() + "\n")
    return keys


def read_secret_key(path: str) -> KeyPair:
    """The key pair of a secret key file `cairn keygen` wrote. A file other users
    may read, or that holds no key, raises KeyFileError (naming the file only)."""
    try:
        mode = os.stat(path).st_mode
        with open(path, encoding="ascii", errors="replace") as handle:
            lines = [line.strip()[len(SECRET_PREFIX):] for line in handle if line.startswith(SECRET_PREFIX)]
    except FileNotFoundError:
        raise KeyFileError(f"secret key file {path} not found (create it with: cairn keygen {path})") from None
    except OSError as error:
        raise KeyFileError(f"secret key file {path}: {error.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"secret key file {path} is accessible by other users (mode {stat.S_IMODE(mode):04o}); "
                           f"run: chmod 600 {path}")
    if len(lines) != 1 or not is_key(lines[0]):
        raise KeyFileError(f"{path} is not a cairn secret key file (as `cairn keygen` writes)")
    return KeyPair.from_secret(lines[0].encode("ascii"))


def read_public_key(text: str) -> bytes:
    """A public key given as itself or as the path of a .pub file."""
    if is_key(text):
        return text.encode("ascii")
    try:
        with open(text, encoding="ascii", errors="replace") as handle:
            lines = [line.strip() for line in handle if line.strip()]
    except OSError:
        raise KeyFileError(f"{text!r} is neither a public key (40 characters of Z85) nor a readable key file") from None
    if len(lines) != 1 or not is_key(lines[0]):
        raise KeyFileError(f"{text} holds no public key (expected one 40-character Z85 key)")
    return lines[0].encode("ascii")


def make_server(socket: zmq.Socket, keys: KeyPair, domain: str) -> None:
    """Before bind: `socket` accepts CURVE clients only, subject to the ZAP handler."""
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_server = True
    socket.zap_domain = domain.encode()


def make_client(socket: zmq.Socket, keys: KeyPair, server_key: bytes) -> None:
    """Before connect: `socket` talks CURVE to the server holding server_key."""
    socket.curve_serverkey = server_key
    socket.curve_publickey = keys.public
    socket.curve_secretkey = keys.secret


class RateLimitedLog:
    """At most one line per key per interval; the next line says how many were skipped."""

    def __init__(self, log, interval_s: float = LOG_INTERVAL_S):
        self.log = log
        self.interval_s = interval_s
        self.last: dict[object, tuple[float, int]] = {}

    def warning(self, key, event: str, **fields) -> None:
        now = time.monotonic()
        last, skipped = self.last.get(key, (float("-inf"), 0))
        if now - last < self.interval_s:
            self.last[key] = (last, skipped + 1)
            return
        if len(self.last) > 1024:  # a bound on memory whatever the callers do
            self.last.clear()
        self.last[key] = (now, 0)
        self.log.warning(event, **fields, **({"not_logged_since": skipped} if skipped else {}))


class ZapHandler:
    """The ZAP handler of one process (one per ZeroMQ context): CURVE clients whose
    public key is in `allowed` (None: any key) may connect to the process's CURVE
    servers. Read its socket in the actor loop (`on_requests`); until a request is
    answered the client's handshake waits, so the handler must be read promptly."""

    def __init__(self, context: zmq.Context, log):
        self.socket = context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(ZAP_ENDPOINT)
        self.log = RateLimitedLog(log)
        self.allowed: dict[str, dict[bytes, str] | None] = {}  # domain -> {public key (Z85): who} or None (any)
        self.accepted = 0
        self.refused = 0

    def allow(self, domain: str, keys: dict[bytes, str] | None) -> None:
        self.allowed[domain] = keys

    def on_requests(self, requests: list[list[bytes]]) -> None:
        for parts in requests:
            if len(parts) < 9:
                continue  # not a ZAP request: libzmq is the only client of this socket
            envelope, _, version, request_id, domain, address, _identity, mechanism, *credentials = parts
            status, text, user = self._decide(domain.decode(errors="replace"), address.decode(errors="replace"),
                                              mechanism, credentials)
            self.socket.send_multipart([envelope, b"", version, request_id, status, text, user, b""])

    def _decide(self, domain: str, address: str, mechanism: bytes, credentials: list[bytes]):
        allowed = self.allowed.get(domain, {})
        if mechanism != b"CURVE" or len(credentials) != 1 or len(credentials[0]) != 32:
            self.refused += 1
            self.log.warning(("mechanism", domain), "handshake_refused", door=domain, address=address,
                             reason=f"mechanism {mechanism.decode(errors='replace')} is not CURVE")
            return b"400", b"CURVE required", b""
        public = zmq.utils.z85.encode(credentials[0])
        if allowed is None:
            self.accepted += 1
            return b"200", b"OK", public
        who = allowed.get(public)
        if who is None:
            self.refused += 1
            door = "peer" if domain == "peer" else "client"
            self.log.warning((domain, public), f"{door}_key_refused", door=domain, address=address,
                             public_key=public.decode(),
                             reason="not a member of the cluster config" if domain == "peer"
                             else "not in security.client_keys")
            return b"400", b"key not allowed", b""
        self.accepted += 1
        return b"200", b"OK", who.encode()


class HandshakeMonitor:
    """Logs the handshakes a listening socket saw fail before its ZAP step (a
    plaintext client, or one that holds another key as this member's)."""

    def __init__(self, socket: zmq.Socket, door: str, log):
        self.door = door
        self.log = RateLimitedLog(log)
        self.socket = socket.get_monitor_socket(HANDSHAKE_FAILURES, addr=f"inproc://cairn-monitor-{door}-{id(socket)}")

    def on_events(self, messages: list[list[bytes]]) -> None:
        for parts in messages:
            try:
                event = parse_monitor_message(parts)
            except Exception:  # noqa: BLE001 - a monitor frame we do not understand is not worth a crash
                continue
            kind, value = event["event"], event["value"]
            if kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == PROTOCOL_ERROR_MECHANISM_MISMATCH:
                reason = "the client is not using CURVE (a plaintext client, or one without this member's public key)"
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == PROTOCOL_ERROR_CRYPTOGRAPHIC:
                reason = "the client's CURVE hello did not decrypt: it holds a wrong public key for this member"
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                reason = f"protocol error 0x{value:x}"
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                continue  # the ZAP handler logged it, with the key
            else:
                reason = "the client closed the connection during the handshake (often a plaintext client, or one whose CURVE settings do not match)"
            self.log.warning((kind, value), "handshake_failed", door=self.door, endpoint=event["endpoint"].decode(errors="replace"),
                             reason=reason)

    def close(self) -> None:
        self.socket.close(linger=0)


class ClientCurve:
    """A client's CURVE settings: its key pair and the public key of each member
    it may connect to (`server_key`)."""

    def __init__(self, endpoints, server_public_keys, client_key=None):
        """server_public_keys: one key (or .pub file) for the given endpoints (a
        client of one member), or {endpoint: key}; client_key: a secret key file,
        a KeyPair, or None for a new key pair (enough unless the cluster lists
        its allowed client_keys)."""
        if isinstance(server_public_keys, dict):
            self.server_keys = {endpoint: read_public_key(key) if isinstance(key, str) else as_key(key)
                                for endpoint, key in server_public_keys.items()}
        else:
            key = read_public_key(server_public_keys) if isinstance(server_public_keys, str) else as_key(server_public_keys)
            self.server_keys = {endpoint: key for endpoint in endpoints}
        if client_key is None:
            self.keys = KeyPair.generate()
        elif isinstance(client_key, KeyPair):
            self.keys = client_key
        else:
            self.keys = read_secret_key(client_key)

    def server_key(self, endpoint: str) -> bytes | None:
        return self.server_keys.get(endpoint)


def handshake_error_text(event: int, value: int, endpoint: str, has_curve: bool, public_key: bytes | None) -> str:
    """A client's explanation of a failed handshake with the member at endpoint."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        key = f" (client public key {public_key.decode()})" if public_key else ""
        return (f"the member at {endpoint} refused this client's key{key}: "
                f"it is not allowed by the cluster's security.client_keys")
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == PROTOCOL_ERROR_MECHANISM_MISMATCH:
        if has_curve:
            return f"the member at {endpoint} does not use CURVE (it is plaintext), but this client was given a server key for it"
        return (f"the member at {endpoint} requires CURVE security: give the client its public key "
                f"(cairnctl --server-keys, Client(server_public_keys=...))")
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        return f"CURVE handshake with the member at {endpoint} failed (protocol error 0x{value:x})"
    if not has_curve:
        return (f"the member at {endpoint} closed the connection during the handshake: it requires CURVE security, "
                f"probably: give the client its public key (cairnctl --server-keys, Client(server_public_keys=...))")
    return (f"the member at {endpoint} closed the connection during the CURVE handshake: "
            f"the member's key did not match the server key this client was given")


__all__ = ["KeyFileError", "KeyPair", "ZapHandler", "HandshakeMonitor", "RateLimitedLog", "as_key", "is_key",
           "make_client", "make_server", "read_public_key", "read_secret_key", "write_key_pair", "handshake_error_text"]
