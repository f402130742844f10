# SPDX-FileCopyrightText: 2026-present grit-components developers
#
# SPDX-License-Identifier: Apache-2.0
"""Load, configure and run the GRIT Haystack YAML pipelines (what `grit index/ask/run/demo` and the hayhooks
deployment use). The YAML files (`pipelines/` in the source tree) ship beside this module.

The YAML files stay plain Haystack: `Pipeline.loads` reads them without this module. What this module
adds is the deployment knobs a YAML file cannot express, applied while Haystack builds the pipeline
(`deployment_callbacks`, Haystack's `DeserializationCallbacks`):

- the data directory: every embedded Qdrant store (`path: .grit/qdrant`) and KV cache folder
  (`kv_cache_directory: .grit/kv`) moves under `data_dir` (`--data-dir`, or `GRIT_DATA_DIR`);
- a Qdrant server: `qdrant_url` (`--qdrant-url`, or `GRIT_QDRANT_URL`) replaces `path`/`location` of
  every `QdrantDocumentStore` by `url` (the API key, if any, comes from `QDRANT_API_KEY` as usual);
- the model (`--model`) and query instruction (`--instruction`) of every GRIT component;
- the store's `embedding_dim`, set from the loaded model, and checked against an existing collection
  before anything is written (`EmbeddingDimensionError`);
- the index's model: every collection records the model and embedding settings that filled it
  (`grit_components.indexing.IndexManifest`, stored at the first write); loading a pipeline compares
  them with its GRIT embedders and raises `IndexModelMismatchError` naming both on any difference.

Indexing files (incrementally, resumably, with a per-file report) is `indexing.index_files`,
re-exported here.

It also times each component of a run (`component_timings`) from Haystack's tracing spans, next to
whatever tracer is enabled (OpenTelemetry, Langfuse, hayhooks' trace buffer), which keeps every span.

Imports Haystack: import this module only where Haystack is installed.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from haystack import Document, Pipeline, logging, tracing
from haystack.core.serialization import DeserializationCallbacks
from haystack.dataclasses import ChatMessage
from haystack.tracing.tracer import NullTracer

from grit_components._checks import check_unicode
from grit_components.indexing import IndexManifest, IndexModelMismatchError, check_manifest, read_manifest, write_manifest
from haystack_integrations.common.grit.component import GritModelComponent
from haystack_integrations.common.grit.indexing import (
    FILE_SUFFIXES,
    FileOutcome,
    FileSelection,
    IndexingError,
    IndexingPreprocessor,
    IndexReport,
    RayChunker,
    index_files,
    select_files,
    source_of,
)

logger = logging.getLogger(__name__)
BUILTIN_PIPELINES = ("indexing", "indexing_doc_cache", "rag", "rag_rerank", "rag_doc_cache")
QUESTION_INPUTS = ("text", "query", "question")
DECLARED_IO_ATTRIBUTE = "grit_declared_io"  # set by load_pipeline: the YAML's hayhooks inputs/outputs
ENV_DATA_DIR = "GRIT_DATA_DIR"
ENV_QDRANT_URL = "GRIT_QDRANT_URL"


class PipelineSetupError(ValueError):
    """A pipeline cannot run as configured (missing file, bad input, incompatible store)."""


class EmbeddingDimensionError(PipelineSetupError):
    """The model's embedding dimension differs from the vectors of an existing Qdrant collection."""


class ComponentInputError(PipelineSetupError):
    """A component rejected its input while the pipeline ran (a ValueError or TypeError, e.g. a prompt over
    the context length); the one-line message names the component and says what is wrong."""


def pipelines_dir() -> Path:
    """The folder of the bundled YAML pipelines: `yaml/` beside this module in an installed wheel, or
    `pipelines/` at the root of a source checkout (editable install)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "yaml", here.parents[4] / "pipelines"):
        if candidate.is_dir():
            return candidate
    raise PipelineSetupError("the bundled pipelines folder was not found; pass a YAML file path")


def pipeline_path(name_or_path: str | os.PathLike) -> Path:
    """A YAML path as given, or a bundled pipeline by name (`rag`, `rag_rerank`, ...)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise PipelineSetupError(f"pipeline file {path} does not exist")
        return path
    if str(name_or_path) not in BUILTIN_PIPELINES:
        raise PipelineSetupError(f"unknown pipeline {str(name_or_path)!r}: give a .yaml file or one of "
                                 f"{', '.join(BUILTIN_PIPELINES)}")
    return pipelines_dir() / f"{name_or_path}.yaml"


