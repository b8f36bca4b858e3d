"""What handlers may use: the hub (and through it the engine) and the settings."""

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
