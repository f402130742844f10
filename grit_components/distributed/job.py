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

import math
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grit_components.distributed.corpus import Chunker, Corpus
from grit_components.distributed.qdrant import QdrantTarget, points_by_source
from grit_components.distributed.report import JobReport
from grit_components.distributed.settings import EmbedderSettings, RayOptions
from grit_components.distributed.stages import EmbedActor, _Lookup, chunk_stage, write_batch, write_stage
from grit_components.indexing import IndexManifest


class RayUnavailableError(ConnectionError):
    """Ray is not installed, the address is wrong, or the cluster cannot run one actor."""


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
