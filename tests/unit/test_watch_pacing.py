"""Pacing of the live stream into the hub (actors/watch_hub/pacing.py), and
that paced batches give every watch the same events as batches fed at once.
Time is a number the test moves."""

from __future__ import annotations

from actors.watch_hub.pacing import Pacing
from tests.unit.test_watch_hub import A, Clients, History, created, make_hub
from transport.messages import WatchCreateRequest


def test_the_first_batch_and_one_after_a_quiet_spell_go_at_once():
    pacing = Pacing(0.25)  # binary fractions: exact sums
    assert pacing.due(100.0) and pacing.wait_s(100.0) == 0.0
    pacing.fed(100.0)
    assert not pacing.due(100.125)
    assert pacing.wait_s(100.125) == 0.125
    assert pacing.due(100.25) and pacing.wait_s(100.25) == 0.0
    assert pacing.due(105.0)  # a quiet spell: no wait at all


def test_while_events_keep_coming_the_hub_is_fed_at_most_once_an_interval():
    pacing = Pacing(0.02)
    feeds = []
    for step in range(100):  # a batch every 3 ms for 0.3 s
        now = step * 0.003
        if pacing.due(now):
            pacing.fed(now)
            feeds.append(now)
    assert len(feeds) <= 0.3 / 0.02 + 1
    assert all(later - earlier >= 0.02 - 1e-9 for earlier, later in zip(feeds, feeds[1:]))
    assert all(later - earlier <= 0.02 + 0.003 for earlier, later in zip(feeds, feeds[1:]))  # never held longer


def test_interval_zero_feeds_every_turn():
    pacing = Pacing(0.0)
    pacing.fed(1.0)
    assert pacing.due(1.0) and pacing.wait_s(1.0) == 0.0


def run_paced(interval_s: float) -> tuple[dict, int]:
    """Watches of several kinds; a batch arrives every 4 ms, one is lost on
    the way (a hole the store fills); the shell holds batches until pacing
    says they are due, as actors/watch.py does."""
    history = History()
    hub = make_hub(history, max_response_bytes=300)
    clients = Clients(hub)
    kinds = [dict(key=b"a/", range_end=b"a0"), dict(key=b"a/1"), dict(key=b"a/", range_end=b"\0", prev_kv=True),
             dict(key=b"a/", range_end=b"a0", fragment=True)]
    for number, kind in enumerate(kinds, start=1):
        hub.create(A, number, WatchCreateRequest(**kind), history.revision, 0.0)
    clients.pump(history.read)
    ids = {number: created(clients, A, number).watch_id for number in range(1, len(kinds) + 1)}
    pacing = Pacing(interval_s)
    held = []
    for step in range(60):
        now = step * 0.004
        key = b"a/%d" % (step % 3)
        events = history.delete(key) if step % 7 == 2 else history.put(key, b"y" * (step % 4) * 50)
        if step != 31:
            held.append((history.revision, tuple(events), False))
        if pacing.due(now):
            hub.on_event_batches(held)
            held = []
            pacing.fed(now)
        clients.pump(history.read)
        for number, watch_id in ids.items():
            clients.ack(A, number, watch_id)
    hub.on_event_batches(held)
    hub.note_store_revision(history.revision)
    for _ in range(3):
        clients.pump(history.read)
        for number, watch_id in ids.items():
            clients.ack(A, number, watch_id)
    for number in ids:  # each watch is complete up to the end of the stream, whatever the batches
        assert clients.of(A, number)[-1].header.revision >= clients.revisions(A, number)[-1]
    return {number: clients.events(A, number) for number in ids}, clients.wire_frames


def test_paced_batches_give_every_watch_the_same_events_in_fewer_frames():
    (paced, paced_frames), (every_turn, frames) = run_paced(0.02), run_paced(0.0)
    assert paced == every_turn
    assert all(paced.values())
    assert paced_frames < frames
