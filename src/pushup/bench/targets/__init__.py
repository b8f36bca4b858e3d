"""Servers under test: PushUp itself, the MLP baseline and Nchan."""

from __future__ import annotations

from pushup.bench.targets.base import PollAnswer, PollState, Target

__all__ = ["PollAnswer", "PollState", "Target", "make_target"]

TARGET_NAMES = ("pushup", "mlp", "nchan")


def make_target(name: str, **options: object) -> Target:
    """A target by name; its module is imported only when chosen."""
    if name == "pushup":
        from pushup.bench.targets.pushup import PushUpTarget

        return PushUpTarget(**options)  # type: ignore[arg-type]
    if name == "mlp":
        from pushup.bench.targets.mlp import MlpTarget

        return MlpTarget(**options)  # type: ignore[arg-type]
    if name == "nchan":
        from pushup.bench.targets.nchan import NchanTarget

        return NchanTarget(**options)  # type: ignore[arg-type]
    raise ValueError(f"unknown target {name!r}; choose from {', '.join(TARGET_NAMES)}")
