"""A Ray Data job that indexes a corpus: read, chunk, embed with an actor pool, write points to Qdrant.

```
files | JSONL | BEIR | Parquet
  -> chunk stage (tasks): the caller's `Chunker` (the Haystack converters and splitter of the indexing
     YAML), deterministic chunk ids, and a look-up of what the collection already holds per source:
     one "source" row per document, a "delete" row per stale point, an "upsert" row per missing chunk
  -> embed stage (`map_batches` with `EmbedActor`, a fixed pool: the model is loaded once per actor
     through the registry; optionally each chunk's KV cache goes to a shared directory)
  -> write stage: stale points deleted, new ones upserted in batches (tasks for a server or cluster;
     the driver for embedded Qdrant, which admits one client)
  -> the driver aggregates small stats rows into a progress bar and the `JobReport`
```

Ids are the same as `grit index` writes (`grit_components.indexing`), so a re-run, a retried task or a
killed job never duplicates a point and embeds only what the collection lacks. Before any embedding,
the job connects to Qdrant and Ray, loads the model once in a probe task with the actors' resources
(its fingerprint names the points and is checked against the collection), so a wrong address, an
unreachable Qdrant or another model's collection fail at once with a clear error.

Framework-free: the chunker comes from the caller (the CLI passes the Haystack one).
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from grit_components._checks import check_choice, check_float, check_int, check_str
from grit_components.distributed.qdrant import (
    QdrantTarget,
    canonical_point_id,
    points_by_source,
    write_points,
)
from grit_components.indexing import IndexManifest, point_id

CORPUS_KINDS = ("files", "jsonl", "beir", "parquet")
STATUSES = ("added", "replaced", "resumed", "unchanged", "failed")


class RayUnavailableError(ConnectionError):
    """Ray is not installed, the address is wrong, or the cluster cannot run one actor."""


# --- what the caller provides ---


@dataclass(frozen=True)
class SourceDocument:
    """One corpus document before chunking: where it comes from (its id), its text and its meta."""

    source: str
    content: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Chunk:
    """One chunk as the index stores it: deterministic document id, text, meta (with `source`)."""

    id: str
    content: str
    meta: dict[str, Any]


@dataclass
class ChunkedSource:
    """The chunks of one source document or file, or why it has none (`error`)."""

    source: str
    chunks: list[Chunk] = field(default_factory=list)
    error: str | None = None
    note: str | None = None


class Chunker(Protocol):
    """Turns files or corpus documents into named chunks, exactly as `grit index` does. Must pickle (it runs
    in Ray tasks). The Haystack integration provides one built from the indexing YAML."""

    def chunk_files(self, paths: Sequence[str], manifest: IndexManifest) -> list[ChunkedSource]: ...

    def chunk_documents(self, documents: Sequence[SourceDocument], manifest: IndexManifest) -> list[ChunkedSource]: ...


@dataclass(frozen=True)
class EmbedderSettings:
    """How chunks are embedded: the `GritDocumentEmbedder` settings of the indexing YAML, and the model.

    :param model: hub id, local directory, GGUF file or packaged alias (each actor loads it once).
    :param batch_size: texts per forward pass inside an actor.
    Other parameters as in `grit_components.GritEmbedder` and `IndexManifest`.
    """

    model: str
    instruction: str = ""
    max_length: int = 512
    normalize: bool = True
    meta_fields: tuple[str, ...] = ()
    meta_separator: str = "\n"
    batch_size: int = 32
    truncation: str = "warn"
    device: str | None = None
    dtype: str | None = None

    def __post_init__(self) -> None:
        check_str("model", self.model, allow_empty=False)
        check_str("instruction", self.instruction)
        check_int("max_length", self.max_length, minimum=2)
        check_int("batch_size", self.batch_size, minimum=1)
        check_choice("truncation", self.truncation, ("warn", "error"))
        object.__setattr__(self, "meta_fields", tuple(self.meta_fields))

    def embedder(self, *, kv_cache_directory: str | None = None):
        from grit_components.components import GritEmbedder

        return GritEmbedder(self.model, document_instruction=self.instruction, batch_size=self.batch_size,
                            max_length=self.max_length, normalize=self.normalize, truncation=self.truncation,
                            device=self.device, dtype=self.dtype, kv_cache_directory=kv_cache_directory,
                            # a batch job reads no cache back: keep them on disk only
                            kv_cache_max_bytes=0 if kv_cache_directory else None)

    def manifest(self, embedder) -> IndexManifest:
        return IndexManifest.for_embedder(embedder, meta_fields=self.meta_fields, meta_separator=self.meta_separator)


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the job runs.

    :param address: None or "local" (start a local Ray instance), "auto" (the cluster this machine belongs
        to), or a cluster address ("ray://head:10001", "head:6379").
    :param actors: embedding actors (each loads the model once).
    :param num_cpus: CPUs per actor (also its torch threads).
    :param num_gpus: GPUs per actor (fractions share a GPU).
    :param batch_size: chunks per actor call.
    :param write_batch_size: points per Qdrant write.
    """

    address: str | None = None
    actors: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    batch_size: int = 64
    write_batch_size: int = 256

    def __post_init__(self) -> None:
        if self.address is not None:
            check_str("address", self.address, allow_empty=False)
        check_int("actors", self.actors, minimum=1)
        check_float("num_cpus", self.num_cpus, minimum=0, exclusive_minimum=True)
        check_float("num_gpus", self.num_gpus, minimum=0)
        check_int("batch_size", self.batch_size, minimum=1)
        check_int("write_batch_size", self.write_batch_size, minimum=1)

    @property
    def local(self) -> bool:
        return self.address in (None, "local")


