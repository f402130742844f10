# SPDX-FileCopyrightText: 2026-present grit-components developers
#
# SPDX-License-Identifier: Apache-2.0
"""Load, run and time the GRIT Haystack YAML pipelines: what `grit index/ask/run/demo` and the hayhooks
deployment use. The YAML files (`pipelines/` in the source tree) ship beside this package.

`load_pipeline` builds a pipeline file with the deployment knobs applied (`build`), then loads its GRIT
models and checks its Qdrant stores (`stores`): a collection of another embedding dimension or another
model fails here, before anything is written. `run` runs a pipeline, naming the component that rejects
its input; `ask` puts one question through a RAG pipeline (`questions`) and returns the answer, its
sources and per-component timings. The timings (`component_timings`) come from Haystack's tracing spans,
next to whatever tracer is enabled (OpenTelemetry, Langfuse, hayhooks' trace buffer), which keeps every span.

Each module below this one owns one concern, and this module re-exports their public names, so
`from haystack_integrations.common.grit import pipelines as hp` reaches all of them:

- `build`: a YAML file -> a built pipeline (bundled files, deployment knobs, definition checks);
- `stores`: the pipeline's Qdrant stores (sizing, the index's recorded model, closing, the Ray job's target);
- `indexing`: incremental, resumable indexing of files (`index_files`) and the Ray job's chunker;
- `questions`: a question, its retrieval text, history and generation overrides as pipeline inputs.

Imports Haystack: import this module only where Haystack is installed.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from haystack import Document, Pipeline, logging, tracing
from haystack.dataclasses import ChatMessage
from haystack.tracing.tracer import NullTracer

from haystack_integrations.common.grit.build import (
    BUILTIN_PIPELINES,
    DECLARED_IO_ATTRIBUTE,
    ENV_DATA_DIR,
    ENV_QDRANT_URL,
    PipelineSetupError,
    build_pipeline,
    check_definition,
    declared_io,
    deployment_callbacks,
    pipeline_data,
    pipeline_path,
    pipelines_dir,
)
from haystack_integrations.common.grit.indexing import (
    FILE_SUFFIXES,
    FileOutcome,
    FileSelection,
    IndexingError,
    IndexingPreprocessor,
    IndexReport,
    RayChunker,
    collect_files,
    index_files,
    select_files,
    source_of,
)
from haystack_integrations.common.grit.questions import (
    HISTORY_LEAD,
    HISTORY_VARIABLE,
    QUESTION_INPUTS,
    ROLES,
    check_history,
    documents_component,
    expand_declared_inputs,
    final_documents_component,
    generator_component,
    question_inputs,
    run_inputs,
)
from haystack_integrations.common.grit.stores import (
    EmbeddingDimensionError,
    check_index,
    close_pipeline,
    document_manifest,
    document_stores,
    grit_components,
    indexed_points,
    prepare,
    qdrant_target,
)

__all__ = [
    "BUILTIN_PIPELINES", "DECLARED_IO_ATTRIBUTE", "ENV_DATA_DIR", "ENV_QDRANT_URL", "FILE_SUFFIXES", "HISTORY_LEAD",
    "HISTORY_VARIABLE", "QUESTION_INPUTS", "ROLES", "Answer", "ComponentInputError", "ComponentTimingTracer",
    "EmbeddingDimensionError", "FileOutcome", "FileSelection", "IndexReport", "IndexingError", "IndexingPreprocessor",
    "PipelineSetupError", "RayChunker", "ask", "build_pipeline", "check_definition", "check_history", "check_index",
    "close_pipeline", "collect_files", "component_timings", "declared_io", "deployment_callbacks", "document_manifest",
    "document_stores", "documents_component", "expand_declared_inputs", "final_documents_component",
    "generator_component", "grit_components", "index_files", "indexed_points", "load_pipeline", "pipeline_data",
    "pipeline_path", "pipelines_dir", "prepare", "qdrant_target", "question_inputs", "run", "run_inputs",
    "select_files", "source_of",
]

logger = logging.getLogger(__name__)


class ComponentInputError(PipelineSetupError):
    """A component rejected its input while the pipeline ran (a ValueError or TypeError, e.g. a prompt over
    the context length); the one-line message names the component and says what is wrong."""


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
    # a generator's `replies`, or a `BranchJoiner`'s `value` joining them with a router's reply (rag_answerability.yaml)
    replies = [reply for out in result.values() if isinstance(out, dict)
               for key in ("replies", "value") if isinstance(out.get(key), list)
               for reply in out[key] if isinstance(reply, ChatMessage)]
    if not replies:
        raise PipelineSetupError("the pipeline produced no `replies`: is it a RAG pipeline?")
    sources = result.get(sources_from, {}).get("documents", []) if sources_from else []
    return Answer(question=question, text=(replies[0].text or "").strip(), sources=list(sources),
                  timings=timings, meta=dict(replies[0].meta))
