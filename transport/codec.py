"""CBOR codec for cairn's messages, with validation at the boundary.

Theory of operation
-------------------
A frame is one CBOR array:  [PROTOCOL_VERSION, request_id, body]
and a body is                [tag, field_1, field_2, ...]
where tag is the message class's name and the fields follow the dataclass's field
order. Nested messages (a KeyValue inside a RangeResponse, an Entry inside a
RaftMessage) are bodies too, so a union field (`PutRequest | RangeRequest`) is
decoded by its tag.

Each class's wire schema is compiled once from its type annotations into a tuple
of per-field converters. Decoding checks every field's type, and every integer's
range or enumeration (transport/wire_types.py: a plain `int` is etcd's int64),
so a malformed frame raises MalformedRequestError, and a value outside its
field's etcd type InvalidArgumentError, here — it never reaches an actor's
logic, and never the Raft log. Trailing
fields that have defaults may be omitted, which keeps frames small and lets a
newer peer add defaulted fields without breaking an older one.
"""

from __future__ import annotations

import dataclasses
import operator
import types
import typing

import cbor2

from transport import messages, raft_messages
from transport.errors import InvalidArgumentError, MalformedRequestError, RequestTooLargeError, UnsupportedVersionError
from transport.messages import PROTOCOL_VERSION
from transport.wire_types import INT64, IntRange, OneOf

# A frame's nesting is at most a few levels (txn in txn ...); CBOR bombs are deeper.
MAX_NESTING = 64

_REGISTRY: dict[str, type] = {}
_SCHEMAS: dict[type, tuple] = {}


def register(cls: type) -> type:
    """Make a message class known to the codec (tag = class name)."""
    assert dataclasses.is_dataclass(cls), cls
    tag = cls.__name__
    assert _REGISTRY.get(tag, cls) is cls, f"duplicate message tag {tag}"
    _REGISTRY[tag] = cls
    return cls


def _register_module(module) -> None:
    for value in vars(module).values():
        if isinstance(value, type) and dataclasses.is_dataclass(value) and value.__module__ == module.__name__:
            register(value)


# ---------------------------------------------------------------------------
# Decoding: converters compiled from annotations
# ---------------------------------------------------------------------------


def _fail(expected: str, value) -> typing.NoReturn:
    raise MalformedRequestError(f"expected {expected}, got {type(value).__name__}")


_INT64_LOW, _INT64_HIGH = INT64.low, INT64.high


def _out_of_range(value: int, allowed) -> typing.NoReturn:
    if getattr(allowed, "etcd_message", ""):
        raise InvalidArgumentError(allowed.etcd_message)
    shown = str(value) if value.bit_length() <= 128 else f"an integer of {value.bit_length()} bits"
    raise InvalidArgumentError(f"{shown} is out of range for {allowed.describe()}")


def _convert_int(value, depth):
    if type(value) is not int:
        _fail("int", value)
    if not _INT64_LOW <= value <= _INT64_HIGH:
        _out_of_range(value, INT64)
    return value


def _bounded_int_converter(allowed: IntRange | OneOf):
    """An int field with its etcd type (uint64) or enumeration."""

    def convert(value, depth):
        if type(value) is not int:
            _fail("int", value)
        if not allowed.allows(value):
            _out_of_range(value, allowed)
        return value

    return convert


def _exactly(expected: type):
    """The converter of a plain type: the value as it is, if it is exactly that
    type (no bool for int, no bytearray for bytes)."""
    name = expected.__name__

    def convert(value, depth):
        if type(value) is not expected:
            _fail(name, value)
        return value

    return convert


_convert_bool = _exactly(bool)
_convert_bytes = _exactly(bytes)
_convert_str = _exactly(str)


def _convert_none(value, depth):
    if value is not None:
        _fail("null", value)
    return value


_SIMPLE = {int: _convert_int, bool: _convert_bool, bytes: _convert_bytes, str: _convert_str, type(None): _convert_none}
_PLAIN = frozenset((int, bool, bytes, str))


