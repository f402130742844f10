# SPDX-FileCopyrightText: 2026-present grit-components developers
#
# SPDX-License-Identifier: Apache-2.0
"""Haystack chat generator for GRIT models, optionally reusing the KV caches of retrieved documents."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable
from typing import Any

from haystack import Document, component
from haystack.dataclasses import ChatMessage, ChatRole, ComponentInfo, StreamingChunk, ToolCall, ToolCallDelta
from haystack.dataclasses.streaming_chunk import StreamingCallbackT, select_streaming_callback
from haystack.tools import (
    ToolsType,
    deserialize_tools_or_toolset_inplace,
    flatten_tools_or_toolsets,
    serialize_tools_or_toolset,
)
from haystack.utils import ComponentDevice, Secret, deserialize_callable, serialize_callable

from grit_components import DEFAULT_MODEL, GenerationOptions, GritGenerator, LoadingOptions
from grit_components.generation import parse_tool_calls
from haystack_integrations.common.grit.component import GritModelComponent


def default_tool_parser(text: str) -> list[ToolCall] | None:
    """Tool calls in a reply written in the JSON-in-text format (`<tool_call>{"name": ..., "arguments": {...}}
    </tool_call>`; see `grit_components.generation.parse_tool_calls`), or None when there are none.

    The default `tool_parsing_function` of `GritChatGenerator`. Calls that cannot be read are skipped here;
    the generator reports them in the reply's `meta["tool_call_errors"]`.
    """
    calls = parse_tool_calls(text).calls
    return [ToolCall(tool_name=call["name"], arguments=call["arguments"]) for call in calls] or None


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

    Tools (`tools`, at init or per run, as Haystack's `Agent` passes them) are rendered by the tokenizer's
    chat template when it supports tools, else in the JSON-in-text format of
    `grit_components.templates.TOOLS_SYSTEM` (always for GritLM's GRIT chat format). The reply is parsed by
    `tool_parsing_function` (default `default_tool_parser`) into `ToolCall`s; tool calls and tool results
    in `messages` are rendered back in the same format, so the component works inside `Agent`.

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
        kv_cache_dtype: str | None = None,
        cache_mode: str = "none",
        cache_source: str = "embedding",
        device: ComponentDevice | None = None,
        token: Secret | None = Secret.from_env_var(["HF_API_TOKEN", "HF_TOKEN"], strict=False),
        model_kwargs: dict[str, Any] | None = None,
        tokenizer_kwargs: dict[str, Any] | None = None,
        tools: ToolsType | None = None,
        tool_parsing_function: Callable[[str], list[ToolCall] | None] | None = None,
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
        :param kv_cache_dtype: The form the model's shared KV store keeps caches in (set once per model):
            `None` (the model's dtype; exact), `"bfloat16"`, `"float16"` or `"int8"`: smaller caches, fewer
            bytes read per new token, an approximation (see the KV caching docs).
        :param cache_mode: `"none"`, or the RAG KV caching mode: `"query"`, `"doc"`, `"query_doc"`,
            `"doc_query"` or `"multi_doc"`.
        :param cache_source: Where reused caches come from: `"embedding"` (the embedding pass) or `"causal"`.
        :param model, device, token, model_kwargs, tokenizer_kwargs: The model (default `grit-smollm2-135m`) and
            how to load it: see `GritModelComponent`.
        :param tools: Tools (or Toolsets) the model may call; `run` may replace them.
        :param tool_parsing_function: Reads the `ToolCall`s from the generated text (None when there are none);
            default `default_tool_parser`, for the JSON-in-text format.
        """
        self.generation_kwargs = generation_kwargs or {}
        if streaming_callback is not None and not callable(streaming_callback):
            raise TypeError(f"streaming_callback must be callable, not {type(streaming_callback).__name__}")
        self.streaming_callback = streaming_callback
        self.kv_cache_directory = kv_cache_directory
        self.kv_cache_max_bytes = kv_cache_max_bytes
        self.kv_cache_dtype = kv_cache_dtype
        self.cache_mode = cache_mode
        self.cache_source = cache_source
        if tool_parsing_function is not None and not callable(tool_parsing_function):
            raise TypeError("tool_parsing_function must be callable")
        self.tools = tools
        self.tool_parsing_function = tool_parsing_function
        self._tool_specs(tools)  # bad tools fail at init, not at the first run
        self._set_model_parameters(model, device, token, model_kwargs, tokenizer_kwargs)

    def _build_core(self, loading: LoadingOptions) -> GritGenerator:
        return GritGenerator(self.model, generation_kwargs=self.generation_kwargs,
                             cache_mode=self.cache_mode, cache_source=self.cache_source,
                             loading=loading)

    def to_dict(self) -> dict[str, Any]:
        """
        Serializes the component to a dictionary.

        :returns: Dictionary with serialized data (tools and the parsing function included).
        """
        # No zero-argument super(): @component replaces the class, so its __class__ cell is not `type(self)`.
        data = GritModelComponent.to_dict(self)
        params = data["init_parameters"]
        params["tools"] = serialize_tools_or_toolset(self.tools)
        if self.tool_parsing_function is not None:
            params["tool_parsing_function"] = serialize_callable(self.tool_parsing_function)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GritChatGenerator":
        """
        Deserializes the component from a dictionary.

        :param data: Dictionary to deserialize from.
        :returns: The deserialized component.
        """
        params = data.get("init_parameters", {})
        deserialize_tools_or_toolset_inplace(params, key="tools")
        if params.get("tool_parsing_function"):
            params["tool_parsing_function"] = deserialize_callable(params["tool_parsing_function"])
        return GritModelComponent.from_dict.__func__(cls, data)

    @staticmethod
    def _tool_specs(tools: ToolsType | None) -> list[dict[str, Any]]:
        try:
            flat = flatten_tools_or_toolsets(tools)
        except TypeError as error:
            raise TypeError(f"tools must be a list of Tool/Toolset or a Toolset: {error}") from error
        names = [tool.name for tool in flat]
        if len(set(names)) != len(names):
            raise ValueError(f"tools: duplicate tool names in {names}")
        return [{"type": "function", "function": tool.tool_spec} for tool in flat]

    @property
    def generator(self) -> GritGenerator:
        """The core generator this component wraps (loaded on first access)."""
        return self._warm_core()

    @staticmethod
    def _to_core_messages(messages: list[ChatMessage] | str) -> str | list[dict[str, Any]]:
        if isinstance(messages, str):
            return messages
        if not isinstance(messages, list) or not all(isinstance(m, ChatMessage) for m in messages):
            raise TypeError("messages must be a str or a list of ChatMessage")
        converted: list[dict[str, Any]] = []
        for message in messages:
            if message.role == ChatRole.TOOL:
                for result in message.tool_call_results:  # one tool message per result, as OpenAI's API has it
                    content = result.result if isinstance(result.result, str) else json.dumps(
                        [getattr(part, "text", str(part)) for part in result.result], ensure_ascii=False)
                    converted.append({"role": "tool", "content": content, "name": result.origin.tool_name,
                                      **({"tool_call_id": result.origin.id} if result.origin.id else {})})
                continue
            if message.text is None and not message.tool_calls:
                raise ValueError(f"GritChatGenerator supports text, tool call and tool result messages; got a "
                                 f"{message.role.value} message without text (images are not supported)")
            entry: dict[str, Any] = {"role": message.role.value, "content": message.text or ""}
            if message.tool_calls:
                entry["tool_calls"] = [{"name": call.tool_name, "arguments": call.arguments,
                                        **({"id": call.id} if call.id else {})} for call in message.tool_calls]
            converted.append(entry)
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

    def _generate(self, messages, kwargs, documents, query, emit, tools=None):
        rag, core_messages, kwargs = self._prepare(messages, kwargs, documents, query)
        specs = self._tool_specs(tools if tools is not None else self.tools)
        if specs and rag is not None:
            raise ValueError("tools need `messages`: a cache-mode RAG answer (`query` and `documents`) cannot call tools")
        info = ComponentInfo.from_component(self)
        callback = None
        if emit is not None:
            def callback(piece: str) -> None:
                emit(StreamingChunk(content=piece, component_info=info))

        if rag is None:
            result = self.generator.generate(core_messages, tools=specs or None, streaming_callback=callback, **kwargs)
        else:
            result = self.generator.answer(rag[0], rag[1], streaming_callback=callback, **kwargs)
        text, tool_calls, errors = result.text, [], []
        if specs:
            text, tool_calls, errors = self._parse_tools(result.text)
        finish_reason = "tool_calls" if tool_calls else result.finish_reason
        if emit is not None:
            deltas = [ToolCallDelta(index=i, tool_name=call.tool_name, arguments=json.dumps(call.arguments),
                                    id=call.id) for i, call in enumerate(tool_calls)]
            # The last chunk carries the usage, as Haystack's OpenAI generators' last chunk does.
            emit(StreamingChunk(content="", component_info=info, tool_calls=deltas or None,
                                index=0 if deltas else None, finish_reason=finish_reason,
                                meta={"model": self.model, "finish_reason": finish_reason,
                                      "usage": dict(result.usage)}))
        meta: dict[str, Any] = {
            "model": self.model,
            "finish_reason": finish_reason,
            "usage": dict(result.usage),
            "timings": dict(result.timings),
            "cache_mode": self.cache_mode if rag is not None else "none",
        }
        if getattr(result, "stats", None):
            meta["cache"] = dict(result.stats)
        if errors:
            meta["tool_call_errors"] = errors
        return {"replies": [ChatMessage.from_assistant(text or None if tool_calls else text, meta=meta,
                                                       tool_calls=tool_calls or None)]}

    def _parse_tools(self, text: str) -> tuple[str, list[ToolCall], list[str]]:
        """The reply's text without the calls, its `ToolCall`s, and why any call could not be read."""
        if self.tool_parsing_function is None:
            parsed = parse_tool_calls(text)
            calls = [ToolCall(tool_name=c["name"], arguments=c["arguments"]) for c in parsed.calls]
            return (parsed.text if calls else text), calls, parsed.errors
        try:
            calls = self.tool_parsing_function(text) or []
        except Exception as error:  # noqa: BLE001 - a user's parser failing must not end the conversation
            return text, [], [f"tool_parsing_function failed: {type(error).__name__}: {error}"]
        return text, list(calls), []

    def _upstream_branch_not_taken(self) -> bool:
        """Whether this generator's conversation comes from other components of its pipeline (`messages`,
        `query` or `documents` connected) and none of it came: a router upstream took the other branch
        (`GritAnswerabilityRouter` declining, in rag_answerability.yaml). Haystack still runs the generator when
        the request gave it options (`generation_kwargs`, hayhooks' streaming callback); it then has nothing to
        answer and sends nothing, so the other branch's reply stands. Outside a pipeline, or with those inputs
        unconnected, a run without them is the caller's mistake and raises."""
        sockets = getattr(self, "__haystack_input__", None)
        connected = getattr(sockets, "_sockets_dict", {})
        return any(connected[name].senders for name in ("messages", "query", "documents") if name in connected)

    @component.output_types(replies=list[ChatMessage])
    def run(
        self,
        messages: list[ChatMessage] | str | None = None,
        generation_kwargs: dict[str, Any] | None = None,
        streaming_callback: StreamingCallbackT | None = None,
        documents: list[Document] | None = None,
        query: str | None = None,
        tools: ToolsType | None = None,
    ) -> dict[str, list[ChatMessage]]:
        """
        Generates a reply.

        :param messages: The conversation (a list of ChatMessage, or a str for one user message). Not needed
            when `query` and `documents` are given to a generator with a cache mode.
        :param generation_kwargs: Overrides of the init `generation_kwargs` for this call.
        :param streaming_callback: Overrides the init streaming callback for this call.
        :param documents: Retrieved documents to answer from (used with a cache mode, or without messages).
        :param query: The question to answer from `documents`.
        :param tools: Tools the model may call in this run (replace the init `tools`).
        :returns: A dictionary with the key `replies` (none when, in a pipeline, its connected inputs did not come:
            a router upstream took the other branch): one assistant ChatMessage whose `meta` holds `model`,
            `finish_reason` (`"tool_calls"` when it calls tools), `usage`, `timings` (seconds), with a cache
            mode cache statistics, and `tool_call_errors` when a call could not be read (unparseable JSON,
            no name): the reply then keeps the raw text, so the caller or an agent can react.
        :raises TypeError: If an input has the wrong type.
        :raises ValueError: If nothing to answer is given, or a generation kwarg is unknown or invalid.
        """
        if messages is None and query is None and documents is None and self._upstream_branch_not_taken():
            return {}
        if streaming_callback is not None and not callable(streaming_callback):  # not after the prefill
            raise TypeError(f"streaming_callback must be callable, not {type(streaming_callback).__name__}")
        emit = select_streaming_callback(self.streaming_callback, streaming_callback, requires_async=False)
        return self._generate(messages, generation_kwargs, documents, query, emit, tools)

    @component.output_types(replies=list[ChatMessage])
    async def run_async(
        self,
        messages: list[ChatMessage] | str | None = None,
        generation_kwargs: dict[str, Any] | None = None,
        streaming_callback: StreamingCallbackT | None = None,
        documents: list[Document] | None = None,
        query: str | None = None,
        tools: ToolsType | None = None,
    ) -> dict[str, list[ChatMessage]]:
        """
        Asynchronously generates a reply (generation runs in a worker thread; an async streaming callback is
        awaited on the caller's event loop).

        :param messages: See `run`.
        :param generation_kwargs: See `run`.
        :param streaming_callback: See `run`; may be a coroutine function.
        :param documents: See `run`.
        :param query: See `run`.
        :param tools: See `run`.
        :returns: A dictionary with the key `replies`.
        """
        if messages is None and query is None and documents is None and self._upstream_branch_not_taken():
            return {}
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
        return await asyncio.to_thread(self._generate, messages, generation_kwargs, documents, query, emit, tools)
