# SPDX-FileCopyrightText: 2026-present grit-components developers
#
# SPDX-License-Identifier: Apache-2.0
"""The Qdrant stores of a built pipeline: connect and size them, check what their collections hold, close them.

- `prepare` loads the pipeline's GRIT models, sets every store's `embedding_dim` from the model and checks it
  against an existing collection before anything is written (`EmbeddingDimensionError`);
- the index's model: every collection records the model and embedding settings that filled it
  (`grit_components.indexing.IndexManifest`, stored at the first write); `check_index` compares them with
  the pipeline's GRIT embedders and raises `IndexModelMismatchError` naming both on any difference;
- `qdrant_target` and `indexed_points` read the stores of a pipeline file without loading a model: the
  collection the Ray job writes to, and what a collection holds.

Imports Haystack: import this module only where Haystack is installed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from haystack import Pipeline

from grit_components.indexing import (IndexManifest, IndexModelMismatchError, check_manifest, read_manifest,
                                      write_manifest)
from haystack_integrations.common.grit.build import PipelineSetupError, build_pipeline
from haystack_integrations.common.grit.component import GritModelComponent


class EmbeddingDimensionError(PipelineSetupError):
    """The model's embedding dimension differs from the vectors of an existing Qdrant collection."""


def grit_components(pipeline: Pipeline) -> list[tuple[str, Any]]:
    return [(name, instance) for name, instance in pipeline.walk() if isinstance(instance, GritModelComponent)]


def document_stores(pipeline: Pipeline) -> list[Any]:
    """The Qdrant stores the pipeline's writers and retrievers hold (one entry per distinct object)."""
    from haystack_integrations.document_stores.qdrant import QdrantDocumentStore

    stores = []
    for _, instance in pipeline.walk():
        for attribute in ("document_store", "_document_store"):
            store = getattr(instance, attribute, None)
            if isinstance(store, QdrantDocumentStore) and all(store is not s for s in stores):
                stores.append(store)
    return stores


def _store_location(store) -> str:
    return store.url or store.path or store.location or f"{store.host}:{store.port}"


def _writers(pipeline: Pipeline) -> list[Any]:
    """The stores written by a `DocumentWriter` of the pipeline."""
    from haystack.components.writers import DocumentWriter

    return [instance.document_store for _, instance in pipeline.walk() if isinstance(instance, DocumentWriter)]


def prepare(pipeline: Pipeline, *, allow_model_mismatch: bool = False, recreate: bool = False) -> None:
    """Load the GRIT models, size every Qdrant store to the embedding dimension, check existing collections
    (dimension, then recorded model: `check_index`); `recreate` empties the collections it writes to."""
    dims = set()
    for _, instance in grit_components(pipeline):
        instance.warm_up()
        if hasattr(instance, "embedder"):
            dims.add(instance.embedder.model.embedding_dim)
    if len(dims) > 1:
        raise EmbeddingDimensionError(f"the pipeline's embedders produce different dimensions {sorted(dims)}")
    written = _writers(pipeline)
    for store in document_stores(pipeline):
        if dims:
            store.embedding_dim = next(iter(dims))  # the client (and collection) are created lazily, on first use
        if recreate and any(store is w for w in written):
            store.recreate_index = True  # Haystack drops and creates the collection when it connects
        try:
            store.count_documents()  # opens the client, creates or validates the collection
        except ValueError as error:
            if "vector size" in str(error) or "dimension" in str(error):
                raise EmbeddingDimensionError(
                    f"Qdrant collection {store.index!r} at {_store_location(store)} does not match the model, "
                    f"which embeds in {store.embedding_dim} dimensions ({error}). Index into another data "
                    "directory or collection, or index again from scratch (`grit index --recreate`, "
                    "recreate=True).") from error
            raise
        except RuntimeError as error:  # a path= folder another process (or client) holds
            raise PipelineSetupError(f"cannot open Qdrant at {_store_location(store)}: {error}") from error
    check_index(pipeline, allow_model_mismatch=allow_model_mismatch)


def _qdrant_client(store):
    """The `qdrant_client` client of a connected `QdrantDocumentStore`: the store has no public accessor,
    and the collection metadata (where the manifest lives) has no store method."""
    store.count_documents()  # connects
    return store._client


def _embedders(pipeline: Pipeline) -> tuple[Any | None, Any | None]:
    """The pipeline's GRIT document embedder and text embedder (None where it has none)."""
    document = text = None
    for _, instance in grit_components(pipeline):
        module = type(instance).__module__
        if module.endswith("grit.document_embedder"):
            document = instance
        elif module.endswith("grit.text_embedder"):
            text = instance
    return document, text


def document_manifest(embedder) -> IndexManifest:
    """The manifest of what a `GritDocumentEmbedder` writes (model, settings, meta fields it embeds)."""
    return IndexManifest.for_embedder(embedder.embedder, meta_fields=embedder.meta_fields_to_embed,
                                      meta_separator=embedder.embedding_separator)


