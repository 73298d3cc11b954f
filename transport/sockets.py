"""ZeroMQ wiring of a member: where each actor listens and how sockets are made.

Every actor binds one PULL socket at ipc://<data_dir>/run/<actor>.ipc and sends to
the others with PUSH sockets: many writers, one reader, no request/reply lockstep
between actors, so each can drain and batch. Peers and clients use tcp://.

The run directory is owner-only (0700), whatever the umask: a socket file in
it cannot be reached by another local user (connect needs search permission
on the directory), so the actors of a member talk over ipc:// that only the
member's own user can use, in plaintext and in CURVE mode alike.

Sends never block an actor: a full queue (the high-water mark) raises
zmq.Again, which the caller turns into backpressure or an error reply.
"""

from __future__ import annotations

import os

import zmq

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


def configure(socket: zmq.Socket, hwm: int) -> zmq.Socket:
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.SNDHWM, hwm)
    socket.setsockopt(zmq.RCVHWM, hwm)
    return socket


def inbox(context: zmq.Context, data_dir: str, actor: str, hwm: int) -> zmq.Socket:
    """The PULL socket an actor reads from."""
    make_run_dir(data_dir)
    socket = configure(context.socket(zmq.PULL), hwm)
    socket.bind(ipc_endpoint(data_dir, actor))
    return socket


def outbox(context: zmq.Context, data_dir: str, actor: str, hwm: int) -> zmq.Socket:
    """A PUSH socket to another actor of the same member."""
    socket = configure(context.socket(zmq.PUSH), hwm)
    socket.connect(ipc_endpoint(data_dir, actor))
    return socket


# pyzmq's flags are enum members, and its send_multipart/recv_multipart combine
# them in Python for every part (an enum operation costs more than the send);
# the hot paths below pass plain ints instead: a routed reply costs ~1 us, not ~3.
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE)
_RCVMORE = int(zmq.RCVMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


def drain(socket: zmq.Socket, limit: int, multipart: bool = False) -> list:
    """Everything queued on socket, up to limit messages (each a list of its
    parts when multipart), without blocking. It stops when ZMQ_EVENTS says
    nothing more is queued rather than on zmq.Again: a turn usually drains one
    message, and raising Again cost more than the receive (~3.5 us of ~8)."""
    received = []
    receive = socket.recv
    option = socket.get
    try:
        if multipart:
            while len(received) < limit:
                parts = [receive(_NOBLOCK)]
                while option(_RCVMORE):
                    parts.append(receive(_NOBLOCK))
                received.append(parts)
                if not option(_EVENTS) & _POLLIN:
                    break
        else:
            while len(received) < limit:
                received.append(receive(_NOBLOCK))
                if not option(_EVENTS) & _POLLIN:
                    break
    except zmq.Again:  # nothing was queued (a drain without a poll first)
        pass
    return received


def send_routed(socket: zmq.Socket, identity: bytes, frame: bytes) -> None:
    """One frame to the peer `identity` of a ROUTER (which drops, never blocks,
    when that peer's pipe is full)."""
    socket.send(identity, _SNDMORE)
    socket.send(frame)
