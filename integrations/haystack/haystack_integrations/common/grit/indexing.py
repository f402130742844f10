# SPDX-FileCopyrightText: 2026-present grit-components developers
#
# SPDX-License-Identifier: Apache-2.0
"""Incremental, resumable indexing of files through a GRIT indexing pipeline (what `grit index` runs).

The YAML pipeline stays the one definition of how files become chunks and where they go; this module
runs its parts separately instead of in one `Pipeline.run`:

1. the preprocessing part (everything upstream of the `GritDocumentEmbedder`: router, converters,
   cleaner, splitter), one file at a time, so every file that yields nothing is reported with the
   reason its converter logged, and text in another encoding than UTF-8 is detected (or set);
2. each chunk gets a deterministic id (`grit_components.indexing.chunk_id`: model and settings, source
   path, position, text) and its source path in `meta["source"]`;
3. per file, chunks the collection holds but the file no longer yields are deleted first, and only the
   chunks it lacks are embedded, then written by the pipeline's `DocumentWriter` in batches: a killed
   run keeps every written batch and a re-run embeds only what is missing;
4. optionally (`prune`), chunks of files gone from an indexed folder are deleted.

`IndexingPreprocessor` (steps 1-2 without a store) is also what the Ray job uses to convert and split
files and corpus documents exactly like the YAML does (`RayChunker`).

Imports Haystack: import this module only where Haystack is installed.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from haystack import Document, Pipeline

from grit_components._checks import check_int
from grit_components.indexing import SOURCE_FIELD, IndexManifest, chunk_id
from haystack_integrations.common.grit.build import PipelineSetupError
from haystack_integrations.common.grit.stores import check_index

FILE_SUFFIXES = (".txt", ".md", ".markdown", ".pdf")
TEXT_SUFFIXES = (".txt", ".md", ".markdown")
DOCUMENT_EMBEDDER = "haystack_integrations.components.embedders.grit.document_embedder.GritDocumentEmbedder"
STATUSES = ("added", "replaced", "resumed", "unchanged", "failed")


class IndexingError(ValueError):
    """A pipeline or its inputs cannot be indexed as asked (not an indexing pipeline, a missing file, ...)."""


# --- which files ---


@dataclass
class FileSelection:
    """Files to index, and how they were given.

    :param files: every file to index, named files first, then each folder's files sorted; no duplicates.
    :param named: files given explicitly (a failure of any of them is an error).
    :param folders: each folder given, with the files found in it.
    :param ignored: each folder given, with the files of other types found in it (not indexed).
    """

    files: list[Path] = field(default_factory=list)
    named: list[Path] = field(default_factory=list)
    folders: dict[Path, list[Path]] = field(default_factory=dict)
    ignored: dict[Path, list[Path]] = field(default_factory=dict)


def select_files(paths: Iterable[str | os.PathLike]) -> FileSelection:
    """Resolve paths: files as given (any type: an unsupported one fails with its reason), folders searched
    recursively for .txt/.md/.markdown/.pdf, hidden files and folders skipped. A missing path is an error."""
    selection = FileSelection()
    seen: set[Path] = set()
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found, ignored = [], []
            for candidate in sorted(path.rglob("*")):
                if not candidate.is_file() or any(p.startswith(".") for p in candidate.relative_to(path).parts):
                    continue
                (found if candidate.suffix.lower() in FILE_SUFFIXES else ignored).append(candidate)
            selection.folders[path] = found
            selection.ignored[path] = ignored
            new = [f for f in found if f.resolve() not in seen]
        elif path.is_file():
            selection.named.append(path)
            new = [path] if path.resolve() not in seen else []
        else:
            raise IndexingError(f"{path} does not exist")
        seen.update(f.resolve() for f in new)
        selection.files.extend(new)
    return selection


def collect_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files to index: given files as they are, folders searched recursively for .txt/.md/.pdf, sorted."""
    try:
        return select_files(paths).files
    except IndexingError as error:
        raise PipelineSetupError(str(error)) from error


def source_of(path: str | os.PathLike) -> str:
    """The `meta["source"]` of a file's chunks: its absolute path (a file name alone is ambiguous)."""
    return str(Path(path).resolve())


# --- files -> chunks, as the YAML does ---


