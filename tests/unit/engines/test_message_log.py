"""A channel's message log against a plain list doing the same, step by step."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushup.core.model import ChannelId, Message, MessageId
from pushup.engines.memory.message_log import MessageLog


def message(message_id: int) -> Message:
    return Message(MessageId(message_id), message_id / 1e6, (ChannelId(1),), b"1")


# Steps: append the next message (ids grow by 1..3), drop the oldest, remove one held.
steps = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 3)),
        st.tuples(st.just("pop"), st.just(0)),
        st.tuples(st.just("remove"), st.integers(0, 200)),
    ),
    max_size=300,
)


@settings(max_examples=200, deadline=None)
@given(steps, st.integers(0, 700))
def test_behaves_as_a_sorted_list(actions: list[tuple[str, int]], low: int) -> None:
    log, model = MessageLog(), []
    next_id = 0
    for action, arg in actions:
        if action == "append":
            next_id += arg
            new = message(next_id)
            log.append(new)
            model.append(new)
        elif action == "pop" and model:
            assert log.pop_oldest() is model.pop(0)
        elif action == "remove" and model:
            gone = model.pop(arg % len(model))
            assert gone in log
            log.remove(gone)
            assert gone not in log
        assert len(log) == len(model)
        assert list(log) == model
        if model:
            assert log.oldest() is model[0]
    assert list(log.since(low)) == [m for m in model if m.id >= low]


def test_only_newer_ids_are_appended() -> None:
    log = MessageLog()
    log.append(message(5))
    with pytest.raises(ValueError, match="not newer"):
        log.append(message(5))
    assert [m.id for m in log] == [5]


def test_the_front_is_compacted_and_freed() -> None:
    log = MessageLog()
    for n in range(1, 1001):
        log.append(message(n))
    for _ in range(900):
        log.pop_oldest()
    assert len(log._items) < 1000  # compacted, not grown forever
    assert [m.id for m in log.since(950)] == list(range(950, 1001))
    log.clear()
    assert len(log) == 0 and list(log.since(0)) == []
    with pytest.raises(IndexError):
        log.pop_oldest()
