"""Every set of bounds is declared one way (transport/limits.py): each limit
with its reason, the relations checked whenever a set is made."""

import dataclasses
import importlib
import re

import pytest

from tests.import_reader import python_files, relative
from transport.limits import holds, limit, limits, positive, reasons


def limit_classes():
    """Every class named *Limits (or Limits) in the project's own packages, found by reading the source."""
    found = []
    for folder in ("actors", "cairn", "store", "transport"):
        for path in python_files(folder):
            for name in re.findall(r"^class (\w*Limits)\b", path.read_text(), re.MULTILINE):
                module = importlib.import_module(relative(path).removesuffix(".py").replace("/", "."))
                found.append(getattr(module, name))
    return found


def test_every_limits_class_is_declared_with_reasons():
    classes = limit_classes()
    assert {"HubLimits", "Limits", "RaftLimits", "TransportLimits"} <= {cls.__name__ for cls in classes}
    for cls in classes:
        assert hasattr(cls, "relations"), f"{cls.__name__} is not made with @limits"
        missing = [name for name, why in reasons(cls).items() if not why]
        assert not missing, f"{cls.__name__}: limits without a reason: {missing}"
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(cls(), next(iter(reasons(cls))), 0)


def test_relations_are_checked_on_construction():
    @limits(positive("period_s"), holds(lambda l: l.low <= l.high, "low is at most high"))
    class Example:
        period_s: float = limit(1.0, "a period")
        low: int = limit(1, "the low mark")
        high: int = limit(2, "the high mark")

    assert Example(low=2).low == 2
    with pytest.raises(AssertionError, match="Example: low is at most high"):
        Example(low=3)
    with pytest.raises(AssertionError, match="period_s must be above zero"):
        Example(period_s=0)
    assert reasons(Example) == {"period_s": "a period", "low": "the low mark", "high": "the high mark"}


def test_a_reason_is_required_and_kept_on_one_line():
    with pytest.raises(AssertionError):
        limit(1, " ")

    @limits()
    class Folded:
        size: int = limit(1, "one\n   line")

    assert reasons(Folded) == {"size": "one line"}
