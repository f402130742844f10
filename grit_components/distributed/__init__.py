"""Indexing past one machine: a Ray Data job that embeds a corpus with an actor pool and writes to Qdrant.

Needs the `[ray]` extra (`ray[data]`, `qdrant-client`). The job (`run_index_job`) is framework-free; it
gets its chunker from the caller: `grit index --ray` passes the Haystack one, built from the indexing
YAML (`haystack_integrations.common.grit.indexing.RayChunker`), so chunks, ids and payloads equal what
`grit index` writes. See docs/scaling-out.md.

The modules, each importing only those before it: `corpus` (what is read and chunked), `settings` (how it
is embedded, where it runs), `report`, `qdrant` (the collection), `stages` (chunk, embed, write: what runs
in the workers) and `job` (`run_index_job`, the driver).
"""

from grit_components.distributed.corpus import Chunk, ChunkedSource, Chunker, Corpus, SourceDocument
from grit_components.distributed.job import RayUnavailableError, run_index_job
from grit_components.distributed.qdrant import QdrantTarget, QdrantUnavailableError
from grit_components.distributed.report import ActorStats, JobReport
from grit_components.distributed.settings import EmbedderSettings, RayOptions
from grit_components.distributed.stages import EmbedActor

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
