"""A member's run directory and the ipc socket path of each actor in it.

Apart from transport/sockets.py, which makes the sockets, so that the
supervisor (which prepares the directory and waits for the actors' sockets)
and the crash reports kept beside them need not import ZeroMQ: the
supervisor's own start runs beside the forkserver's on a member's restart.
The directory is owner-only (see transport/sockets.py).
"""

from __future__ import annotations

import os

ACTORS = ("raft", "apply", "lease", "watch", "frontend")

# ipc:// paths are limited to ~107 bytes by sockaddr_un.
IPC_PATH_MAX = 100


def run_dir(data_dir: str) -> str:
    return os.path.join(data_dir, "run")


def ipc_path(data_dir: str, actor: str) -> str:
    assert actor in ACTORS, actor
    path = os.path.join(run_dir(data_dir), f"{actor}.ipc")
    if len(path) > IPC_PATH_MAX:
        raise ValueError(f"data dir {data_dir!r} is too long for an ipc socket path ({len(path)} > {IPC_PATH_MAX})")
    return path


def ipc_endpoint(data_dir: str, actor: str) -> str:
    return "ipc://" + ipc_path(data_dir, actor)


def make_run_dir(data_dir: str) -> str:
    """The member's run directory, created or narrowed to owner-only (0700)."""
    path = run_dir(data_dir)
    os.makedirs(path, mode=0o700, exist_ok=True)
    if os.stat(path).st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def remove_stale_ipc(data_dir: str) -> None:
    """Remove sockets a killed member left behind, so the next start binds cleanly."""
    for actor in ACTORS:
        try:
            os.unlink(os.path.join(run_dir(data_dir), f"{actor}.ipc"))
        except FileNotFoundError:
            pass
