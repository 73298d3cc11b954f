"""Corruption checks, defragmentation, /metrics, endpoint health and the
hardware checks (check perf, check datascale) against one shared 3-member
cluster (with the HTTP gateway), checking every second. The leader kill runs
last."""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.request

import lmdb
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cairn import cli
from store.environment import kv_path
from store.mvcc import KeySpace
from tests.harness import cluster_fixture, wait_for
from transport import messages as m
from transport.errors import CairnError, CorruptError

cluster = cluster_fixture("corruption", members=3, http=True, corruption_check_interval_s=1)


def _flip_a_record(data_dir: str) -> None:
    """Flip one bit of the third history record's value (offline); flipping
    it again restores the keyspace."""
    env = lmdb.open(kv_path(data_dir), max_dbs=KeySpace.MAX_DBS)
    space = KeySpace(env)
    with env.begin(write=True) as txn:
        cursor = txn.cursor(db=space.revs_db)
        cursor.first()
        cursor.next()
        cursor.next()
        key, record = cursor.item()
        txn.put(key, record[:-1] + bytes([record[-1] ^ 1]), db=space.revs_db)
    env.close()


def _corrupt_alarms(client) -> set:
    return {a.member_id for a in client.alarm_list().alarms if a.alarm == m.ALARM_CORRUPT}


def test_an_offline_edit_raises_corrupt_and_disarm_clears_it(cluster, capsys):
    with cluster.client() as client:
        for i in range(20):
            client.put(f"c{i}", f"v{i}")
        n3 = cluster.members["n3"]
        n3.stop()
        _flip_a_record(n3.data_dir)
        n3.start()
        # not wait_ready: n3's own start-up check may raise the alarm, and so refuse
        # reads, before a read there would have found it ready (a fast start does)
        wait_for(lambda: _has_leader(client, n3.endpoint), "n3 back", 30)
        # the start-up check (n3's) or the leader's periodic one raises it for n3 alone
        assert wait_for(lambda: _corrupt_alarms(client), "the CORRUPT alarm", 15) == {n3.spec.id}

        assert cli.main(["--endpoints", ",".join(cluster.endpoints), "endpoint", "status"]) == 0
        out = capsys.readouterr().out
        assert out.count(f"memberID:{n3.spec.id:x} alarm:CORRUPT") == 3, out

        # etcd's corrupt applier: every member refuses KV requests
        wait_for(lambda: _refused(client, cluster.members["n1"].endpoint), "reads refused on n1", 5)
        with pytest.raises(CorruptError, match="etcdserver: corrupt cluster"):
            client.put(b"c0", b"after")
        wait_for(lambda: _refused(client, n3.endpoint, serializable=True), "serializable reads refused on n3", 5)
        # status and hashes are still served, so the operator can look
        assert client.status(endpoint=n3.endpoint).errors
        # and endpoint health says what etcdctl's says
        capsys.readouterr()
        code = cli.main(["--endpoints", n3.endpoint, "endpoint", "health"])
        err = capsys.readouterr().err
        assert code == cli.EXIT_ERROR and err == (f"{n3.endpoint} is unhealthy: failed to commit proposal: "
                                                  "etcdserver: corrupt cluster\nError: unhealthy cluster\n"), err

        # repair n3 (undo the edit), then disarm: the checks pass and requests work again
        n3.stop()
        _flip_a_record(n3.data_dir)
        n3.start()
        wait_for(lambda: _has_leader(client, n3.endpoint), "n3 back (reads are refused: no wait_ready)", 30)
        assert cli.main(["--endpoints", ",".join(cluster.endpoints), "alarm", "disarm"]) == 0
        assert "alarm:CORRUPT" in capsys.readouterr().out
        assert _corrupt_alarms(client) == set()
        # a linearizable read after the acknowledged disarm is served on every
        # member at once (it sees the state after the disarm, not a cached flag)
        for member in cluster.members.values():
            assert client.call(m.RangeRequest(b"c1"), write=False, endpoint=member.endpoint).kvs[0].value == b"v1"
        assert client.put(b"c0", b"after").header.revision
        assert client.get(b"c0").kvs[0].value == b"after"
        time.sleep(2.5)  # later checks (every second) agree again
        assert _corrupt_alarms(client) == set()


