"""CBOR codec for cairn's messages, with validation at the boundary.

Theory of operation
-------------------
A frame is one CBOR array:  [PROTOCOL_VERSION, request_id, body]
and a body is                [tag, field_1, field_2, ...]
where tag is the message class's name and the fields follow the dataclass's field
order. Nested messages (a KeyValue inside a RangeResponse, an Entry inside a
RaftMessage) are bodies too, so a union field (`PutRequest | RangeRequest`) is
decoded by its tag.

Each class's decoder and encoder are compiled once, on first use, from its type
annotations into a small Python function (see _compile_decoder: plain fields are
checked inline, messages, unions and maps through per-field converters).
Decoding checks every field's type, and every integer's range or enumeration
(transport/wire_types.py: a plain `int` is etcd's int64), so a malformed frame
raises MalformedRequestError, and a value outside its field's etcd type
InvalidArgumentError, here — it never reaches an actor's logic, and never the
Raft log. An error met inside a field names it, outermost first
("TxnRequest.compare: Compare.operand: ..."). Trailing fields that have
defaults may be omitted, which keeps frames small and lets a newer peer add
defaulted fields without breaking an older one.
"""

from __future__ import annotations

import dataclasses
import sys
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
# Decoding: one function per class, compiled from its annotations
# ---------------------------------------------------------------------------


def _fail(expected: str, value) -> typing.NoReturn:
    raise MalformedRequestError(f"expected {expected}, got {type(value).__name__}")


def _out_of_range(value: int, allowed) -> typing.NoReturn:
    if getattr(allowed, "etcd_message", ""):
        raise InvalidArgumentError(allowed.etcd_message)
    shown = str(value) if value.bit_length() <= 128 else f"an integer of {value.bit_length()} bits"
    raise InvalidArgumentError(f"{shown} is out of range for {allowed.describe()}")


def _in_field(where: str, error: InvalidArgumentError) -> typing.NoReturn:
    """Re-raise an error met inside field `where` ("TxnRequest.compare") with the
    field named, so a nested one reads outermost first: "TxnRequest.compare:
    Compare.operand: ..."; etcd's own wording is kept as etcd says it."""
    if error.message.startswith("etcdserver:"):
        raise error
    raise type(error)(f"{where}: {error.message}") from None


def _wrong_type(where: str, expected: str, value) -> typing.NoReturn:
    raise MalformedRequestError(f"{where}: expected {expected}, got {type(value).__name__}")


def _int_out_of_range(where: str, value: int, allowed) -> typing.NoReturn:
    try:
        _out_of_range(value, allowed)
    except InvalidArgumentError as error:
        _in_field(where, error)


def _inline_check(annotation):
    """(plain type, IntRange | OneOf | None) for a value of that annotation checked
    inline (int, bool, bytes, str, Uint64, enumerations), or None."""
    if annotation in _PLAIN:
        return annotation, INT64 if annotation is int else None
    if typing.get_origin(annotation) is typing.Annotated:
        base, *markers = typing.get_args(annotation)
        assert base is int and len(markers) == 1 and isinstance(markers[0], (IntRange, OneOf)), annotation
        return int, markers[0]
    return None


_PLAIN = frozenset((int, bool, bytes, str))


def _converter_for(annotation):
    """A function(value, depth) -> value that validates one wire value: for the
    fields a class's decoder does not check inline (messages, unions, maps)."""
    inline = _inline_check(annotation)
    if inline is not None:
        expected, allowed = inline
        return _plain_converter(expected, allowed)
    if annotation is type(None):
        return _convert_none
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return _union_converter(typing.get_args(annotation))
    if origin is tuple:
        return _tuple_converter(typing.get_args(annotation))
    if origin is dict:
        return _dict_converter(typing.get_args(annotation))
    if dataclasses.is_dataclass(annotation):
        return _message_converter((annotation,))
    raise TypeError(f"codec cannot carry fields of type {annotation!r}")


def _plain_converter(expected: type, allowed):
    """Exactly that type (no bool for int, no bytearray for bytes), and for an
    int, within its etcd type or enumeration."""
    name = expected.__name__

    def convert(value, depth):
        if type(value) is not expected:
            _fail(name, value)
        if allowed is not None and not allowed.allows(value):
            _out_of_range(value, allowed)
        return value

    return convert


def _convert_none(value, depth):
    if value is not None:
        _fail("null", value)
    return value


