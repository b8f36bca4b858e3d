"""A Python client for PushUp's HTTP API: `AsyncPublisher` and `Publisher` for web
servers, `mint_token` for the subscriber tokens they hand to pages, `subscribe` for
long-polling consumers, `history` to page through the cache. Importing it pulls in
httpx; the server itself never does."""

from pushup.client.async_publisher import AsyncPublisher
from pushup.client.errors import (
    ApiError,
    ChannelClosed,
    ChannelNotFound,
    Forbidden,
    HeadersTooLarge,
    IdempotencyKeyReused,
    InvalidRequest,
    MethodNotAllowed,
    NameTaken,
    NotFound,
    PayloadTooLarge,
    PushUpError,
    RetryLater,
    ServerError,
    ServiceUnavailable,
    TooManyRequests,
    TransportError,
    Unauthorized,
)
from pushup.client.events import ChannelEvent, ChannelEvents, channel_events
from pushup.client.history import History, history
from pushup.client.publisher import Publisher
from pushup.client.subscribe import Subscription, subscribe
from pushup.client.tokens import mint_token
from pushup.client.wire import (
    Channel,
    ChannelRef,
    ChannelState,
    ListedChannel,
    Message,
    Presence,
    Published,
)

__all__ = [
    "ApiError",
    "AsyncPublisher",
    "Channel",
    "ChannelClosed",
    "ChannelEvent",
    "ChannelEvents",
    "ChannelNotFound",
    "ChannelRef",
    "ChannelState",
    "Forbidden",
    "HeadersTooLarge",
    "History",
    "IdempotencyKeyReused",
    "InvalidRequest",
    "ListedChannel",
    "Message",
    "MethodNotAllowed",
    "NameTaken",
    "NotFound",
    "PayloadTooLarge",
    "Presence",
    "Published",
    "Publisher",
    "PushUpError",
    "RetryLater",
    "ServerError",
    "ServiceUnavailable",
    "Subscription",
    "TooManyRequests",
    "TransportError",
    "Unauthorized",
    "channel_events",
    "history",
    "mint_token",
    "subscribe",
]
