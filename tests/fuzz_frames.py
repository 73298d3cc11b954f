"""Structure-aware fuzzing of the frames a client may send to a member.

Theory of operation
-------------------
Nothing here is written per message. The client request types are the ones the
frontend routes (read from actors/frontend.py: the types named in
FrontendActor.dispatch and its routing tuples, plus every registered subclass
of them, such as WatchKeepAlive), and each message is generated from its
dataclass fields and type hints (dataclasses.fields + typing.get_type_hints),
the same annotations transport/codec.py compiles into its wire schema. So a
request type or a field added tomorrow is fuzzed tomorrow.

A FrameFuzzer(seed) is deterministic: the same seed gives the same frames.
Each call of next_frame() picks one strategy:

  valid        plausible values of every field
  edge         values at and beyond the integer widths etcd uses (0, -1,
               2**63-1, 2**63, -2**63-1, 2**64, huge), empty/long/NUL/0xff bytes,
               empty and oversized tuples
  wrong_type   one field (possibly nested) replaced by a value of another type
  field_count  too few or too many fields, at the top or in a nested message
  unknown_tag  a tag no message has, a non-string tag, an empty body
  foreign      a well-formed message a client must not send (Applied,
               InstallSnapshot, RaftBatch, a response ...)
  deep         txns nested beyond the codec's MAX_NESTING, CBOR arrays nested
               10,000 deep in the body, in a field, in the options
  oversized    frames beyond the member's max_request_bytes (cairn/config.py)
  garbage      non-CBOR bytes, truncated frames, CBOR of the wrong shape,
               exotic CBOR tags (shared references, regex, bignums ...)
  envelope     wrong version, negative/huge/non-int request ids, options that
               are not a map, envelopes of the wrong length, several ZeroMQ parts

Safety. The fuzzed cluster keeps sentinel keys outside PREFIX, so every key a
frame can write or delete stays inside it: key, name and the LeaderKey's key
are PREFIX + bytes, and a range_end is b"" (one key) or inside
(key, prefix_end(PREFIX)] -- never b"\\0" (from-key), which would reach every
key after the prefix. Frames that do not decode are exempt (they touch
nothing). Three more rules keep the cluster usable while it is fuzzed, each a
real operation a fuzzer must not repeat blindly: no alarm (NOSPACE, CORRUPT) is activated
(it would refuse every later put: correct, but the end-of-run write check
could not tell it from an outage), no MoveLeader names a real member (member
ids are not known here; random ids are refused), and Lock/Campaign names are
unique per frame (a second lock on a name held with lease 0 waits the lock
service's full minute, which is etcd's behaviour, not a hang).

What a frame should get back is decided here, once, by decoding it with the
codec (FuzzFrame.reply_id): the frontend answers every frame exactly once,
under its request id, or under 0 when the id cannot be read -- except what
etcd also leaves unanswered under the request's own id: WatchCancelRequest
(its answer, if the watch exists, comes under the id of the watch's create;
a cancel of an unknown watch gets nothing) and WatchProgressRequest (one
notification per watch of the connection, under each watch's create id;
nothing without watches). A WatchCreateRequest gets its created (or refused)
response under its own id and then streams more under it; only the first
counts.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import random
import textwrap
import types
import typing
from dataclasses import dataclass

import cbor2

from cairn.config import Limits
from transport import codec, messages as m
from transport.messages import PROTOCOL_VERSION

PREFIX = b"fz/"


def prefix_end(prefix: bytes) -> bytes:
    """etcd's prefix range end: the prefix with its last byte incremented."""
    end = bytearray(prefix)
    while end and end[-1] == 0xFF:
        end.pop()
    assert end, "a prefix of only 0xff bytes has no range end"
    end[-1] += 1
    return bytes(end)


# Integers at and beyond the widths etcd's protobufs carry (int64, uint64).
EDGE_INTS = (
    0, 1, -1, 2, 255, 256, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
    2**63 - 1, 2**63, -2**63, -2**63 - 1, 2**64 - 1, 2**64, -2**64, 2**100, -2**100, 10**40,
)
EDGE_BYTES = (b"", b"\0", b"\xff", b"\xff" * 8, b"\0" * 8, b"/", b"a" * 511, b"a" * 512, b"a" * 4096)

# Fields whose bytes name a key the request may write, delete, or lock.
KEY_FIELDS = frozenset(("key", "name"))
RANGE_END_FIELDS = frozenset(("range_end",))

