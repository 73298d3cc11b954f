"""transport/raft_messages.py quicker_init: the quicker __init__ of frozen, slotted dataclasses
takes the same arguments as the generated one, builds an equal instance, and
leaves the class frozen; classes it does not cover keep the generated one."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from actors.raft import core
from transport import messages, raft_messages
from transport.raft_messages import quicker_init


def _declared(module):
    return [value for value in vars(module).values() if isinstance(value, type) and dataclasses.is_dataclass(value)
            and value.__module__ == module.__name__ and value.__dataclass_params__.frozen]


QUICKENED = _declared(messages) + _declared(raft_messages) + [core.Ready, core.SoftState, core.ReadState]


@pytest.mark.parametrize("cls", QUICKENED, ids=lambda cls: cls.__name__)
def test_the_signature_is_the_fields_with_their_defaults(cls):
    fields = dataclasses.fields(cls)
    if any(f.default_factory is not dataclasses.MISSING for f in fields):
        return  # kept the generated __init__
    assert "__create_fn__" not in cls.__init__.__code__.co_qualname, cls
    parameters = list(inspect.signature(cls).parameters.values())
    assert [(p.name, p.default, p.kind, p.annotation) for p in parameters] == [
        (f.name, inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default,
         inspect.Parameter.POSITIONAL_OR_KEYWORD, f.type) for f in fields]


@dataclasses.dataclass(frozen=True, slots=True)
class Sample:
    a: int
    b: bytes = b"x"
    c: tuple = ()


def _generated_twin():
    @dataclasses.dataclass(frozen=True, slots=True)
    class Sample:  # noqa: F811 - the same class, left with the generated __init__
        a: int
        b: bytes = b"x"
        c: tuple = ()
    return Sample


def test_an_instance_is_the_same_as_the_generated_init_makes():
    quick, generated = quicker_init(Sample), _generated_twin()
    for args, kwargs in (((1,), {}), ((1, b"y"), {}), ((1,), {"c": (2,)}), ((), {"a": 3, "b": b"", "c": ()})):
        assert dataclasses.astuple(quick(*args, **kwargs)) == dataclasses.astuple(generated(*args, **kwargs))
    assert quick(1) == quick(1, b"x", ()) and hash(quick(1)) == hash(quick(1, b"x"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick(1).a = 2
    for args, kwargs in (((), {}), ((1, 2, 3, 4), {}), ((1,), {"d": 1}), ((1,), {"a": 1})):
        with pytest.raises(TypeError):
            quick(*args, **kwargs)
        with pytest.raises(TypeError):
            generated(*args, **kwargs)


def test_a_class_it_does_not_cover_keeps_the_generated_init():
    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self):
            if self.a < 0:
                raise ValueError(self.a)

    @dataclasses.dataclass(frozen=True, slots=True)
    class Listed:
        items: list = dataclasses.field(default_factory=list)

    for cls in (Checked, Listed):
        before = cls.__init__
        assert quicker_init(cls).__init__ is before
    with pytest.raises(ValueError):
        Checked(-1)
    assert Listed().items == [] and Listed().items is not Listed().items
