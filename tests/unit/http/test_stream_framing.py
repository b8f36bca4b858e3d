"""How streams frame an outcome: once per outcome (so once per shape in a fan-out), as
SSE events or WebSocket text frames that a client parses back to poll messages."""

from __future__ import annotations

import json

from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from pushup.core.model import ChannelId, Message, MessageId, PollOutcome
from pushup.http.sse import frame_events
from pushup.http.websocket import frame_messages


def outcome(*, gap: bool = False, data: bytes = b'{"n":1}') -> PollOutcome:
    first = Message(MessageId(1_700_000_000_000_001), 1_700_000_000.000001, (ChannelId(7),), data)
    second = Message(
        MessageId(1_700_000_000_000_002), 1_700_000_000.000002, (ChannelId(7), ChannelId(8)), b"2"
    )
    hits = [(first, (ChannelId(7),)), (second, (ChannelId(8),))]
    return PollOutcome(hits, second.id, gap)


def test_sse_events_are_built_once_per_outcome() -> None:
    shared = outcome()
    assert frame_events(shared) is frame_events(shared)
    assert frame_events(shared) == (
        b"id: 1700000000000001\n"
        b'data: {"id":"1700000000000001","time":1700000000.000001,"channels":[7],"data":{"n":1}}'
        b"\n\n"
        b"id: 1700000000000002\n"
        b'data: {"id":"1700000000000002","time":1700000000.000002,"channels":[8],"data":2}'
        b"\n\n"
    )


def test_sse_gap_comes_first_as_a_named_event() -> None:
    assert frame_events(outcome(gap=True)).startswith(b'event: gap\ndata: {"gap":true}\n\n')


def test_sse_payload_line_breaks_become_data_lines() -> None:
    framed = frame_events(outcome(data=b'{"a":\n1}'))
    first = framed.split(b"\n\n")[0]
    assert first.split(b"\n")[1:] == [
        b'data: {"id":"1700000000000001","time":1700000000.000001,"channels":[7],"data":{"a":',
        b"data: 1}}",
    ]


def test_websocket_frames_parse_back_to_poll_messages() -> None:
    shared = outcome(gap=True)
    assert frame_messages(shared) is frame_messages(shared)
    client = ClientProtocol(parse_uri("ws://pushup/subscribe/ws"), state=State.OPEN)
    client.receive_data(frame_messages(shared))
    frames = client.events_received()
    assert [frame.opcode for frame in frames] == [Opcode.TEXT] * 3
    assert [json.loads(frame.data) for frame in frames] == [
        {"gap": True},
        {"id": "1700000000000001", "time": 1700000000.000001, "channels": [7], "data": {"n": 1}},
        {"id": "1700000000000002", "time": 1700000000.000002, "channels": [8], "data": 2},
    ]
