"""What handlers may use: the hub (their only way to channels and messages), the
settings, the limits, and the check of a publisher key's channels."""

from __future__ import annotations

from dataclasses import dataclass, field

from pushup.config import Settings
from pushup.core.hub import Hub
from pushup.core.tenants import ChannelAccess
from pushup.http.limits import Limits


@dataclass(frozen=True, slots=True)
class Services:
    hub: Hub
    settings: Settings
    limits: Limits = field(default_factory=Limits)
    access: ChannelAccess = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "access", ChannelAccess(self.hub.channel_info))
