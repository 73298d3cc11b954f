"""transport/sockets.py: drain takes everything queued, up to its limit, and
ends on ZMQ_EVENTS rather than on zmq.Again."""

import zmq

from transport.sockets import drain


def _pair(context, kind_in, kind_out, name):
    receiver = context.socket(kind_in)
    receiver.bind(f"inproc://{name}")
    sender = context.socket(kind_out)
    sender.connect(f"inproc://{name}")
    return receiver, sender


def test_drain_takes_what_is_queued_up_to_its_limit_and_nothing_from_an_empty_socket():
    context = zmq.Context()
    receiver, sender = _pair(context, zmq.PULL, zmq.PUSH, "drain-single")
    try:
        assert drain(receiver, 10) == []  # empty, no poll first: no error
        for n in range(5):
            sender.send(b"%d" % n)
        assert receiver.poll(5000)
        assert drain(receiver, 3) == [b"0", b"1", b"2"]
        assert drain(receiver, 10) == [b"3", b"4"]
        assert drain(receiver, 10) == []
    finally:
        context.destroy(linger=0)


def test_drain_keeps_the_parts_of_multipart_messages_together():
    context = zmq.Context()
    receiver, sender = _pair(context, zmq.PULL, zmq.PUSH, "drain-multi")
    try:
        sender.send_multipart([b"a", b"1"])
        sender.send_multipart([b"b", b"2", b"3"])
        assert receiver.poll(5000)
        assert drain(receiver, 10, multipart=True) == [[b"a", b"1"], [b"b", b"2", b"3"]]
        assert drain(receiver, 10, multipart=True) == []
    finally:
        context.destroy(linger=0)