@dataclass(frozen=True)
class Corpus:
    """What to index.

    :param kind: "files" (converted by the chunker), "jsonl" (one JSON object per line), "beir" (a folder
        with corpus.jsonl) or "parquet".
    :param paths: the files (for "beir": the folder).
    :param text_field: field holding a document's text (JSONL, BEIR, Parquet).
    :param id_field: field holding its id: the chunks' `source`; "_id" (BEIR), else "id" if present.
    """

    kind: str
    paths: tuple[str, ...]
    text_field: str = "text"
    id_field: str | None = None

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, CORPUS_KINDS)
        # absolute: workers run in other folders (or on other machines, where the corpus must be mounted
        # at the same path), and a file's absolute path is its chunks' source
        object.__setattr__(self, "paths", tuple(str(Path(p).expanduser().resolve()) for p in self.paths))
        if not self.paths:
            raise ValueError("paths must name at least one file or folder")
        for path in self.paths:
            if not Path(path).exists():
                raise ValueError(f"{path} does not exist")
        if self.kind == "beir" and not (Path(self.paths[0]) / "corpus.jsonl").is_file():
            raise ValueError(f"{self.paths[0]} is not a BEIR folder: it has no corpus.jsonl")

    @classmethod
    def detect(cls, paths: Sequence[str | os.PathLike]) -> Corpus | None:
        """A JSONL, BEIR or Parquet corpus if `paths` are one, else None (files for the chunker to convert)."""
        paths = [Path(p) for p in paths]
        if len(paths) == 1 and paths[0].is_dir() and (paths[0] / "corpus.jsonl").is_file():
            return cls("beir", (str(paths[0]),))
        if paths and all(p.is_file() and p.suffix.lower() == ".jsonl" for p in paths):
            return cls("jsonl", tuple(str(p) for p in paths))
        if paths and all(p.suffix.lower() == ".parquet" or (p.is_dir() and any(p.glob("*.parquet"))) for p in paths):
            return cls("parquet", tuple(str(p) for p in paths))
        return None

    def read_paths(self) -> list[str]:
        return [str(Path(self.paths[0]) / "corpus.jsonl")] if self.kind == "beir" else list(self.paths)


# --- the report ---


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


# --- stages (each runs in Ray workers; everything they hold must pickle) ---


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


# --- the driver ---


def _check_reachable(address: str) -> None:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise RayUnavailableError(f"Ray address {address!r} is none of 'local', 'auto', host:port or ray://host:port")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as error:
        raise RayUnavailableError(f"cannot reach the Ray cluster at {address!r}: {error}") from error


def connect_ray(options: RayOptions) -> None:
    """Join the Ray cluster of `options.address` (or start a local instance); reuse one already joined."""
    try:
        import ray
    except ModuleNotFoundError as error:
        raise RayUnavailableError("Ray is not installed: pip install 'grit-components[ray]'") from error
    if not ray.is_initialized():
        if not options.local and options.address != "auto":
            _check_reachable(options.address)  # ray.init retries an unreachable address for minutes
        try:
            if options.local:
                # One logical CPU more than the actors take, so the chunk and write tasks never wait for
                # an actor to finish (they are light next to embedding; the OS shares the cores).
                cpus = max(os.cpu_count() or 1, math.ceil(options.actors * options.num_cpus) + 1)
                ray.init(num_cpus=cpus, include_dashboard=False, logging_level="warning")
            else:
                ray.init(address=options.address, logging_level="warning")
        except Exception as error:  # noqa: BLE001 - ConnectionError, a bad address format, a timeout
            where = "a local Ray instance" if options.local else f"the Ray cluster at {options.address!r}"
            raise RayUnavailableError(f"cannot start or join {where}: {error}") from error
    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if options.local and (options.num_cpus > cpus - 1 or options.num_gpus > gpus):
        raise RayUnavailableError(f"each actor asks for {options.num_cpus:g} CPUs and {options.num_gpus:g} GPUs, "
                                  f"but this Ray instance has {cpus:g} CPUs (one is kept for reading and chunking) "
                                  f"and {gpus:g} GPUs")


def _probe(settings: EmbedderSettings, kv_cache_directory: str | None) -> dict[str, Any]:
    embedder = settings.embedder(kv_cache_directory=kv_cache_directory)
    try:
        return settings.manifest(embedder).to_dict()
    finally:
        embedder.close()