# What the frontend answers without the request's own id (see the module doc).
UNANSWERED_TYPES = (m.WatchCancelRequest,)
UNANSWERED_EXACT = (m.WatchProgressRequest,)  # but its subclass WatchKeepAlive is answered

STRATEGIES = (
    "valid", "edge", "wrong_type", "field_count", "unknown_tag", "foreign",
    "deep", "oversized", "garbage", "envelope",
)
# How often each is picked: mostly structured frames, some of everything.
DEFAULT_WEIGHTS = {
    "valid": 20, "edge": 30, "wrong_type": 12, "field_count": 8, "unknown_tag": 4, "foreign": 4,
    "deep": 3, "oversized": 1, "garbage": 6, "envelope": 6,
}


# ---------------------------------------------------------------------------
# Which types a client may send: read from the frontend's routing
# ---------------------------------------------------------------------------


def _registered() -> list[type]:
    return sorted(set(codec._REGISTRY.values()), key=lambda cls: cls.__name__)


def client_request_types() -> tuple[type, ...]:
    """Every message type FrontendActor.dispatch routes, read from its
    isinstance checks (names and tuples of the frontend module), plus every
    registered subclass of one (WatchKeepAlive is a WatchProgressRequest)."""
    from actors import frontend

    namespace = vars(frontend)
    source = textwrap.dedent(inspect.getsource(frontend.FrontendActor.dispatch))
    found: set[type] = set()

    def resolve(node):
        if isinstance(node, ast.Name):
            value = namespace.get(node.id)
            if isinstance(value, type):
                found.add(value)
            elif isinstance(value, tuple):
                found.update(v for v in value if isinstance(v, type))
        elif isinstance(node, ast.BinOp):
            resolve(node.left)
            resolve(node.right)
        elif isinstance(node, ast.Tuple):
            for element in node.elts:
                resolve(element)

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2:
            resolve(node.args[1])
    routed = {cls for cls in found if dataclasses.is_dataclass(cls)}
    assert len(routed) >= 20, f"could not read the frontend's routing: {sorted(c.__name__ for c in routed)}"
    every = set(routed)
    for cls in _registered():
        if any(issubclass(cls, base) for base in routed):
            every.add(cls)
    return tuple(sorted(every, key=lambda cls: cls.__name__))


def _hints(cls) -> dict:
    return typing.get_type_hints(cls, vars(__import__(cls.__module__, fromlist=["_"])))


# ---------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------


@dataclass
class FuzzFrame:
    """One fuzzed request. parts: the ZeroMQ message parts a DEALER sends (one,
    or several for the multipart case). reply_id: the request id the answer
    must come under (0 when the frame's id cannot be read), or None when no
    answer is due under any id of its own (see the module doc)."""

    parts: list[bytes]
    strategy: str
    type_name: str
    request_id: int
    reply_id: int | None
    note: str = ""

    @property
    def frame(self) -> bytes:
        return self.parts[0]

    def describe(self, limit: int = 300) -> str:
        shown = b"|".join(self.parts)
        text = shown[:limit].hex()
        more = f"...(+{len(shown) - limit} bytes)" if len(shown) > limit else ""
        try:
            decoded = repr(codec.decode_with_options(self.frame)[1])[:limit]
        except Exception as error:  # noqa: BLE001 - only for the description
            decoded = f"<undecodable: {type(error).__name__}: {str(error)[:120]}>"
        return f"[{self.strategy}] {self.type_name} id={self.request_id} {self.note} {decoded} hex={text}{more}"


def expected_reply_id(parts: list[bytes]) -> int | None:
    """Decided with the codec under test, so the expectation follows it: the
    id the frontend must answer under, or None (see the module doc)."""
    if len(parts) != 1:
        return 0
    frame = parts[0]
    try:
        request_id, request, _ = codec.decode_with_options(frame, Limits().max_request_bytes)
    except Exception:  # noqa: BLE001 - any refusal is answered under the readable id
        return codec.peek_request_id(frame)
    if isinstance(request, UNANSWERED_TYPES) or type(request) in UNANSWERED_EXACT:
        return None
    return request_id


