# SPDX-FileCopyrightText: 2026-present grit-components developers
#
# SPDX-License-Identifier: Apache-2.0
"""Haystack chat generator for GRIT models, optionally reusing the KV caches of retrieved documents."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from haystack import Document, component
from haystack.dataclasses import ChatMessage, ComponentInfo, StreamingChunk
from haystack.dataclasses.streaming_chunk import StreamingCallbackT, select_streaming_callback
from haystack.utils import ComponentDevice, Secret

from grit_components import DEFAULT_MODEL, GenerationOptions, GritGenerator, LoadingOptions
from haystack_integrations.common.grit.component import GritModelComponent


@component
class GritChatGenerator(GritModelComponent):
    """
    Generates chat replies with a GRIT model such as GritLM (Haystack 3.x chat generator contract).

    With `cache_mode="none"` (the default) it answers `messages`, usually built by a `ChatPromptBuilder`.
    With a cache mode (`"doc"`, `"query"`, `"query_doc"`, `"doc_query"`, `"multi_doc"`) it answers `query`
    from `documents` while reusing their key/value caches from the shared model's KV store (computing and
    storing any that are missing): the prompt is then the GRIT RAG prompt, and `messages` is not needed.
    `cache_source="embedding"` reuses the states of the embedding pass (GRIT paper, approximate);
    `"causal"` uses a causal prefill (same output as uncached RAG).

    ### Usage example

    ```python
    from haystack.dataclasses import ChatMessage
    from haystack_integrations.components.generators.grit import GritChatGenerator

    generator = GritChatGenerator(model="smollm2-135m-instruct", generation_kwargs={"max_new_tokens": 16})
    result = generator.run([ChatMessage.from_user("What is the capital of France?")])
    print(result["replies"][0].text)
    ```
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        generation_kwargs: dict[str, Any] | None = None,
        streaming_callback: StreamingCallbackT | None = None,
        kv_cache_directory: str | None = None,
        kv_cache_max_bytes: int | None = None,
        cache_mode: str = "none",
        cache_source: str = "embedding",
        device: ComponentDevice | None = None,
        token: Secret | None = Secret.from_env_var(["HF_API_TOKEN", "HF_TOKEN"], strict=False),
        model_kwargs: dict[str, Any] | None = None,
        tokenizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """
        :param generation_kwargs: Defaults for every call: any Hugging Face `GenerationConfig` key
            (`max_new_tokens`, `temperature`, `top_p`, `repetition_penalty`, ...; see
            [GenerationConfig](https://huggingface.co/docs/transformers/main_classes/text_generation)), plus
            `stop_words` (the reply ends before the first one) and `seed`. Greedy (`temperature` 0) and
            `max_new_tokens` 256 unless given; `run` may override them. An unknown key is a `ValueError`.
        :param streaming_callback: Called with a `StreamingChunk` for each piece of generated text.
        :param kv_cache_directory: Folder of the model's KV store on disk (the one `GritDocumentEmbedder` wrote
            with `store_kv_cache=True`); `None` uses the in-memory store only.
        :param kv_cache_max_bytes: Memory budget of the model's shared KV store (set once per model).
        :param cache_mode: `"none"`, or the RAG KV caching mode: `"query"`, `"doc"`, `"query_doc"`,
            `"doc_query"` or `"multi_doc"`.
        :param cache_source: Where reused caches come from: `"embedding"` (the embedding pass) or `"causal"`.
        :param model, device, token, model_kwargs, tokenizer_kwargs: The model (default `grit-smollm2-135m`) and
            how to load it: see `GritModelComponent`.
        """
        self.generation_kwargs = generation_kwargs or {}
        if streaming_callback is not None and not callable(streaming_callback):
            raise TypeError(f"streaming_callback must be callable, not {type(streaming_callback).__name__}")
        self.streaming_callback = streaming_callback
        self.kv_cache_directory = kv_cache_directory
        self.kv_cache_max_bytes = kv_cache_max_bytes
        self.cache_mode = cache_mode
        self.cache_source = cache_source
        self._set_model_parameters(model, device, token, model_kwargs, tokenizer_kwargs)

    def _build_core(self, loading: LoadingOptions) -> GritGenerator:
        return GritGenerator(self.model, generation_kwargs=self.generation_kwargs,
                             cache_mode=self.cache_mode, cache_source=self.cache_source,
                             loading=loading)

    @property
    def generator(self) -> GritGenerator:
        """The core generator this component wraps (loaded on first access)."""
        return self._warm_core()

    @staticmethod
    def _to_core_messages(messages: list[ChatMessage] | str) -> str | list[dict[str, str]]:
        if isinstance(messages, str):
            return messages
        if not isinstance(messages, list) or not all(isinstance(m, ChatMessage) for m in messages):
            raise TypeError("messages must be a str or a list of ChatMessage")
        converted = []
        for message in messages:
            if message.text is None:
                raise ValueError(f"GritChatGenerator supports text messages only; got a {message.role.value} "
                                 "message without text (tool calls and images are not supported)")
            converted.append({"role": message.role.value, "content": message.text})
        return converted

    def _prepare(self, messages, generation_kwargs, documents, query):
        # Checked here, before anything runs; the core merges them over the init defaults.
        kwargs = GenerationOptions(generation_kwargs).to_dict()
        if documents is not None and (
            not isinstance(documents, list) or not all(isinstance(d, Document) for d in documents)
        ):
            raise TypeError("documents must be a list of Document")
        if query is not None and not isinstance(query, str):
            raise TypeError(f"query must be a str, not {type(query).__name__}")
        rag = query is not None and documents is not None and (self.cache_mode != "none" or messages is None)
        if not rag:
            if messages is None:
                raise ValueError("GritChatGenerator needs `messages`, or `query` and `documents`")
            if self.cache_mode != "none" and query is None:
                raise ValueError(f"cache_mode={self.cache_mode!r} needs the `query` (and `documents`) inputs")
            core_messages = self._to_core_messages(messages)
            if not core_messages:
                raise ValueError("messages must not be empty")
            return None, core_messages, kwargs
        return (query, [doc.content for doc in documents if doc.content]), None, kwargs

    def _generate(self, messages, kwargs, documents, query, emit):
        rag, core_messages, kwargs = self._prepare(messages, kwargs, documents, query)
        info = ComponentInfo.from_component(self)
        callback = None
        if emit is not None:
            def callback(piece: str) -> None:
                emit(StreamingChunk(content=piece, component_info=info))

        if rag is None:
            result = self.generator.generate(core_messages, streaming_callback=callback, **kwargs)
        else:
            result = self.generator.answer(rag[0], rag[1], streaming_callback=callback, **kwargs)
        if emit is not None:
            emit(StreamingChunk(content="", component_info=info, finish_reason=result.finish_reason))
        meta: dict[str, Any] = {
            "model": self.model,
            "finish_reason": result.finish_reason,
            "usage": dict(result.usage),
            "timings": dict(result.timings),
            "cache_mode": self.cache_mode if rag is not None else "none",
        }
        if getattr(result, "stats", None):
            meta["cache"] = dict(result.stats)
        return {"replies": [ChatMessage.from_assistant(result.text, meta=meta)]}

    @component.output_types(replies=list[ChatMessage])
    def run(
        self,
        messages: list[ChatMessage] | str | None = None,
        generation_kwargs: dict[str, Any] | None = None,
        streaming_callback: StreamingCallbackT | None = None,
        documents: list[Document] | None = None,
        query: str | None = None,
    ) -> dict[str, list[ChatMessage]]:
        """
        Generates a reply.

        :param messages: The conversation (a list of ChatMessage, or a str for one user message). Not needed
            when `query` and `documents` are given to a generator with a cache mode.
        :param generation_kwargs: Overrides of the init `generation_kwargs` for this call.
        :param streaming_callback: Overrides the init streaming callback for this call.
        :param documents: Retrieved documents to answer from (used with a cache mode, or without messages).
        :param query: The question to answer from `documents`.
        :returns: A dictionary with the key `replies`: one assistant ChatMessage whose `meta` holds `model`,
            `finish_reason`, `usage`, `timings` (seconds) and, with a cache mode, cache statistics.
        :raises TypeError: If an input has the wrong type.
        :raises ValueError: If nothing to answer is given, or a generation kwarg is unknown or invalid.
        """
        if streaming_callback is not None and not callable(streaming_callback):  # not after the prefill
            raise TypeError(f"streaming_callback must be callable, not {type(streaming_callback).__name__}")
        emit = select_streaming_callback(self.streaming_callback, streaming_callback, requires_async=False)
        return self._generate(messages, generation_kwargs, documents, query, emit)

    @component.output_types(replies=list[ChatMessage])
    async def run_async(
        self,
        messages: list[ChatMessage] | str | None = None,
        generation_kwargs: dict[str, Any] | None = None,
        streaming_callback: StreamingCallbackT | None = None,
        documents: list[Document] | None = None,
        query: str | None = None,
    ) -> dict[str, list[ChatMessage]]:
        """
        Asynchronously generates a reply (generation runs in a worker thread; an async streaming callback is
        awaited on the caller's event loop).

        :param messages: See `run`.
        :param generation_kwargs: See `run`.
        :param streaming_callback: See `run`; may be a coroutine function.
        :param documents: See `run`.
        :param query: See `run`.
        :returns: A dictionary with the key `replies`.
        """
        if streaming_callback is not None and not callable(streaming_callback):  # not after the prefill
            raise TypeError(f"streaming_callback must be callable, not {type(streaming_callback).__name__}")
        selected = select_streaming_callback(self.streaming_callback, streaming_callback, requires_async=True)
        emit = None
        if selected is not None:
            loop = asyncio.get_running_loop()
            if inspect.iscoroutinefunction(selected):
                def emit(chunk: StreamingChunk) -> None:
                    asyncio.run_coroutine_threadsafe(selected(chunk), loop).result()
            else:
                def emit(chunk: StreamingChunk) -> None:
                    loop.call_soon_threadsafe(selected, chunk)
        return await asyncio.to_thread(self._generate, messages, generation_kwargs, documents, query, emit)