def probe_manifest(settings: EmbedderSettings, options: RayOptions, kv_cache_directory: str | None) -> IndexManifest:
    """Load the model once where an actor would run (same resources, so the same device and dtype) and
    return the manifest every actor must match: the model is checked before any embedding starts."""
    import ray

    task = ray.remote(num_cpus=options.num_cpus, num_gpus=options.num_gpus, max_retries=0)(_probe)
    try:
        return IndexManifest.from_dict(ray.get(task.remote(settings, kv_cache_directory)))
    except ray.exceptions.RayError as error:  # the task raised, or its worker died (out of memory, ...)
        cause = getattr(error, "cause", None) or error
        raise RuntimeError(f"a Ray worker could not load the model {settings.model!r}: {cause}") from None


ProgressCallback = Callable[[JobReport], None]


def run_index_job(corpus: Corpus, chunker: Chunker, settings: EmbedderSettings, target: QdrantTarget,
                  options: RayOptions = RayOptions(), *, kv_cache_directory: str | os.PathLike | None = None,
                  recreate: bool = False, allow_model_mismatch: bool = False,
                  on_progress: ProgressCallback | None = None) -> JobReport:
    """Index `corpus` into `target` on Ray (see the module docstring); returns the report.

    :param corpus: what to read.
    :param chunker: converts and splits as the indexing YAML does (Haystack integration: `RayChunker`).
    :param settings: the model and embedding settings (the YAML's `GritDocumentEmbedder`).
    :param target: the Qdrant collection.
    :param options: Ray address, actors and their resources, batch sizes.
    :param kv_cache_directory: also store each chunk's KV cache (embedding pass) there, in the KV store's
        file format; a folder every actor and every serving replica sees. Needs `settings.instruction == ""`.
    :param recreate: delete the collection first (after a model change).
    :param allow_model_mismatch: write into a collection recorded with another model or settings anyway.
    :param on_progress: called with the report so far after every written batch.
    :raises QdrantUnavailableError: Qdrant cannot be reached (before any embedding).
    :raises RayUnavailableError: Ray cannot be started or joined (before any embedding).
    :raises IndexModelMismatchError: the collection holds another model's vectors (before any embedding).
    """
    start = time.perf_counter()
    if kv_cache_directory is not None:
        if settings.instruction:
            raise ValueError("kv_cache_directory needs instruction='' (cached documents are in GRIT document "
                             "format, `BOS <|embed|>\\n{text}`)")
        kv_cache_directory = str(Path(kv_cache_directory).expanduser().resolve())
        Path(kv_cache_directory).mkdir(parents=True, exist_ok=True)
    client = target.client()  # fails fast on an unreachable server
    try:
        connect_ray(options)
        import ray
        import ray.data

        manifest = probe_manifest(settings, options, kv_cache_directory)
        target.prepare(client, manifest, recreate=recreate, allow_model_mismatch=allow_model_mismatch)
        if target.embedded:
            lookup = _Lookup(target, ray.put(points_by_source(client, target.collection)))
        else:
            client.close()
            client = None
            lookup = _Lookup(target)
        report = JobReport(manifest=manifest, setup_seconds=time.perf_counter() - start)

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the caller shows one bar; Ray's per-operator bars are noise here
        context.print_on_execution_start = False
        if corpus.kind == "files":
            dataset = ray.data.from_items([{"path": p} for p in corpus.paths],
                                          override_num_blocks=max(1, min(len(corpus.paths), 64)))
        elif corpus.kind == "parquet":
            dataset = ray.data.read_parquet(list(corpus.paths))
        else:
            dataset = ray.data.read_text(corpus.read_paths())
        dataset = dataset.map_batches(chunk_stage, batch_size=16 if corpus.kind == "files" else 256,
                                      fn_kwargs={"corpus": corpus, "chunker": chunker,
                                                 "manifest": manifest.to_dict(), "lookup": lookup})
        dataset = dataset.map_batches(
            EmbedActor, compute=ray.data.ActorPoolStrategy(size=options.actors), batch_size=options.batch_size,
            num_cpus=options.num_cpus, num_gpus=options.num_gpus or None,
            fn_constructor_kwargs={"settings": settings, "manifest": manifest.to_dict(),
                                   "kv_cache_directory": kv_cache_directory,
                                   "threads": max(1, int(options.num_cpus))})
        if target.embedded:
            for batch in dataset.iter_batches(batch_size=options.write_batch_size):
                report.add(write_batch(client, target.collection, batch))
                if on_progress is not None:
                    on_progress(report)
        else:
            written = dataset.map_batches(write_stage, batch_size=options.write_batch_size,
                                          fn_kwargs={"target": target})
            for stats in written.iter_batches(batch_size=None):
                report.add(stats)
                if on_progress is not None:
                    on_progress(report)
        if client is None:
            client = target.client()
        report.points_in_collection = client.count(target.collection, exact=True).count
        report.seconds = time.perf_counter() - start
        return report
    finally:
        if client is not None:
            client.close()

