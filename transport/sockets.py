"""ZeroMQ wiring of a member: where each actor listens and how sockets are made.

Every actor binds one PULL socket at ipc://<data_dir>/run/<actor>.ipc and sends to
the others with PUSH sockets: many writers, one reader, no request/reply lockstep
between actors, so each can drain and batch. Peers and clients use tcp://.

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
    os.makedirs(run_dir(data_dir), exist_ok=True)
    socket = configure(context.socket(zmq.PULL), hwm)
    socket.bind(ipc_endpoint(data_dir, actor))
    return socket


def outbox(context: zmq.Context, data_dir: str, actor: str, hwm: int) -> zmq.Socket:
    """A PUSH socket to another actor of the same member."""
    socket = configure(context.socket(zmq.PUSH), hwm)
    socket.connect(ipc_endpoint(data_dir, actor))
    return socket


def drain(socket: zmq.Socket, limit: int, multipart: bool = False) -> list:
    """Everything queued on socket, up to limit messages, without blocking."""
    received = []
    receive = socket.recv_multipart if multipart else socket.recv
    try:
        while len(received) < limit:
            received.append(receive(zmq.NOBLOCK, copy=True))
    except zmq.Again:
        pass
    return received
