"""Servers under test: PushUp itself, the MLP baseline and Nchan."""

from __future__ import annotations

from pushup.bench.targets.base import PollAnswer, PollState, Target

__all__ = ["PollAnswer", "PollState", "Target", "make_target"]

TARGET_NAMES = ("pushup", "mlp", "nchan")
# Every name `--target` takes: the servers compared by default, and variants of PushUp
# measured on request (`pushup-journal`: with its journal on; `pushup-workers-nats`:
# `--workers` without --engine, its workers sharing a private nats-server).
TARGET_CHOICES = (*TARGET_NAMES, "pushup-journal", "pushup-workers-nats")


def make_target(name: str, **options: object) -> Target:
    """A target by name; its module is imported only when chosen."""
    if name == "pushup":
        from pushup.bench.targets.pushup import PushUpTarget

        return PushUpTarget(**options)  # type: ignore[arg-type]
    if name == "pushup-journal":
        from pushup.bench.targets.pushup_journal import PushUpJournalTarget

        return PushUpJournalTarget(**options)  # type: ignore[arg-type]
    # Deployments of several PushUp processes, built by the `cluster` and `capacity`
    # scenarios with their options (the load generator makes them by name for the codec).
    if name == "pushup-cluster":
        from pushup.bench.targets.cluster import ClusterTarget

        return ClusterTarget(**options)  # type: ignore[arg-type]
    if name == "pushup-workers":
        from pushup.bench.targets.workers import WorkersTarget

        return WorkersTarget(**options)  # type: ignore[arg-type]
    if name == "pushup-workers-nats":
        from pushup.bench.targets.workers import NatsWorkersTarget

        return NatsWorkersTarget(**options)  # type: ignore[arg-type]
    if name == "nchan-workers":
        from pushup.bench.targets.workers import NchanWorkersTarget

        return NchanWorkersTarget(**options)  # type: ignore[arg-type]
    if name == "mlp":
        from pushup.bench.targets.mlp import MlpTarget

        return MlpTarget(**options)  # type: ignore[arg-type]
    if name == "nchan":
        from pushup.bench.targets.nchan import NchanTarget

        return NchanTarget(**options)  # type: ignore[arg-type]
    raise ValueError(f"unknown target {name!r}; choose from {', '.join(TARGET_CHOICES)}")
