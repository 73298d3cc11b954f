"""`cairn bench compare --fault-mix`, short, against cairn: six clients under a
schedule of faults on a fresh three-member cluster, a linearizable history,
and nothing left running or stopped afterwards. (Against etcd too when the
etcd-clients extra is installed: tests/integration/test_bench_compare.py runs
the standard figures; the fault mix drives etcd with the same workers.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from cairn import bench_faults as bf
from tests.harness import REPO, processes_mentioning

SECONDS = 8.0
SEED = 3


def test_a_short_fault_mix_on_cairn_is_linearizable_and_leaves_nothing_behind(tmp_path):
    schedule = bf.fault_schedule(SEED, SECONDS)
    assert schedule, "the seed must give the short run at least one fault"
    output = tmp_path / "faults.json"
    result = subprocess.run(
        [sys.executable, "-m", "cairn.node", "bench", "compare", "--no-etcd", "--fault-mix",
         "--fault-seconds", str(SECONDS), "--fault-seed", str(SEED), "--output", str(output)],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| linearizable, nothing acknowledged lost | yes |" in result.stdout
    report = json.loads(output.read_text())["fault_mix"]["cairn"]
    assert report["linearizable"] and report["violations"] == [] and report["lost"] == []
    assert report["acknowledged"] > 0 and report["ops_per_s"] > 0
    assert set(report["acknowledged_by_kind"]) == {bf.READ, bf.WRITE, bf.CAS}
    assert report["values_checked"] > 0
    assert [fault["kind"] for fault in report["faults"]] == [fault.kind for fault in schedule]
    temp = result.stdout.split("(", 1)[1].split(")", 1)[0]
    assert "cairn-compare-" in temp and not os.path.exists(temp)
    assert not processes_mentioning(temp)