class FrameFuzzer:
    """Deterministic frames from a seed (see the module doc)."""

    def __init__(self, seed: int, prefix: bytes = PREFIX, max_request_bytes: int | None = None,
                 request_types: tuple[type, ...] | None = None, weights: dict | None = None,
                 first_request_id: int = 1):
        self.rng = random.Random(seed)
        self.seed = seed
        self.prefix = prefix
        self.prefix_end = prefix_end(prefix)
        self.max_request_bytes = max_request_bytes or Limits().max_request_bytes
        self.max_txn_ops = Limits().max_txn_ops
        self.request_types = request_types or client_request_types()
        client = set(self.request_types)
        self.foreign_types = tuple(cls for cls in _registered() if cls not in client)
        weights = weights or DEFAULT_WEIGHTS
        self.strategies = [s for s in STRATEGIES if weights.get(s)]
        self.weights = [weights[s] for s in self.strategies]
        self.next_id = first_request_id
        self.unique = 0

    # ------------------------------------------------------------------ entry

    def next_frame(self, strategy: str | None = None, request_type: type | None = None) -> FuzzFrame:
        strategy = strategy or self.rng.choices(self.strategies, self.weights)[0]
        request_type = request_type or self.rng.choice(self.request_types)
        request_id = self._request_id()
        while True:
            parts, type_name, note = getattr(self, "_" + strategy)(request_type, request_id)
            if all(self.is_safe(part) for part in parts):
                break  # a mutation that happens to decode into a key outside the prefix is drawn again
        return FuzzFrame(parts, strategy, type_name, request_id, expected_reply_id(parts), note)

    def is_safe(self, frame: bytes) -> bool:
        """Whether the frame, if it decodes at all, keeps every key, name and
        range_end it carries inside the prefix (see the module doc)."""
        try:
            _, message, _ = codec.decode_with_options(frame)
        except Exception:  # noqa: BLE001 - an undecodable frame touches nothing
            return True
        return self.keys_inside(message)

    def keys_inside(self, value) -> bool:
        if isinstance(value, (tuple, list)):
            return all(self.keys_inside(item) for item in value)
        if not dataclasses.is_dataclass(value):
            return True
        for field in dataclasses.fields(value):
            item = getattr(value, field.name)
            if field.name in KEY_FIELDS and type(item) is bytes and not item.startswith(self.prefix):
                return False
            if field.name in RANGE_END_FIELDS and type(item) is bytes and item and not (
                    self.prefix <= item <= self.prefix_end):
                return False
            if not self.keys_inside(item):
                return False
        return True

    def frames(self, count: int, **options):
        for _ in range(count):
            yield self.next_frame(**options)

    def message(self, cls: type, edge: bool = False, depth: int = 0):
        """A message of type cls with every field generated (valid or edge)."""
        hints = _hints(cls)
        values = {}
        for field in dataclasses.fields(cls):
            values[field.name] = self._value(hints[field.name], field.name, edge, depth)
        message = cls(**values)
        return self._constrain(message)

    # ------------------------------------------------------------------ values

    def _request_id(self) -> int:
        request_id = self.next_id
        self.next_id += 1
        return request_id

    def _value(self, annotation, name: str, edge: bool, depth: int):
        rng = self.rng
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, types.UnionType):
            options = [o for o in typing.get_args(annotation) if o is not type(None) or edge]
            return self._value(rng.choice(options), name, edge, depth)
        if annotation is type(None):
            return None
        if annotation is bool:
            return rng.random() < 0.5
        if annotation is int:
            return self._int(edge)
        if annotation is str:
            return rng.choice(("", "x", "NOSPACE", "\u00e9" * 3, "a" * 300)) if edge else "s%d" % rng.randrange(100)
        if annotation is bytes:
            return self._bytes(name, edge)
        if origin is tuple:
            item = typing.get_args(annotation)[0]
            return self._tuple(item, name, edge, depth)
        if origin is dict:
            key_type, value_type = typing.get_args(annotation)
            return {self._value(key_type, "k", edge, depth): self._value(value_type, "v", edge, depth)
                    for _ in range(rng.randrange(3))}
        if dataclasses.is_dataclass(annotation):
            return self.message(annotation, edge, depth + 1)
        raise TypeError(f"cannot generate {annotation!r}")

    def _int(self, edge: bool) -> int:
        rng = self.rng
        if edge and rng.random() < 0.7:
            return rng.choice(EDGE_INTS)
        roll = rng.random()
        if roll < 0.5:
            return rng.randrange(5)  # enums, small counts, small revisions
        if roll < 0.8:
            return rng.randrange(1000)
        return rng.randrange(1, 2**63)  # ids: positive int64

    def _bytes(self, name: str, edge: bool) -> bytes:
        rng = self.rng
        if name in RANGE_END_FIELDS:
            return self._range_end(edge)
        if edge and rng.random() < 0.6:
            tail = rng.choice(EDGE_BYTES)
        else:
            tail = bytes(rng.randrange(256) for _ in range(rng.randrange(12)))
        if name in KEY_FIELDS:
            return self.prefix + tail
        if edge and rng.random() < 0.05:
            return b"v" * rng.choice((64 * 1024, 512 * 1024))
        return tail

    def _range_end(self, edge: bool) -> bytes:
        """b"" (a single key) or an end inside (prefix, prefix_end]: never
        b"\\0" or beyond, which would reach keys outside the prefix."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.3:
            return b""
        if roll < 0.5:
            return self.prefix_end
        tail = rng.choice(EDGE_BYTES) if edge else bytes(rng.randrange(256) for _ in range(rng.randrange(6)))
        return self.prefix + tail

    def _tuple(self, item, name: str, edge: bool, depth: int) -> tuple:
        rng = self.rng
        nested = dataclasses.is_dataclass(item) or typing.get_origin(item) in (typing.Union, types.UnionType)
        if nested and depth >= 3:
            return ()
        if edge and rng.random() < 0.1:
            count = self.max_txn_ops + 1 if nested else rng.choice((64, 1000))
        else:
            count = rng.randrange(4)
        if nested and count > 8:
            # one shallow item repeated: enough to exceed an op limit, small on the wire
            one = self._value(item, name, False, 3)
            return (one,) * count
        return tuple(self._value(item, name, edge, depth + 1) for _ in range(count))

    def _constrain(self, message):
        """The safety rules of the module doc, applied to every generated message."""
        if isinstance(message, m.AlarmRequest) and message.action == m.ALARM_ACTIVATE and message.alarm != m.ALARM_NONE:
            message = dataclasses.replace(message, alarm=m.ALARM_NONE)
        if isinstance(message, (m.LockRequest, m.CampaignRequest)):
            self.unique += 1
            token = b"%d-%d/" % (self.seed, self.unique)
            message = dataclasses.replace(message, name=self.prefix + token + message.name[len(self.prefix):])
        return message

    # ------------------------------------------------------------------ strategies

    def _frame(self, body, request_id: int, options=None) -> bytes:
        envelope = [PROTOCOL_VERSION, request_id, body]
        if options is not None:
            envelope.append(options)
        return cbor2.dumps(envelope)

    def _options(self):
        roll = self.rng.random()
        if roll < 0.8:
            return None
        return self.rng.choice(({"require_leader": True}, {"require_leader": False}, {}, {"x": [1, 2]}))

    def _valid(self, cls, request_id):
        message = self.message(cls)
        return [self._frame(codec.to_wire(message), request_id, self._options())], cls.__name__, ""

    def _edge(self, cls, request_id):
        message = self.message(cls, edge=True)
        return [self._frame(codec.to_wire(message), request_id, self._options())], cls.__name__, ""

    def _wrong_type(self, cls, request_id):
        message = self.message(cls)
        body = codec.to_wire(message)
        slots = list(self._field_slots(cls, body))
        if not slots:
            body.append(self._wrong_value(int))
            return [self._frame(body, request_id)], cls.__name__, "extra field (no fields)"
        container, index, annotation, path = self.rng.choice(slots)
        container[index] = self._wrong_value(annotation)
        return [self._frame(body, request_id)], cls.__name__, f"{path}={container[index]!r:.60}"

    def _field_slots(self, cls, body, path=""):
        """(list, index, annotation, path) of every field in a wire body, nested ones too."""
        hints = _hints(cls)
        for index, field in enumerate(dataclasses.fields(cls), start=1):
            if index >= len(body):
                break
            annotation = hints[field.name]
            where = f"{path}{cls.__name__}.{field.name}"
            yield body, index, annotation, where
            value = body[index]
            for item_index, item in enumerate(value if isinstance(value, list) and value and not isinstance(value[0], str) else []):
                if isinstance(item, list) and item and isinstance(item[0], str) and item[0] in codec._REGISTRY:
                    yield from self._field_slots(codec._REGISTRY[item[0]], item, f"{where}[{item_index}].")
            if isinstance(value, list) and value and isinstance(value[0], str) and value[0] in codec._REGISTRY:
                yield from self._field_slots(codec._REGISTRY[value[0]], value, where + ".")

    def _wrong_value(self, annotation):
        """A wire value of another type than `annotation` wants; never bytes
        where bytes are wanted (a key must not escape the prefix)."""
        rng = self.rng
        candidates = ["fz/str", 1.5, float("nan"), float("inf"), True, None, [1, 2], {"a": 1}, {}, [], -1, 2**64,
                      b"fz/bytes", ["PutRequest", b"fz/x"], ["NoSuchTag"], cbor2.CBORTag(99, 1), cbor2.undefined]
        if annotation is int:
            bad = [c for c in candidates if type(c) is not int]
        elif annotation is bytes:
            bad = [c for c in candidates if type(c) is not bytes]
        elif annotation is bool:
            bad = [c for c in candidates if type(c) is not bool] + [0, 1]
        elif annotation is str:
            bad = [c for c in candidates if type(c) is not str]
        elif typing.get_origin(annotation) is tuple:
            bad = [b"fz/x", 1, "s", {"a": 1}, None, [["NoSuchTag"]], [b"fz/x", None], [1.5], [[]]]
        else:  # a message or a union
            bad = [c for c in candidates if not isinstance(c, (bytes, list))] + [["NoSuchTag"], [], [1, 2], [None]]
        return rng.choice(bad)

    def _field_count(self, cls, request_id):
        message = self.message(cls)
        body = codec.to_wire(message)
        # a nested message's body, or the top one
        bodies = [body] + [b for _, b in self._nested_bodies(body)]
        target = self.rng.choice(bodies)
        required = sum(1 for f in dataclasses.fields(codec._REGISTRY[target[0]])
                       if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        if required and self.rng.random() < 0.5:
            del target[1 + self.rng.randrange(required):]
            note = f"{target[0]} truncated to {len(target) - 1} fields"
        else:
            fields = len(dataclasses.fields(codec._REGISTRY[target[0]]))
            del target[1 + fields:]
            while len(target) - 1 < fields:  # fill the defaulted ones, then add more
                target.append(0)
            target.extend(self.rng.choice([0, b"", None, "x", [], {}]) for _ in range(self.rng.randrange(1, 4)))
            note = f"{target[0]} with {len(target) - 1} fields"
        return [self._frame(body, request_id)], cls.__name__, note

    def _nested_bodies(self, value):
        if isinstance(value, list):
            for item in value[1:] if value and isinstance(value[0], str) else value:
                if isinstance(item, list) and item and isinstance(item[0], str) and item[0] in codec._REGISTRY:
                    yield item[0], item
                    yield from self._nested_bodies(item)
                elif isinstance(item, list):
                    yield from self._nested_bodies(item)

    def _unknown_tag(self, cls, request_id):
        rng = self.rng
        body = codec.to_wire(self.message(cls))
        tag = rng.choice(["", "NoSuchRequest", cls.__name__.lower(), cls.__name__ + "\0", "PutRequest " * 30,
                          1, None, b"PutRequest", ["PutRequest"], {"tag": "PutRequest"}, 1.0, True])
        if rng.random() < 0.15:
            return [self._frame([], request_id)], cls.__name__, "empty body"
        body[0] = tag
        return [self._frame(body, request_id)], cls.__name__, f"tag={tag!r:.40}"

    def _foreign(self, cls, request_id):
        foreign = self.rng.choice(self.foreign_types)
        message = self.message(foreign, edge=self.rng.random() < 0.5)
        return [self._frame(codec.to_wire(message), request_id)], foreign.__name__, "not a client request"

    def _deep(self, cls, request_id):
        rng = self.rng
        choice = rng.randrange(4)
        if choice == 0:
            # txn in txn beyond any limit, with real tags: the codec's MAX_NESTING
            levels = rng.choice((codec.MAX_NESTING // 2 + 1, codec.MAX_NESTING, 200, 1000))
            inner = ["PutRequest", self.prefix + b"deep"]
            for _ in range(levels):
                inner = ["TxnRequest", [], [inner], []]
            return [self._frame(inner, request_id)], "TxnRequest", f"{levels} nested txns"
        if choice == 1:
            # nested just within the codec's limit: a valid request, deep
            levels = codec.MAX_NESTING // 2 - 1
            request = m.TxnRequest(success=(m.PutRequest(self.prefix + b"deep-ok", b"v"),))
            for _ in range(levels - 1):
                request = m.TxnRequest(success=(request,))
            return [self._frame(codec.to_wire(request), request_id)], "TxnRequest", f"{levels} nested txns (allowed)"
        depth = rng.choice((500, 10_000))
        nested = b"\x81" * depth + b"\x00"
        head = cbor2.dumps(PROTOCOL_VERSION) + cbor2.dumps(request_id)
        if choice == 2:
            return [b"\x83" + head + nested], cls.__name__, f"body nested {depth} deep"
        # in a field, and in the options map
        if rng.random() < 0.5:
            body = b"\x82" + cbor2.dumps(cls.__name__) + nested
            return [b"\x83" + head + body], cls.__name__, f"field nested {depth} deep"
        body = cbor2.dumps(codec.to_wire(self.message(cls)))
        return [b"\x84" + head + body + b"\xa1" + cbor2.dumps("x") + nested], cls.__name__, f"options nested {depth} deep"

    def _oversized(self, cls, request_id):
        rng = self.rng
        size = self.max_request_bytes + rng.choice((1, 1000, self.max_request_bytes))
        key = self.prefix + b"big"
        if rng.random() < 0.5:
            body = ["PutRequest", key, b"x" * size]
        else:
            body = ["RangeRequest", self.prefix + b"k" * size]
        return [self._frame(body, request_id)], body[0], f"{size} bytes"

    def _garbage(self, cls, request_id):
        rng = self.rng
        choice = rng.randrange(9)
        valid = self._frame(codec.to_wire(self.message(cls)), request_id)
        if choice == 0:
            return [bytes(rng.randrange(256) for _ in range(rng.randrange(64)))], "-", "random bytes"
        if choice == 1:
            return [b""], "-", "empty frame"
        if choice == 2:
            cut = rng.randrange(1, max(2, len(valid)))
            return [valid[:cut]], cls.__name__, f"truncated at {cut}/{len(valid)}"
        if choice == 3:
            flipped = bytearray(valid)
            for _ in range(rng.randrange(1, 4)):
                flipped[rng.randrange(len(flipped))] = rng.randrange(256)
            return [bytes(flipped)], cls.__name__, "bytes flipped"
        if choice == 4:
            shape = rng.choice([1, "x", b"x", {"a": 1}, None, True, 1.5, [], [1], [1, 2], cbor2.undefined])
            return [cbor2.dumps(shape)], "-", f"CBOR {type(shape).__name__}"
        if choice == 5:
            return [valid + rng.choice((b"\x00", b"\xff", valid))], cls.__name__, "trailing bytes"
        if choice == 6:
            # exotic tags cbor2 turns into Python objects
            tagged = rng.choice([
                cbor2.CBORTag(0, "2020-01-01T00:00:00Z"), cbor2.CBORTag(1, 1e300), cbor2.CBORTag(4, [2, 3]),
                cbor2.CBORTag(30, [1, 0]), cbor2.CBORTag(35, "(a+)+$"), cbor2.CBORTag(37, b"\0" * 16),
                cbor2.CBORTag(258, [1, 2]), cbor2.CBORTag(2, b"\xff" * 64), cbor2.CBORTag(3, b"\xff" * 64),
                cbor2.CBORTag(55799, 1), cbor2.CBORTag(2**64 - 1, 1),
            ])
            where = rng.randrange(3)
            envelope = [PROTOCOL_VERSION, request_id, ["PutRequest", self.prefix + b"t", b""]]
            if where == 2:
                envelope[2][2] = tagged
            else:
                envelope[where] = tagged
            return [cbor2.dumps(envelope)], "PutRequest", f"tag {tagged.tag} at {where}"
        if choice == 7:
            # a shared reference: a body whose field is the body itself (a cycle)
            frame = (b"\x83\x01" + cbor2.dumps(request_id) + b"\xd8\x1c\x84" + cbor2.dumps("TxnRequest")
                     + b"\x80" + b"\x81\xd8\x1d\x00" + b"\x80")
            return [frame], "TxnRequest", "cyclic body (shared reference)"
        # indefinite-length containers never closed, a huge declared length
        return [rng.choice((b"\x9f\x01\x01", b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff", b"\x5b\x00\x00\x00\x10\x00\x00\x00\x00"))], "-", "bad length"

    def _envelope(self, cls, request_id):
        rng = self.rng
        body = codec.to_wire(self.message(cls))
        choice = rng.randrange(6)
        if choice == 0:
            version = rng.choice([0, 2, -1, 2**64, "1", None, 1.0, True, [1]])
            return [cbor2.dumps([version, request_id, body])], cls.__name__, f"version={version!r}"
        if choice == 1:
            bad_id = rng.choice([-1, 2**64, 2**100, -2**63, "1", None, 1.5, True, b"\x01", [1]])
            return [cbor2.dumps([PROTOCOL_VERSION, bad_id, body])], cls.__name__, f"request_id={bad_id!r}"
        if choice == 2:
            options = rng.choice([[], 1, None, "require_leader", b"", [["require_leader", True]], True])
            return [cbor2.dumps([PROTOCOL_VERSION, request_id, body, options])], cls.__name__, f"options={options!r}"
        if choice == 3:
            envelope = rng.choice([[], [PROTOCOL_VERSION], [PROTOCOL_VERSION, request_id],
                                   [PROTOCOL_VERSION, request_id, body, {}, 1]])
            return [cbor2.dumps(envelope)], cls.__name__, f"envelope of {len(envelope)}"
        if choice == 4:
            envelope = rng.choice([{"version": 1, "id": request_id, "body": body}, b"x", "x", 5])
            return [cbor2.dumps(envelope)], cls.__name__, f"envelope is {type(envelope).__name__}"
        frame = self._frame(body, request_id)
        return rng.choice(([frame, frame], [frame, b""], [b"", frame], [frame] * 3)), cls.__name__, "several parts"


# ---------------------------------------------------------------------------
# Frames for the raft peer port: garbage, and frames from a stranger that a
# member can tell apart from its peers' (a well-formed RaftBatch from a
# stranger would be a real peer message, which Raft trusts, as etcd's does)
# ---------------------------------------------------------------------------


def peer_garbage(rng: random.Random, member_id: int) -> bytes:
    """A frame the raft actor's peer inbox must survive (log and drop)."""
    choice = rng.randrange(9)
    if choice == 8:
        # well-formed, from a stranger: a snapshot chunk whose MSG_SNAP carries no snapshot
        stranger = 0x5EED
        message = m.raft_messages.RaftMessage(m.raft_messages.MSG_SNAP, member_id, stranger, 0)
        return codec.encode(m.SnapshotChunk(stranger, rng.randrange(1, 2**32), 0, b"x", rng.random() < 0.5, 1, message))
    if choice == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
    if choice == 1:
        return b""
    if choice == 2:
        return b"\x83\x01\x00" + b"\x81" * 10_000 + b"\x00"
    if choice == 3:  # a RaftBatch with fields of the wrong type
        return cbor2.dumps([PROTOCOL_VERSION, 0, ["RaftBatch", "x", [["RaftMessage", "a", member_id]]]])
    if choice == 4:  # a client request at the peer port
        return codec.encode(m.PutRequest(PREFIX + b"peer", b"x"))
    if choice == 5:  # a snapshot ack/chunk of the wrong shape
        return cbor2.dumps([PROTOCOL_VERSION, 0, ["SnapshotChunk", 1, "x"]])
    if choice == 6:  # the wrong version, a huge id, a map
        return cbor2.dumps(rng.choice([[9, 0, ["RaftBatch", 1, []]], [1, 2**70, ["RaftBatch", 1, []]], {"a": 1}]))
    # a RaftBatch addressed to nobody in this cluster: decoded, then dropped
    message = m.RaftBatch(0x5EED, (m.raft_messages.RaftMessage(1, 0xDEAD, 0x5EED, 0),))
    return codec.encode(message)


