"""Peer traffic of the raft actor: one PULL socket in, one PUSH socket per peer out.

Every Ready's messages are grouped by destination and sent as one RaftBatch
frame per peer. Sockets use ZMQ_IMMEDIATE, so nothing queues up for a peer that
is down (a returning peer would otherwise receive a flood of stale messages):
a send that cannot go out is dropped and reported, and Raft retransmits.

The peer port is a door too: a frame from a stranger, or a corrupt or hostile
one, is dropped and logged here, never fatal. Only members of the cluster
config are heard (a RaftBatch's sender, each message's sender, a snapshot
chunk's); a message must be addressed to this member; a snapshot chunk must
carry a MSG_SNAP with its metadata and stay within its declared size. What
passes is then checked by the Raft core's own _validate.

In CURVE mode (transport/curve.py) the inbox is a CURVE server that only the
current members may finish a handshake with (the raft actor updates the keys
it admits as the configuration changes), and each outbox a CURVE client that
talks to its peer's key only (`connect_curve(socket, public_key)`; the keys of
members added at run time come from the member records, store/members.py).

Failpoints (tests): traffic to and from chosen peers can be dropped (a
partition) or held back for a while (delay), and healed, at run time.
"""

from __future__ import annotations

import heapq
import time

import zmq

from actors.raft.limits import RaftLimits
from transport import codec
from transport.messages import ConfChangeProposal, ConfChangeResult, MemberRemoved, RaftBatch, SnapshotChunk, SnapshotChunkAck
from transport.raft_messages import MSG_SNAP
from transport.sockets import NOBLOCK, configure


# ZeroMQ retries a connection to a peer that is not listening yet after 10 ms,
# doubling up to 100 ms (its default is 100 ms flat): after a whole-cluster
# restart the members come up within a few hundred ms of each other, and the
# first election waits for a peer's connection (RaftActor._campaign_soon).
RECONNECT_IVL_MS, RECONNECT_IVL_MAX_MS = 10, 100


def peer_socket(context: zmq.Context, hwm: int) -> zmq.Socket:
    """A PUSH socket to one peer: ZMQ_IMMEDIATE (see the module docstring)."""
    socket = configure(context.socket(zmq.PUSH), hwm)
    socket.setsockopt(zmq.IMMEDIATE, 1)
    socket.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
    socket.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
    return socket