def _moved_store(store: Any, *, data_dir: str | os.PathLike | None, qdrant_url: str | None) -> Any:
    """`store` again, on the Qdrant server `qdrant_url`, or with its embedded folder under `data_dir`."""
    data = store.to_dict()
    params = data["init_parameters"]
    if qdrant_url:
        for key in ("path", "location", "host"):
            params.pop(key, None)
        params["url"] = qdrant_url
    elif data_dir is not None and params.get("path"):
        params["path"] = str(Path(data_dir) / "qdrant")
    else:
        return store
    return type(store).from_dict(data)  # its client opens on first use: nothing was opened yet


def deployment_callbacks(*, data_dir: str | os.PathLike | None = None, qdrant_url: str | None = None,
                         model: str | None = None, instruction: str | None = None) -> DeserializationCallbacks:
    """Haystack deserialization callbacks applying the deployment knobs (see the module docstring) to every
    component as `Pipeline.from_dict`/`loads` builds it: `Pipeline.loads(text, callbacks=...)`."""
    from haystack_integrations.components.embedders.grit import GritTextEmbedder
    from haystack_integrations.document_stores.qdrant import QdrantDocumentStore

    def component_pre_init(name: str, component_class: type, init_params: dict[str, Any]) -> None:
        for key, value in init_params.items():
            if isinstance(value, QdrantDocumentStore):
                init_params[key] = _moved_store(value, data_dir=data_dir, qdrant_url=qdrant_url)
        if not issubclass(component_class, GritModelComponent):
            return
        if model is not None:
            init_params["model"] = model
        if data_dir is not None and init_params.get("kv_cache_directory"):
            init_params["kv_cache_directory"] = str(Path(data_dir) / "kv")
        if instruction is not None and issubclass(component_class, GritTextEmbedder):
            init_params["instruction"] = instruction

    return DeserializationCallbacks(component_pre_init=component_pre_init)


def build_pipeline(name_or_path: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
                   qdrant_url: str | None = None, model: str | None = None,
                   instruction: str | None = None) -> Pipeline:
    """A pipeline file built with the deployment knobs applied (`deployment_callbacks`); nothing is loaded
    or opened yet (models load at `warm_up`, Qdrant clients on first use).

    `data_dir` and `qdrant_url` default to `GRIT_DATA_DIR` and `GRIT_QDRANT_URL`; the data directory is
    created.
    """
    path = pipeline_path(name_or_path)
    data_dir = data_dir if data_dir is not None else os.environ.get(ENV_DATA_DIR) or None
    qdrant_url = qdrant_url if qdrant_url is not None else os.environ.get(ENV_QDRANT_URL) or None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise PipelineSetupError(f"{path} is not valid YAML: {error}") from error
    except UnicodeDecodeError as error:
        raise PipelineSetupError(f"{path} is not UTF-8 text: {error}") from error
    check_definition(data, path)
    if data_dir is not None:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
    pipeline = _build(data, path, deployment_callbacks(data_dir=data_dir, qdrant_url=qdrant_url, model=model,
                                                       instruction=instruction))
    setattr(pipeline, DECLARED_IO_ATTRIBUTE, declared_io(data))
    return pipeline


def pipeline_data(name_or_path: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
                  qdrant_url: str | None = None, model: str | None = None,
                  instruction: str | None = None) -> dict[str, Any]:
    """A pipeline file as a dict (`Pipeline.to_dict`) with the deployment knobs applied (`build_pipeline`):
    nothing is loaded. What the Ray job ships to its workers, which build their own parts of it."""
    return build_pipeline(name_or_path, data_dir=data_dir, qdrant_url=qdrant_url, model=model,
                          instruction=instruction).to_dict()


def load_pipeline(name_or_path: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
                  qdrant_url: str | None = None, model: str | None = None, instruction: str | None = None,
                  allow_model_mismatch: bool = False, recreate: bool = False) -> Pipeline:
    """Build a YAML pipeline with the deployment knobs applied, GRIT models loaded and stores checked.

    `data_dir` and `qdrant_url` default to `GRIT_DATA_DIR` and `GRIT_QDRANT_URL`. Every Qdrant store's
    `embedding_dim` is set to the GRIT model's dimension, and an existing collection with another
    dimension raises `EmbeddingDimensionError` here, before anything is written. The collection's
    recorded model and settings are checked too (`check_index`).

    :param allow_model_mismatch: use a collection indexed with another model or settings anyway (for
        weights you know to be the same, e.g. loaded from another path or in another dtype).
    :param recreate: empty the collections this pipeline writes to (and record its model afresh).
    """
    pipeline = build_pipeline(name_or_path, data_dir=data_dir, qdrant_url=qdrant_url, model=model,
                              instruction=instruction)
    try:
        prepare(pipeline, allow_model_mismatch=allow_model_mismatch, recreate=recreate)
    except BaseException:
        close_pipeline(pipeline)  # release an embedded store's folder lock
        raise
    return pipeline


