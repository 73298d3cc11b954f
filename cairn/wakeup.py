"""A wake-up one thread sends and another polls for: an eventfd (a pipe where
there is none), registered in the I/O thread's zmq.Poller as a plain fd.

The client's callers wake its I/O thread once per request. It was an inproc
PAIR of ZeroMQ sockets, which cost a message and a zmq.Again (raised to end
each drain) per wake-up, and could refuse a send with zmq.Again while nothing
was pending: after ~3,000 wake-ups in quick succession, each drained at once,
a send failed now and then (as we read libzmq, the writer sees the credit the
reader returned only when it next processes its commands, which it
throttles), and the I/O thread then slept out its poll period. An eventfd
is a counter: a write never fails while anything is unread (it would need
2**64 - 2 pending wake-ups), and one read takes every pending wake-up.

Closing is not synchronised here: the owner makes sure no thread calls wake()
after close() (TransportThread does both under its wake_lock), since the fd's
number may be reused once it is closed.
"""

from __future__ import annotations

import os


class Wakeup:
    def __init__(self):
        if hasattr(os, "eventfd"):
            self.fd = self._write_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:  # no eventfd (not Linux): a non-blocking pipe, one byte a wake-up
            self.fd, self._write_fd = os.pipe()
            os.set_blocking(self.fd, False)
            os.set_blocking(self._write_fd, False)

    def fileno(self) -> int:
        """The fd to poll for POLLIN."""
        return self.fd

    def wake(self) -> None:
        try:
            if self._write_fd == self.fd:
                os.eventfd_write(self.fd, 1)
            else:
                os.write(self._write_fd, b"\0")
        except BlockingIOError:
            pass  # a full pipe: wake-ups are pending already, so the reader will look

    def drain(self) -> None:
        """Take every pending wake-up, so the fd polls readable again only after a new one."""
        try:
            if self._write_fd == self.fd:
                os.eventfd_read(self.fd)
            else:
                while os.read(self.fd, 4096):
                    pass
        except BlockingIOError:
            pass  # nothing (more) pending

    def close(self) -> None:
        os.close(self.fd)
        if self._write_fd != self.fd:
            os.close(self._write_fd)
