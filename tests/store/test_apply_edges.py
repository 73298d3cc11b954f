"""Apply is total (issue 13), swept at the edges: a committed entry may be
refused with an operating error, but must never raise anything else, nor need
store/apply.py's entry-failure fallback (tests/store/test_apply_total.py
tests the fallback itself and the schema-derived property). The
apply actor of every member meets the same entry; an exception there is a
crash, a restart, the same entry again: a permanent, cluster-wide outage.

The requests are any int, any bytes, any bool, in every request type the
frontend proposes to the log (read from actors/frontend.py, as the fuzzer
does): integers lean towards the widths etcd uses (int64, uint64) and just
beyond, which the codec now refuses as the entry is decoded (every member
alike), and which must not crash apply even if such a frame were in the log.

The same property for the read path the frontend runs on client input
(Reader.range, range_page and count): a crash there restarts the frontend
and drops every request it held.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import traceback
import types
import typing

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from actors.frontend import FrontendActor, LEASE_WRITE_REQUESTS, WRITE_REQUESTS
from cairn.config import Limits, MemberSettings
from store.apply import ApplyRules, StateMachine
from store.apply_leases import min_lease_ttl_s
from tests.fuzz_frames import EDGE_INTS
from tests.store.conftest import HEADER, open_env
from transport import codec, messages as m
from transport.entries import make_payload
from transport.errors import CairnError
from transport.raft_messages import Entry

LONG = bool(os.environ.get("CAIRN_FUZZ_SEEDS") or os.environ.get("CAIRN_FUZZ_SECONDS"))
EXAMPLES = int(os.environ.get("CAIRN_APPLY_EXAMPLES", 2000 if LONG else 150))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=not LONG, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])

# What the frontend proposes to the log (the apply actor's whole input from clients).
PROPOSED = tuple(sorted(set(WRITE_REQUESTS + LEASE_WRITE_REQUESTS) | {m.AlarmRequest}, key=lambda c: c.__name__))

# ---------------------------------------------------------------------------
# strategies from the dataclasses' type hints: the codec's schema, no more
# ---------------------------------------------------------------------------

# Any int, but most of them small (enums, counts, revisions of the seeded
# store), so requests get past the static checks to the code that stores them.
any_int = st.one_of(st.integers(0, 2), st.integers(0, 2), st.integers(0, 4), st.integers(0, 12),
                    st.sampled_from(EDGE_INTS), st.sampled_from(EDGE_INTS), st.integers())
key_bytes = st.one_of(st.sampled_from([b"a", b"b", b"k", b"k/1", b"\0", b"\xff", b"", b"k" * 511, b"k" * 512, b"k" * 600]),
                      st.binary(min_size=1, max_size=8))


def strategy_for(annotation, name: str = ""):
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*[strategy_for(option, name) for option in typing.get_args(annotation)])
    if annotation is int:
        return any_int
    if annotation is bool:
        return st.booleans()
    if annotation is bytes:
        return key_bytes if name in ("key", "range_end", "name") else st.binary(max_size=16)
    if annotation is str:
        return st.text(max_size=8)
    if annotation is type(None):
        return st.none()
    if origin is tuple:
        return st.lists(strategy_for(typing.get_args(annotation)[0], name), max_size=3).map(tuple)
    if dataclasses.is_dataclass(annotation):
        return message_strategy(annotation)
    raise TypeError(annotation)


_MESSAGES: dict[type, st.SearchStrategy] = {}


def message_strategy(cls):
    """st.builds over the class's fields; deferred, so a TxnRequest may hold TxnRequests."""
    if cls not in _MESSAGES:
        _MESSAGES[cls] = st.deferred(lambda: st.builds(cls, **{
            field.name: strategy_for(hint, field.name)
            for field, hint in zip(dataclasses.fields(cls), _hints(cls))
        }))
    return _MESSAGES[cls]


def _hints(cls):
    hints = typing.get_type_hints(cls, vars(m))
    return [hints[field.name] for field in dataclasses.fields(cls)]


proposed_requests = st.one_of(*[message_strategy(cls) for cls in PROPOSED])

# ---------------------------------------------------------------------------
# the apply path
# ---------------------------------------------------------------------------


def ApplyState(env) -> StateMachine:
    """The member's state machine over env, with the actor's default rules."""
    limits, settings = Limits(), MemberSettings()
    return StateMachine(env, ApplyRules(HEADER.cluster_id, HEADER.member_id, limits.max_txn_ops, min_lease_ttl_s(settings)))


def apply_entry(state: StateMachine, txn, frame: bytes, index: int):
    """One committed entry as the apply actor applies it, with no entry-failure
    fallback: an exception that would need it propagates (EntryFailed) and
    fails the property."""
    batch = state.apply_entries(txn, [Entry(index, 1, make_payload(HEADER.member_id, frame))], {})
    return batch.answers, batch.events


@pytest.fixture(scope="module")
def seeded_env(tmp_path_factory):
    """A keyspace with history, a compaction, a lease with a key and an alarm:
    every example runs in a write transaction that is aborted afterwards, so
    each starts from this state."""
    env = open_env(tmp_path_factory.mktemp("apply-total") / "kv")
    state = ApplyState(env)
    with env.begin(write=True) as txn:
        writer = state.keyspace.writer(txn, HEADER)
        for key in (b"a", b"b", b"k", b"k/1", b"\xff"):
            writer.put(m.PutRequest(key, b"v1"))
            writer.put(m.PutRequest(key, b"v2"))
        writer.lease_grant(7, 60)
        writer.put(m.PutRequest(b"k/leased", b"v", lease=7))
        writer.compact(m.CompactionRequest(3))
        state.alarms.activate(txn, 1, m.ALARM_NONE)
    yield env
    env.close()