def check_definition(data: Any, path: str | os.PathLike = "the pipeline") -> None:
    """Reject what `Pipeline.from_dict` would fail on obscurely (an empty or list-shaped file, components that
    are not mappings) and what would only fail in the middle of a run (a `top_k` below 1)."""
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise PipelineSetupError(f"{path} is not a pipeline definition: expected a mapping with `components` and "
                                 f"`connections`, got {got}")
    components = data.get("components", {})
    if not isinstance(components, dict):
        raise PipelineSetupError(f"{path}: `components` must be a mapping of name to component, "
                                 f"not a {type(components).__name__}")
    for name, definition in components.items():
        if not isinstance(definition, dict):
            raise PipelineSetupError(f"{path}: component {name!r} must be a mapping with `type` and "
                                     f"`init_parameters`, not a {type(definition).__name__}")
        params = definition.get("init_parameters") or {}
        if not isinstance(params, dict):
            raise PipelineSetupError(f"{path}: `init_parameters` of component {name!r} must be a mapping")
        top_k = params.get("top_k")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise PipelineSetupError(f"{path}: component {name!r}: top_k must be an int >= 1, got {top_k!r}")
    if not isinstance(data.get("connections", []), list):
        raise PipelineSetupError(f"{path}: `connections` must be a list of sender/receiver pairs")


def _build(data: dict, path: Path, callbacks: DeserializationCallbacks | None = None) -> Pipeline:
    """`Pipeline.from_dict`, with a definition error or a component's rejected setting as a `PipelineSetupError`
    naming the file (a component's own bug keeps its traceback)."""
    from haystack.core.errors import DeserializationError, PipelineError

    try:
        return Pipeline.from_dict(data, callbacks=callbacks)
    except PipelineError as error:
        raise PipelineSetupError(f"{path}: {error}") from error
    except DeserializationError as error:
        cause = error.__cause__
        if cause is None:  # e.g. a component type outside Haystack's deserialization allowlist
            raise PipelineSetupError(f"{path}: {error}") from error
        if isinstance(cause, (ValueError, TypeError, OSError, ImportError)):
            name = re.match(r"Couldn't deserialize component '([^']*)'", str(error))
            where = f"component {name.group(1)!r}: " if name else ""
            raise PipelineSetupError(f"{path}: {where}{cause}") from error
        raise