# ---------------------------------------------------------------------------
# Bodies for the HTTP gateway (etcd's JSON mapping, actors/gateway_json.py)
# ---------------------------------------------------------------------------

# The gateway's unary paths. Watch streams are not here: a valid watch body
# keeps its stream open by design (etcd's too), and so does an empty body (an
# idle stream), so /v3/watch only gets bodies that are refused (WATCH_BODIES).
HTTP_PATHS = {
    m.RangeRequest: "/v3/kv/range", m.PutRequest: "/v3/kv/put", m.DeleteRangeRequest: "/v3/kv/deleterange",
    m.TxnRequest: "/v3/kv/txn", m.CompactionRequest: "/v3/kv/compaction",
    m.LeaseGrantRequest: "/v3/lease/grant", m.LeaseRevokeRequest: "/v3/lease/revoke",
    m.LeaseKeepAliveRequest: "/v3/lease/keepalive", m.LeaseTimeToLiveRequest: "/v3/lease/timetolive",
    m.LeaseLeasesRequest: "/v3/lease/leases", m.MemberListRequest: "/v3/cluster/member/list",
    m.StatusRequest: "/v3/maintenance/status", m.AlarmRequest: "/v3/maintenance/alarm",
    m.LockRequest: "/v3/lock/lock", m.UnlockRequest: "/v3/lock/unlock", m.CampaignRequest: "/v3/election/campaign",
    m.ProclaimRequest: "/v3/election/proclaim", m.LeaderRequest: "/v3/election/leader",
    m.ResignRequest: "/v3/election/resign",
}
# etcd's JSON names where they are not the field's own (gateway_json's tables).
_JSON_NAMES = {"ttl": "TTL", "id": "ID", "member_id": "memberID"}
_OPERAND_NAMES = {m.TARGET_VERSION: "version", m.TARGET_CREATE: "create_revision", m.TARGET_MOD: "mod_revision",
                  m.TARGET_VALUE: "value", m.TARGET_LEASE: "lease"}