class _ConverterLog(logging.Handler):
    """Collects what converters log while one file is converted: the reason a file yields nothing."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(record.getMessage())
        except Exception:  # noqa: BLE001 - a malformed record must not stop indexing
            self.messages.append(str(record.msg))


def detect_encoding(path: Path, encoding: str = "auto") -> tuple[str | None, str | None]:
    """How to decode a text file: (encoding for the converter or None for its UTF-8 default, note).

    `encoding="auto"` keeps UTF-8 files as they are and asks charset-normalizer for the others; any
    other value is used as given. Raises `IndexingError` with the reason when the file is not text.
    """
    data = path.read_bytes()
    if encoding != "auto":
        try:
            text = data.decode(encoding)
        except LookupError as error:
            raise IndexingError(f"unknown encoding {encoding!r}") from error
        except UnicodeDecodeError as error:
            raise IndexingError(f"not valid {encoding} text ({error.reason} at byte {error.start})") from error
        if "\x00" in text:
            raise IndexingError("binary content (NUL bytes), not text")
        return encoding, None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        from charset_normalizer import from_bytes

        matches = from_bytes(data)
        best = matches.best()
        if best is None or "\x00" in str(best):
            raise IndexingError("not UTF-8 text and no other encoding could be detected (binary content?); "
                                "pass --encoding if it is text") from None
        # Western text decodes equally cleanly (same "chaos") in several single-byte code pages, and the
        # language guess that ranks them is unreliable on short texts; cp1252 (the superset of Latin-1
        # most legacy files use) is the likeliest of those.
        tied = [m.encoding for m in matches if m.chaos == best.chaos]
        chosen = "cp1252" if "cp1252" in tied else best.encoding
        return chosen, f"not UTF-8: decoded as {chosen} (detected; pass --encoding to set it)"
    if "\x00" in text:
        raise IndexingError("binary content (NUL bytes), not text")
    return None, None


def _pipeline_dict(pipeline: Pipeline | Mapping[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(dict(pipeline)) if isinstance(pipeline, Mapping) else pipeline.to_dict()


def _ancestors(data: Mapping[str, Any], name: str) -> set[str]:
    senders: dict[str, set[str]] = {}
    for connection in data.get("connections", []):
        senders.setdefault(connection["receiver"].split(".")[0], set()).add(connection["sender"].split(".")[0])
    found: set[str] = set()
    todo = [name]
    while todo:
        for sender in senders.get(todo.pop(), ()):
            if sender not in found:
                found.add(sender)
                todo.append(sender)
    return found


def _subpipeline(data: Mapping[str, Any], names: set[str]) -> dict[str, Any]:
    return {**{k: v for k, v in data.items() if k not in ("components", "connections")},
            "components": {n: c for n, c in data["components"].items() if n in names},
            "connections": [c for c in data.get("connections", [])
                            if c["sender"].split(".")[0] in names and c["receiver"].split(".")[0] in names]}


def document_embedder_name(data: Mapping[str, Any]) -> str:
    """The name of the one `GritDocumentEmbedder` of a pipeline dict; `IndexingError` unless there is one."""
    names = [name for name, component in data.get("components", {}).items()
             if component.get("type") == DOCUMENT_EMBEDDER]
    if len(names) != 1:
        raise IndexingError(f"an indexing pipeline needs exactly one GritDocumentEmbedder, this one has {len(names)}")
    return names[0]


class IndexingPreprocessor:
    """Converts files and splits documents exactly as an indexing pipeline does, without embedding or writing.

    Built from the pipeline's dict (YAML), so it can be pickled to other processes (Ray workers) and
    build its own components there. `convert_file` runs everything upstream of the `GritDocumentEmbedder`
    on one file; `split` runs the part after the converters (joiner, cleaner, splitter) on documents
    that are already text (corpus passages).
    """

    def __init__(self, pipeline: Pipeline | Mapping[str, Any]) -> None:
        data = _pipeline_dict(pipeline)
        embedder = document_embedder_name(data)
        upstream = _ancestors(data, embedder)
        if not upstream:
            raise IndexingError("the GritDocumentEmbedder gets its documents from no component: nothing converts files")
        self.embedder_params: dict[str, Any] = dict(data["components"][embedder].get("init_parameters") or {})
        feeding = [c["sender"] for c in data["connections"] if c["receiver"] == f"{embedder}.documents"]
        if len(feeding) != 1:
            raise IndexingError("the GritDocumentEmbedder's documents must come from exactly one component")
        self.output = feeding[0].split(".", 1)
        self._convert_data = _subpipeline(data, upstream)
        # The router and the converters take `sources`; what is left after them works on Documents.
        takes_sources = {name for name, component in self._convert_data["components"].items()
                         if "sources" in _run_parameters(component["type"])}
        self._split_data = _subpipeline(self._convert_data, upstream - takes_sources)
        self._convert: Pipeline | None = None
        self._split: Pipeline | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_convert": None, "_split": None}

    @property
    def convert_pipeline(self) -> Pipeline:
        if self._convert is None:
            self._convert = Pipeline.from_dict(self._convert_data)
        return self._convert

    @property
    def split_pipeline(self) -> Pipeline:
        if self._split is None:
            self._split = Pipeline.from_dict(self._split_data)
        return self._split

    def _outputs(self, result: Mapping[str, Any]) -> list[Document]:
        name, socket = self.output
        return list(result.get(name, {}).get(socket, []))

    def convert_file(self, path: str | os.PathLike, meta: Mapping[str, Any] | None = None, *,
                     encoding: str = "auto") -> tuple[list[Document], str | None]:
        """The chunks of one file as the pipeline makes them (each with `meta["source"]` = its absolute
        path), and a note for people (e.g. the encoding a non-UTF-8 file was decoded with) or None.

        :param encoding: of a text file: "auto" (UTF-8, else detected) or the encoding to use.
        :raises IndexingError: with the reason when the file yields no chunk (what its converter logged).
        """
        path = Path(path)
        meta = dict(meta or {})
        note = None
        if path.suffix.lower() not in FILE_SUFFIXES:
            raise IndexingError(f"unsupported file type {path.suffix or '(none)'!r} "
                                f"(supported: {', '.join(FILE_SUFFIXES)})")
        if path.suffix.lower() in TEXT_SUFFIXES:
            detected, note = detect_encoding(path, encoding)
            if detected is not None:
                meta["encoding"] = detected  # Haystack's text converters read it from the source's meta
        pipeline = self.convert_pipeline
        data: dict[str, dict[str, Any]] = {}
        for name, sockets in pipeline.inputs().items():
            if "sources" in sockets:
                data[name] = {"sources": [path]}
                if meta and "meta" in sockets:
                    data[name]["meta"] = [meta]
        if not data:
            raise IndexingError("the pipeline has no open `sources` input: is it an indexing pipeline?")
        if meta and not any("meta" in inputs for inputs in data.values()):
            raise IndexingError("the pipeline's `sources` input takes no `meta`, which this file needs")
        log = _ConverterLog()
        # Converters log why they skip a file instead of raising; pypdf logs what is broken in a PDF.
        loggers = [logging.getLogger(name) for name in ("haystack", "pypdf")]
        for logger in loggers:
            logger.addHandler(log)
        try:
            result = pipeline.run(data, include_outputs_from={self.output[0]})
        except Exception as error:  # noqa: BLE001 - a broken file must not stop the others
            cause = error.__cause__ or error
            raise IndexingError(f"{type(cause).__name__}: {cause}") from error
        finally:
            for logger in loggers:
                logger.removeHandler(log)
        chunks = [doc for doc in self._outputs(result) if doc.content and doc.content.strip()]
        if not chunks:
            reasons = [m.replace(str(path), path.name) for m in log.messages if str(path) in m or path.name in m]
            raise IndexingError(reasons[0] if reasons else "no text found (empty after conversion)")
        source = source_of(path)
        return [replace(doc, meta={**doc.meta, SOURCE_FIELD: source}) for doc in chunks], note

    def split(self, documents: Sequence[Document]) -> list[Document]:
        """Clean and split documents that are already text, as the pipeline does after its converters."""
        if not self._split_data["components"]:
            return [doc for doc in documents if doc.content and doc.content.strip()]
        pipeline = self.split_pipeline
        open_inputs = [name for name, sockets in pipeline.inputs().items() if "documents" in sockets]
        if len(open_inputs) != 1:
            raise IndexingError("the part of the pipeline after the converters must take documents at one place, "
                                f"found {len(open_inputs)}: {open_inputs}")
        result = pipeline.run({open_inputs[0]: {"documents": list(documents)}}, include_outputs_from={self.output[0]})
        return [doc for doc in self._outputs(result) if doc.content and doc.content.strip()]


def _run_parameters(component_type: str) -> set[str]:
    import inspect

    from haystack.core.serialization import import_class_by_name

    return set(inspect.signature(import_class_by_name(component_type).run).parameters)


def name_chunks(chunks: Sequence[Document], manifest: IndexManifest, source: str) -> list[Document]:
    """Chunks of one source with deterministic ids (model and settings, source, position, text).

    The splitter's `_split_overlap` entries point at its own ids: they are renamed too, so they keep
    pointing at the neighbouring chunks.
    """
    new_ids = {doc.id: chunk_id(manifest, source, position, doc.content or "") for position, doc in enumerate(chunks)}
    named = []
    for doc in chunks:
        meta = {**doc.meta, SOURCE_FIELD: source}
        if isinstance(meta.get("_split_overlap"), list):
            meta["_split_overlap"] = [{**entry, "doc_id": new_ids.get(entry.get("doc_id"), entry.get("doc_id"))}
                                      if isinstance(entry, dict) else entry for entry in meta["_split_overlap"]]
        named.append(replace(doc, id=new_ids[doc.id], meta=meta))
    return named


class RayChunker:
    """The chunker of the Ray index job (`grit_components.distributed.Chunker`) for an indexing pipeline:
    its converters, cleaner and splitter, and the same chunk names and meta as `index_files`, so the job
    writes exactly the points `grit index` would.

    :param pipeline: the indexing pipeline (built, or its dict).
    :param encoding: of text files: "auto" (UTF-8, else detected) or an encoding name.
    """

    def __init__(self, pipeline: Pipeline | Mapping[str, Any], *, encoding: str = "auto") -> None:
        self.preprocessor = IndexingPreprocessor(pipeline)
        self.encoding = encoding

    def chunk_files(self, paths: Sequence[str], manifest: IndexManifest) -> list:
        from grit_components.distributed import Chunk, ChunkedSource

        out = []
        for path in paths:
            source = source_of(path)
            try:
                chunks, note = self.preprocessor.convert_file(path, encoding=self.encoding)
            except (IndexingError, OSError) as error:
                out.append(ChunkedSource(source, error=str(error)))
                continue
            out.append(ChunkedSource(source, [Chunk(doc.id, doc.content or "", doc.meta)
                                              for doc in name_chunks(chunks, manifest, source)], note=note))
        return out

    def chunk_documents(self, documents: Sequence[Any], manifest: IndexManifest) -> list:
        """Corpus documents (`SourceDocument`: source id, text, meta) cleaned and split as the YAML does."""
        from grit_components.distributed import Chunk, ChunkedSource

        split = self.preprocessor.split([Document(content=d.content, meta={**d.meta, SOURCE_FIELD: d.source})
                                         for d in documents])
        by_source: dict[str, list[Document]] = {}
        for doc in split:  # the splitter keeps each document's meta, and the order
            by_source.setdefault(doc.meta[SOURCE_FIELD], []).append(doc)
        return [ChunkedSource(d.source, [Chunk(doc.id, doc.content or "", doc.meta)
                                         for doc in name_chunks(by_source[d.source], manifest, d.source)])
                if d.source in by_source else ChunkedSource(d.source, error="no text left after cleaning")
                for d in documents]

    def embedder_settings(self, model: str | None = None):
        """The `GritDocumentEmbedder` settings of the YAML as `grit_components.distributed.EmbedderSettings`."""
        from grit_components.distributed import EmbedderSettings
        from grit_components.models import DEFAULT_MODEL

        params = self.preprocessor.embedder_params
        model_kwargs = params.get("model_kwargs") or {}
        dtype = model_kwargs.get("dtype", model_kwargs.get("torch_dtype"))  # the components take it there
        if isinstance(dtype, str):
            dtype = dtype.removeprefix("torch.")  # as Haystack's serialize_hf_model_kwargs writes a torch.dtype
        return EmbedderSettings(
            model=model or params.get("model", DEFAULT_MODEL), instruction=params.get("instruction", ""),
            max_length=params.get("max_length", 512), normalize=params.get("normalize_embeddings", True),
            meta_fields=tuple(params.get("meta_fields_to_embed") or ()),
            meta_separator=params.get("embedding_separator", "\n"), batch_size=params.get("batch_size", 32),
            truncation=params.get("truncation", "warn"), dtype=dtype)


# --- the report ---


@dataclass
class FileOutcome:
    """What indexing did with one file.

    :param status: "added" (new to the index), "replaced" (its previous chunks differed), "resumed" (a
        killed run had written part of it), "unchanged", or "failed" (nothing written; earlier chunks kept).
    :param chunks: chunks the file yields now.
    :param embedded: chunks embedded and written by this run.
    :param removed: stale chunks of the file deleted by this run.
    :param reason: why it failed.
    :param note: anything worth knowing (e.g. the encoding it was decoded with).
    """

    path: Path
    status: str
    chunks: int = 0
    embedded: int = 0
    removed: int = 0
    reason: str | None = None
    note: str | None = None


@dataclass
class IndexReport:
    """What `index_files` did: per-file outcomes, pruned files, chunk counts and times."""

    files: list[FileOutcome]
    pruned: list[str] = field(default_factory=list)
    pruned_chunks: int = 0
    chunks_embedded: int = 0
    chunks_removed: int = 0
    documents_in_store: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(outcome.status == status for outcome in self.files)

    @property
    def failed(self) -> list[FileOutcome]:
        return [outcome for outcome in self.files if outcome.status == "failed"]

    @property
    def indexed(self) -> int:
        """Files whose chunks are all in the index now."""
        return len(self.files) - len(self.failed)

    @property
    def documents_written(self) -> int:
        return self.chunks_embedded

    def summary(self) -> list[str]:
        """The report as lines for people: counts first, then every failed file with its reason."""
        statuses = ", ".join(f"{self.count(s)} {s}" for s in STATUSES[:-1] if self.count(s))
        lines = [f"indexed {self.indexed} of {len(self.files)} files" + (f": {statuses}" if statuses else "")
                 + (f"; {len(self.pruned)} removed (gone from their folder)" if self.pruned else "")]
        rate = f" ({self.chunks_embedded / self.embed_seconds:.1f} chunks/s embedding)" if self.embed_seconds else ""
        lines.append(f"chunks: {self.chunks_embedded} embedded and written, "
                     f"{self.chunks_removed + self.pruned_chunks} removed, in {self.seconds:.1f}s{rate}; "
                     f"the collection holds {self.documents_in_store} chunks")
        for outcome in self.files:
            if outcome.note:
                lines.append(f"  note: {outcome.path}: {outcome.note}")
        if self.failed:
            lines.append(f"skipped {len(self.failed)} files (their earlier chunks, if any, are kept):")
            lines.extend(f"  {outcome.path}: {outcome.reason}" for outcome in self.failed)
        return lines


# --- the run ---

# (stage, done, total): stage "files" while converting and comparing with the collection, then "chunks"
# while embedding and writing.
ProgressCallback = Callable[[str, int, int], None]


@dataclass
class _Plan:
    outcome: FileOutcome
    chunks: list[Document]


def _batches(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _existing_ids(store, sources: Sequence[str]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {source: set() for source in sources}
    if not sources:
        return found
    for doc in store.filter_documents({"field": f"meta.{SOURCE_FIELD}", "operator": "in", "value": list(sources)}):
        found.setdefault(doc.meta.get(SOURCE_FIELD), set()).add(doc.id)
    return found


def _sources_under(store, folder: Path) -> list[str]:
    values, _ = store.get_metadata_field_unique_values(SOURCE_FIELD, from_=0, size=2**31 - 1)
    prefix = source_of(folder).rstrip(os.sep) + os.sep
    return [value for value in values if isinstance(value, str) and value.startswith(prefix)]


def index_files(pipeline: Pipeline, files: Sequence[str | os.PathLike] | FileSelection, *,
                meta: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None, batch_size: int = 64,
                encoding: str = "auto", prune: bool = False,
                on_progress: ProgressCallback | None = None) -> IndexReport:
    """Index files through a loaded indexing pipeline, incrementally and resumably (see the module docstring).

    :param pipeline: a pipeline from `pipelines.load_pipeline` with one `GritDocumentEmbedder` whose
        documents go to a `DocumentWriter` (the bundled `indexing` and `indexing_doc_cache` are).
    :param files: file paths, or a `select_files` result (needed for `prune`).
    :param meta: meta for every file (a dict) or one dict per file, added to its chunks.
    :param batch_size: chunks embedded and written together; a killed run loses at most the batch in flight.
    :param encoding: "auto" (UTF-8, else detected) or the encoding of every text file.
    :param prune: delete the chunks of files that are gone from the folders of `files` (a `FileSelection`).
    :param on_progress: called with ("files", converted, files) before each file, then with ("chunks",
        embedded, to embed) after every batch.
    :returns: an `IndexReport`; failed files are in it (with reasons), never raised.
    """
    check_int("batch_size", batch_size, minimum=1)
    selection = files if isinstance(files, FileSelection) else FileSelection(files=[Path(f) for f in files])
    if prune and not isinstance(files, FileSelection):
        raise IndexingError("prune=True needs the folders: pass files as select_files(paths)")
    if not selection.files and not (prune and selection.folders):
        raise IndexingError(f"no {', '.join(FILE_SUFFIXES)} files to index")
    metas = _file_metas(meta, len(selection.files))
    start = time.perf_counter()
    preprocessor = IndexingPreprocessor(pipeline)
    embedder, writer, store = _embedding_stages(pipeline, preprocessor)
    manifest = check_index(pipeline)  # the collection was checked at load; a pipeline built otherwise is now

    plans: list[_Plan] = []
    for number, (path, file_meta) in enumerate(zip(selection.files, metas)):
        if on_progress is not None:
            on_progress("files", number, len(selection.files))
        try:
            chunks, note = preprocessor.convert_file(path, file_meta, encoding=encoding)
            chunks = name_chunks(chunks, manifest, source_of(path))
        except (IndexingError, OSError) as error:
            plans.append(_Plan(FileOutcome(path, "failed", reason=str(error)), []))
            continue
        plans.append(_Plan(FileOutcome(path, "added", chunks=len(chunks), note=note), chunks))

    # Reconcile with the collection: stale chunks go first, then only missing chunks are embedded.
    todo: list[Document] = []
    indexed = [plan for plan in plans if plan.outcome.status != "failed"]
    for group in _batches(indexed, 256):
        existing = _existing_ids(store, [source_of(plan.outcome.path) for plan in group])
        stale_ids: list[str] = []
        for plan in group:
            have = existing.get(source_of(plan.outcome.path), set())
            want = {doc.id for doc in plan.chunks}
            stale = have - want
            missing = [doc for doc in plan.chunks if doc.id not in have]
            plan.outcome.removed, plan.outcome.embedded = len(stale), len(missing)
            plan.outcome.status = ("added" if not have else "replaced" if stale else
                                   "resumed" if missing else "unchanged")
            stale_ids.extend(stale)
            todo.extend(missing)
        if stale_ids:
            store.delete_documents(stale_ids)

    report = IndexReport(files=[plan.outcome for plan in plans],
                         chunks_removed=sum(plan.outcome.removed for plan in plans))
    if prune:
        current = {source_of(path) for path in selection.files}
        gone = sorted({source for folder in selection.folders for source in _sources_under(store, folder)} - current)
        if gone:
            filters = {"field": f"meta.{SOURCE_FIELD}", "operator": "in", "value": gone}
            report.pruned_chunks = store.count_documents_by_filter(filters)
            store.delete_by_filter(filters)
            report.pruned = gone

    progress_bar = embedder.progress_bar
    embedder.progress_bar = progress_bar and on_progress is None  # one bar for the run, not one per batch
    try:
        if on_progress is not None:
            on_progress("chunks", 0, len(todo))
        for batch in _batches(todo, batch_size):
            began = time.perf_counter()
            embedded = embedder.run(documents=list(batch))["documents"]
            report.embed_seconds += time.perf_counter() - began
            writer.run(documents=embedded)
            report.chunks_embedded += len(embedded)
            if on_progress is not None:
                on_progress("chunks", report.chunks_embedded, len(todo))
    finally:
        embedder.progress_bar = progress_bar
    report.documents_in_store = store.count_documents()
    report.seconds = time.perf_counter() - start
    return report


def _file_metas(meta, count: int) -> list[Mapping[str, Any]]:
    if meta is None:
        return [{}] * count
    if isinstance(meta, Mapping):
        return [meta] * count
    metas = list(meta)
    if len(metas) != count:
        raise IndexingError(f"meta has {len(metas)} entries for {count} files: give one dict, or one per file")
    return metas


def _embedding_stages(pipeline: Pipeline, preprocessor: IndexingPreprocessor):
    """The pipeline's document embedder, the writer it feeds, and the writer's store."""
    data = pipeline.to_dict()
    name = document_embedder_name(data)
    receivers = [c["receiver"] for c in data["connections"] if c["sender"] == f"{name}.documents"]
    if len(receivers) != 1:
        raise IndexingError("the GritDocumentEmbedder's documents must go to exactly one DocumentWriter, "
                            f"they go to {receivers or 'nothing'}")
    writer = pipeline.get_component(receivers[0].split(".")[0])
    store = getattr(writer, "document_store", None)
    if store is None:
        raise IndexingError(f"{receivers[0]} is not a DocumentWriter (it has no document_store)")
    return pipeline.get_component(name), writer, store