def _has_leader(client, endpoint) -> bool:
    try:
        return bool(client.status(endpoint=endpoint, timeout=1).leader)
    except CairnError:
        return False


def _refused(client, endpoint, serializable=False) -> bool:
    try:
        client.call(m.RangeRequest(b"c0", serializable=serializable), write=False, endpoint=endpoint)
    except CorruptError:
        return True
    except CairnError:
        return False
    return False


def _db_file(member) -> int:
    return os.path.getsize(os.path.join(kv_path(member.data_dir), "data.mdb"))


def test_defrag_shrinks_the_file_while_writes_and_reads_go_on(cluster, capsys):
    n2 = cluster.members["n2"]
    with cluster.client() as client:
        blob = b"x" * 4000
        for i in range(1500):
            client.put(f"big{i:04}", blob)
        client.delete(b"big", range_end=b"bih")
        client.put(b"fixed", b"stays")
        client.compact(client.get(b"fixed").header.revision, physical=True)
        # physical compaction is per member, in steps: wait until n2 has freed the pages
        wait_for(lambda: client.status(endpoint=n2.endpoint).db_size_in_use < 2_000_000, "n2's compaction", 20)
        before = client.status(endpoint=n2.endpoint)
        assert before.db_size == _db_file(n2) > 6_000_000 and before.db_size_in_use < before.db_size // 3

        stop = threading.Event()
        written, reads, errors = [], [], []

        def write():
            with cluster.client() as writer:
                i = 0
                while not stop.is_set():
                    written.append((f"w{i}".encode(), writer.put(f"w{i}", str(i)).header.revision))
                    i += 1

        def read():
            with cluster.client() as reader:
                while not stop.is_set():
                    response = reader.call(m.RangeRequest(b"fixed", serializable=True), write=False,
                                           endpoint=n2.endpoint)
                    reads.append((time.monotonic(), response.kvs[0].value))

        threads = [threading.Thread(target=write), threading.Thread(target=read)]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: len(written) > 20, "writes under way")
            started = time.monotonic()
            assert cli.main(["--endpoints", n2.endpoint, "defrag"]) == 0
            finished = time.monotonic()
            during = len(written)
            wait_for(lambda: len(written) > during + 20, "writes after the defrag")
        except BaseException as error:
            errors.append(error)
            raise
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert capsys.readouterr().out == f"Finished defragmenting etcd member[{n2.endpoint}]\n"
        after = client.status(endpoint=n2.endpoint)
        assert after.db_size == _db_file(n2) < before.db_size // 3, (before, after)
        assert {value for _, value in reads} == {b"stays"}
        assert any(started <= at <= finished for at, _ in reads)  # served while n2 defragmented

        # no acknowledged write is lost, on n2 or anywhere, and the members still agree
        last = written[-1][1]
        for member in cluster.members.values():
            got = client.call(m.RangeRequest(b"w", range_end=b"x"), write=False, endpoint=member.endpoint)
            assert {kv.key for kv in got.kvs} >= {key for key, _ in written}
        hashes = {client.hash_kv(last, endpoint=member.endpoint).hash for member in cluster.members.values()}
        assert len(hashes) == 1
        defragmented = [r for r in n2.log_records("apply") if r.get("event") == "defragmented"]
        assert defragmented and defragmented[-1]["size_after"] < defragmented[-1]["size_before"]


# ------------------------------------------------------------------ /metrics


