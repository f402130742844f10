"""What an index of GRIT embeddings records about itself, and how its points are named.

An index (a Qdrant collection) is only meaningful for the model and settings that embedded it: vectors
of another model, even of the same dimension (a fine-tuned copy), rank nonsense without any error. So
the first write stores an `IndexManifest` with the collection (its model fingerprint and every setting
that changes a vector), and every later write and query compares its own manifest with the stored one:
a difference is an `IndexModelMismatchError` naming both.

Points are named deterministically: a chunk's id is a hash of the manifest, its source (a file's
absolute path or a corpus document id), its position in that source and its text. Writing the same
chunk twice overwrites one point, a re-run only needs to embed the ids the collection lacks, and a
changed model or setting gives new ids (so re-indexing replaces, never mixes). `grit index` (Haystack)
and the Ray job (`grit_components.distributed`) name points with these functions, so either can
resume or update what the other wrote.

Framework-free: the Qdrant helpers take a `qdrant_client` client and use only its public API.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from grit_components.components import GritEmbedder

MANIFEST_KEY = "grit_index"  # key of the manifest in the collection's metadata
MANIFEST_VERSION = 1
SOURCE_FIELD = "source"  # meta field naming where a chunk came from (Haystack's splitter owns `source_id`)
# qdrant-haystack's `convert_id` turns a Document id into a point id with this namespace; using it here
# gives the same point for the same chunk whichever writer (DocumentWriter, the Ray job) stores it.
QDRANT_HAYSTACK_NAMESPACE = uuid.UUID("3896d314-1e95-4a3a-b45a-945f9f0b541d")

# The settings a query must share with the index (its instruction is its own) ...
QUERY_SETTINGS = ("fingerprint", "dimension", "pooling", "attention", "normalize")
# ... and those every write must share, so that all points of a collection are comparable.
WRITE_SETTINGS = (*QUERY_SETTINGS, "instruction", "max_length", "meta_fields", "meta_separator", "version")


class IndexModelMismatchError(ValueError):
    """A collection was indexed with another model or other embedding settings than the caller uses."""

    def __init__(self, message: str, *, stored: IndexManifest | None, current: IndexManifest) -> None:
        super().__init__(message)
        self.stored = stored
        self.current = current


@dataclass(frozen=True)
class IndexManifest:
    """The model and embedding settings behind every vector of one index.

    :param model: the model spec as given (for people: the fingerprint identifies the weights).
    :param fingerprint: `GritModel.fingerprint` (config, source, dtype and a sample of every weight).
    :param dimension: embedding size.
    :param dtype: the weights' dtype when embedding (part of the fingerprint; shown in errors).
    :param instruction: the document instruction ("" = none, as in the GRIT paper).
    :param pooling: how token states become one vector ("mean" over the text tokens).
    :param attention: "bidirectional" (GRIT) or "causal".
    :param max_length: longest embedded input in tokens; longer chunks were cut.
    :param normalize: whether vectors are L2-normalised.
    :param meta_fields: meta fields put before a chunk's text (Haystack's `meta_fields_to_embed`).
    :param meta_separator: what joins those meta values and the text.
    """

    model: str
    fingerprint: str
    dimension: int
    dtype: str
    instruction: str = ""
    pooling: str = "mean"
    attention: str = "bidirectional"
    max_length: int = 512
    normalize: bool = True
    meta_fields: tuple[str, ...] = ()
    meta_separator: str = "\n"
    version: int = MANIFEST_VERSION
    _key: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "meta_fields", tuple(self.meta_fields))
        settings = {name: getattr(self, name) for name in WRITE_SETTINGS}
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:32]
        object.__setattr__(self, "_key", digest)

    @classmethod
    def for_embedder(cls, embedder: GritEmbedder, *, meta_fields: Sequence[str] = (),
                     meta_separator: str = "\n") -> IndexManifest:
        """The manifest of documents embedded by `embedder` (loads its model if needed)."""
        model = embedder.model
        # GritEmbedder always embeds with GRIT's layout: mean pooling over the text, bidirectional attention.
        return cls(model=model.name, fingerprint=model.fingerprint, dimension=model.embedding_dim,
                   dtype=str(model.dtype).removeprefix("torch."), instruction=embedder.document_instruction,
                   max_length=embedder.max_length, normalize=embedder.normalize, meta_fields=tuple(meta_fields),
                   meta_separator=meta_separator)

    @property
    def key(self) -> str:
        """Digest of every setting that changes a vector (not the spec's spelling): part of every chunk id."""
        return self._key

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        data["meta_fields"] = list(self.meta_fields)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IndexManifest:
        names = {f.name for f in fields(cls) if f.init}
        return cls(**{key: value for key, value in data.items() if key in names})

    def describe(self) -> str:
        """One line for people: spec, short fingerprint and dtype."""
        return f"{self.model!r} (fingerprint {self.fingerprint[:12]}, {self.dtype}, {self.dimension} dims)"

    def differences(self, other: IndexManifest, settings: Sequence[str] = WRITE_SETTINGS) -> list[str]:
        """`name: ours -> theirs` for each of `settings` that differs."""
        return [f"{name}: {getattr(self, name)!r} -> {getattr(other, name)!r}"
                for name in settings if getattr(self, name) != getattr(other, name)]

    def text_to_embed(self, content: str, meta: Mapping[str, Any]) -> str:
        """The text a chunk is embedded as: the meta values named in `meta_fields`, then the content."""
        values = [str(meta[name]) for name in self.meta_fields if meta.get(name) is not None]
        return self.meta_separator.join([*values, content])


def check_manifest(stored: IndexManifest | None, current: IndexManifest, *, purpose: str, where: str,
                   points: int) -> None:
    """Raise `IndexModelMismatchError` unless `current` may write to (or query) an index holding `stored`.

    :param stored: the collection's manifest (None: it has none).
    :param current: the caller's manifest.
    :param purpose: "write" (every setting must match) or "query" (model, pooling, attention, normalisation).
    :param where: the collection and its location, for the message.
    :param points: how many points the collection holds (an empty one without a manifest is fine).
    """
    if purpose not in ("write", "query"):
        raise ValueError(f"purpose must be 'write' or 'query', not {purpose!r}")
    if stored is None:
        if points == 0:
            return
        raise IndexModelMismatchError(
            f"{where} holds {points} points but no record of the model that embedded them (written by an "
            f"earlier grit-components version or another tool), so they cannot be checked against "
            f"{current.describe()}", stored=None, current=current)
    diffs = stored.differences(current, QUERY_SETTINGS if purpose == "query" else WRITE_SETTINGS)
    if diffs:
        raise IndexModelMismatchError(
            f"{where} was indexed with {stored.describe()}, but this {'query' if purpose == 'query' else 'write'} "
            f"embeds with {current.describe()}; differences: {'; '.join(diffs)}", stored=stored, current=current)


def chunk_id(manifest: IndexManifest, source: str, position: int, content: str) -> str:
    """Document id of a chunk: sha256 over the manifest key, its source, its position there and its text."""
    digest = hashlib.sha256()
    digest.update(f"grit-chunk:1\0{manifest.key}\0{source}\0{int(position)}\0".encode("utf-8", "surrogatepass"))
    digest.update(content.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def point_id(document_id: str) -> str:
    """Qdrant point id of a Document id, exactly as qdrant-haystack's `convert_id` computes it."""
    return uuid.uuid5(QDRANT_HAYSTACK_NAMESPACE, document_id).hex


def point_payload(document_id: str, content: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    """A point's payload in qdrant-haystack's layout (`Document.to_dict(flatten=False)` without the vector),
    so Haystack's `QdrantDocumentStore` and retrievers read points written without Haystack."""
    return {"id": document_id, "content": content, "blob": None, "meta": dict(meta), "score": None,
            "sparse_embedding": None}


def read_manifest(client, collection: str) -> IndexManifest | None:
    """The manifest stored with `collection` (None if it has none). `client`: a `qdrant_client.QdrantClient`."""
    metadata = client.get_collection(collection).config.metadata or {}
    data = metadata.get(MANIFEST_KEY)
    return IndexManifest.from_dict(data) if isinstance(data, dict) else None


def write_manifest(client, collection: str, manifest: IndexManifest) -> None:
    """Store `manifest` with `collection` (Qdrant collection metadata, kept by servers >= 1.16 and by
    embedded Qdrant). Raises RuntimeError when the server silently drops it."""
    client.update_collection(collection, metadata={MANIFEST_KEY: manifest.to_dict()})
    if read_manifest(client, collection) != manifest:
        raise RuntimeError(f"Qdrant did not keep the metadata of collection {collection!r} (servers before "
                           "1.16 drop it): upgrade Qdrant so the index can record its model")


__all__ = [
    "IndexManifest",
    "IndexModelMismatchError",
    "MANIFEST_KEY",
    "SOURCE_FIELD",
    "check_manifest",
    "chunk_id",
    "point_id",
    "point_payload",
    "read_manifest",
    "write_manifest",
]

