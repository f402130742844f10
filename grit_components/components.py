"""Framework-free components: what the Haystack and LlamaIndex adapters wrap.

Each holds a `ModelHandle` (the model is shared through the registry and loaded on `warm_up` or
first use), keeps its settings, and calls the core. No framework types appear here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from grit_components._checks import check_bool, check_choice, check_int, check_str, check_texts
from grit_components.embedding import DEFAULT_QUERY_INSTRUCTION, EmbeddingInput
from grit_components.generation import GenerationResult, Messages, StreamingCallback
from grit_components.grit_model import GritModel
from grit_components.models import DEFAULT_MODEL
from grit_components.options import GenerationOptions, LoadingOptions, as_generation_options
from grit_components.registry import ModelHandle, ModelRegistry


class ModelComponent:
    """Base of every component that uses a shared GRIT model: the model handle, `warm_up` and `close`.

    The model is acquired from the registry on `warm_up` (idempotent) or first use, so every component
    naming the same model spec with the same loading options shares one loaded copy and its KV store.
    Subclass it for your own components; call `super().__init__(model, loading, registry=..., **loading_kwargs)`.

    :param model: hub id, local directory, GGUF file or packaged alias.
    :param loading: how to load it: a `grit_components.options.LoadingOptions` (device or device map,
        dtype, revision, token, trust_remote_code, model_kwargs, tokenizer_kwargs, chat_format,
        kv_cache_directory, kv_cache_max_bytes, kv_cache_dtype).
    :param registry: the registry to share models through (default: the process-wide one).
    :param loading_kwargs: the same loading options as keywords (`device="cpu"`, ...); they win over `loading`.
    """

    def __init__(self, model: str, loading: LoadingOptions | None = None, *, registry: ModelRegistry | None = None,
                 **loading_kwargs: Any) -> None:
        self.handle = ModelHandle(model, loading, registry=registry, **loading_kwargs)

    @property
    def loading(self) -> LoadingOptions:
        """The loading options of this component's model."""
        return self.handle.options

    def warm_up(self) -> None:
        """Load (or attach to) the shared model. Calling it again does nothing."""
        self.handle.get()

    @property
    def model(self) -> GritModel:
        return self.handle.get()

    def close(self) -> None:
        """Release this component's reference to the shared model."""
        self.handle.close()

    def _query_instruction_or_declared(self, given: str | None) -> str:
        """`given`, else the query instruction the model declares, else `DEFAULT_QUERY_INSTRUCTION`."""
        return query_instruction_for(self.model, given)


def query_instruction_for(model: GritModel, given: str | None = None) -> str:
    """The instruction a component embeds queries with: `given`, else the one `model` declares in its
    `grit_model.json`, else `DEFAULT_QUERY_INSTRUCTION`."""
    if given is not None:
        return given
    declared = model.metadata.query_instruction
    return DEFAULT_QUERY_INSTRUCTION if declared is None else declared


class GritEmbedder(ModelComponent):
    """Embeds queries (with an instruction) and documents (usually without) with one GRIT model.

    Usage:
        >>> embedder = GritEmbedder("smollm2-135m-instruct")
        >>> docs = embedder.embed_documents(["Paris is the capital of France."])
        >>> query = embedder.embed_query("capital of France")
        >>> scores = docs @ query  # cosine similarity (embeddings are normalised)

    :param model: hub id, local directory, GGUF file or packaged alias.
    :param query_instruction: instruction for queries; None = the model's own (declared in its
        `grit_model.json`), else `DEFAULT_QUERY_INSTRUCTION`.
    :param document_instruction: instruction for documents ("" = none, as in the GRIT paper).
    :param batch_size: texts per forward pass.
    :param max_length: longest input in tokens, instruction included.
    :param normalize: L2-normalise embeddings.
    :param truncation: "warn" or "error" for texts longer than max_length.
    Loading options (`loading`, `registry`, `device="cpu"`, ...) as in `ModelComponent`.
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, query_instruction: str | None = None,
                 document_instruction: str = "", batch_size: int = 32, max_length: int = 512, normalize: bool = True,
                 truncation: str = "warn", loading: LoadingOptions | None = None,
                 registry: ModelRegistry | None = None, **loading_kwargs: Any) -> None:
        super().__init__(model, loading, registry=registry, **loading_kwargs)
        self._query_instruction = None if query_instruction is None else check_str("query_instruction",
                                                                                    query_instruction)
        self.document_instruction = check_str("document_instruction", document_instruction)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.max_length = check_int("max_length", max_length, minimum=2)
        self.normalize = check_bool("normalize", normalize)
        self.truncation = check_choice("truncation", truncation, ("warn", "error"))

    @property
    def query_instruction(self) -> str:
        """The instruction queries get: the one given, else the model's own, else the generic default."""
        return self._query_instruction_or_declared(self._query_instruction)

    def _embed(self, texts: Sequence[str], instruction: str, progress_bar: bool, kv_callback=None,
               allow_empty: bool = False) -> np.ndarray:
        return self.model.embed(texts, instruction=instruction, batch_size=self.batch_size, max_length=self.max_length,
                                normalize=self.normalize, progress_bar=progress_bar, truncation=self.truncation,
                                kv_callback=kv_callback, allow_empty=allow_empty)

    def embed_query(self, query: str) -> np.ndarray:
        """Embedding of one query, shape (dim,)."""
        check_str("query", query, allow_empty=False)
        return self._embed([query], self.query_instruction, False)[0]

    def embed_queries(self, queries: Sequence[str], *, progress_bar: bool = False) -> np.ndarray:
        """Embeddings of several queries, shape (n, dim)."""
        return self._embed(check_texts("queries", queries), self.query_instruction, progress_bar)

    def embed_documents(self, documents: Sequence[str], *, progress_bar: bool = False,
                        store_kv_cache: bool = False) -> np.ndarray:
        """Embeddings of document texts, shape (n, dim).

        An empty text does not stop the batch: it is embedded without content (pooled over the format
        tokens, the same vector for every empty text, as stock embedders do) with an `EmptyTextWarning`.

        With `store_kv_cache=True` the key/value states of the embedding pass go to the model's KV store
        (source "embedding"), where `GritGenerator.answer` finds them. Needs `document_instruction=""`
        (the cached format is `BOS <|embed|>\\n{text}`); a document cut at `max_length` is not stored
        (answers use the whole document, so its cache would never match), so set `max_length` to cover
        your documents (up to the model's context length) to cache long ones.
        """
        documents = check_texts("documents", documents, allow_empty_strings=True)
        if not isinstance(store_kv_cache, bool):
            raise TypeError(f"store_kv_cache must be a bool, not {type(store_kv_cache).__name__}")
        if not store_kv_cache:
            return self._embed(documents, self.document_instruction, progress_bar, allow_empty=True)
        if self.document_instruction:
            raise ValueError("store_kv_cache=True needs document_instruction='' (RAG caches hold the states of "
                             "`BOS <|embed|>\\n{text}`, the GRIT document format)")
        from grit_components.kv_cache import DocumentKVCache

        model = self.model
        store = model.kv_store

        def keep(index: int, item: EmbeddingInput, layers) -> None:
            if item.truncated or item.text_start == len(item.ids):  # `answer` looks up the whole document: a cut
                return  # one's cache would never match, and an empty one is never looked up
            store.put(DocumentKVCache(tuple(item.ids), tuple(k for k, _ in layers), tuple(v for _, v in layers),
                                      "embedding", model.fingerprint))

        return self._embed(documents, "", progress_bar, kv_callback=keep, allow_empty=True)