def _scrape(member) -> dict:
    """The member's /metrics, parsed by prometheus_client's own parser:
    (sample name, labels) -> value."""
    with urllib.request.urlopen(member.http_url + "/metrics", timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = answer.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def _value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


ACTORS = ("raft", "apply", "frontend", "watch", "lease")


def test_metrics_parse_and_move_with_traffic(cluster):
    leader = cluster.leader()
    follower = next(member for member in cluster.members.values() if member is not leader)
    before = {member.name: _scrape(member) for member in cluster.members.values()}
    with cluster.client() as client:
        for i in range(30):
            client.put(f"metrics/{i}", "v")
        lease = client.lease_grant(60).id
        revision = client.put("metrics/leased", "v", lease=lease).header.revision
    with cluster.client(endpoints=[follower.endpoint]) as watcher, watcher.watch("metrics/", prefix=True):

        def moved(member):
            now, then = _scrape(member), before[member.name]
            ready = (_value(now, "etcd_server_proposals_applied_total") >= _value(then, "etcd_server_proposals_applied_total") + 32
                     and _value(now, "etcd_debugging_lease_granted_total") > _value(then, "etcd_debugging_lease_granted_total")
                     and _value(now, "etcd_disk_backend_commit_duration_seconds_count") > _value(then, "etcd_disk_backend_commit_duration_seconds_count")
                     and _value(now, "etcd_disk_wal_fsync_duration_seconds_count") > _value(then, "etcd_disk_wal_fsync_duration_seconds_count"))
            return now if ready else None

        after = {member.name: wait_for(lambda: moved(member), f"{member.name}'s metrics to move", 15)
                 for member in cluster.members.values()}

        def watched():
            samples = _scrape(follower)
            return samples if _value(samples, "etcd_debugging_mvcc_watcher_total") >= 1 else None

        watching = wait_for(watched, "the follower's watcher count", 15)
    assert _value(watching, "etcd_debugging_mvcc_watch_stream_total") >= 1
    for name, samples in after.items():
        assert _value(samples, "etcd_server_has_leader") == 1
        assert _value(samples, "etcd_server_is_leader") == (name == leader.name)
        committed = _value(samples, "etcd_server_proposals_committed_total")
        assert committed >= _value(samples, "etcd_server_proposals_applied_total") >= revision
        assert _value(samples, "etcd_debugging_mvcc_current_revision") >= revision
        assert _value(samples, "etcd_debugging_mvcc_keys_total") >= 31
        assert _value(samples, "etcd_mvcc_db_total_size_in_bytes") >= _value(samples, "etcd_mvcc_db_total_size_in_use_in_bytes") > 0
        spec = cluster.members[name].spec
        assert _value(samples, "etcd_server_id", server_id=f"{spec.id:x}") == 1
        # the histograms' buckets are cumulative, ending with every observation
        count = _value(samples, "etcd_disk_wal_fsync_duration_seconds_count")
        assert _value(samples, "etcd_disk_wal_fsync_duration_seconds_bucket", le="+Inf") == count > 0
        assert _value(samples, "etcd_disk_wal_fsync_duration_seconds_bucket", le="0.001") <= count
        assert _value(samples, "etcd_disk_wal_fsync_duration_seconds_sum") > 0
        for actor in ACTORS:  # every actor reported, and its loop did some work
            assert _value(samples, "cairn_actor_busy_seconds_total", actor=actor) > 0, (name, actor)
            assert ("cairn_actor_queue_depth", (("actor", actor),)) in samples
        assert _value(samples, "cairn_actor_batch_size_count", actor="frontend") > 0
    # the leader times its heartbeats to each peer
    leader_samples = after[leader.name]
    for member in cluster.members.values():
        if member is not leader:
            assert _value(leader_samples, "etcd_network_peer_round_trip_time_seconds_count", To=f"{member.spec.id:x}") > 0


HEALTHY = re.compile(r"^(tcp://127\.0\.0\.1:\d+) is healthy: successfully committed proposal: took = [\d.]+(ns|µs|ms|s)$")


def test_endpoint_health_prints_etcdctls_lines(cluster, capsys):
    assert cli.main(["--endpoints", cluster.endpoints[0], "endpoint", "health", "--cluster"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert sorted(HEALTHY.match(line).group(1) for line in out) == sorted(cluster.endpoints), out
    assert cli.main(["--endpoints", ",".join(cluster.endpoints), "endpoint", "health", "-w", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {row["endpoint"] for row in rows} == set(cluster.endpoints) and all(row["health"] for row in rows)
    assert all("error" not in row for row in rows)


# ------------------------------------------------------------------ check perf / datascale

PERF_LINES = (re.compile(r"^(PASS: Throughput is|FAIL: Throughput too low:) (\d+) writes/s$"),
              re.compile(r"^(PASS: Slowest request took|Slowest request took too long:) \d+\.\d{6}s$"),
              re.compile(r"^(PASS: Stddev is|Stddev too high:) \d+\.\d{6}s$"))


def _prefix_count(cluster, prefix: str) -> int:
    with cluster.client() as client:
        return client.get(prefix, prefix=True, count_only=True).count


def test_check_perf_prints_etcdctls_verdict_and_leaves_nothing_behind(cluster, capsys):
    # the small load (150 writes/s, 50 clients) for 3 s instead of 60 (a hidden flag, not etcdctl's)
    code = cli.main(["--endpoints", ",".join(cluster.endpoints), "check", "perf", "--load", "s", "--duration", "3",
                     "--auto-compact"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("compacted revision ")
    verdict = lines[1:]
    assert len(verdict) == 4 and all(pattern.match(line) for pattern, line in zip(PERF_LINES, verdict)), verdict
    assert verdict[-1] == ("PASS" if code == 0 else "FAIL") and code in (0, cli.EXIT_ERROR)
    assert 1 <= int(PERF_LINES[0].match(verdict[0]).group(2)) <= 152  # the rate is capped at the load's
    assert _prefix_count(cluster, "/etcdctl-check-perf/") == 0
    # a prefix with keys is refused, as etcdctl refuses it
    with cluster.client() as client:
        client.put("/etcdctl-check-perf/mine", "v")
    assert cli.main(["--endpoints", cluster.endpoints[0], "check", "perf", "--duration", "1"]) == cli.EXIT_USAGE
    assert capsys.readouterr().err == ('Error: prefix "/etcdctl-check-perf/" has keys. Delete with etcdctl del '
                                       "--prefix /etcdctl-check-perf/ first\n")
    assert cli.main(["--endpoints", cluster.endpoints[0], "check", "perf", "--load", "xxl"]) == cli.EXIT_USAGE
    assert capsys.readouterr().err == "Error: unknown load option xxl\n"
    with cluster.client() as client:
        client.delete("/etcdctl-check-perf/mine")


def test_check_datascale_reports_the_members_memory_growth(cluster, capsys):
    assert cli.main(["--endpoints", cluster.endpoints[0], "check", "datascale", "--limit", "1000"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Start data scale check for work load [1000 key-value pairs, 1024 bytes per key-value, 50 concurrent clients]."
    assert re.fullmatch(r"PASS: Approximate system memory used : -?\d+\.\d\d MB\.", lines[1]), lines
    assert len(lines) == 2 and _prefix_count(cluster, "/etcdctl-check-datascale/") == 0


def test_a_leader_kill_is_a_leader_change_the_others_count(cluster, capsys):
    leader = cluster.leader()
    others = [member for member in cluster.members.values() if member is not leader]
    before = {member.name: _value(_scrape(member), "etcd_server_leader_changes_seen_total") for member in others}
    leader.kill9()
    try:
        cluster.leader(among=others)
        for member in others:
            wait_for(lambda: _value(_scrape(member), "etcd_server_leader_changes_seen_total") > before[member.name],
                     f"{member.name} to count the leader change", 15)
            assert _value(_scrape(member), "etcd_server_has_leader") == 1
        # endpoint health: the dead member is unhealthy (stderr, exit 1), the others healthy
        capsys.readouterr()
        assert cli.main(["--endpoints", others[0].endpoint, "--command-timeout", "2", "endpoint", "health",
                         "--cluster"]) == cli.EXIT_ERROR
        captured = capsys.readouterr()
        assert sorted(HEALTHY.match(line).group(1) for line in captured.out.splitlines()) == sorted(
            member.endpoint for member in others)
        errors = captured.err.splitlines()
        assert errors[-1] == "Error: unhealthy cluster"
        assert [line.split(" ")[0] for line in errors[:-1]] == [leader.endpoint]
        assert errors[0].startswith(f"{leader.endpoint} is unhealthy: failed to commit proposal: ")
    finally:
        leader.start()
        cluster.wait_ready([leader])