def check_index(pipeline: Pipeline, *, allow_model_mismatch: bool = False) -> IndexManifest | None:
    """Check every Qdrant collection of a pipeline against the model and settings its GRIT embedders use.

    A collection its `DocumentWriter` writes to must have been filled with the document embedder's model
    and settings (an empty one is stamped with them now); one its retriever queries must have been
    embedded by the text embedder's model, pooling and normalisation. A collection with points but no
    record of its model (made by an earlier version) fails too. `load_pipeline` calls this; call it
    yourself for pipelines built with plain `Pipeline.loads`.

    :param allow_model_mismatch: skip the comparison (stamping an empty collection still happens).
    :returns: the manifest the document embedder writes with (None if the pipeline has none).
    :raises IndexModelMismatchError: naming the recorded and the current model and settings.
    """
    document, text = _embedders(pipeline)
    written = _writers(pipeline)
    write_manifest_ = document_manifest(document) if document is not None else None
    for store in document_stores(pipeline):
        writes = any(store is w for w in written)
        current = write_manifest_ if writes else (
            IndexManifest.for_embedder(text.embedder) if text is not None else None)
        if current is None:
            continue
        client = _qdrant_client(store)
        stored = read_manifest(client, store.index)
        points = store.count_documents()
        where = f"Qdrant collection {store.index!r} at {_store_location(store)}"
        if not allow_model_mismatch:
            try:
                check_manifest(stored, current, purpose="write" if writes else "query", where=where, points=points)
            except IndexModelMismatchError as error:
                verdict = "Its vectors are not comparable with this model's" if stored is not None else (
                    "They are probably not comparable with this model's")
                raise IndexModelMismatchError(
                    f"{error}. {verdict}. Index into another data "
                    "directory or collection, index again from scratch with this model (`grit index --recreate`, "
                    "recreate=True), or, if you know the weights are the same (e.g. another path or dtype), "
                    "pass --allow-model-mismatch (allow_model_mismatch=True).",
                    stored=error.stored, current=error.current) from None
        if writes and stored is None and points == 0:
            write_manifest(client, store.index, current)
    return write_manifest_


def close_pipeline(pipeline: Pipeline) -> None:
    """Close the Qdrant clients (an embedded `path=` store admits one client at a time)."""
    for store in document_stores(pipeline):
        store.close()


def _store_nodes(name_or_path: str | os.PathLike, data_dir: str | os.PathLike | None,
                 qdrant_url: str | None) -> list[dict[str, Any]]:
    """Init parameters of every `QdrantDocumentStore` of a pipeline file, with the deployment knobs applied
    (the stores are built, not connected)."""
    pipeline = build_pipeline(name_or_path, data_dir=data_dir, qdrant_url=qdrant_url)
    return [store.to_dict()["init_parameters"] for store in document_stores(pipeline)]


def qdrant_target(name_or_path: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
                  qdrant_url: str | None = None):
    """The Qdrant collection an indexing pipeline writes to, as a `grit_components.distributed.QdrantTarget`
    (for the Ray job: the same collection, location and settings as the YAML's store)."""
    from grit_components.distributed import QdrantTarget

    nodes = _store_nodes(name_or_path, data_dir, qdrant_url)
    if len(nodes) != 1:
        raise PipelineSetupError(f"{name_or_path} has {len(nodes)} Qdrant stores; the Ray job writes to exactly one")
    params = nodes[0]
    if not (params.get("url") or params.get("path")):
        raise PipelineSetupError("the Ray job writes to a Qdrant server (url) or folder (path), not to "
                                 f"{params.get('location') or params.get('host') or 'memory'}")
    if params.get("path"):
        Path(params["path"]).mkdir(parents=True, exist_ok=True)
    api_key = params.get("api_key")
    return QdrantTarget(collection=params.get("index", "Document"), url=params.get("url"), path=params.get("path"),
                        api_key=os.environ.get("QDRANT_API_KEY") if api_key else None,
                        similarity=params.get("similarity", "cosine"), shard_number=params.get("shard_number"),
                        replication_factor=params.get("replication_factor"))


def indexed_points(name_or_path: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
                   qdrant_url: str | None = None) -> list[dict[str, Any]]:
    """The `meta` of every point in the Qdrant collections of a pipeline, read without loading a model or checking
    anything (a collection of another model or dimension opens too). For deciding what a collection holds."""
    from qdrant_client import QdrantClient

    metas: list[dict[str, Any]] = []
    for params in _store_nodes(name_or_path, data_dir, qdrant_url):
        if params.get("url"):
            client = QdrantClient(url=params["url"], api_key=os.environ.get("QDRANT_API_KEY"))
        elif params.get("path"):
            client = QdrantClient(path=params["path"])
        else:
            continue  # an in-memory store holds nothing yet
        try:
            collection = params.get("index", "Document")
            if not client.collection_exists(collection):
                continue
            offset = None
            while True:
                records, offset = client.scroll(collection, limit=1000, offset=offset, with_payload=["meta"],
                                                with_vectors=False)
                metas.extend((record.payload or {}).get("meta") or {} for record in records)
                if offset is None:
                    break
        finally:
            client.close()
    return metas
