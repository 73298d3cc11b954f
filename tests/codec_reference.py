"""The codec's decoder and encoder as they were before issue 18: a generic
loop over a schema of per-field converters, and a generic to_wire.

Kept only as the reference that the per-class decoders and encoders
transport/codec.py compiles are checked against (tests/unit/test_codec_compiled.py):
the same object, or the same exception with the same message. No member uses it."""

from __future__ import annotations

import dataclasses
import operator
import sys
import types
import typing

from transport import codec
from transport.errors import InvalidArgumentError, MalformedRequestError
from transport.wire_types import INT64, IntRange, OneOf

_SCHEMAS: dict[type, tuple] = {}


def decode_body(body):
    """As codec.decode_body was."""
    if type(body) is not list or not body or type(body[0]) is not str:
        raise MalformedRequestError("malformed frame: body is not [tag, fields...]")
    cls = codec._REGISTRY.get(body[0])
    if cls is None:
        raise MalformedRequestError(f"unknown message type {body[0]!r}")
    return _decode_body(cls, body, 0)


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
        cls = codec._REGISTRY.get(value[0]) if type(value[0]) is str else None
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
    return sys.modules[cls.__module__]


def _decode_body(cls, body: list, depth: int):
    if depth > codec.MAX_NESTING:
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
    assert codec._REGISTRY.get(cls.__name__) is cls, f"{cls.__name__} is not a registered message"
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