def _converter_for(annotation):
    """A function(value, depth) -> value that validates one field's wire value."""
    if annotation in _SIMPLE:
        return _SIMPLE[annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *markers = typing.get_args(annotation)
        assert base is int and len(markers) == 1 and isinstance(markers[0], (IntRange, OneOf)), annotation
        return _bounded_int_converter(markers[0])
    if origin in (typing.Union, types.UnionType):
        return _union_converter(typing.get_args(annotation))
    if origin is tuple:
        return _tuple_converter(typing.get_args(annotation))
    if origin is dict:
        return _dict_converter(typing.get_args(annotation))
    if dataclasses.is_dataclass(annotation):
        return _message_converter((annotation,))
    raise TypeError(f"codec cannot carry fields of type {annotation!r}")


def _union_converter(options):
    """Dispatch on the wire type: a CBOR array is a message (or a tuple), a map a
    dict, anything else must be one of the simple types listed."""
    by_wire_type = {}
    message_options = tuple(o for o in options if dataclasses.is_dataclass(o))
    if message_options:
        by_wire_type[list] = _message_converter(message_options)
    for option in options:
        if dataclasses.is_dataclass(option):
            continue
        origin = typing.get_origin(option)
        if origin is tuple:
            assert list not in by_wire_type, f"ambiguous union {options}"
            by_wire_type[list] = _tuple_converter(typing.get_args(option))
        elif origin is dict:
            by_wire_type[dict] = _dict_converter(typing.get_args(option))
        else:
            by_wire_type[option] = _SIMPLE[option]
    names = " | ".join(getattr(o, "__name__", str(o)) for o in options)

    def convert(value, depth):
        converter = by_wire_type.get(type(value))
        if converter is None:
            _fail(names, value)
        return converter(value, depth)

    return convert


def _tuple_converter(args):
    assert len(args) == 2 and args[1] is Ellipsis, f"only tuple[X, ...] is supported, got {args}"
    item_type = args[0]
    if item_type is int:
        # tuple[int, ...]: int64 items, checked inline
        def convert_int64s(value, depth):
            if type(value) is not list:
                _fail("array", value)
            for v in value:
                if type(v) is not int:
                    _fail("int", v)
                if not _INT64_LOW <= v <= _INT64_HIGH:
                    _out_of_range(v, INT64)
            return tuple(value)

        return convert_int64s
    if item_type in _SIMPLE and item_type is not type(None):
        # tuple[int, ...], tuple[bytes, ...]: one type check per item, no call
        def convert_simple(value, depth):
            if type(value) is not list:
                _fail("array", value)
            for v in value:
                if type(v) is not item_type:
                    _fail(item_type.__name__, v)
            return tuple(value)

        return convert_simple
    item = _lazy(item_type)

    def convert(value, depth):
        if type(value) is not list:
            _fail("array", value)
        depth += 1
        return tuple([item(v, depth) for v in value])

    return convert


def _dict_converter(args):
    key_convert, value_convert = _lazy(args[0]), _lazy(args[1])

    def convert(value, depth):
        if type(value) is not dict:
            _fail("map", value)
        return {key_convert(k, depth): value_convert(v, depth) for k, v in value.items()}

    return convert


def _lazy(annotation):
    """Resolve converters on first use so classes can refer to each other (a
    TxnRequest holds TxnRequests)."""
    resolved = None

    def convert(value, depth):
        nonlocal resolved
        if resolved is None:
            resolved = _converter_for(annotation)
        return resolved(value, depth)

    return convert


def _message_converter(allowed: tuple[type, ...]):
    allowed_set = frozenset(allowed)
    names = " | ".join(c.__name__ for c in allowed)

    def convert(value, depth):
        if type(value) is not list or not value:
            _fail(names, value)
        cls = _REGISTRY.get(value[0]) if type(value[0]) is str else None
        if cls not in allowed_set:
            raise MalformedRequestError(f"expected {names}, got tag {value[0]!r}")
        return _decode_body(cls, value, depth + 1)

    return convert


def _schema(cls):
    schema = _SCHEMAS.get(cls)
    if schema is None:
        hints = typing.get_type_hints(cls, vars(_module_of(cls)), include_extras=True)
        fields = dataclasses.fields(cls)
        required = sum(
            1 for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        )
        # Resolved now: a field's converter only looks message types up when it
        # meets one, so a message that holds its own type (TxnRequest) resolves too.
        converters = tuple(_converter_for(hints[f.name]) for f in fields)
        # Fields of one plain type (most of them) are checked inline, without a call.
        plain = tuple(hints[f.name] if hints[f.name] in _PLAIN else None for f in fields)
        schema = (required, converters, tuple(f.name for f in fields), plain)
        _SCHEMAS[cls] = schema
    return schema


def _module_of(cls):
    import sys

    return sys.modules[cls.__module__]


def _decode_body(cls, body: list, depth: int):
    if depth > MAX_NESTING:
        raise MalformedRequestError("message nested too deeply")
    required, converters, names, plain = _schema(cls)
    count = len(body) - 1
    if count < required or count > len(converters):
        raise MalformedRequestError(f"{cls.__name__}: expected {required}..{len(converters)} fields, got {count}")
    values = body[1:]
    index = 0
    try:
        for index, value in enumerate(values):
            expected = plain[index]
            if expected is None:
                values[index] = converters[index](value, depth)
            elif type(value) is not expected:
                _fail(expected.__name__, value)
            elif expected is int and not _INT64_LOW <= value <= _INT64_HIGH:
                _out_of_range(value, INT64)
    except InvalidArgumentError as error:
        if error.message.startswith("etcdserver:"):
            raise  # etcd's own wording, kept as etcd says it
        # name the field, outermost first: "TxnRequest.compare: Compare.operand: ..."
        raise type(error)(f"{cls.__name__}.{names[index]}: {error.message}") from None
    return cls(*values)


# ---------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------


_SCALARS = frozenset((int, bool, bytes, str, type(None)))


def to_wire(obj):
    """A message as nested lists (the body), ready for CBOR."""
    cls = type(obj)
    if cls in _SCALARS:
        return obj
    if cls is tuple or cls is list:
        return [item if type(item) in _SCALARS else to_wire(item) for item in obj]
    if cls is dict:
        return {key: to_wire(value) for key, value in obj.items()}
    fields = _FIELDS.get(cls)
    if fields is None:
        fields = _fields_of(cls)
    # A scalar field (most are) is taken as it is, without a call per field.
    return [cls.__name__, *[value if type(value) in _SCALARS else to_wire(value) for value in fields(obj)]]


_FIELDS: dict[type, object] = {}


def _fields_of(cls):
    """A function(message) -> tuple of its field values, in wire order."""
    assert _REGISTRY.get(cls.__name__) is cls, f"{cls.__name__} is not a registered message"
    names = tuple(f.name for f in dataclasses.fields(cls))
    if not names:
        fields = lambda obj: ()  # noqa: E731
    elif len(names) == 1:
        getter = operator.attrgetter(names[0])
        fields = lambda obj: (getter(obj),)  # noqa: E731
    else:
        fields = operator.attrgetter(*names)
    _FIELDS[cls] = fields
    return fields


def check(message) -> None:
    """Raise what decoding the message's frame would raise (InvalidArgumentError
    for a value outside its field's etcd type), without encoding it: a client
    refuses a request the member would refuse, before sending it."""
    _decode_body(type(message), to_wire(message), 0)


def encode_checked(message, request_id: int = 0, options: dict | None = None) -> bytes:
    """encode(message, request_id, options), after raising what check(message)
    raises; one to_wire serves both (a client checks every request it sends)."""
    body = to_wire(message)
    _decode_body(type(message), body, 0)
    if options:
        return cbor2.dumps([PROTOCOL_VERSION, request_id, body, options])
    return cbor2.dumps([PROTOCOL_VERSION, request_id, body])


def encode(message, request_id: int = 0, options: dict | None = None) -> bytes:
    """One frame: [version, request_id, body], plus an options map when given
    (per-request flags such as require_leader, like gRPC metadata in etcd)."""
    if options:
        return cbor2.dumps([PROTOCOL_VERSION, request_id, to_wire(message), options])
    return cbor2.dumps([PROTOCOL_VERSION, request_id, to_wire(message)])


def decode(frame: bytes, max_bytes: int | None = None):
    """(request_id, message) from one frame; MalformedRequestError,
    UnsupportedVersionError or RequestTooLargeError when the frame is bad."""
    request_id, body, _ = decode_envelope(frame, max_bytes)
    return request_id, decode_body(body)


def decode_with_options(frame: bytes, max_bytes: int | None = None):
    """(request_id, message, options dict) for a member's client door."""
    request_id, body, options = decode_envelope(frame, max_bytes)
    return request_id, decode_body(body), options


def decode_envelope(frame: bytes, max_bytes: int | None = None):
    """(request_id, raw body, options) — the cheap first half of decode, so a
    frame that is only forwarded need not be decoded further."""
    if max_bytes is not None and len(frame) > max_bytes:
        raise RequestTooLargeError(f"etcdserver: request is too large ({len(frame)} bytes > {max_bytes})")
    try:
        envelope = cbor2.loads(frame)
    except Exception as error:  # cbor2 raises several types on garbage; all mean "malformed"
        raise MalformedRequestError(f"malformed frame: not CBOR ({error.__class__.__name__})") from None
    if type(envelope) is not list or len(envelope) not in (3, 4):
        raise MalformedRequestError("malformed frame: expected [version, request_id, body]")
    version, request_id, body = envelope[:3]
    options = envelope[3] if len(envelope) == 4 else {}
    if type(options) is not dict:
        raise MalformedRequestError("malformed frame: options is not a map")
    if type(version) is not int:
        raise MalformedRequestError("malformed frame: version is not an int")
    if version != PROTOCOL_VERSION:
        raise UnsupportedVersionError(f"unsupported protocol version {version} (this member speaks {PROTOCOL_VERSION})")
    if type(request_id) is not int or not 0 <= request_id < 1 << 64:
        raise MalformedRequestError("malformed frame: request_id is not a 64-bit unsigned int")
    return request_id, body, options


def decode_body(body):
    if type(body) is not list or not body or type(body[0]) is not str:
        raise MalformedRequestError("malformed frame: body is not [tag, fields...]")
    cls = _REGISTRY.get(body[0])
    if cls is None:
        raise MalformedRequestError(f"unknown message type {body[0]!r}")
    return _decode_body(cls, body, 0)


def peek_request_id(frame: bytes) -> int:
    """The request id of a frame that may be malformed, or 0 — so an error reply
    can still name the request it answers."""
    try:
        envelope = cbor2.loads(frame)
        request_id = envelope[1]
        return request_id if type(request_id) is int and 0 <= request_id < 1 << 64 else 0
    except Exception:
        return 0


_register_module(messages)
_register_module(raft_messages)
