"""cairn/wakeup.py: every wake-up makes the fd poll readable, however many came
before, and one drain takes them all. (The inproc PAIR it replaced refused a
send after ~3,000 wake-ups drained one by one, until ZeroMQ processed its
commands, and the I/O thread then slept out its poll period.)"""

import os

import pytest
import zmq

from cairn.wakeup import Wakeup


@pytest.fixture(params=["eventfd", "pipe"])
def wakeup(request, monkeypatch):
    if request.param == "pipe":
        monkeypatch.delattr(os, "eventfd", raising=False)
    elif not hasattr(os, "eventfd"):
        pytest.skip("no eventfd here")
    wakeup = Wakeup()
    yield wakeup
    wakeup.close()


def readable(poller) -> bool:
    return bool(poller.poll(0))


def test_each_wake_up_is_seen_and_one_drain_takes_all_pending(wakeup):
    poller = zmq.Poller()
    poller.register(wakeup.fileno(), zmq.POLLIN)
    assert not readable(poller)
    for _ in range(10_000):
        wakeup.wake()
        assert readable(poller)
        wakeup.drain()
        assert not readable(poller)
    for _ in range(100_000):  # more than a pipe holds: the rest are pending already
        wakeup.wake()
    assert readable(poller)
    wakeup.drain()
    assert not readable(poller)
    wakeup.drain()  # nothing pending: no error