def only_operating_errors(env, run, write: bool = False) -> None:
    """run(txn) in a transaction that is aborted afterwards; anything but a
    CairnError fails the test, as a plain AssertionError carrying the
    traceback's text, so nothing keeps the transaction alive (hypothesis keeps
    failures, and a read transaction held by a traceback holds a reader slot)."""
    failure = None
    txn = env.begin(write=write)
    try:
        run(txn)
    except CairnError:
        pass
    except Exception as error:  # noqa: BLE001 - the property under test
        trace = traceback.extract_tb(error.__traceback__)
        where = " <- ".join(f"{os.path.relpath(f.filename)}:{f.lineno} {f.name}" for f in reversed(trace[-4:]))
        failure = f"{type(error).__module__}.{type(error).__qualname__}: {error} at {where}"
    finally:
        txn.abort()
    if failure is not None:
        if not write:
            gc.collect()  # the failed example's frames: their read transaction goes now, not at a later collection
        raise AssertionError(failure)


@pytest.mark.parametrize("request_type", PROPOSED, ids=lambda cls: cls.__name__)
def test_apply_raises_nothing_but_operating_errors(seeded_env, request_type):
    @SETTINGS
    @given(requests=st.lists(message_strategy(request_type), min_size=1, max_size=3))
    def check(requests):
        state = ApplyState(seeded_env)

        def run(txn):
            for index, request in enumerate(requests, start=100):
                apply_entry(state, txn, codec.encode(request, index), index)

        only_operating_errors(seeded_env, run, write=True)

    check()


# ---------------------------------------------------------------------------
# the same property, swept: every int field of a valid request, nested ones
# too, set to each edge value in turn (deterministic; hypothesis above rarely
# builds a txn valid enough to reach its puts)
# ---------------------------------------------------------------------------


def valid_message(cls, keys, depth: int = 0):
    """A request that passes every static check, built from the type hints:
    ints 0, bools False, a distinct key per message, one op of each kind in
    a txn's branches (a nested txn down to depth 2)."""
    values = {}
    for field, hint in zip(dataclasses.fields(cls), _hints(cls)):
        values[field.name] = _valid_value(hint, field.name, keys, depth)
    return cls(**values)


def _valid_value(hint, name, keys, depth):
    origin = typing.get_origin(hint)
    if hint is int:
        return 0
    if hint is bool:
        return False
    if hint is str:
        return ""
    if hint is bytes:
        return next(keys) if name in ("key", "name") else b""
    if origin in (typing.Union, types.UnionType):
        return _valid_value(typing.get_args(hint)[0], name, keys, depth)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        options = typing.get_args(item) if typing.get_origin(item) in (typing.Union, types.UnionType) else (item,)
        if not all(dataclasses.is_dataclass(o) for o in options):
            return ()
        return tuple(valid_message(o, keys, depth + 1) for o in options if depth < 2 or o is not m.TxnRequest)
    if dataclasses.is_dataclass(hint):
        return valid_message(hint, keys, depth + 1)
    raise TypeError(hint)


def int_variants(message, path=""):
    """(path, message with that int field set to v) for every int field, nested too, and every edge v."""
    for field in dataclasses.fields(message):
        value = getattr(message, field.name)
        where = f"{path}{type(message).__name__}.{field.name}"
        if type(value) is int:
            for edge in EDGE_INTS:
                yield f"{where}={edge}", dataclasses.replace(message, **{field.name: edge})
        elif dataclasses.is_dataclass(value):
            for inner, changed in int_variants(value, where + "."):
                yield inner, dataclasses.replace(message, **{field.name: changed})
        elif isinstance(value, tuple):
            for index, item in enumerate(value):
                if dataclasses.is_dataclass(item):
                    for inner, changed in int_variants(item, f"{where}[{index}]."):
                        items = value[:index] + (changed,) + value[index + 1:]
                        yield inner, dataclasses.replace(message, **{field.name: items})


def _keys():
    index = 0
    while True:
        yield b"k%d" % index
        index += 1


@pytest.mark.parametrize("request_type", PROPOSED, ids=lambda cls: cls.__name__)
def test_apply_survives_every_edge_int_in_every_field(seeded_env, request_type):
    base = valid_message(request_type, _keys())
    state = ApplyState(seeded_env)
    failures: dict[str, list[str]] = {}
    for where, request in int_variants(base):
        def run(txn):
            apply_entry(state, txn, codec.encode(request, 1), 100)

        try:
            only_operating_errors(seeded_env, run, write=True)
        except AssertionError as error:
            failures.setdefault(str(error), []).append(where)
    assert not failures, f"{len(failures)} distinct crashes of apply on {request_type.__name__}:\n" + "\n".join(
        f"{crash}\n    when {', '.join(wheres[:6])}{' ...' if len(wheres) > 6 else ''}" for crash, wheres in failures.items())


# ---------------------------------------------------------------------------
# the read paths served from client input
# ---------------------------------------------------------------------------


@SETTINGS
@given(request=message_strategy(m.RangeRequest))
def test_frontend_reads_raise_nothing_but_operating_errors(seeded_env, request):
    """What FrontendActor.serve_reads runs: reader.range, or for a pageable
    range reader.range_page then reader.count (start_stream)."""
    state = ApplyState(seeded_env)

    def run(txn):
        reader = state.keyspace.reader(txn, HEADER)
        if FrontendActor.pageable(request):
            revision = request.revision or reader.revision
            reader.range_page(request, revision, None, 64)
            reader.count(request, revision)
        else:
            codec.encode(reader.range(request), 1)

    only_operating_errors(seeded_env, run)