class GritGenerator(ModelComponent):
    """Chat generation with a GRIT model (GRIT chat format for GritLM, the tokenizer's template otherwise).

    Usage:
        >>> generator = GritGenerator("smollm2-135m-instruct", generation_kwargs={"max_new_tokens": 32})
        >>> generator.generate("What is the capital of France?").text

    :param model: hub id, local directory, GGUF file or packaged alias.
    :param generation_kwargs: default generation parameters (`GenerationOptions` or a dict): any Hugging
        Face `GenerationConfig` key plus `stop_words` and `seed`; each call may override them.
    :param cache_mode: default RAG cache mode of `answer` ("none", "query", "doc", "query_doc", "doc_query",
        "multi_doc"; see `grit_components.rag.CacheMode`).
    :param cache_source: default source of cached states: "embedding" (GRIT paper) or "causal" (exact).
    Loading options (`loading`, `registry`, `device="cpu"`, ...) as in `ModelComponent`.
    """

    def __init__(self, model: str = DEFAULT_MODEL, *,
                 generation_kwargs: GenerationOptions | Mapping[str, Any] | None = None, cache_mode: str = "none",
                 cache_source: str = "embedding", loading: LoadingOptions | None = None,
                 registry: ModelRegistry | None = None, **loading_kwargs: Any) -> None:
        super().__init__(model, loading, registry=registry, **loading_kwargs)
        from grit_components.kv_cache import SOURCES
        from grit_components.rag import check_mode

        self.generation_options = as_generation_options(generation_kwargs)
        self.cache_mode = check_mode(cache_mode, "cache_mode").value
        self.cache_source = check_choice("cache_source", cache_source, SOURCES)

    def options(self, overrides: Mapping[str, Any] | None = None) -> GenerationOptions:
        """The default generation options with per-call `overrides` on top (checked)."""
        return self.generation_options.merged(overrides)

    def generate(self, messages: Messages, *, tools: Sequence[Mapping[str, Any]] | None = None,
                 streaming_callback: StreamingCallback | None = None, **generation_kwargs: Any) -> GenerationResult:
        """Answer `messages` (a str or a list of {"role", "content"} dicts, tool calls and results included);
        `tools` are tool specs the model may call (read them with `generation.parse_tool_calls`); keywords
        override the generation defaults."""
        return self.model.generate(messages, self.options(generation_kwargs), tools=tools,
                                   streaming_callback=streaming_callback)

    def answer(self, query: str, documents: Sequence[str], *, mode: str | None = None, source: str | None = None,
               order: str = "doc_first", user_content: str | None = None,
               streaming_callback: StreamingCallback | None = None, **generation_kwargs: Any):
        """Answer `query` from retrieved `documents`, reusing cached key/value states per `mode`.

        :param query: the question.
        :param documents: retrieved document texts, best first ([] with mode "none" = no retrieval).
        :param mode: cache mode for this call (default: `cache_mode`).
        :param source: cache source for this call (default: `cache_source`).
        :param order: prompt order of mode "none": "doc_first" or "query_first".
        :param user_content: the user turn after the cached texts, instead of the mode's own (see `rag.answer`).
        :param streaming_callback: called with each new piece of text.
        :param generation_kwargs: overrides of the default generation parameters.
        :returns: a `grit_components.rag.RagResult` (text, finish_reason, usage, timings, stats).
        """
        from grit_components.rag import answer

        return answer(self.model, query, documents, mode=self.cache_mode if mode is None else mode,
                      source=self.cache_source if source is None else source, order=order,
                      options=self.options(generation_kwargs), user_content=user_content,
                      streaming_callback=streaming_callback)
