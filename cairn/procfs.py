"""Processes as Linux's /proc shows them (no psutil needed): for the benchmark's
memory report and the test harness's view of a member's actors."""

from __future__ import annotations

import os


def processes() -> dict[int, tuple[int, str]]:
    """{pid: (parent pid, comm)} of every process that can be read now."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        except (OSError, ValueError):
            continue  # gone meanwhile
        found[int(entry)] = (ppid, comm)
    return found


def children_of(pid: int) -> dict[int, str]:
    """{child pid: comm} of pid's direct children."""
    return {child: comm for child, (parent, comm) in processes().items() if parent == pid}


def process_tree(root_pid: int) -> dict[int, str]:
    """{pid: comm} of root_pid and every process below it."""
    parents = processes()
    tree, frontier = {}, [root_pid]
    while frontier:
        pid = frontier.pop()
        if pid in parents:
            tree[pid] = parents[pid][1]
        frontier.extend(child for child, (parent, _) in parents.items() if parent == pid)
    return tree
