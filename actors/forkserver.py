"""The member's forkserver: one clean interpreter that imports the actors'
modules once, and then only forks (actors/supervisor.py starts every actor
from it).

Started first thing by `cairn node` (before the supervisor's own imports, its
lock and its checks of the data dir), so the forkserver's imports, the largest
part of a member's start, run on the other core meanwhile instead of after
them. This module imports nothing of cairn's for that reason.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver

# What the forkserver imports once, so every actor forked from it starts warm.
# A forked actor also imports the module of its target (actors.supervisor) and,
# as multiprocessing does for every child, runs the parent's main module again
# as __mp_main__ (cairn/node.py, or the `cairn` script that imports it), whose
# top-level imports are here too, so a child imports nothing.
FORKSERVER_PRELOAD = [
    "zmq", "lmdb", "cbor2", "structlog", "yaml",
    "transport.codec", "store.mvcc", "store.apply", "store.environment", "store.raftlog_lmdb", "actors.base",
    "actors.raft.actor", "actors.apply", "actors.frontend", "actors.lease", "actors.watch", "actors.supervisor",
]


def context():
    """The multiprocessing context whose processes the forkserver forks."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(FORKSERVER_PRELOAD)
    return context


def start_forkserver() -> None:
    """Start the forkserver now, without waiting for its imports (the first
    actor's start waits for them); idempotent."""
    context()
    multiprocessing.forkserver.ensure_running()
