"""The index job's stages. Each runs in Ray workers, so everything they hold must pickle.

- `chunk_stage` (tasks): corpus rows -> the caller's `Chunker` -> one "source" row per document, a "delete"
  row per stale point, an "upsert" row per chunk the collection lacks (the reconciliation `grit index`
  does per file);
- `EmbedActor` (`map_batches` with a fixed actor pool): embeds the "upsert" rows, one model per actor;
- `write_batch` / `write_stage`: stale points deleted, new ones upserted; returns stats rows for the report.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from grit_components.distributed.corpus import ChunkedSource, Chunker, Corpus, SourceDocument
from grit_components.distributed.qdrant import QdrantTarget, canonical_point_id, points_by_source, write_points
from grit_components.distributed.settings import EmbedderSettings
from grit_components.indexing import IndexManifest, point_id


def _row_columns() -> dict[str, list]:
    return {name: [] for name in ("op", "source", "doc_id", "point_id", "content", "meta", "status", "detail",
                                  "chunks")}


def _records(batch: Mapping[str, np.ndarray], corpus: Corpus) -> tuple[list[SourceDocument], list[ChunkedSource]]:
    """Corpus rows (JSON lines or Parquet records) -> documents, and rows that are not documents (with why)."""
    rows: list[Any]
    if corpus.kind in ("jsonl", "beir"):
        rows = []
        for line in batch["text"]:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                rows.append(ValueError(f"not valid JSON ({error.msg}): {line[:60]!r}"))
    else:
        columns = list(batch)
        rows = [{name: batch[name][i] for name in columns} for i in range(len(batch[columns[0]]))] if columns else []
    documents, bad = [], []
    for number, row in enumerate(rows):
        if isinstance(row, Exception):
            bad.append(ChunkedSource(f"<row {number}>", error=str(row)))
            continue
        if not isinstance(row, dict):
            bad.append(ChunkedSource(f"<row {number}>", error=f"a JSON {type(row).__name__}, not an object"))
            continue
        id_field = corpus.id_field or ("_id" if "_id" in row else "id")
        doc_id, text = row.get(id_field), row.get(corpus.text_field)
        if doc_id is None or (isinstance(doc_id, float) and doc_id != doc_id):
            wanted = repr(corpus.id_field) if corpus.id_field else "'_id' or 'id'"
            bad.append(ChunkedSource(f"<row {number}>", error=f"no {wanted} field (the document id)"))
            continue
        if not isinstance(text, str) or not text.strip():
            bad.append(ChunkedSource(str(doc_id), error=f"no text in field {corpus.text_field!r}"))
            continue
        meta = {key: _plain(value) for key, value in row.items() if key not in (id_field, corpus.text_field)}
        documents.append(SourceDocument(str(doc_id), text, meta))
    return documents, bad


def _plain(value: Any) -> Any:
    """Parquet values (numpy scalars and arrays) as JSON-able Python values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class _Lookup:
    """What the collection holds per source: asked from the server per batch, or read from the driver's
    snapshot (embedded Qdrant admits one client: the driver's)."""

    def __init__(self, target: QdrantTarget, snapshot_ref=None) -> None:
        self.target = target
        self.snapshot_ref = snapshot_ref
        self._snapshot: dict[str, set[str]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_snapshot": None}

    def __call__(self, sources: Sequence[str]) -> dict[str, set[str]]:
        if self.snapshot_ref is not None:
            if self._snapshot is None:
                import ray

                self._snapshot = ray.get(self.snapshot_ref)
            return {source: self._snapshot.get(source, set()) for source in sources}
        client = self.target.client()
        try:
            return points_by_source(client, self.target.collection, list(sources))
        finally:
            client.close()


def chunk_stage(batch: Mapping[str, np.ndarray], *, corpus: Corpus, chunker: Chunker, manifest: dict[str, Any],
                lookup: Callable[[Sequence[str]], dict[str, set[str]]]) -> dict[str, np.ndarray]:
    """Corpus rows -> one "source" row per document, a "delete" row per stale point, an "upsert" row per
    chunk the collection lacks (the reconciliation `grit index` does per file)."""
    index = IndexManifest.from_dict(manifest)
    if corpus.kind == "files":
        sources = chunker.chunk_files([str(p) for p in batch["path"]], index)
    else:
        documents, bad = _records(batch, corpus)
        sources = (chunker.chunk_documents(documents, index) if documents else []) + bad
    held = lookup([s.source for s in sources if s.error is None])
    out = _row_columns()

    def row(op: str, source: str, *, doc_id: str = "", pid: str = "", content: str = "", meta: str = "",
            status: str = "", detail: str = "", chunks: int = 0) -> None:
        for name, value in (("op", op), ("source", source), ("doc_id", doc_id), ("point_id", pid),
                            ("content", content), ("meta", meta), ("status", status), ("detail", detail),
                            ("chunks", chunks)):
            out[name].append(value)

    for item in sources:
        if item.error is not None:
            row("source", item.source, status="failed", detail=item.error)
            continue
        have = held.get(item.source, set())
        want = {canonical_point_id(point_id(chunk.id)): chunk for chunk in item.chunks}
        stale = sorted(have - set(want))
        missing = [(pid, chunk) for pid, chunk in want.items() if pid not in have]
        status = "added" if not have else "replaced" if stale else "resumed" if missing else "unchanged"
        row("source", item.source, status=status, detail=item.note or "", chunks=len(item.chunks))
        for pid in stale:
            row("delete", item.source, pid=pid)
        for pid, chunk in missing:
            row("upsert", item.source, doc_id=chunk.id, pid=pid, content=chunk.content,
                meta=json.dumps(chunk.meta, ensure_ascii=False, default=str))
    return {name: np.array(values, dtype=np.int64 if name == "chunks" else object) for name, values in out.items()}


class EmbedActor:
    """Embeds the "upsert" rows of a batch; one model per actor, loaded through the registry.

    Passes every other row through (with a zero vector), and adds who embedded each row and how long the
    batch took (its share per row), for the per-actor throughput of the report.
    """

    def __init__(self, settings: EmbedderSettings, manifest: dict[str, Any], kv_cache_directory: str | None,
                 threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.settings = settings
        self.manifest = IndexManifest.from_dict(manifest)
        self.store_kv_cache = kv_cache_directory is not None
        self.embedder = settings.embedder(kv_cache_directory=kv_cache_directory)
        self.embedder.warm_up()
        if self.embedder.model.fingerprint != self.manifest.fingerprint:
            # another node resolved the spec to other weights (or another dtype): its points would lie
            raise RuntimeError(f"{socket.gethostname()} loaded {settings.model!r} with fingerprint "
                               f"{self.embedder.model.fingerprint[:12]}, the job indexes with "
                               f"{self.manifest.fingerprint[:12]}: give every node the same model and dtype")
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.threads = threads

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ops = batch["op"]
        rows = [i for i, op in enumerate(ops) if op == "upsert"]
        vectors = np.zeros((len(ops), self.manifest.dimension), dtype=np.float32)
        seconds = 0.0
        if rows:
            texts = [self.manifest.text_to_embed(batch["content"][i], json.loads(batch["meta"][i])) for i in rows]
            start = time.perf_counter()
            vectors[rows] = self.embedder.embed_documents(texts, store_kv_cache=self.store_kv_cache)
            seconds = time.perf_counter() - start
        batch = dict(batch)
        batch["vector"] = vectors
        batch["actor"] = np.array([self.name] * len(ops), dtype=object)
        share = np.zeros(len(ops), dtype=np.float64)
        if rows:
            share[rows] = seconds / len(rows)
        batch["embed_seconds"] = share
        batch["threads"] = np.full(len(ops), self.threads, dtype=np.int64)
        return batch


def write_batch(client, collection: str, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Delete the batch's stale points, upsert its new ones; return its stats rows (sources, per actor)."""
    ops = batch["op"]
    deleted, written = write_points(
        client, collection,
        delete_ids=[batch["point_id"][i] for i, op in enumerate(ops) if op == "delete"],
        points=[(batch["point_id"][i], batch["doc_id"][i], batch["content"][i], json.loads(batch["meta"][i]),
                 batch["vector"][i]) for i, op in enumerate(ops) if op == "upsert"])
    stats = {name: [] for name in ("kind", "source", "status", "detail", "chunks", "actor", "seconds", "threads",
                                   "written", "deleted")}

    def add(**values: Any) -> None:
        for name in stats:
            stats[name].append(values.get(name, 0 if name in ("chunks", "seconds", "threads", "written",
                                                              "deleted") else ""))

    for i, op in enumerate(ops):
        if op == "source":
            add(kind="source", source=batch["source"][i], status=batch["status"][i], detail=batch["detail"][i],
                chunks=int(batch["chunks"][i]))
    per_actor: dict[str, list] = {}
    for i, op in enumerate(ops):
        entry = per_actor.setdefault(str(batch["actor"][i]), [0, 0.0, int(batch["threads"][i])])
        if op == "upsert":
            entry[0] += 1
            entry[1] += float(batch["embed_seconds"][i])
    for number, (actor, (chunks, seconds, threads)) in enumerate(per_actor.items()):
        # the batch's write counts go on its first actor row, so each is counted once
        add(kind="actor", actor=actor, chunks=chunks, seconds=seconds, threads=threads,
            written=written if number == 0 else 0, deleted=deleted if number == 0 else 0)
    return {name: np.array(values, dtype=object) for name, values in stats.items()}


def write_stage(batch: Mapping[str, np.ndarray], *, target: QdrantTarget) -> dict[str, np.ndarray]:
    """`write_batch` with its own client (a task writing to a Qdrant server or cluster)."""
    client = target.client()
    try:
        return write_batch(client, target.collection, batch)
    finally:
        client.close()
