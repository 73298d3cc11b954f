"""Watches on a real 3-member cluster: etcd's documented watch guarantees.

Ordered, no gap and no duplicate under concurrent writers; history replay from
a past revision stitched to the live stream; compaction; ranges, prefixes,
filters, prev_kv, fragments; cancel and progress; watches served by a follower;
a watch that survives kill -9 of its member; a slow consumer whose member keeps
bounded memory while a fast one keeps up; cairnctl watch.

The cluster is shared by the module (each test uses its own keys); tests that
compact or kill a member come last. Waiting is polling with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import zmq

from cairn import Client, Op
from cairn.watch import is_progress_notify
from tests.harness import REPO, cluster_fixture
from tests.harness import wait_for as harness_wait_for
from transport import codec
from transport import messages as m
from transport.errors import InvalidArgumentError
from transport.messages import EVENT_DELETE, EVENT_PUT

DEADLINE_S = 20.0


cluster = cluster_fixture("watch", members=3)


def collect(watch, count: int, deadline_s: float = DEADLINE_S):
    """(events, responses) until `count` events arrived."""
    events, responses = [], []
    deadline = time.monotonic() + deadline_s
    while len(events) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {len(events)} of {count} events arrived"
        response = watch.get(timeout=remaining)
        if response is None:
            assert not watch.ended, f"the watch ended after {len(events)} of {count} events"
            continue
        responses.append(response)
        events.extend(response.events)
    return events, responses


def next_response(watch, deadline_s: float = DEADLINE_S):
    response = watch.get(timeout=deadline_s)
    assert response is not None, "no response in time"
    return response


def wait_for(predicate, what: str):
    return harness_wait_for(predicate, what, DEADLINE_S)


def followers(cluster):
    leader = cluster.leader()
    return leader, [m for m in cluster.members.values() if m is not leader]


def collect_through(watch, revision: int, deadline_s: float = DEADLINE_S) -> list[int]:
    """Event revisions until `revision` arrived."""
    revisions = []
    deadline = time.monotonic() + deadline_s
    while not revisions or revisions[-1] < revision:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"events arrived through {revisions[-1:]} of {revision}"
        response = watch.get(timeout=remaining)
        if response is not None:
            revisions.extend(e.kv.mod_revision for e in response.events)
    return revisions


def test_watches_created_while_writes_flow_to_a_hub_that_had_none_miss_nothing(cluster):
    """With no watchers the hub tells apply so, and apply sends only revisions;
    watches created while writes flow (from now, and from a past revision) must
    still get every event: what apply elided before it heard of them comes
    from the store. First in the module, so the hub starts with no watchers."""
    member = cluster.members["n2"]

    def hub_not_watching():
        told = [r for r in member.log_records("watch") if r.get("event") == "watch_interest"]
        return told and told[-1]["watching"] is False

    wait_for(hub_not_watching, "the hub to tell apply it has no watchers")
    written, stop, failures = [], threading.Event(), []

    def write():
        try:
            with cluster.client() as c:
                i = 0
                while not stop.is_set():
                    written.append(c.put(b"elide/%d" % (i % 7), b"%d" % i).header.revision)
                    i += 1
        except Exception as error:  # reported by the test thread
            failures.append(error)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        wait_for(lambda: len(written) >= 20, "writes to flow")
        start = written[5]
        with Client([member.endpoint], timeout=10) as c:
            with c.watch(b"elide/", prefix=True) as from_now, c.watch(b"elide/", prefix=True, start_revision=start) as from_past:
                created_by = written[-1] + 1  # a revision written after both watches were asked for
                count = len(written)
                wait_for(lambda: len(written) >= count + 30, "more writes after the watches")
                stop.set()
                writer.join()
                assert not failures, failures
                last = written[-1]
                past = collect_through(from_past, last)
                now = collect_through(from_now, last)
    finally:
        stop.set()
        writer.join()
    assert written == list(range(written[0], last + 1))  # nobody else wrote: revisions are contiguous
    assert past == list(range(start, last + 1))
    assert now[0] <= created_by + 1 and now == list(range(now[0], last + 1))


def test_order_no_gap_no_duplicate_under_concurrent_writers(cluster):
    writers, per_writer = 4, 40
    revisions_written, failures = [], []
    lock = threading.Lock()

    def write(number):
        try:
            with cluster.client() as c:
                for i in range(per_writer):
                    if i % 5 == 4:  # a delete of the key just written: every operation makes a revision
                        revision = c.delete(f"conc/{number}/{i - 1}".encode()).header.revision
                    else:
                        revision = c.put(f"conc/{number}/{i}".encode(), f"{number}-{i}".encode()).header.revision
                    with lock:
                        revisions_written.append(revision)
        except Exception as error:  # reported by the test thread
            failures.append(error)

    with cluster.client() as c, c.watch(b"conc/", prefix=True) as w:
        threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures, failures
        expected = sorted(revisions_written)
        assert len(set(expected)) == writers * per_writer
        events, responses = collect(w, len(expected))
        assert w.get(timeout=0.3) is None  # and nothing more
    assert [e.kv.mod_revision for e in events] == expected  # in order, none missing, none repeated
    assert sum(e.type == EVENT_DELETE for e in events) == writers * per_writer // 5
    headers = [r.header.revision for r in responses]
    assert headers == sorted(headers)
    assert all(r.events[-1].kv.mod_revision <= r.header.revision for r in responses)


def test_watch_from_a_past_revision_sees_exactly_the_history_then_live_events(cluster):
    with cluster.client() as c:
        revisions = [c.put(b"hist/a", str(i).encode()).header.revision for i in range(5)]
        revisions.append(c.delete(b"hist/a").header.revision)
        c.put(b"other/x", b"not watched")
        start = revisions[2]
        with c.watch(b"hist/", prefix=True, start_revision=start) as w:
            events, _ = collect(w, 4)
            assert [e.kv.mod_revision for e in events] == revisions[2:]
            assert [e.type for e in events] == [EVENT_PUT] * 3 + [EVENT_DELETE]
            live = [c.put(b"hist/b", str(i).encode()).header.revision for i in range(3)]
            events, _ = collect(w, 3)
            assert [e.kv.mod_revision for e in events] == live
            assert w.get(timeout=0.3) is None  # nothing more: no duplicate at the seam


def test_prefix_range_filters_and_prev_kv(cluster):
    with cluster.client() as c:
        c.put(b"mix/a", b"zero")
        watches = {
            "prefix": c.watch(b"mix/", prefix=True),
            "range": c.watch(b"mix/b", b"mix/d"),
            "noput": c.watch(b"mix/", prefix=True, filters=("noput",)),
            "nodelete": c.watch(b"mix/", prefix=True, filters=("nodelete",)),
            "prev": c.watch(b"mix/a", prev_kv=True),
            "fromkey": c.watch(b"mix/c", range_end=b"\0"),
        }
        c.put(b"mix/a", b"one")
        c.put(b"mix/b", b"two")
        c.put(b"mix/c", b"three")
        c.put(b"mix/d", b"four")
        c.delete(b"mix/a")
        c.put(b"mix/", b"bare")
        c.put(b"miy", b"outside")  # after every mix/ key, so only from-key sees it
        got = {name: collect(w, count)[0] for name, w, count in [
            ("prefix", watches["prefix"], 6), ("range", watches["range"], 2), ("noput", watches["noput"], 1),
            ("nodelete", watches["nodelete"], 5), ("prev", watches["prev"], 2), ("fromkey", watches["fromkey"], 3)]}
        keys = {name: [e.kv.key for e in events] for name, events in got.items()}
        assert keys["prefix"] == [b"mix/a", b"mix/b", b"mix/c", b"mix/d", b"mix/a", b"mix/"]
        assert keys["range"] == [b"mix/b", b"mix/c"]
        assert keys["noput"] == [b"mix/a"] and got["noput"][0].type == EVENT_DELETE
        assert EVENT_DELETE not in [e.type for e in got["nodelete"]]
        assert keys["fromkey"] == [b"mix/c", b"mix/d", b"miy"]
        prev = got["prev"]
        assert [(e.kv.value, e.prev_kv.value) for e in prev] == [(b"one", b"zero"), (b"", b"one")]
        assert all(e.prev_kv is None for e in got["prefix"])
        for w in watches.values():
            w.cancel()


def test_a_revision_larger_than_a_response_arrives_reassembled(cluster):
    value = b"x" * (200 * 1024)
    with cluster.client() as c, c.watch(b"frag/", prefix=True, fragment=True) as w, \
            c.watch(b"frag/", prefix=True) as whole:
        response = c.txn(success=[Op.put(f"frag/{i}".encode(), value) for i in range(6)])  # 1.2 MB in one revision
        for watch in (w, whole):
            events, responses = collect(watch, 6)
            assert len(responses) == 1 and not responses[0].fragment
            assert {e.kv.mod_revision for e in events} == {response.header.revision}


def test_cancel_ends_the_stream_and_the_member_forgets_the_watch(cluster):
    with cluster.client() as c:
        w = c.watch(b"cancel/me")
        request_id = w.request_id
        c.put(b"cancel/me", b"1")
        collect(w, 1)
        canceled = w.cancel()
        assert canceled is not None and canceled.canceled and canceled.watch_id == w.watch_id
        assert w.get(timeout=0.2) is None and w.ended
        serving = cluster.members["n1"]
        wait_for(lambda: any(r["event"] == "watch_canceled" and r.get("request_id") == request_id
                             for r in serving.log_records("watch")), "the hub to log the cancel")


def test_progress_request_reports_the_current_revision(cluster):
    with cluster.client() as c, c.watch(b"progress/quiet") as w:
        revision = c.put(b"progress/elsewhere", b"x").header.revision
        w.request_progress()
        response = next_response(w)
        assert is_progress_notify(response)
        assert response.header.revision >= revision


def test_a_follower_serves_watches_from_its_own_applied_state(cluster):
    leader, others = followers(cluster)
    follower = others[0]
    with Client([leader.endpoint]) as writer, Client([follower.endpoint]) as reader:
        with reader.watch(b"fol/", prefix=True) as w:
            revisions = [writer.put(f"fol/{i}".encode(), b"v").header.revision for i in range(10)]
            events, responses = collect(w, 10)
            assert [e.kv.mod_revision for e in events] == revisions
            assert {r.header.member_id for r in responses} == {follower.spec.id}


def test_client_chosen_watch_ids_and_duplicates(cluster):
    with Client([cluster.members["n2"].endpoint]) as c:
        with c.watch(b"ids/k", watch_id=5) as w:
            assert w.watch_id == 5
            with pytest.raises(InvalidArgumentError, match="duplicate watch ID"):
                c.watch(b"ids/other", watch_id=5)


def test_a_silent_connection_loses_its_watches(cluster):
    """A client that stops sending keep-alives (it died) costs the member nothing
    after three of its stated intervals."""
    serving = cluster.members["n2"]
    context = zmq.Context()
    try:
        dealer = context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(serving.endpoint)
        dealer.send(codec.encode(m.WatchCreateRequest(b"silent/k"), 77))
        assert dealer.poll(int(DEADLINE_S * 1000))
        request_id, created = codec.decode(dealer.recv())
        assert request_id == 77 and created.created
        dealer.send(codec.encode(m.WatchKeepAlive(200, (created.watch_id,), (77,), (0,)), 78))
        assert dealer.poll(int(DEADLINE_S * 1000))
        assert codec.decode(dealer.recv())[0] == 78
        wait_for(lambda: any(r["event"] == "connection_expired" and 77 in r["request_ids"]
                             for r in serving.log_records("watch")), "the silent connection to expire")
    finally:
        context.destroy(linger=0)


def test_a_watch_survives_a_restart_of_its_members_watch_actor(cluster):
    serving = cluster.members["n3"]
    with Client([serving.endpoint]) as c, c.watch(b"hubkill/", prefix=True) as w:
        before = [c.put(f"hubkill/{i}".encode(), b"v").header.revision for i in range(5)]
        assert [e.kv.mod_revision for e in collect(w, 5)[0]] == before
        os.kill(serving.actor_pids()["watch"], signal.SIGKILL)
        after = [c.put(f"hubkill/{i}".encode(), b"w").header.revision for i in range(5)]
        assert [e.kv.mod_revision for e in collect(w, 5)[0]] == after
        assert w.resumes >= 1 and w.get(timeout=0.3) is None


def test_slow_consumer_memory_is_bounded_while_a_fast_one_keeps_up(cluster):
    """A watcher that never reads fills its window and its hub buffer, then is
    moved to the store; one that reads keeps up. The watch actor packs quick
    puts into few, large responses (actors/watch_hub/pacing.py), so how many
    puts fill a window depends on timing: the writer goes on, in rounds, until
    the slow watcher has spilled (bounded: a window of 1 MiB responses plus a
    buffer is under 2,500 puts of 16 KiB)."""
    from actors.watch_hub import HubLimits

    limits = HubLimits()
    serving = cluster.members["n1"]
    round_puts, max_rounds, value = 100, 25, b"s" * (16 * 1024)
    with Client([serving.endpoint]) as slow_client, Client([serving.endpoint]) as fast_client, \
            cluster.client() as writer:
        slow = slow_client.watch(b"slow/", prefix=True)
        fast = fast_client.watch(b"slow/", prefix=True)
        slow_id = slow.request_id
        fast_events = []
        last_written = []  # the last revision, once the writer is done
        fast_done = threading.Event()

        def consume_fast():
            deadline = time.monotonic() + 3 * DEADLINE_S
            while time.monotonic() < deadline:
                response = fast.get(timeout=0.1)  # bounded, so it sees the writer finish
                if response is not None:
                    fast_events.extend(response.events)
                if last_written and fast_events and fast_events[-1].kv.mod_revision >= last_written[0]:
                    fast_done.set()
                    return

        def unsynced():
            return [r for r in serving.log_records("watch") if r["event"] == "watcher_unsynced" and r["request_id"] == slow_id]

        consumer = threading.Thread(target=consume_fast, daemon=True)
        consumer.start()
        revisions = []
        for _ in range(max_rounds):
            revisions += [writer.put(f"slow/{i % 10}".encode(), value).header.revision for i in range(round_puts)]
            if unsynced():
                break
        last_written.append(revisions[-1])
        count = len(revisions)
        assert fast_done.wait(3 * DEADLINE_S), f"fast consumer got {len(fast_events)} of {count}"
        assert [e.kv.mod_revision for e in fast_events] == revisions
        spills = wait_for(unsynced, "the slow watcher to be moved off the live stream")
        assert all(r["reason"] == "buffer_full" for r in spills)
        assert all(r["buffer_bytes"] <= limits.buffer_bytes_max and r["buffer_events"] <= limits.buffer_events_max for r in spills)
        stats = wait_for(lambda: [r for r in serving.log_records("watch") if r["event"] == "watch_stats" and r["peak_buffer_bytes"]],
                         "a stats line")
        assert all(r["peak_buffer_bytes"] <= r["buffer_bytes_max"] == limits.buffer_bytes_max for r in stats)
        assert all(r["peak_buffer_events"] <= r["buffer_events_max"] for r in stats)
        # now it reads: everything, in order, from the store and then live again
        slow_events, _ = collect(slow, count)
        assert [e.kv.mod_revision for e in slow_events] == revisions
        after = writer.put(b"slow/after", b"live").header.revision
        assert [e.kv.mod_revision for e in collect(slow, 1)[0]] == [after]
        assert any(r["event"] == "watcher_synced" and r["request_id"] == slow_id for r in serving.log_records("watch"))
        slow.cancel()
        fast.cancel()


def cairnctl(cluster, *args, **options):
    endpoints = ",".join(cluster.endpoints)
    return subprocess.Popen([sys.executable, "-m", "cairn.cli", "--endpoints", endpoints, *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **options)


def read_lines(stream, count: int, deadline_s: float = DEADLINE_S) -> list[str]:
    """`count` lines from a pipe, or fail after deadline_s (a reader thread, so a
    hung process fails the test instead of hanging it)."""
    lines = []

    def reader():
        while len(lines) < count:
            line = stream.readline()
            if not line:
                return
            lines.append(line.decode().rstrip("\n"))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    thread.join(deadline_s)
    assert len(lines) >= count, f"got {lines}"
    return lines


def test_cairnctl_watch_prints_as_etcdctl_and_stops_on_sigterm(cluster):
    with cluster.client() as c:
        first = c.put(b"cli/k", b"v1").header.revision
        c.put(b"cli/k", b"v2")
        c.delete(b"cli/k")
    simple = cairnctl(cluster, "watch", "cli/k", "--rev", str(first), "--prev-kv")
    as_json = cairnctl(cluster, "watch", "cli/", "--prefix", "--rev", str(first), "-w", "json")
    interactive = cairnctl(cluster, "watch", "-i", stdin=subprocess.PIPE)
    try:
        assert read_lines(simple.stdout, 13) == ["PUT", "cli/k", "v1", "PUT", "cli/k", "v1", "cli/k", "v2",
                                                 "DELETE", "cli/k", "v2", "cli/k", ""]
        lines = read_lines(as_json.stdout, 1)
        document = json.loads(lines[0])
        assert [e.get("type", 0) for e in document["Events"]] == [0, 0, 1]
        assert document["Events"][0]["kv"]["mod_revision"] == first and document["Header"]["revision"] >= first + 2
        interactive.stdin.write(f"watch cli/k --rev {first}\nnonsense\n".encode())
        interactive.stdin.flush()
        assert read_lines(interactive.stdout, 3) == ["PUT", "cli/k", "v1"]
        # read before SIGTERM: the watch's lines may come out before the line after it is read
        assert read_lines(interactive.stderr, 1) == ["Invalid command nonsense (only support watch)"]
    finally:
        for process in (simple, as_json, interactive):
            process.send_signal(signal.SIGTERM)
    for process in (simple, as_json, interactive):
        assert process.wait(timeout=10) == 0, process.stderr.read().decode()


def test_compacted_start_revision_gets_compact_revision_and_canceled(cluster):
    with cluster.client() as c:
        for i in range(5):
            c.put(b"compact/k", str(i).encode())
        revision = c.put(b"compact/k", b"last").header.revision
        c.compact(revision - 2)
        w = c.watch(b"compact/k", start_revision=revision - 4)
        response = next_response(w)
        assert response.canceled and response.compact_revision == revision - 2
        assert w.get(timeout=0.2) is None and w.ended
        served = c.watch(b"compact/k", start_revision=revision - 2)  # the compact revision itself is kept
        events, _ = collect(served, 3)
        assert [e.kv.mod_revision for e in events] == [revision - 2, revision - 1, revision]
        served.cancel()
    process = cairnctl(cluster, "watch", "compact/k", "--rev", "1")
    assert process.wait(timeout=15) == 1
    assert "watch was canceled (etcdserver: mvcc: required revision has been compacted)" in process.stderr.read().decode()


def test_watch_resumes_through_another_member_after_kill9_without_gap_or_duplicate(cluster):
    leader, others = followers(cluster)
    victim, survivor = others
    total = 120
    revisions, failures = [], []
    written = threading.Event()

    def write():
        try:
            with Client([leader.endpoint, survivor.endpoint]) as c:
                for i in range(total):
                    revisions.append(c.put(f"resume/{i % 13}".encode(), str(i).encode()).header.revision)
                    time.sleep(0.02)  # spread the writes over the kill
        except Exception as error:
            failures.append(error)
        finally:
            written.set()

    endpoints = [victim.endpoint, leader.endpoint, survivor.endpoint]  # served by the victim first
    with Client(endpoints) as c, c.watch(b"resume/", prefix=True) as w:
        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        before, responses = collect(w, 30)
        assert {r.header.member_id for r in responses} == {victim.spec.id}
        victim.kill9()
        after, responses = collect(w, total - len(before), deadline_s=30)
        assert written.wait(DEADLINE_S) and not failures, failures
        assert w.resumes >= 1
        assert victim.spec.id not in {r.header.member_id for r in responses[-3:]}
        got = [e.kv.mod_revision for e in before + after]
        assert got == revisions  # the writes' own revisions: no gap, no duplicate, in order
        assert w.get(timeout=0.3) is None
