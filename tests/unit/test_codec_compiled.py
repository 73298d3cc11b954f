"""The per-class decoders and encoders the codec compiles (issue 18) behave
exactly as the generic ones they replaced (tests/codec_reference.py): on a
corpus of every registered message, valid, at the edges of its integer types,
and broken in every field, count, tag and depth, both decoders give the same
object or raise the same exception type with the same message."""

from __future__ import annotations

import dataclasses
import random

import cbor2
import pytest

from tests import codec_reference as reference
from tests.fuzz_frames import EDGE_INTS, FrameFuzzer, _registered
from transport import codec, messages as m
from transport.errors import InvalidArgumentError
from transport.raft_messages import MSG_APP, Entry, RaftMessage

CLASSES = _registered()

# Wire values of every kind, each wrong for most fields.
BAD_VALUES = (
    "s", "", 1.5, float("nan"), True, False, None, 0, 1, -1, 99, *EDGE_INTS, b"", b"b", [], [1], [1, 2], [None],
    [b"x"], ["s"], [True], [[]], ["NoSuchTag"], ["PutRequest", b"k"], [["PutRequest", b"k"]], [["NoSuchTag"]],
    ["KeyValue", b"k", 1, 2, 3, b"v"], ["ResponseHeader", 1, 2, 3, 4], [["Entry", 1, 1, b""]], [["Entry", 1, 1]],
    {}, {"a": 1}, {"a": "b"}, {"a": None}, {1: 2}, {"a": 2**64}, cbor2.CBORTag(99, 1), cbor2.undefined,
)
MAX_SLOTS = 40  # per sample body, a bound on the test's time
BAD_TAGS = ("", "NoSuchTag", "putrequest", 1, None, True, b"PutRequest", 1.0, ["PutRequest"])


def copied(value):
    """A copy of a wire value's arrays and maps (deepcopy cannot copy a CBORTag)."""
    if type(value) is list:
        return [copied(item) for item in value]
    if type(value) is dict:
        return {key: copied(item) for key, item in value.items()}
    return value


def outcome(decode, body):
    """('ok', type, repr, message) or ('raise', type, message): what a decoder
    made of a body."""
    try:
        message = decode(body)
    except Exception as error:  # noqa: BLE001 - any exception must match the reference's
        return ("raise", type(error), str(error))
    return ("ok", type(message), repr(message), message)


def assert_same(body):
    """The compiled decoder does what the reference does with the body, and
    leaves the body as it was (a caller may forward it)."""
    expected = outcome(reference.decode_body, copied(body))
    before = copied(body)
    got = outcome(codec.decode_body, body)
    assert got == expected, f"body {body!r:.300}"
    assert body == before


def wire(body):
    """The body as the wire carries it (tuples become arrays, tags stay tags)."""
    return cbor2.loads(cbor2.dumps(body))


def field_slots(body):
    """(container, index) of every field of a body, nested messages' too."""
    if type(body) is not list or not body or type(body[0]) is not str:
        return
    for index in range(1, len(body)):
        yield body, index
        value = body[index]
        if type(value) is list and value and type(value[0]) is str:
            yield from field_slots(value)
        elif type(value) is list:
            for item in value:
                yield from field_slots(item)


def shortened(value):
    """A body with every array of items cut to 3 (a fuzzed response may list
    hundreds of members: more of the same finds nothing new, slowly)."""
    if type(value) is not list:
        return value
    if value and type(value[0]) is str and value[0] in codec._REGISTRY:
        return [value[0], *map(shortened, value[1:])]
    return [shortened(item) for item in value[:3]]


def sample_bodies(cls, count=4):
    """Wire bodies of cls from the frame fuzzer: plausible values, then edge ones."""
    fuzzer = FrameFuzzer(CLASSES.index(cls), request_types=tuple(CLASSES))
    for index in range(count):
        yield shortened(wire(codec.to_wire(fuzzer.message(cls, edge=index % 2 == 1))))


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_every_class_decodes_as_the_reference_does(cls):
    for body in sample_bodies(cls):
        assert_same(body)
        # fields (nested ones too; up to MAX_SLOTS of them) replaced by each wrong value
        slots = list(field_slots(body))
        for container, index in random.Random(len(slots)).sample(slots, min(len(slots), MAX_SLOTS)):
            kept = container[index]
            for bad in BAD_VALUES:
                container[index] = bad
                assert_same(wire(body))
            container[index] = kept
        # too few and too many fields, defaulted ones omitted
        for length in range(0, len(body) + 3):
            assert_same(body[:length] + [0] * (length - len(body)))
        # unknown and non-string tags, and bodies that are not arrays
        for tag in BAD_TAGS:
            assert_same([tag, *body[1:]])
        for not_a_body in ([], None, b"x", "PutRequest", {"PutRequest": 1}):
            assert_same(not_a_body)


