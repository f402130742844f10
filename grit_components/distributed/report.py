"""What the index job reports: documents by status (and why some failed), chunks, points, time, per-actor speed.

The write stage sends small stats rows to the driver, which folds them into a `JobReport` (`JobReport.add`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from grit_components.indexing import IndexManifest

STATUSES = ("added", "replaced", "resumed", "unchanged", "failed")


@dataclass
class ActorStats:
    chunks: int = 0
    seconds: float = 0.0
    threads: int = 0

    @property
    def throughput(self) -> float:
        return self.chunks / self.seconds if self.seconds else 0.0


@dataclass
class JobReport:
    """What the job did: documents by status (and why some failed), chunks, points, time, per-actor speed."""

    statuses: Counter = field(default_factory=Counter)
    failed: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)
    chunks: int = 0
    written: int = 0
    deleted: int = 0
    actors: dict[str, ActorStats] = field(default_factory=dict)
    points_in_collection: int = 0
    seconds: float = 0.0
    setup_seconds: float = 0.0
    manifest: IndexManifest | None = None

    @property
    def documents(self) -> int:
        return sum(self.statuses.values())

    @property
    def embed_seconds(self) -> float:
        return sum(stats.seconds for stats in self.actors.values())

    def add(self, stats: Mapping[str, np.ndarray]) -> None:
        """Fold one stats batch from the write stage into the report."""
        for i, kind in enumerate(stats["kind"]):
            if kind == "source":
                status = str(stats["status"][i])
                self.statuses[status] += 1
                self.chunks += int(stats["chunks"][i])
                detail = str(stats["detail"][i])
                if status == "failed":
                    self.failed.append((str(stats["source"][i]), detail))
                elif detail:
                    self.notes.append((str(stats["source"][i]), detail))
            else:
                actor = self.actors.setdefault(str(stats["actor"][i]), ActorStats())
                actor.chunks += int(stats["chunks"][i])
                actor.seconds += float(stats["seconds"][i])
                actor.threads = int(stats["threads"][i])
                self.written += int(stats["written"][i])
                self.deleted += int(stats["deleted"][i])

    def summary(self) -> list[str]:
        statuses = ", ".join(f"{self.statuses[s]} {s}" for s in STATUSES if self.statuses[s])
        lines = [f"documents: {self.documents - self.statuses['failed']} of {self.documents} indexed"
                 + (f" ({statuses})" if statuses else ""),
                 f"chunks: {self.chunks}; points written: {self.written}, stale points deleted: {self.deleted}; "
                 f"the collection holds {self.points_in_collection} points",
                 f"time: {self.seconds:.1f}s ({self.setup_seconds:.1f}s connecting and loading the model)"]
        for name, stats in sorted(self.actors.items()):
            lines.append(f"  actor {name}: {stats.chunks} chunks in {stats.seconds:.1f}s embedding "
                         f"({stats.throughput:.1f} chunks/s, {stats.threads} threads)")
        for source, note in self.notes[:20]:
            lines.append(f"  note: {source}: {note}")
        if self.failed:
            lines.append(f"skipped {len(self.failed)} documents:")
            lines.extend(f"  {source}: {reason}" for source, reason in self.failed)
        return lines
