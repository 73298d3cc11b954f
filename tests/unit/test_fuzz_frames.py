"""The frame fuzzer itself (tests/fuzz_frames.py): deterministic, covering
every client request type and strategy, and safe for the sentinel keys."""

from __future__ import annotations

import collections

import cbor2

from tests.fuzz_frames import EDGE_INTS, PREFIX, STRATEGIES, FrameFuzzer, client_request_types, prefix_end
from transport import codec, messages as m
from transport.errors import InvalidArgumentError


def test_the_client_request_types_are_read_from_the_frontend():
    names = {cls.__name__ for cls in client_request_types()}
    for expected in ("PutRequest", "RangeRequest", "DeleteRangeRequest", "TxnRequest", "CompactionRequest",
                     "LeaseGrantRequest", "LeaseRevokeRequest", "LeaseKeepAliveRequest", "LeaseTimeToLiveRequest",
                     "LeaseLeasesRequest", "WatchCreateRequest", "WatchCancelRequest", "WatchProgressRequest",
                     "WatchKeepAlive", "StatusRequest", "MemberListRequest", "AlarmRequest", "MoveLeaderRequest",
                     "LockRequest", "UnlockRequest", "CampaignRequest", "ProclaimRequest", "LeaderRequest",
                     "ResignRequest"):
        assert expected in names
    assert "Applied" not in names and "RaftBatch" not in names


def test_the_same_seed_gives_the_same_frames():
    first = [f.parts for f in FrameFuzzer(7).frames(200)]
    assert first == [f.parts for f in FrameFuzzer(7).frames(200)]
    assert first != [f.parts for f in FrameFuzzer(8).frames(200)]


def test_every_strategy_and_request_type_is_generated():
    fuzzer = FrameFuzzer(1)
    strategies, types = collections.Counter(), collections.Counter()
    for frame in fuzzer.frames(3000):
        strategies[frame.strategy] += 1
        types[frame.type_name] += 1
    assert set(strategies) == set(STRATEGIES)
    assert {cls.__name__ for cls in client_request_types()} <= set(types)


def test_edge_frames_carry_integers_beyond_int64_and_uint64():
    seen = set()
    fuzzer = FrameFuzzer(2)
    for frame in fuzzer.frames(500, strategy="edge"):
        # read the raw CBOR: the codec refuses these values (issue 13), which is the point
        seen.update(v for v in _raw_ints(cbor2.loads(frame.frame)) if v in EDGE_INTS)
    assert {2**63, -2**63 - 1, 2**64} <= seen


def _raw_ints(value):
    if type(value) is int:
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _raw_ints(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _raw_ints(item)


def test_no_decodable_frame_writes_outside_the_prefix():
    end = prefix_end(PREFIX)
    for seed in range(3):
        for frame in FrameFuzzer(seed).frames(700):
            for part in frame.parts:
                try:
                    _, request, _ = codec.decode_with_options(part)
                except Exception:
                    continue
                for name, value in _byte_fields(request):
                    if name in ("key", "name"):
                        assert value.startswith(PREFIX), frame.describe()
                    elif name == "range_end" and value:
                        assert PREFIX <= value <= end, frame.describe()


def test_no_nospace_alarm_and_unique_lock_names():
    names = set()
    for frame in FrameFuzzer(3).frames(3000, strategy="edge"):
        try:
            _, request, _ = codec.decode_with_options(frame.frame)
        except InvalidArgumentError:
            continue  # refused at the door: it cannot raise an alarm or take a lock
        if isinstance(request, m.AlarmRequest) and request.action == m.ALARM_ACTIVATE:
            assert request.alarm == m.ALARM_NONE
        if isinstance(request, (m.LockRequest, m.CampaignRequest)):
            assert request.name not in names
            names.add(request.name)


def test_the_expected_reply_follows_etcd():
    fuzzer = FrameFuzzer(4)
    cancel = fuzzer.next_frame("valid", m.WatchCancelRequest)
    progress = fuzzer.next_frame("valid", m.WatchProgressRequest)
    keepalive = fuzzer.next_frame("valid", m.WatchKeepAlive)
    garbage = fuzzer.next_frame("deep", m.PutRequest)
    assert cancel.reply_id is None and progress.reply_id is None
    assert keepalive.reply_id == keepalive.request_id
    assert garbage.reply_id in (0, garbage.request_id)


def _ints(value):
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _ints(item)
    elif hasattr(value, "__dataclass_fields__"):
        for name in value.__dataclass_fields__:
            yield from _ints(getattr(value, name))


def _byte_fields(value):
    if isinstance(value, (tuple, list)):
        for item in value:
            yield from _byte_fields(item)
    elif hasattr(value, "__dataclass_fields__"):
        for name in value.__dataclass_fields__:
            item = getattr(value, name)
            if type(item) is bytes:
                yield name, item
            else:
                yield from _byte_fields(item)