_OP_NAMES = {m.RangeRequest: "request_range", m.PutRequest: "request_put", m.DeleteRangeRequest: "request_delete_range",
             m.TxnRequest: "request_txn"}
WATCH_BODIES = (b"{", b"[]", b"5", b'{"create_request": 5}', b'{"cancel_request": {"watch_id": "x"}}',
                b'{"create_request": {}, "cancel_request": {}}', b'{"nope": {}}', b"\xff\xfe", b"[" * 100_000)


def to_json(message, rng: random.Random):
    """The message in etcd's JSON mapping; integers as numbers or decimal strings."""
    import base64

    if isinstance(message, bytes):
        return base64.b64encode(message).decode()
    if isinstance(message, bool) or message is None or isinstance(message, str):
        return message
    if isinstance(message, int):
        return str(message) if rng.random() < 0.5 else message
    if isinstance(message, tuple):
        return [to_json(item, rng) for item in message]
    body = {}
    for field in dataclasses.fields(message):
        value = getattr(message, field.name)
        if isinstance(message, m.Compare) and field.name == "operand":
            body[_OPERAND_NAMES.get(message.target, "version")] = to_json(value, rng)
        elif isinstance(message, m.TxnRequest) and field.name in ("success", "failure"):
            body[field.name] = [{_OP_NAMES[type(op)]: to_json(op, rng)} for op in value]
        elif isinstance(message, m.WatchCreateRequest) and field.name == "grouped":
            continue
        else:
            body[_JSON_NAMES.get(field.name, field.name)] = to_json(value, rng)
    return body