def _union_converter(options):
    """Dispatch on the wire type: a CBOR array is a message (or a tuple), a map a
    dict, anything else must be one of the plain types listed."""
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
            assert option in _PLAIN or option is type(None), option
            by_wire_type[option] = _converter_for(option)
    names = " | ".join(getattr(o, "__name__", str(o)) for o in options)

    def convert(value, depth):
        converter = by_wire_type.get(type(value))
        if converter is None:
            _fail(names, value)
        return converter(value, depth)

    return convert


def _tuple_converter(args):
    assert len(args) == 2 and args[1] is Ellipsis, f"only tuple[X, ...] is supported, got {args}"
    options = typing.get_args(args[0]) if typing.get_origin(args[0]) in (typing.Union, types.UnionType) else args[:1]
    if all(dataclasses.is_dataclass(option) for option in options):
        return _messages_converter(options)
    item = _converter_for(args[0])

    def convert(value, depth):
        if type(value) is not list:
            _fail("array", value)
        depth += 1
        return tuple([item(v, depth) for v in value])

    return convert


def _dict_converter(args):
    key_convert, value_convert = _converter_for(args[0]), _converter_for(args[1])

    def convert(value, depth):
        if type(value) is not dict:
            _fail("map", value)
        return {key_convert(k, depth): value_convert(v, depth) for k, v in value.items()}

    return convert


def _decoder_by_tag(allowed: tuple[type, ...]):
    """A function(body) -> the decoder of the allowed class its tag names
    (looked up when met, so a TxnRequest may hold TxnRequests), or raise."""
    names = " | ".join(c.__name__ for c in allowed)
    by_tag = {c.__name__: c for c in allowed if _REGISTRY.get(c.__name__) is c}

    def decoder_of(body):
        if type(body) is not list or not body:
            _fail(names, body)
        tag = body[0]
        cls = by_tag.get(tag) if type(tag) is str else None
        if cls is None:
            raise MalformedRequestError(f"expected {names}, got tag {tag!r}")
        return _DECODERS[cls]

    return decoder_of


def _message_converter(allowed: tuple[type, ...]):
    decoder_of = _decoder_by_tag(allowed)

    def convert(value, depth):
        return decoder_of(value)(value, depth + 1)

    return convert


def _messages_converter(allowed: tuple[type, ...]):
    """tuple[Message, ...] (or of a union of messages), without a converter
    call per item (Raft's entries and messages)."""
    decoder_of = _decoder_by_tag(allowed)

    def convert(value, depth):
        if type(value) is not list:
            _fail("array", value)
        depth += 2  # the tuple's level, then the message's
        return tuple([decoder_of(item)(item, depth) for item in value])

    return convert


class _CompiledOnUse(dict):
    """class -> the function compile(class) makes for it, made on first use
    (after every module's classes are registered, whatever the import order)."""

    def __init__(self, compile):
        super().__init__()
        self.compile = compile

    def __missing__(self, cls):
        function = self[cls] = self.compile(cls)
        return function


_DECODERS = _CompiledOnUse(lambda cls: _compile_decoder(cls))


def _compile_decoder(cls):
    """A function(body, depth) -> message for one class, written out from its
    annotations and exec'd once (as dataclasses writes __init__).

    Why: a put's frames are decoded several times on its way through a member,
    and a generic loop that called a converter per field, then the frozen
    dataclass's __init__ (an object.__setattr__ per field), was the largest part
    of the raft actor's CPU (issue 18). The generated code checks each plain
    field (int64, uint64, enumerations, bool, bytes, str, and tuples of those)
    inline, calls a converter only for messages, unions and maps, and fills the
    new object's slots directly (omitted trailing fields get their defaults, as
    __init__ would give them). It raises what the checks above describe; the
    reference decoder in tests/unit/test_codec_compiled.py keeps it honest."""
    hints = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]), include_extras=True)
    fields = dataclasses.fields(cls)
    assert "__slots__" in vars(cls) and not hasattr(cls, "__post_init__"), f"{cls.__name__}: a frozen, slotted message"
    assert all(f.init and f.default_factory is dataclasses.MISSING for f in fields), cls
    required = sum(1 for f in fields if f.default is dataclasses.MISSING)
    name = cls.__name__
    namespace = {
        "new": object.__new__,
        "cls": cls,
        "MAX_NESTING": MAX_NESTING,
        "MalformedRequestError": MalformedRequestError,
        "InvalidArgumentError": InvalidArgumentError,
        "_wrong_type": _wrong_type,
        "_int_out_of_range": _int_out_of_range,
        "_in_field": _in_field,
    }
    lines = [
        "def decode(body, depth):",
        "    if depth > MAX_NESTING:",
        "        raise MalformedRequestError('message nested too deeply')",
        "    count = len(body) - 1",
        f"    if count < {required} or count > {len(fields)}:",
        f"        raise MalformedRequestError(f'{name}: expected {required}..{len(fields)} fields, got {{count}}')",
        "    message = new(cls)",
    ]
    for index, field in enumerate(fields):
        lines.append(f"    # {field.name}")
        check = [f"value = body[{index + 1}]", *_field_check(hints[field.name], index, f"{name}.{field.name}", namespace)]
        if index < required:
            lines.extend("    " + line for line in check)
        else:
            namespace[f"default{index}"] = field.default
            lines.append(f"    if count > {index}:")
            lines.extend("        " + line for line in check)
            lines.extend(["    else:", f"        value = default{index}"])
        slot = getattr(cls, field.name)  # a slot's descriptor (a base class's, for a subclass's inherited field)
        assert isinstance(slot, types.MemberDescriptorType), (cls, field.name)
        namespace[f"set{index}"] = slot.__set__  # what object.__setattr__ in a frozen __init__ reaches
        lines.append(f"    set{index}(message, value)")
    lines.append("    return message")
    source = "\n".join(lines)
    exec(compile(source, f"<codec decoder of {name}>", "exec"), namespace)
    decoder = namespace["decode"]
    decoder.source = source
    return decoder


