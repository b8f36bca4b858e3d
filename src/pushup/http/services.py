"""What handlers may use: the hub (and through it the engine) and the settings."""

from __future__ import annotations

from dataclasses import dataclass

from pushup.config import Settings
from pushup.core.hub import Hub


@dataclass(frozen=True, slots=True)
class Services:
    hub: Hub
    settings: Settings