@pytest.mark.parametrize("levels", [*range(28, 36), 62, 63, 64, 65, 200])
def test_nesting_is_limited_where_it_was(levels):
    inner = ["PutRequest", b"k"]
    for _ in range(levels):
        inner = ["TxnRequest", [], [inner], []]
    assert_same(inner)
    response = ["PutResponse", ["ResponseHeader", 1, 2, 3, 4]]
    for _ in range(levels):
        response = ["TxnResponse", ["ResponseHeader", 1, 2, 3, 4], True, [response]]
    assert_same(response)


def test_a_nested_out_of_range_int_names_every_field_on_its_way():
    body = ["TxnRequest", [], [["TxnRequest", [["Compare", 0, 0, b"k", 2**64]]]]]
    assert_same(body)
    with pytest.raises(InvalidArgumentError) as caught:
        codec.decode_body(body)
    assert str(caught.value) == "TxnRequest.success: TxnRequest.compare: Compare.operand: 18446744073709551616 is out of range for int64"


def test_fuzzed_frames_of_every_class_decode_as_the_reference_does():
    weights = {"valid": 1, "edge": 3, "wrong_type": 3, "field_count": 2, "unknown_tag": 1, "deep": 1}
    fuzzer = FrameFuzzer(18, request_types=tuple(CLASSES), weights=weights)
    for frame in fuzzer.frames(3000):
        try:
            _, body, _ = codec.decode_envelope(frame.parts[0])
        except Exception:  # noqa: BLE001 - the envelope's code is shared; only bodies differ
            continue
        assert_same(body)


def test_decoded_messages_are_what_their_constructor_makes():
    """The decoder fills slots without calling __init__; nothing tells the two apart."""
    for cls in CLASSES:
        for body in sample_bodies(cls, 2):
            try:
                decoded = codec.decode_body(body)
            except InvalidArgumentError:
                continue  # the fuzzer's plausible values need not be in range
            rebuilt = cls(*[getattr(decoded, f.name) for f in dataclasses.fields(cls)])
            assert decoded == rebuilt and repr(decoded) == repr(rebuilt)
            for field in dataclasses.fields(cls)[:1]:
                with pytest.raises(dataclasses.FrozenInstanceError):
                    setattr(decoded, field.name, None)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_every_class_encodes_as_the_reference_does(cls):
    fuzzer = FrameFuzzer(1000 + CLASSES.index(cls), request_types=tuple(CLASSES))
    for index in range(4):
        message = fuzzer.message(cls, edge=index % 2 == 1)
        assert codec.to_wire(message) == reference.to_wire(message)
        assert codec.encode(message, 7) == cbor2.dumps([m.PROTOCOL_VERSION, 7, reference.to_wire(message)])


def test_odd_field_values_encode_as_they_did():
    """Encoding trusts the sender's own objects; what it did with a list where a
    tuple belongs, or a value no field can hold, it still does."""
    odd = RaftMessage(MSG_APP, 1, 2, 3, entries=[Entry(1, 1, b"x")], context=bytearray(b"c"))
    with pytest.raises(AssertionError):
        reference.to_wire(odd)
    with pytest.raises(AssertionError):
        codec.to_wire(odd)
    listed = RaftMessage(MSG_APP, 1, 2, 3, entries=[Entry(1, 1, b"x")])
    assert codec.to_wire(listed) == reference.to_wire(listed)
    rng = random.Random(1)
    values = m.Applied(1, 2, tuple(rng.randrange(1 << 64) for _ in range(5)), (b"a", b"b"))
    assert codec.to_wire(values) == reference.to_wire(values)
