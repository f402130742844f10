"""The Qdrant side of the distributed index job: connect, set up the collection, look up and write points.

Points are written in qdrant-haystack's layout (`grit_components.indexing.point_payload`, unnamed dense
vector, the same point ids), so `pipelines/rag.yaml` and `grit index` read and update what the job wrote.
Framework-free: only `qdrant_client`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from grit_components._checks import check_choice, check_int
from grit_components.indexing import (
    SOURCE_FIELD,
    IndexManifest,
    check_manifest,
    point_payload,
    read_manifest,
    write_manifest,
)

SIMILARITIES = ("cosine", "dot_product", "l2")


class QdrantUnavailableError(ConnectionError):
    """Qdrant cannot be reached (wrong URL, server down) or its embedded folder cannot be opened."""


def canonical_point_id(value: Any) -> str:
    """Qdrant returns UUID ids with dashes; `point_id` gives them without: compare them in one spelling."""
    return uuid.UUID(str(value)).hex


@dataclass(frozen=True)
class QdrantTarget:
    """Where the job writes: a Qdrant server or cluster (`url`) or an embedded folder (`path`).

    :param collection: collection name (the YAML store's `index`).
    :param url: server or cluster URL; the API key comes from `api_key` or `QDRANT_API_KEY`.
    :param path: embedded Qdrant folder. It admits one client at a time, so the job then writes from the
        driver only.
    :param similarity: "cosine", "dot_product" or "l2", as in `QdrantDocumentStore`.
    :param shard_number: shards of a new collection (cluster); None = the server's default.
    :param replication_factor: copies of each shard (cluster); None = the server's default.
    :param timeout: seconds per request to a server.
    """

    collection: str = "grit"
    url: str | None = None
    path: str | None = None
    api_key: str | None = None
    similarity: str = "cosine"
    shard_number: int | None = None
    replication_factor: int | None = None
    timeout: int = 60

    def __post_init__(self) -> None:
        if (self.url is None) == (self.path is None):
            raise ValueError("give exactly one of url (a Qdrant server or cluster) and path (embedded Qdrant)")
        check_choice("similarity", self.similarity, SIMILARITIES)
        for name in ("shard_number", "replication_factor"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), minimum=1)

    @property
    def location(self) -> str:
        return self.url or str(self.path)

    @property
    def embedded(self) -> bool:
        return self.path is not None

    def client(self):
        """A new client; `QdrantUnavailableError` when the server cannot be reached or the folder is held."""
        from qdrant_client import QdrantClient

        try:
            if self.url is not None:
                client = QdrantClient(url=self.url, api_key=self.api_key or os.environ.get("QDRANT_API_KEY"),
                                      timeout=self.timeout)
                client.get_collections()  # the constructor does not connect: fail here, before any work
                return client
            return QdrantClient(path=self.path)
        except Exception as error:  # noqa: BLE001 - connection refused, DNS, TLS, auth, a held folder
            raise QdrantUnavailableError(f"cannot reach Qdrant at {self.location}: {error}") from error

    def _distance(self):
        from qdrant_client import models

        return {"cosine": models.Distance.COSINE, "dot_product": models.Distance.DOT,
                "l2": models.Distance.EUCLID}[self.similarity]

    def prepare(self, client, manifest: IndexManifest, *, recreate: bool = False,
                allow_model_mismatch: bool = False) -> int:
        """Create the collection if needed (as `QdrantDocumentStore` does), check and record its manifest.

        :returns: the number of points already in the collection.
        :raises IndexModelMismatchError: the collection holds another model's or other settings' vectors.
        """
        from qdrant_client import models

        exists = client.collection_exists(self.collection)
        if exists and recreate:
            client.delete_collection(self.collection)
            exists = False
        if not exists:
            client.create_collection(
                self.collection, vectors_config=models.VectorParams(size=manifest.dimension, distance=self._distance()),
                shard_number=self.shard_number, replication_factor=self.replication_factor)
            if not self.embedded:  # embedded Qdrant has no payload indexes (it warns); servers filter faster
                client.create_payload_index(self.collection, f"meta.{SOURCE_FIELD}",
                                            field_schema=models.PayloadSchemaType.KEYWORD)
        info = client.get_collection(self.collection)
        size = getattr(info.config.params.vectors, "size", None)
        if size is not None and size != manifest.dimension:
            raise ValueError(f"Qdrant collection {self.collection!r} at {self.location} holds {size}-dimensional "
                             f"vectors; the model embeds in {manifest.dimension} (recreate it, or use another one)")
        points = client.count(self.collection, exact=True).count
        stored = read_manifest(client, self.collection)
        if not allow_model_mismatch:
            check_manifest(stored, manifest, purpose="write",
                           where=f"Qdrant collection {self.collection!r} at {self.location}", points=points)
        if stored is None and points == 0:
            write_manifest(client, self.collection, manifest)
        return points


def points_by_source(client, collection: str, sources: Sequence[str] | None = None) -> dict[str, set[str]]:
    """{source: its point ids} for `sources` (None: the whole collection), scrolling payload `meta.source` only."""
    from qdrant_client import models

    found: dict[str, set[str]] = {source: set() for source in sources or ()}
    if sources is not None and not sources:
        return found
    scroll_filter = None if sources is None else models.Filter(must=[models.FieldCondition(
        key=f"meta.{SOURCE_FIELD}", match=models.MatchAny(any=list(sources)))])
    offset = None
    while True:
        records, offset = client.scroll(collection, scroll_filter=scroll_filter, limit=1000, offset=offset,
                                        with_payload=[f"meta.{SOURCE_FIELD}"], with_vectors=False)
        for record in records:
            source = ((record.payload or {}).get("meta") or {}).get(SOURCE_FIELD)
            if isinstance(source, str):
                found.setdefault(source, set()).add(canonical_point_id(record.id))
        if offset is None:
            return found


def write_points(client, collection: str, *, delete_ids: Iterable[str],
                 points: Iterable[tuple[str, str, str, Mapping[str, Any], Sequence[float]]]) -> tuple[int, int]:
    """Delete stale points, then upsert new ones (point id, document id, content, meta, vector).

    Idempotent: a retried task writes the same points again. Returns (deleted, written).
    """
    from qdrant_client import models

    delete_ids = list(delete_ids)
    if delete_ids:
        client.delete(collection, points_selector=models.PointIdsList(points=delete_ids), wait=True)
    structs = [models.PointStruct(id=pid, vector=[float(x) for x in vector], payload=point_payload(doc_id, content, meta))
               for pid, doc_id, content, meta, vector in points]
    if structs:
        client.upsert(collection, points=structs, wait=True)
    return len(delete_ids), len(structs)
