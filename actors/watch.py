"""The watch hub: receives every applied event of its member and fans it out.

For now it follows the applied revision stream from the apply actor; watcher
registration, history replay and fan-out to clients are issue 6's work.
"""

from __future__ import annotations

from actors.base import Actor
from transport import codec
from transport.errors import CairnError
from transport.messages import AppliedEvents, RaftStatus
from transport.sockets import inbox


class WatchActor(Actor):
    name = "watch"

    def __init__(self, config, member_name: str):
        super().__init__(config, member_name)
        self.inbox = inbox(self.context, self.data_dir, "watch", self.limits.socket_hwm)
        self.add_reader(self.inbox, self.on_frames)
        self.revision = 0

    def on_frames(self, frames: list[bytes]) -> None:
        for frame in frames:
            try:
                _, message = codec.decode(frame)
            except CairnError as error:
                self.log.error("bad_frame_dropped", error=str(error))
                continue
            if isinstance(message, AppliedEvents):
                self.revision = max(self.revision, message.revision)
                self.log.debug("events", revision=message.revision, count=len(message.events))
            elif not isinstance(message, RaftStatus):
                self.log.warning("unexpected_message", type=type(message).__name__)
