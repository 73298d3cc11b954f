"""The raft actor compacts its log by bytes as well as by entries, so large
requests cannot pile up in its memory (Limits.max_retained_log_bytes)."""

import time

from tests.harness import Cluster


def test_large_entries_compact_the_log_long_before_snapshot_entries(tmp_path):
    limit = 2 * 1024 * 1024
    with Cluster(tmp_path, members=3, limits={"max_retained_log_bytes": limit}) as cluster:
        value = b"v" * (256 * 1024)
        with cluster.client() as client:
            for i in range(24):  # 6 MiB of payload, far below snapshot_entries (10,000) entries
                client.put(f"big/{i}".encode(), value)
            leader = cluster.leader()
            deadline = time.monotonic() + 10
            while not [r for r in leader.log_records("raft") if r.get("event") == "log_compacted"]:
                assert time.monotonic() < deadline, "the leader never compacted its log"
                time.sleep(0.05)
            compacted = [r["index"] for r in leader.log_records("raft") if r.get("event") == "log_compacted"]
            assert compacted[-1] < 40  # by bytes: a few dozen entries, not 10,000
            # everything is still there, on every member
            for member in cluster.members.values():
                with cluster.client([member.endpoint]) as one:
                    assert one.get(b"big/", prefix=True, count_only=True).count == 24