def _field_check(annotation, index: int, where: str, namespace: dict) -> list[str]:
    """The lines that check `value`, field `index` of the class, and leave in
    `value` what the message holds."""
    inline = _inline_check(annotation)
    if inline is not None:
        return _plain_check_lines(inline, "value", where, f"allowed{index}", namespace)
    if typing.get_origin(annotation) is tuple:
        item, ellipsis = typing.get_args(annotation)
        inline = _inline_check(item) if ellipsis is Ellipsis else None
        if inline is not None:
            return [
                "if type(value) is not list:",
                f"    _wrong_type({where!r}, 'array', value)",
                "for item in value:",
                *("    " + line for line in _plain_check_lines(inline, "item", where, f"allowed{index}", namespace)),
                "value = tuple(value)",
            ]
    namespace[f"convert{index}"] = _converter_for(annotation)
    return [
        "try:",
        f"    value = convert{index}(value, depth)",
        "except InvalidArgumentError as error:",
        f"    _in_field({where!r}, error)",
    ]


def _plain_check_lines(inline, variable: str, where: str, allowed_name: str, namespace: dict) -> list[str]:
    """The lines that check one plain value: its exact type, and an int's range
    (bounds written in) or enumeration (a frozenset in the namespace)."""
    expected, allowed = inline
    lines = [f"if type({variable}) is not {expected.__name__}:", f"    _wrong_type({where!r}, {expected.__name__!r}, {variable})"]
    if allowed is None:
        return lines
    namespace[allowed_name] = allowed
    if isinstance(allowed, IntRange):
        lines.append(f"if not {allowed.low} <= {variable} <= {allowed.high}:")
    else:
        namespace[allowed_name + "_values"] = allowed.values
        lines.append(f"if {variable} not in {allowed_name}_values:")
    lines.append(f"    _int_out_of_range({where!r}, {variable}, {allowed_name})")
    return lines


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
    return _ENCODERS[cls](obj)


_ENCODERS = _CompiledOnUse(lambda cls: _compile_encoder(cls))


def _compile_encoder(cls):
    """A function(message) -> body that builds the list in one expression: a
    scalar field (most are) is taken as it is, anything else through to_wire."""
    assert _REGISTRY.get(cls.__name__) is cls, f"{cls.__name__} is not a registered message"
    items = "".join(
        f", v if type(v := obj.{f.name}) in _SCALARS else to_wire(v)" for f in dataclasses.fields(cls)
    )
    source = f"def encode(obj):\n    return [{cls.__name__!r}{items}]"
    namespace = {"_SCALARS": _SCALARS, "to_wire": to_wire}
    exec(compile(source, f"<codec encoder of {cls.__name__}>", "exec"), namespace)
    return namespace["encode"]


def check(message) -> None:
    """Raise what decoding the message's frame would raise (InvalidArgumentError
    for a value outside its field's etcd type), without encoding it: a client
    refuses a request the member would refuse, before sending it."""
    _DECODERS[type(message)](to_wire(message), 0)


def encode_checked(message, request_id: int = 0, options: dict | None = None) -> bytes:
    """encode(message, request_id, options), after raising what check(message)
    raises; one to_wire serves both (a client checks every request it sends)."""
    body = to_wire(message)
    _DECODERS[type(message)](body, 0)
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
    return _DECODERS[cls](body, 0)


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
