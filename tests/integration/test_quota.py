"""The database quota: NOSPACE alarm, writes refused, reads served, disarm after compaction."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.harness import REPO, Cluster
from transport.errors import NoSpaceError


def test_nospace_alarm_blocks_writes_keeps_reads_and_disarms_after_compaction(tmp_path):
    with Cluster(tmp_path, members=1, limits={"quota_backend_bytes": 256 * 1024}) as cluster:
        value = b"x" * 4096
        with cluster.client() as c:
            written = 0
            deadline = time.monotonic() + 60
            with pytest.raises(NoSpaceError):
                while time.monotonic() < deadline and written < 5000:
                    c.put(f"big/{written % 400}".encode(), value)
                    written += 1
            assert written > 10  # some writes went in before the alarm
            # reads keep working, deletes are allowed, the alarm is listed
            assert c.get(b"big/0").kvs[0].value == value
            alarms = c.alarm_list().alarms
            assert [(a.member_id, a.alarm) for a in alarms] == [(cluster.config.members[0].id, 1)]
            assert any("alarm:NOSPACE" in error for error in c.status().errors)
            with pytest.raises(NoSpaceError):
                c.put(b"small", b"1")
            revision = c.delete(b"big/", prefix=True).header.revision
            c.compact(revision, physical=True)
        ctl = [sys.executable, "-m", "cairn.cli", "--endpoints", cluster.endpoints[0]]
        listed = subprocess.run(ctl + ["alarm", "list"], capture_output=True, text=True, timeout=60, cwd=REPO)
        assert listed.returncode == 0 and "alarm:NOSPACE" in listed.stdout
        disarmed = subprocess.run(ctl + ["-w", "json", "alarm", "disarm"], capture_output=True, text=True, timeout=60, cwd=REPO)
        assert disarmed.returncode == 0, disarmed.stderr
        assert json.loads(disarmed.stdout)["alarms"][0]["alarm"] == "NOSPACE"
        with cluster.client() as c:
            c.put(b"small", b"1")
            assert c.alarm_list().alarms == ()
            assert c.get(b"small").kvs[0].value == b"1"


def test_auto_compaction_by_revision(tmp_path):
    from transport.errors import CompactedError

    with Cluster(tmp_path, members=1, auto_compaction={"mode": "revision", "retention": 20}) as cluster:
        with cluster.client() as c:
            for i in range(60):
                c.put(b"auto", str(i).encode())
            last = c.get(b"auto").header.revision
            deadline = time.monotonic() + 15
            while True:  # the leader proposes within about a second
                try:
                    c.get(b"auto", revision=2)
                except CompactedError as error:
                    assert 2 < error.compact_revision <= last - 20
                    break
                assert time.monotonic() < deadline, "auto-compaction never ran"
                time.sleep(0.2)
            assert c.get(b"auto", revision=last - 20).kvs  # the retained window is readable
