"""What a client does after each attempt of a request: the failover rules, once.

Pure decisions shared by the blocking Client and the asyncio client, so both
hide member failures the same way and neither ever hides an uncertain write:

* a reply is returned; an operating error is raised, unless it proves the
  request never reached a Raft log (retryable: NoLeader, TooManyRequests,
  Stopping) — then the next endpoint is tried after a back-off;
* Unavailable (the frame never left this process) moves to the next endpoint;
* no answer in time: a read moves to the next endpoint (reads are safe to
  repeat); a write that was sent raises IndeterminateError; a frame that was
  never sent raises Unavailable.

An error raised because the endpoint did not answer (no connection, no
answer in time, the connection lost) also moves the client's preference on
(`move_on`): the caller's next call, whatever it is, starts with another
member rather than waiting out a dead or stopped one again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from transport.errors import CairnError, ConnectionLostError, IndeterminateError, TimeoutError_, Unavailable, from_response
from transport.messages import ErrorResponse

BACKOFF_S_MIN = 0.025
BACKOFF_S_MAX = 1.0

RETURN = "return"
RAISE = "raise"
RETRY = "retry"


@dataclass(frozen=True, slots=True)
class Step:
    action: str
    value: object = None  # the reply (RETURN) or the error (RAISE, RETRY)
    new_request_id: bool = False  # the member saw this id: a retry needs a fresh one
    backoff: bool = False
    move_on: bool = False  # RAISE: the endpoint did not answer; the next call prefers another


def after_reply(reply, write: bool, endpoint: str, may_fail_over: bool) -> Step:
    if not isinstance(reply, ErrorResponse):
        return Step(RETURN, reply)
    error = from_response(reply)
    if isinstance(error, TimeoutError_) and write:
        return Step(RAISE, IndeterminateError(f"write outcome unknown: {error.message}", endpoint=endpoint),
                    move_on=True)
    if error.retryable and may_fail_over:
        return Step(RETRY, error, new_request_id=True, backoff=True)
    return Step(RAISE, error)


def after_error(error: CairnError, may_fail_over: bool, write: bool = False) -> Step:
    """The transport failed the attempt: Unavailable (the frame never left), or
    ConnectionLost (it left, and its connection dropped before the answer)."""
    if isinstance(error, ConnectionLostError):
        endpoint = error.details.get("endpoint", "")
        if write:
            return Step(RAISE, IndeterminateError(f"write outcome unknown: {error.message}", endpoint=endpoint),
                        move_on=True)
        return Step(RETRY, error, new_request_id=True, backoff=True)
    if may_fail_over and error.retryable:
        return Step(RETRY, error, backoff=True)
    return Step(RAISE, error)


def after_timeout(write: bool, was_sent: bool, endpoint: str) -> Step:
    if not was_sent:
        return Step(RAISE, Unavailable(f"cannot connect to {endpoint}", endpoint=endpoint), move_on=True)
    if write:
        return Step(RAISE, IndeterminateError("write outcome unknown: sent, but no answer before the timeout",
                                              endpoint=endpoint), move_on=True)
    return Step(RETRY, TimeoutError_("read timed out", endpoint=endpoint), new_request_id=True)


def out_of_time(last_error: CairnError | None) -> CairnError:
    return last_error or TimeoutError_("request timed out")


# The jitter of every call that backs off without a generator of its own. One
# for the process: seeding a random.Random (from os.urandom) cost ~15 us, and a
# Backoff is made for every call, most of which never back off.
_JITTER = random.Random()


class Backoff:
    """Exponential back-off with full jitter."""

    def __init__(self, rng: random.Random | None = None):
        self.rng = rng or _JITTER
        self.ceiling = BACKOFF_S_MIN

    def next_pause(self, remaining_s: float) -> float:
        pause = min(self.rng.uniform(0, self.ceiling), max(0.0, remaining_s))
        self.ceiling = min(self.ceiling * 2, BACKOFF_S_MAX)
        return pause