class Peers:
    def __init__(self, context: zmq.Context, member, members, log, serve_curve=None, connect_curve=None,
                 limits: RaftLimits = RaftLimits()):
        self.peer_hwm = limits.peer_hwm
        self.member_id = member.id
        self.log = log
        self.inbox = configure(context.socket(zmq.PULL), self.peer_hwm)
        if serve_curve is not None:
            serve_curve(self.inbox, "peer")
        self.inbox.bind(member.peer)
        self.known_peers = frozenset(peer.id for peer in members if peer.id != member.id)
        self.outboxes: dict[int, zmq.Socket] = {}
        for peer in members:
            if peer.id == member.id:
                continue
            socket = peer_socket(context, self.peer_hwm)
            if connect_curve is not None:
                connect_curve(socket, peer.public_key)
            socket.connect(peer.peer)
            self.outboxes[peer.id] = socket
        self.context = context
        self.connect_curve = connect_curve
        self.public_keys: dict[int, str] = {}  # peer id -> CURVE public key, for the peers added at run time
        self.urls: dict[int, str] = {peer.id: peer.peer for peer in members if peer.id != member.id}
        # Removed members: their messages are answered with MemberRemoved (at most
        # once a second each), on a socket kept for that.
        self.removed: dict[int, str] = {}
        self.removed_outboxes: dict[int, zmq.Socket] = {}
        self.removed_told_at: dict[int, float] = {}
        self.drop_peers: frozenset[int] = frozenset()
        self.delay_peers: frozenset[int] = frozenset()
        self.delay_s = 0.0
        self.delayed: list[tuple[float, int, int, bytes]] = []  # heap of (due, seq, peer, frame)
        self.delayed_seq = 0

    def follow(self, members: dict[int, str], removed: dict[int, str], public_keys: dict[int, str] | None = None) -> None:
        """The configuration changed: `members` maps every other member's id to
        its peer URL (connect to the new ones and to changed URLs, close the
        dropped ones); `removed` maps removed ids to their last peer URLs;
        `public_keys` (CURVE) maps ids to their public keys."""
        self.public_keys.update(public_keys or {})
        for peer, url in members.items():
            if self.urls.get(peer) == url and peer in self.outboxes:
                continue
            old = self.outboxes.pop(peer, None)
            if old is not None:
                old.close(0)
            socket = peer_socket(self.context, self.peer_hwm)
            if not self._connect(socket, peer, url):
                continue
            self.outboxes[peer] = socket
            self.urls[peer] = url
            self.log.info("peer_connected", peer=f"{peer:x}", url=url)
        self.removed.update(removed)
        for peer in [p for p in self.outboxes if p not in members]:
            socket = self.outboxes.pop(peer)
            if peer in self.removed and peer not in self.removed_outboxes:
                # Kept (connected) for what a removed member is still told: its
                # removal, and the answer to a change it forwarded.
                self.removed_outboxes[peer] = socket
            else:
                socket.close(0)
            self.urls.pop(peer, None)
            self.log.info("peer_dropped", peer=f"{peer:x}")
        self.known_peers = frozenset(members)

    def _connect(self, socket, peer: int, url: str) -> bool:
        """Connect to a URL that came from the log or the config; one ZeroMQ
        refuses (the member service checks URLs, an older member may not have)
        is logged and the peer left unreachable, never a crash on every restart.
        In CURVE mode a peer whose public key is unknown is left unreachable too."""
        if self.connect_curve is not None:
            key = self.public_keys.get(peer)
            if not key:
                socket.close(0)
                self.log.error("peer_key_unknown", peer=f"{peer:x}", url=url)
                return False
            self.connect_curve(socket, key)
        try:
            socket.connect(url)
            return True
        except zmq.ZMQError as error:
            socket.close(0)
            self.log.error("peer_url_refused", peer=f"{peer:x}", url=url, error=str(error))
            return False

    def tell_removed(self, peer: int) -> None:
        """A removed member spoke to us: tell it (it stops, see actors/raft/actor.py)."""
        url = self.removed.get(peer)
        now = time.monotonic()
        if not url or now - self.removed_told_at.get(peer, 0.0) < 1.0:
            return
        self.removed_told_at[peer] = now
        socket = self._removed_socket(peer)
        if socket is None:
            return
        try:
            socket.send(codec.encode(MemberRemoved(self.member_id, peer)), zmq.NOBLOCK)
        except zmq.Again:
            pass  # told on its next message
        self.log.warning("removed_member_told", peer=f"{peer:x}")

    def _removed_socket(self, peer: int):
        """A socket to a removed member (None if its URL is unknown): it is told it
        was removed, and gets the answer to a change it forwarded (its own removal)."""
        socket = self.removed_outboxes.get(peer)
        if socket is None and peer in self.removed:
            # Not ZMQ_IMMEDIATE: a new socket queues the frame until it connects.
            socket = configure(self.context.socket(zmq.PUSH), self.peer_hwm)
            if not self._connect(socket, peer, self.removed[peer]):
                return None
            self.removed_outboxes[peer] = socket
        return socket

    def set_failpoint(self, drop_peers, delay_peers, delay_ms: int) -> None:
        self.drop_peers = frozenset(drop_peers)
        self.delay_peers = frozenset(delay_peers)
        self.delay_s = delay_ms / 1000
        self.log.warning("failpoint_set", drop_peers=sorted(self.drop_peers), delay_peers=sorted(self.delay_peers), delay_ms=delay_ms)

    def decode(self, frames: list[bytes]):
        """(raft messages, other peer messages) from received frames; bad frames
        are logged and dropped."""
        messages, others = [], []
        for frame in frames:
            try:
                _, batch = codec.decode(frame)
            except Exception as error:  # anything a broken peer sends is dropped, never fatal
                self.log.warning("peer_frame_dropped", error=str(error))
                continue
            if isinstance(batch, MemberRemoved):
                if batch.removed_id == self.member_id and batch.sender in self.known_peers:
                    others.append(batch)
                continue
            problem = self._refusal(batch)
            if problem and getattr(batch, "sender", 0) in self.removed:
                self.tell_removed(batch.sender)
                continue
            if problem:
                self.log.warning("peer_frame_dropped", error=problem, type=type(batch).__name__)
                continue
            if batch.sender in self.drop_peers:
                continue
            if isinstance(batch, RaftBatch):
                messages.extend(m for m in batch.messages if m.to == self.member_id and m.sender == batch.sender)
            else:
                others.append(batch)
        return messages, others

    def _refusal(self, frame) -> str:
        """Why a decoded peer frame must be dropped ("" if it may pass)."""
        if not isinstance(frame, (RaftBatch, SnapshotChunk, SnapshotChunkAck, ConfChangeProposal, ConfChangeResult)):
            return "unexpected message type"
        if frame.sender not in self.known_peers:
            return f"sender {frame.sender:x} is not a member"
        if isinstance(frame, SnapshotChunk):
            message = frame.message
            if message.type != MSG_SNAP or message.snapshot is None or message.sender != frame.sender:
                return "snapshot chunk without its MSG_SNAP"
            if not 0 <= frame.offset <= frame.offset + len(frame.data) <= frame.total_bytes:
                return "snapshot chunk outside its declared size"
        return ""

    def reachable(self) -> bool:
        """Whether some peer's connection is up now."""
        return any(self.connected(peer) for peer in self.outboxes if peer not in self.drop_peers)

    def connected(self, peer: int) -> bool:
        """Whether the connection to `peer` is up now (ZMQ_IMMEDIATE: its PUSH
        socket can send only over a completed connection)."""
        socket = self.outboxes.get(peer)
        return socket is not None and bool(socket.getsockopt(zmq.EVENTS) & zmq.POLLOUT)

    def send(self, messages) -> list[int]:
        """Send messages grouped per peer; returns peers that could not be reached."""
        by_peer: dict[int, list] = {}
        for message in messages:
            by_peer.setdefault(message.to, []).append(message)
        unreachable = []
        for peer, batch in by_peer.items():
            if peer in self.drop_peers:
                continue
            frame = codec.encode(RaftBatch(self.member_id, tuple(batch)))
            if peer in self.delay_peers and self.delay_s > 0:
                self.delayed_seq += 1
                heapq.heappush(self.delayed, (time.monotonic() + self.delay_s, self.delayed_seq, peer, frame))
                continue
            if not self.send_frame(peer, frame):
                unreachable.append(peer)
        return unreachable

    def flush_delayed(self, now: float) -> None:
        while self.delayed and self.delayed[0][0] <= now:
            _, _, peer, frame = heapq.heappop(self.delayed)
            self.send_frame(peer, frame)

    def send_frame(self, peer: int, frame: bytes) -> bool:
        """One frame to one peer, unless a failpoint drops it; False if it cannot go out now."""
        if peer in self.drop_peers:
            return True
        socket = self.outboxes.get(peer) or self._removed_socket(peer)
        if socket is None:
            self.log.warning("unknown_peer", peer=peer)
            return False
        try:
            socket.send(frame, NOBLOCK)  # an int flag (transport/sockets.py)
            return True
        except zmq.Again:
            return False
