"""What handlers may use: the hub (their only way to channels and messages), the
settings and the limits."""

from __future__ import annotations

from dataclasses import dataclass, field

from pushup.config import Settings
from pushup.core.hub import Hub
from pushup.http.limits import Limits


@dataclass(frozen=True, slots=True)
class Services:
    hub: Hub
    settings: Settings
    limits: Limits = field(default_factory=Limits)
