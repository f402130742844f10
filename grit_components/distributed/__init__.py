"""Indexing past one machine: a Ray Data job that embeds a corpus with an actor pool and writes to Qdrant.

Needs the `[ray]` extra (`ray[data]`, `qdrant-client`). The job (`run_index_job`) is framework-free; it
gets its chunker from the caller: `grit index --ray` passes the Haystack one, built from the indexing
YAML (`haystack_integrations.common.grit.indexing.RayChunker`), so chunks, ids and payloads equal what
`grit index` writes. See docs/scaling-out.md.
"""

from grit_components.distributed.job import (
    ActorStats,
    Chunk,
    ChunkedSource,
    Chunker,
    Corpus,
    EmbedActor,
    EmbedderSettings,
    JobReport,
    RayOptions,
    RayUnavailableError,
    SourceDocument,
    run_index_job,
)
from grit_components.distributed.qdrant import QdrantTarget, QdrantUnavailableError

__all__ = [
    "ActorStats",
    "Chunk",
    "ChunkedSource",
    "Chunker",
    "Corpus",
    "EmbedActor",
    "EmbedderSettings",
    "JobReport",
    "QdrantTarget",
    "QdrantUnavailableError",
    "RayOptions",
    "RayUnavailableError",
    "SourceDocument",
    "run_index_job",
]