def http_request(fuzzer: FrameFuzzer) -> tuple[str, bytes, str]:
    """(path, body, note): a gateway request, mostly structured and often broken."""
    import json

    rng = fuzzer.rng
    roll = rng.random()
    if roll < 0.05:
        return "/v3/watch", rng.choice(WATCH_BODIES), "watch body refused"
    cls = rng.choice(list(HTTP_PATHS))
    path = HTTP_PATHS[cls]
    if rng.random() < 0.2:
        path = path.replace("/v3/", "/v3beta/")
    body = to_json(fuzzer.message(cls, edge=rng.random() < 0.6), rng)
    if roll < 0.45:
        return path, json.dumps(body).encode(), "structured"
    if roll < 0.6 and body:
        # one field of the wrong JSON type; never a string where bytes go (a
        # string is base64 and would name a key outside the prefix)
        name = rng.choice(sorted(body))
        keyish = name in ("key", "range_end", "name")  # nor null: a missing key or name is b"", outside too
        body[name] = rng.choice([True, 1.5, 1e308, -1, [], {}, [1], {"a": 1}, 2**64, -2**63 - 1]
                                + ([] if keyish else [None, "x", "", "-1", "1e3", "9" * 40]))
        return path, json.dumps(body).encode(), f"{name} mistyped"
    if roll < 0.7:
        body = dict(body, **{rng.choice(["nope", "Key", "KEY", "range-end", ""]): 1})
        return path, json.dumps(body).encode(), "unknown field"
    choice = rng.randrange(9)
    if choice == 0:
        return path, bytes(rng.randrange(256) for _ in range(rng.randrange(64))), "random bytes"
    if choice == 1:
        return path, b"[" * rng.choice((1000, 100_000)) + b"]" * 10, "deep JSON"
    if choice == 2:
        return path, b'{"key": "' + b"A" * (4 * 1024 * 1024) + b'"}', "huge body"
    if choice == 3:
        return path, b'{"revision": NaN, "TTL": Infinity, "ID": -Infinity}', "NaN"
    if choice == 4:
        return path, json.dumps(body).encode() * 2, "two objects"
    if choice == 5:
        return path, b'{"key": "Zno=", "key": "!!!"}', "duplicate field, bad base64"
    if choice == 6:
        return path, json.dumps([body]).encode(), "array body"
    if choice == 7:
        return path, b'"\\ud800"', "lone surrogate"
    return path, json.dumps(body).encode()[: rng.randrange(1, 40)], "truncated"
