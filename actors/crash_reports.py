"""Crash reports: what an actor was handling when it died, and crash loops.

Why: the supervisor restarts an actor that dies, which heals a passing fault
but hides one that comes back with the input: an actor that dies on the same
input after every restart makes no progress, and a member that only retries
quietly looks alive. So an actor that dies writes what it was handling
(`Actor.current_input`: a message type, an entry index) to
<data_dir>/run/<actor>.crash; the supervisor reads it, and when the actor dies
again on the same input with the same error it logs `actor_crash_loop` and
writes the member's errors file, which the frontend adds to `endpoint status`
ERRORS. The error clears once the actor stays up (SupervisorLimits.healthy_after_s).

Only the exception's type crosses into status: its message may carry request
data, which belongs in the actor's own log, not in an answer to any client.
"""

from __future__ import annotations

import json
import os

from transport.run_dir import run_dir

ERRORS_FILE = "member_errors.json"


def _crash_path(data_dir: str, actor: str) -> str:
    return os.path.join(run_dir(data_dir), f"{actor}.crash")


def _write_atomically(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    temporary = f"{path}.tmp"
    with open(temporary, "w") as handle:
        json.dump(data, handle)
    os.replace(temporary, path)


def record_crash(data_dir: str, actor: str, current_input: str, error: BaseException) -> None:
    """Called by a dying actor (the top of its loop)."""
    _write_atomically(_crash_path(data_dir, actor), {"input": current_input, "error": type(error).__name__})


def take_crash(data_dir: str, actor: str) -> dict | None:
    """The report of an actor that died, removed so it is read once; None when
    it left none (killed, or died before it could write one)."""
    path = _crash_path(data_dir, actor)
    try:
        with open(path) as handle:
            report = json.load(handle)
        os.unlink(path)
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None


def write_member_errors(data_dir: str, errors: dict[str, str]) -> None:
    _write_atomically(os.path.join(run_dir(data_dir), ERRORS_FILE), errors)


def read_member_errors(data_dir: str) -> tuple[str, ...]:
    """The member's current errors, for `endpoint status` (empty if none)."""
    try:
        with open(os.path.join(run_dir(data_dir), ERRORS_FILE)) as handle:
            errors = json.load(handle)
    except (OSError, ValueError):
        return ()
    return tuple(str(text) for text in errors.values()) if isinstance(errors, dict) else ()


class CrashLoops:
    """Pure bookkeeping of the supervisor: which actors are crash-looping."""

    def __init__(self):
        self._last: dict[str, tuple[str, str]] = {}  # actor -> (input, error) of its last crash
        self.errors: dict[str, str] = {}  # actor -> the status error line

    def died(self, actor: str, report: dict | None) -> str | None:
        """Note a death; the status error line if the actor died again on the
        same input with the same error as the last time (a crash loop)."""
        if report is None:
            self._last.pop(actor, None)
            return None
        signature = (str(report.get("input") or "start-up"), str(report.get("error") or "?"))
        looping = self._last.get(actor) == signature
        self._last[actor] = signature
        if not looping:
            return None
        line = f"cairn: {actor} actor is crash-looping on {signature[0]} ({signature[1]})"
        self.errors[actor] = line
        return line

    def healthy(self, actor: str) -> bool:
        """The actor stayed up: forget its crashes. True if that cleared an error."""
        self._last.pop(actor, None)
        return self.errors.pop(actor, None) is not None