def run(pipeline: Pipeline, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """`pipeline.run(data, **kwargs)`; a component that rejects its input (ValueError, TypeError) raises
    `ComponentInputError` naming it instead of Haystack's multi-line `PipelineRuntimeError`. Any other failure
    (an unreachable Qdrant server, a bug) is raised as it is: it is not the input's fault."""
    from haystack.core.errors import PipelineRuntimeError

    try:
        return pipeline.run(data, **kwargs)
    except PipelineRuntimeError as error:
        cause = error.__cause__
        if isinstance(cause, (ValueError, TypeError)):
            where = f"component {error.component_name!r}" if error.component_name else "the pipeline"
            raise ComponentInputError(f"{where}: {cause}") from error
        raise


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


def collect_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files to index: given files as they are, folders searched recursively for .txt/.md/.pdf, sorted."""
    try:
        return select_files(paths).files
    except IndexingError as error:
        raise PipelineSetupError(str(error)) from error


def _open_inputs(pipeline: Pipeline) -> dict[str, dict[str, dict]]:
    return pipeline.inputs()


def declared_io(data: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    """The hayhooks `inputs`/`outputs` a YAML pipeline declares, as {"inputs"|"outputs": {name: ["component.socket", ...]}}.

    The same declarations `hayhooks pipeline deploy-yaml` reads: one input name (`question`) may fan out to
    several sockets. Missing sections are empty.
    """
    declared: dict[str, dict[str, list[str]]] = {"inputs": {}, "outputs": {}}
    for section in declared:
        entries = data.get(section) or {}
        if not isinstance(entries, dict):
            raise PipelineSetupError(f"the pipeline's `{section}` must map names to component.socket paths")
        for name, targets in entries.items():
            targets = [targets] if isinstance(targets, str) else list(targets or [])
            if not targets or not all(isinstance(t, str) and "." in t for t in targets):
                raise PipelineSetupError(f"`{section}.{name}` must be a component.socket path or a list of them")
            declared[section][name] = targets
    return declared


def expand_declared_inputs(pipeline: Pipeline, data: dict[str, Any]) -> dict[str, Any]:
    """`data` with every top-level key that names a declared input (`question`, `sources`) given to the sockets
    it fans out to, as hayhooks does: {"question": q} -> {"query_embedder": {"text": q}, ...}. Other entries
    stay as they are (Haystack gives a top-level name to every component with that open input)."""
    declared = (getattr(pipeline, DECLARED_IO_ATTRIBUTE, None) or {}).get("inputs", {})
    expanded: dict[str, Any] = {}
    for key, value in data.items():
        if key in declared and not isinstance(value, dict):
            for target in declared[key]:
                component_name, socket = target.split(".", 1)
                expanded.setdefault(component_name, {})[socket] = value
        elif isinstance(value, dict) and isinstance(expanded.get(key), dict):
            expanded[key].update(value)
        else:
            expanded[key] = value
    return expanded


def _question_targets(pipeline: Pipeline) -> list[tuple[str, str]]:
    """(component, socket) pairs that take the question: the declared `question` input, else every open
    `text`, `query` or `question` input (a pipeline built without `load_pipeline` or declarations)."""
    declared = getattr(pipeline, DECLARED_IO_ATTRIBUTE, None) or {}
    targets = declared.get("inputs", {}).get("question")
    if targets:
        return [tuple(target.split(".", 1)) for target in targets]  # type: ignore[misc]
    return [(name, socket) for name, sockets in _open_inputs(pipeline).items()
            for socket in QUESTION_INPUTS if socket in sockets]


ROLES = ("system", "user", "assistant")
HISTORY_VARIABLE = "grit_history"
HISTORY_LEAD = "Earlier in this conversation:"


def check_history(history: Sequence[dict[str, Any]] | None) -> list[dict[str, str]]:
    """`history` as {"role", "content"} dicts with roles system, user or assistant (a ValueError/TypeError
    naming the bad entry otherwise)."""
    if history is None:
        return []
    if isinstance(history, (str, dict)) or not isinstance(history, Sequence):
        raise TypeError("history must be a list of {'role', 'content'} messages")
    checked = []
    for i, message in enumerate(history):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise TypeError(f"history[{i}] must be a dict with str 'role' and 'content'")
        if message.get("role") not in ROLES:
            raise ValueError(f"history[{i}] has role {message.get('role')!r}; use system, user or assistant")
        check_unicode(f"history[{i}]['content']", message["content"])  # the tokenizer's own error names neither
        checked.append({"role": message["role"], "content": message["content"]})
    return checked


def _history_template(template: Any, history: list[dict[str, str]]) -> Any:
    """A ChatPromptBuilder template with the conversation's earlier turns before it. The turns' texts are
    template variables, never template text, so a message containing `{{` is shown as written."""
    turns = [(m["role"], f"{{{{ {HISTORY_VARIABLE}[{i}] }}}}") for i, m in enumerate(history)]
    if isinstance(template, str):
        return "".join(f'{{% message role="{role}" %}}{text}{{% endmessage %}}\n' for role, text in turns) + template
    prefix = [ChatMessage.from_assistant(history[i]["content"]) if role == "assistant"
              else ChatMessage.from_system(text) if role == "system" else ChatMessage.from_user(text)
              for i, (role, text) in enumerate(turns)]
    return [*prefix, *template]


def _history_text(history: list[dict[str, str]], question: str) -> str:
    lines = [f"{message['role'].capitalize()}: {message['content']}" for message in history]
    return "\n".join([HISTORY_LEAD, *lines, "", question])


def _searches(pipeline: Pipeline, name: str, socket: str) -> bool:
    """Whether `name.socket` is part of the search: a `text` input (embedders) or the `query` of a ranker
    (a component with a `documents` input and output)."""
    if socket == "text":
        return True
    node = pipeline.graph.nodes[name]
    return socket == "query" and "documents" in node["input_sockets"] and "documents" in node["output_sockets"]


def question_inputs(pipeline: Pipeline, question: str, retrieval_text: str | None = None,
                    history: Sequence[dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Pipeline input data giving `question` to the sockets of the declared `question` input (the YAML's
    hayhooks `inputs`), or to every open `text`, `query` or `question` input when none is declared.

    With `retrieval_text`, the search gets it instead of the question: the embedders' `text` input and a
    ranker's `query` (a component taking `query` and `documents` and returning `documents`). What is
    searched for may differ from what is asked, e.g. a description to look up and a question about it;
    the prompt and the generator still get the question.

    With `history` (the conversation before `question`: system, user and assistant messages), retrieval and
    reranking still use the question alone, and the answer sees the whole conversation: a `ChatPromptBuilder`
    gets the turns before its template; a generator answering `query` directly (the cache modes) gets them
    as text before the question.
    """
    from haystack.components.builders import ChatPromptBuilder

    from haystack_integrations.components.generators.grit import GritChatGenerator

    history = check_history(history)
    data: dict[str, dict[str, Any]] = {}
    for name, socket in _question_targets(pipeline):
        value = retrieval_text if retrieval_text is not None and _searches(pipeline, name, socket) else question
        instance = pipeline.get_component(name)
        if history and isinstance(instance, ChatPromptBuilder):
            data.setdefault(name, {})["template"] = _history_template(instance.template, history)
            data[name]["template_variables"] = {HISTORY_VARIABLE: [m["content"] for m in history]}
        elif history and isinstance(instance, GritChatGenerator) and socket == "query":
            value = _history_text(history, question)
        data.setdefault(name, {})[socket] = value
    if not data:
        raise PipelineSetupError("the pipeline has no open `text`, `query` or `question` input for the question")
    return data


_TIMINGS: ContextVar[dict[str, float] | None] = ContextVar("grit_component_timings", default=None)
_TRACER_LOCK = threading.Lock()


class ComponentTimingTracer(tracing.Tracer):
    """Adds the wall time of every component run to the current `component_timings()` block's dict.

    It wraps the tracer that was enabled (a user's OpenTelemetry or Langfuse tracer, hayhooks' trace
    buffer, or Haystack's no-op tracer) and hands it every span unchanged, so tracing works as without
    it. Timings go to a context variable, so concurrent requests (threads, asyncio tasks) each get their
    own, and runs outside a `component_timings()` block record nothing.
    """

    def __init__(self, inner: tracing.Tracer) -> None:
        self.inner = inner

    @contextmanager
    def trace(self, operation_name: str, tags: dict[str, Any] | None = None,
              parent_span: tracing.Span | None = None) -> Iterator[tracing.Span]:
        timings = _TIMINGS.get()
        start = time.perf_counter()
        try:
            with self.inner.trace(operation_name, tags, parent_span) as span:
                yield span
        finally:
            name = (tags or {}).get("haystack.component.name")
            if timings is not None and operation_name == "haystack.component.run" and name:
                timings[name] = timings.get(name, 0.0) + time.perf_counter() - start

    def current_span(self) -> tracing.Span | None:
        return self.inner.current_span()


class _TimingOnlyTracer(ComponentTimingTracer, NullTracer):
    """The timing tracer around Haystack's no-op tracer. It is a `NullTracer`, so `tracing.is_tracing_enabled()`
    stays False and code that sets up tracing only when none is enabled (hayhooks, for one) still does."""


def _wrapped_tracers(tracer: tracing.Tracer) -> Iterator[tracing.Tracer]:
    """`tracer` and the tracers it delegates to (wrappers such as hayhooks' keep theirs in an attribute)."""
    seen: set[int] = set()
    while isinstance(tracer, tracing.Tracer) and id(tracer) not in seen:
        seen.add(id(tracer))
        yield tracer
        tracer = next((value for value in getattr(tracer, "__dict__", {}).values()
                       if isinstance(value, tracing.Tracer)), None)


def _ensure_timing_tracer() -> None:
    """Put a `ComponentTimingTracer` around the enabled tracer unless one is already in its chain.

    Checked at every `component_timings()` block, so a tracer enabled later (which replaces the global
    one, ours included) is wrapped again at the next block instead of silently ending the timings.
    """
    with _TRACER_LOCK:
        actual = tracing.tracer.actual_tracer
        if not any(isinstance(t, ComponentTimingTracer) for t in _wrapped_tracers(actual)):
            wrapper = _TimingOnlyTracer if isinstance(actual, NullTracer) else ComponentTimingTracer
            tracing.enable_tracing(wrapper(actual))
            logger.debug("Component timings: wrapping the enabled tracer {tracer}", tracer=type(actual).__name__)


@contextmanager
def component_timings() -> Iterator[dict[str, float]]:
    """Within the block, pipeline runs record {component name: seconds} into the yielded dict.

    Safe to use from several threads or tasks at once: each block gets only its own runs' timings. Works
    with any tracer you enable (before or after): it keeps receiving every span.
    """
    _ensure_timing_tracer()
    timings: dict[str, float] = {}
    token = _TIMINGS.set(timings)
    try:
        yield timings
    finally:
        _TIMINGS.reset(token)


@dataclass
class Answer:
    """What `ask` returns: the reply, the documents it was given (best first) and timings in seconds."""

    question: str
    text: str
    sources: list[Document]
    timings: dict[str, float]
    meta: dict[str, Any] = field(default_factory=dict)


def final_documents_component(pipeline: Pipeline) -> str | None:
    """The component whose `documents` output feeds the prompt or generator (the last ranking stage)."""
    producers = {name for name, node in pipeline.graph.nodes(data=True) if "documents" in node["output_sockets"]}
    for sender, receiver, data in pipeline.graph.edges(data=True):
        if sender in producers and receiver not in producers and data["from_socket"].name == "documents":
            return sender
    return next(iter(producers), None)


def documents_component(pipeline: Pipeline) -> str | None:
    """The component whose documents are the answer's sources: the declared `documents` output, else
    `final_documents_component`."""
    declared = (getattr(pipeline, DECLARED_IO_ATTRIBUTE, None) or {}).get("outputs", {}).get("documents")
    return declared[0].split(".", 1)[0] if declared else final_documents_component(pipeline)


def generator_component(pipeline: Pipeline) -> str | None:
    """The name of the pipeline's `GritChatGenerator` (the one whose replies are the answer)."""
    from haystack_integrations.components.generators.grit import GritChatGenerator

    return next((name for name, instance in pipeline.walk() if isinstance(instance, GritChatGenerator)), None)


def run_inputs(pipeline: Pipeline, question: str, *, retrieval_text: str | None = None,
               history: Sequence[dict[str, Any]] | None = None,
               generation_kwargs: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """What `ask` gives `pipeline.run`: `question_inputs`, plus `generation_kwargs` for the generator."""
    if not isinstance(question, str) or not question.strip():
        raise PipelineSetupError("the question must be a non-empty string")
    data = question_inputs(pipeline, question, retrieval_text, history)
    if generation_kwargs:
        generator = generator_component(pipeline)
        if generator is None:
            raise PipelineSetupError("generation_kwargs given, but the pipeline has no GritChatGenerator")
        data.setdefault(generator, {})["generation_kwargs"] = dict(generation_kwargs)
    return data


def ask(pipeline: Pipeline, question: str, *, retrieval_text: str | None = None,
        history: Sequence[dict[str, Any]] | None = None, generation_kwargs: dict[str, Any] | None = None) -> Answer:
    """Run a RAG pipeline on one question; returns the answer, its sources and per-component timings.

    :param retrieval_text: what the query embedder embeds, when it should differ from the question.
    :param history: the conversation before the question (see `question_inputs`).
    :param generation_kwargs: generation overrides for the pipeline's `GritChatGenerator`.
    :raises PipelineSetupError: for an empty question or a pipeline that is not a RAG pipeline.
    :raises ComponentInputError: when a component rejects the question (e.g. a prompt over the context length).
    """
    data = run_inputs(pipeline, question, retrieval_text=retrieval_text, history=history,
                      generation_kwargs=generation_kwargs)
    sources_from = documents_component(pipeline)
    start = time.perf_counter()
    with component_timings() as timings:
        result = run(pipeline, data, include_outputs_from={sources_from} if sources_from else None)
    timings = {**timings, "total": time.perf_counter() - start}
    replies = [reply for out in result.values() if isinstance(out, dict)
               for reply in out.get("replies", []) if isinstance(reply, ChatMessage)]
    if not replies:
        raise PipelineSetupError("the pipeline produced no `replies`: is it a RAG pipeline?")
    sources = result.get(sources_from, {}).get("documents", []) if sources_from else []
    return Answer(question=question, text=(replies[0].text or "").strip(), sources=list(sources),
                  timings=timings, meta=dict(replies[0].meta))
