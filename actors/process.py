"""What a cairn process does to itself: its name for `ps`, and dying with its parent.

Apart from actors/base.py (the actor loop, which imports ZeroMQ and the whole
message schema) so that `cairn node` and the supervisor can use them without
that import: the supervisor's start is on the path of a member's restart.
"""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_NAME = 15
PR_SET_PDEATHSIG = 1
# How long the answers an actor's close() queued may take to leave before its sockets go.
CLOSE_LINGER_MS = 1000


def set_process_title(title: str) -> None:
    """Name this process for `ps` (comm, 15 bytes) and, where the setproctitle
    package happens to be installed, for `ps -f` too."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NAME, ctypes.c_char_p(title.encode()[:15]), 0, 0, 0)
    except (OSError, AttributeError):
        pass
    try:
        import setproctitle  # optional, not a dependency

        setproctitle.setproctitle(title)
    except ImportError:
        pass


def die_with_parent(supervisor_pid: int) -> None:
    """Ask the kernel to SIGTERM us when our parent dies, even by kill -9, so a
    member never leaves orphan actors behind. The parent is the member's
    forkserver, which exits when the supervisor does."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1 or not _alive(supervisor_pid):  # gone before prctl took effect
        os._exit(0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
