"""GritLLM: a LlamaIndex `FunctionCallingLLM` backed by the core `GritGenerator` (one shared GRIT model)."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Dict, List, Literal, Optional, Union

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection

from grit_components.components import GritGenerator
from grit_components.generation import GenerationResult, parse_tool_calls
from grit_components.models import DEFAULT_MODEL
from grit_components.options import GenerationOptions
from grit_components.registry import ModelRegistry
from llama_index.utils.grit import GritModelFields

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

# LlamaIndex roles the core understands; "developer" is OpenAI's newer name for a system message.
_ROLES = {MessageRole.SYSTEM: "system", MessageRole.DEVELOPER: "system", MessageRole.USER: "user",
          MessageRole.ASSISTANT: "assistant", MessageRole.TOOL: "tool", MessageRole.FUNCTION: "tool"}
_DONE = object()
TOOL_CALLS_KEY = "tool_calls"  # where a response message keeps its calls: [{"id", "name", "arguments"}]


def to_core_messages(messages: Sequence[ChatMessage]) -> List[Dict[str, Any]]:
    """LlamaIndex chat messages as the core's `{"role", "content"}` dicts (text blocks only); an assistant
    message's `additional_kwargs["tool_calls"]` and a tool message's `tool_call_id`/`name` are kept."""
    converted = []
    for i, message in enumerate(messages):
        role = _ROLES.get(message.role)
        if role is None:
            raise ValueError(f"messages[{i}] has role {message.role.value!r}; GritLLM supports system, user, "
                             "assistant and tool")
        entry: Dict[str, Any] = {"role": role, "content": message.content or ""}
        extra = message.additional_kwargs or {}
        if role == "assistant" and extra.get(TOOL_CALLS_KEY):
            entry["tool_calls"] = [_core_call(call) for call in extra[TOOL_CALLS_KEY]]
        if role == "tool":
            entry.update({key: extra[key] for key in ("tool_call_id", "name") if extra.get(key)})
        converted.append(entry)
    return converted


def _core_call(call: Any) -> Dict[str, Any]:
    """A call kept in a message (ours, a ToolSelection, or OpenAI's {"function": {...}}) in the core's form."""
    if isinstance(call, ToolSelection):
        return {"name": call.tool_name, "arguments": call.tool_kwargs, "id": call.tool_id}
    function = call.get("function", call)
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        arguments = json.loads(arguments or "{}")
    return {"name": function["name"], "arguments": arguments, **({"id": call["id"]} if call.get("id") else {})}


class _StreamClosed(Exception):
    """Raised inside the generation thread when the consumer stopped reading the stream."""


def stream_in_thread(run: Callable[[Callable[[str], None]], Any]) -> Iterator[tuple[str, Any]]:
    """Run `run(callback)` in a thread and yield `("delta", text)` per callback, then `("result", result)`.

    The core streams through a callback; LlamaIndex streams through generators. Errors in the thread are
    raised in the consumer. When the consumer stops early (`break`, `close()`, garbage collection), the
    next callback raises inside the thread, so generation stops after at most one more token instead
    of running to `max_new_tokens`.
    """
    events: queue.Queue = queue.Queue()
    closed = threading.Event()

    def callback(delta: str) -> None:
        if closed.is_set():
            raise _StreamClosed
        events.put(("delta", delta))

    def target() -> None:
        try:
            events.put(("result", run(callback)))
        except _StreamClosed:
            pass
        except BaseException as error:  # noqa: BLE001 - re-raised in the consumer
            events.put(("error", error))
        finally:
            events.put((_DONE, None))

    worker = threading.Thread(target=target, name="grit-llm-stream", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = events.get()
            if kind is _DONE:
                break
            if kind == "error":
                raise value
            yield kind, value
    finally:
        closed.set()
        worker.join()


class GritLLM(GritModelFields, FunctionCallingLLM):
    """A GRIT model (GritLM) as a LlamaIndex LLM: complete, chat, streaming and async variants, plus
    cache-aware answering from retrieved documents (`answer`, used by `GritCacheSynthesizer`).

    GritLM models get the GRIT chat format, which has no system role: system messages are folded into the
    next user turn. Other models (e.g. SmolLM2) get their tokenizer's chat template. `complete(prompt)`
    sends `system_prompt` (if set) and the prompt as one user turn of that chat format. The model is
    shared, through the `grit_components` registry, with every `GritEmbedding` and `GritRerank` naming the
    same model with the same loading fields. Responses carry the token usage in `raw["usage"]`, where
    LlamaIndex's token counting reads it.

    Tool calling (`FunctionCallingLLM`: `chat_with_tools`, `predict_and_call`, `FunctionAgent`): tools are
    rendered by the tokenizer's chat template when it supports them, else in the JSON-in-text format of
    `grit_components.templates.TOOLS_SYSTEM` (always for the GRIT chat format). The reply's calls are read by
    `tool_parsing_function` (default: `grit_components.generation.parse_tool_calls`) and kept in
    `message.additional_kwargs["tool_calls"]`; calls that could not be read are listed in
    `raw["tool_call_errors"]`.

    Examples:
        ```python
        from llama_index.core.llms import ChatMessage
        from llama_index.llms.grit import GritLLM

        llm = GritLLM(model_name="smollm2-135m-instruct", max_new_tokens=32,
                      generate_kwargs={"repetition_penalty": 1.1})
        print(llm.complete("What is the capital of France?").text)
        for chunk in llm.stream_chat([ChatMessage(role="system", content="Answer briefly."),
                                      ChatMessage(role="user", content="Name a prime number.")]):
            print(chunk.delta, end="")
        ```

    :param model_name: hub id, local directory, GGUF file or packaged alias.
    :param context_window: tokens the model can attend to; default: from the model config.
    :param max_new_tokens: most tokens to generate per call (`metadata.num_output`).
    :param generate_kwargs: further generation defaults: any Hugging Face `GenerationConfig` key
        (`temperature`, `top_p`, `repetition_penalty`, ...) plus `stop_words` and `seed`; greedy unless a
        `temperature` > 0 is given. Keywords given to a call win.
    :param chat_format: "auto" (GRIT format for GritLM models, else the tokenizer's template), "grit" or
        "template". It belongs to the shared model, so objects on one model must agree.
    :param token: hub token for private models (not serialised).
    :param registry: a `grit_components.ModelRegistry` other than the default one (not serialised).
    Model loading fields (`device`, `dtype`, `model_kwargs`, ...): see `llama_index.utils.grit.GritModelFields`.
    """

    model_name: str = Field(default=DEFAULT_MODEL, description="Hub id, local directory, GGUF file or packaged alias.")
    context_window: Optional[int] = Field(default=None, gt=0, description="Context window; default from the model.")
    max_new_tokens: int = Field(default=256, gt=0, description="Most tokens to generate per call.")
    generate_kwargs: Dict[str, Any] = Field(
        default_factory=dict, description="Further generation defaults: any GenerationConfig key, stop_words, seed, decode_backend.")
    chat_format: Literal["auto", "grit", "template"] = Field(default="auto", description="Chat prompt format.")
    tool_parsing_function: Optional[Callable[[str], List[ToolSelection]]] = Field(
        default=None, exclude=True, description="Reads the tool calls from the generated text (default: JSON in text).")

    def __init__(self, model_name: str = DEFAULT_MODEL, *, token: Optional[str] = None,
                 registry: Optional[ModelRegistry] = None, **kwargs: Any) -> None:
        super().__init__(model_name=model_name, **kwargs)
        if "max_new_tokens" in self.generate_kwargs:
            raise ValueError("give max_new_tokens as its own field (LlamaIndex reads it as metadata.num_output), "
                             "not in generate_kwargs")
        defaults = GenerationOptions(self.generate_kwargs, name="generate_kwargs").merged(
            max_new_tokens=self.max_new_tokens)
        self._core = GritGenerator(self.model_name, generation_kwargs=defaults, registry=registry,
                                   loading=self._loading_options(token, chat_format=self.chat_format))

    @property
    def generator(self) -> GritGenerator:
        """The core `GritGenerator` this class wraps."""
        return self._core

    @classmethod
    def class_name(cls) -> str:
        return "GritLLM"

    @property
    def metadata(self) -> LLMMetadata:
        context_window = self.context_window or self.generator.model.context_length
        return LLMMetadata(context_window=context_window, num_output=self.max_new_tokens, is_chat_model=True,
                           is_function_calling_model=True, model_name=self.model_name)

    # -- tool calling (FunctionCallingLLM) -------------------------------------------------------------------

    def _prepare_chat_with_tools(
        self,
        tools: Sequence["BaseTool"],
        user_msg: Optional[Union[str, ChatMessage]] = None,
        chat_history: Optional[List[ChatMessage]] = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> Dict[str, Any]:
        """The `chat` arguments for a turn with tools: the history, the user message and the tool specs."""
        messages = list(chat_history or [])
        if user_msg is not None:
            messages.append(ChatMessage(role=MessageRole.USER, content=user_msg) if isinstance(user_msg, str)
                            else user_msg)
        specs = [tool.metadata.to_openai_tool() for tool in tools]
        return {"messages": messages, "tools": specs, **kwargs}

    def _validate_chat_with_tools_response(self, response: ChatResponse, tools: Sequence["BaseTool"],
                                           allow_parallel_tool_calls: bool = False, **kwargs: Any) -> ChatResponse:
        calls = response.message.additional_kwargs.get(TOOL_CALLS_KEY) or []
        if not allow_parallel_tool_calls and len(calls) > 1:
            response.message.additional_kwargs[TOOL_CALLS_KEY] = calls[:1]
        return response

    def get_tool_calls_from_response(self, response: ChatResponse, error_on_no_tool_call: bool = True,
                                     **kwargs: Any) -> List[ToolSelection]:
        """The tool calls of a `chat_with_tools` response (empty, or a ValueError with `error_on_no_tool_call`)."""
        calls = response.message.additional_kwargs.get(TOOL_CALLS_KEY) or []
        if not calls and error_on_no_tool_call:
            errors = (response.raw or {}).get("tool_call_errors") if isinstance(response.raw, dict) else None
            raise ValueError(f"expected at least one tool call{': ' + '; '.join(errors) if errors else ''}; "
                             f"the model replied {response.message.content!r}")
        return [ToolSelection(tool_id=call["id"], tool_name=call["name"], tool_kwargs=call["arguments"])
                for call in calls]

    def _tool_message(self, result: GenerationResult, tools: Optional[List[Dict[str, Any]]]) -> ChatMessage:
        """The assistant message of a result, with the calls read from it when tools were offered."""
        raw = _raw(result)
        if not tools:
            return ChatMessage(role=MessageRole.ASSISTANT, content=result.text)
        text, errors = result.text, []
        if self.tool_parsing_function is not None:
            try:
                selections = list(self.tool_parsing_function(result.text) or [])
            except Exception as error:  # noqa: BLE001 - a user's parser failing must not end the conversation
                selections, errors = [], [f"tool_parsing_function failed: {type(error).__name__}: {error}"]
            calls = [{"id": s.tool_id, "name": s.tool_name, "arguments": s.tool_kwargs} for s in selections]
        else:
            parsed = parse_tool_calls(result.text)
            calls = [{"id": f"call_{uuid.uuid4().hex[:12]}", **call} for call in parsed.calls]
            errors = parsed.errors
            if calls:
                text = parsed.text
        if errors:
            result.tool_call_errors = errors  # read by _raw
        extra = {TOOL_CALLS_KEY: calls} if calls else {}
        return ChatMessage(role=MessageRole.ASSISTANT, content=text, additional_kwargs=extra)

    # -- core calls (no callbacks: the public methods below emit LlamaIndex's events once) ----------------

    def _prompt_messages(self, prompt: str, formatted: bool) -> List[Dict[str, str]]:
        if not isinstance(prompt, str) or not prompt:
            raise ValueError("prompt must be a non-empty str")
        if formatted:
            return [{"role": "user", "content": prompt}]
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return [*system, {"role": "user", "content": self.completion_to_prompt(prompt)}]

    def _run(self, call: Callable[..., GenerationResult], kwargs: Dict[str, Any], **arguments: Any) -> GenerationResult:
        return call(**arguments, **kwargs)

    def _stream(self, call: Callable[..., GenerationResult], kwargs: Dict[str, Any],
                **arguments: Any) -> Iterator[tuple[str, Any]]:
        self.generator.options(kwargs)  # bad keys fail here, before the thread starts
        return stream_in_thread(lambda callback: call(**arguments, streaming_callback=callback, **kwargs))

    def _complete(self, prompt: str, formatted: bool, kwargs: Dict[str, Any]) -> CompletionResponse:
        return _completion(self._run(self.generator.generate, kwargs,
                                     messages=self._prompt_messages(prompt, formatted)))

    def _chat(self, messages: Sequence[ChatMessage], kwargs: Dict[str, Any]) -> ChatResponse:
        tools = kwargs.pop("tools", None)
        result = self._run(self.generator.generate, kwargs, messages=to_core_messages(messages), tools=tools)
        message = self._tool_message(result, tools)
        return ChatResponse(message=message, raw=_raw(result), additional_kwargs=_raw(result))

    def _chat_events(self, messages: Sequence[ChatMessage], kwargs: Dict[str, Any]) -> ChatResponseGen:
        tools = kwargs.pop("tools", None)
        return _chat_stream(self._stream(self.generator.generate, kwargs, messages=to_core_messages(messages),
                                         tools=tools), lambda result: self._tool_message(result, tools))

    # -- cache-aware answering (what GritCacheSynthesizer calls) ---------------------------------------------

    def _answer_arguments(self, prompt: str, query: str, documents: Sequence[str], mode: str, source: str,
                          order: str) -> Dict[str, Any]:
        return {"query": query, "documents": list(documents), "mode": mode, "source": source, "order": order,
                "user_content": prompt}

    @llm_completion_callback()
    def answer(self, prompt: str, *, query: str, documents: Sequence[str], mode: str = "doc",
               source: str = "embedding", order: str = "doc_first", **kwargs: Any) -> CompletionResponse:
        """Answer from retrieved `documents` with a GRIT cache mode, reusing their cached key/value states.

        Emits LlamaIndex's LLM events like `complete`, with `prompt` as the prompt.

        :param prompt: the user turn after the cached texts (it holds what the mode does not cache; see
            `grit_components.templates.rag_user_content` for each mode's own wording).
        :param query: the question (cached in the modes "query", "query_doc", "doc_query").
        :param documents: the retrieved texts, best first.
        :param mode: "none", "query", "doc", "query_doc", "doc_query" or "multi_doc" (see `grit_components.rag`).
        :param source: "embedding" (states of the embedding pass, as in the GRIT paper) or "causal" (exact).
        :param order: prompt order of mode "none": "doc_first" or "query_first".
        :param kwargs: generation overrides, as for `complete`.
        :returns: a `CompletionResponse`; `raw` holds `usage`, `finish_reason`, `timings` and `cache` statistics.
        """
        return _completion(self._run(self.generator.answer, kwargs,
                                     **self._answer_arguments(prompt, query, documents, mode, source, order)))

    @llm_completion_callback()
    def stream_answer(self, prompt: str, *, query: str, documents: Sequence[str], mode: str = "doc",
                      source: str = "embedding", order: str = "doc_first", **kwargs: Any) -> CompletionResponseGen:
        """`answer`, streamed: each `CompletionResponse` has the new `delta`; the last one carries `raw`."""
        return _completion_stream(self._stream(self.generator.answer, kwargs,
                                               **self._answer_arguments(prompt, query, documents, mode, source,
                                                                        order)))

    @llm_completion_callback()
    async def aanswer(self, prompt: str, *, query: str, documents: Sequence[str], mode: str = "doc",
                      source: str = "embedding", order: str = "doc_first", **kwargs: Any) -> CompletionResponse:
        """`answer` in a worker thread."""
        arguments = self._answer_arguments(prompt, query, documents, mode, source, order)
        return _completion(await asyncio.to_thread(self._run, self.generator.answer, kwargs, **arguments))

    # -- completion ---------------------------------------------------------------------------------------

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self._complete(prompt, formatted, kwargs)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        return _completion_stream(self._stream(self.generator.generate, kwargs,
                                               messages=self._prompt_messages(prompt, formatted)))

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return await asyncio.to_thread(self._complete, prompt, formatted, kwargs)

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        return _to_async(_completion_stream(self._stream(self.generator.generate, kwargs,
                                                         messages=self._prompt_messages(prompt, formatted))))

    # -- chat -----------------------------------------------------------------------------------------------

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._chat(messages, kwargs)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        return self._chat_events(messages, kwargs)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await asyncio.to_thread(self._chat, messages, kwargs)

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        return _to_async(self._chat_events(messages, kwargs))


def _raw(result: GenerationResult) -> Dict[str, Any]:
    """What a response reports of a core result; `usage` is where LlamaIndex's token counting looks."""
    raw: Dict[str, Any] = {"finish_reason": result.finish_reason, "usage": dict(result.usage),
                           "timings": dict(result.timings)}
    if getattr(result, "stats", None):
        raw["cache"] = dict(result.stats)
    if getattr(result, "tool_call_errors", None):
        raw["tool_call_errors"] = list(result.tool_call_errors)
    return raw


def _completion(result: GenerationResult) -> CompletionResponse:
    return CompletionResponse(text=result.text, raw=_raw(result), additional_kwargs=_raw(result))


def _completion_stream(events: Iterator[tuple[str, Any]]) -> CompletionResponseGen:
    text = ""
    for kind, value in events:
        if kind == "delta":
            text += value
            yield CompletionResponse(text=text, delta=value)
        else:
            yield CompletionResponse(text=text, delta="", raw=_raw(value), additional_kwargs=_raw(value))


def _chat_stream(events: Iterator[tuple[str, Any]],
                 final_message: Optional[Callable[[GenerationResult], ChatMessage]] = None) -> ChatResponseGen:
    """Chat responses per text delta; the last one (empty delta) carries `raw` and, with tools, the calls."""
    text = ""
    for kind, value in events:
        if kind == "delta":
            text += value
            yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=value)
        else:
            message = final_message(value) if final_message else ChatMessage(role=MessageRole.ASSISTANT, content=text)
            yield ChatResponse(message=message, delta="", raw=_raw(value), additional_kwargs=_raw(value))


async def _to_async(iterator: Iterator[Any]):
    """Drive a blocking iterator from a worker thread, one item at a time."""
    while True:
        item = await asyncio.to_thread(next, iterator, _DONE)
        if item is _DONE:
            return
        yield item
