"""The lease-expiry actor: lease deadlines in memory, acting only on the leader.

For now it follows the member's Raft status (who leads, whether the leader has
recently heard from a quorum), which is what expiry will be gated on; lease
grant, keep-alive, expiry and checkpoints are issue 5's work.
"""

from __future__ import annotations

from actors.base import Actor
from transport import codec
from transport.errors import CairnError
from transport.messages import RaftStatus
from transport.sockets import inbox


class LeaseActor(Actor):
    name = "lease"

    def __init__(self, config, member_name: str):
        super().__init__(config, member_name)
        self.inbox = inbox(self.context, self.data_dir, "lease", self.limits.socket_hwm)
        self.add_reader(self.inbox, self.on_frames)
        self.is_leader = False

    def on_frames(self, frames: list[bytes]) -> None:
        for frame in frames:
            try:
                _, message = codec.decode(frame)
            except CairnError as error:
                self.log.error("bad_frame_dropped", error=str(error))
                continue
            if isinstance(message, RaftStatus):
                leader = message.role == "leader"
                if leader != self.is_leader:
                    self.is_leader = leader
                    self.log.info("leadership_changed", leader=leader, term=message.term)
            else:
                self.log.warning("unexpected_message", type=type(message).__name__)
