"""Session-wide safety net: whatever a failing test left running is stopped, by
the process group of the member it started (never by name)."""

import pytest


@pytest.fixture(scope="session", autouse=True)
def stop_leftover_members():
    yield
    from tests.harness import STARTED

    for member in STARTED:
        member.stop()
