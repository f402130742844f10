"""GritLLM: a LlamaIndex `CustomLLM` backed by the core `GritGenerator` (one shared GRIT model)."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Dict, List, Literal, Optional

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
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM

from grit_components.components import GritGenerator
from grit_components.generation import GenerationResult
from grit_components.models import DEFAULT_MODEL
from grit_components.registry import ModelHandle, ModelRegistry

# LlamaIndex roles the core understands; "developer" is OpenAI's newer name for a system message.
_ROLES = {MessageRole.SYSTEM: "system", MessageRole.DEVELOPER: "system", MessageRole.USER: "user",
          MessageRole.ASSISTANT: "assistant"}
_DONE = object()


def to_core_messages(messages: Sequence[ChatMessage]) -> List[Dict[str, str]]:
    """LlamaIndex chat messages as the core's `{"role", "content"}` dicts (text blocks only)."""
    converted = []
    for i, message in enumerate(messages):
        role = _ROLES.get(message.role)
        if role is None:
            raise ValueError(f"messages[{i}] has role {message.role.value!r}; GritLLM supports system, user and assistant")
        converted.append({"role": role, "content": message.content or ""})
    return converted


def _usage(result: GenerationResult) -> Dict[str, Any]:
    return {"finish_reason": result.finish_reason, "usage": result.usage, "timings": dict(result.timings)}


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


class GritLLM(CustomLLM):
    """A GRIT model (GritLM) as a LlamaIndex LLM: complete, chat, streaming and async variants.

    GritLM models get the GRIT chat format, which has no system role: system messages are folded into the
    next user turn. Other models (e.g. SmolLM2) get their tokenizer's chat template. `complete(prompt)`
    sends the prompt as one user turn of that chat format. The model is shared, through the
    `grit_components` registry, with every `GritEmbedding` and `GritRerank` naming the same model.

    Examples:
        ```python
        from llama_index.core.llms import ChatMessage
        from llama_index.llms.grit import GritLLM

        llm = GritLLM(model_name="smollm2-135m-instruct", max_new_tokens=32)
        print(llm.complete("What is the capital of France?").text)
        for chunk in llm.stream_chat([ChatMessage(role="system", content="Answer briefly."),
                                      ChatMessage(role="user", content="Name a prime number.")]):
            print(chunk.delta, end="")
        ```

    :param model_name: hub id, local directory, GGUF file or packaged alias.
    :param context_window: tokens the model can attend to; default: from the model config.
    :param max_new_tokens: most tokens to generate per call.
    :param temperature: 0 = greedy (deterministic); > 0 samples.
    :param top_p: nucleus sampling mass when sampling.
    :param stop_words: strings that end generation.
    :param generate_kwargs: further defaults for every call (e.g. `{"seed": 0}`); per-call kwargs win.
    :param chat_format: "auto" (GRIT format for GritLM models, else the tokenizer's template), "grit" or
        "template". Applies when this object is the first to load the model (the registry keeps one copy).
    :param device: "cpu", "cuda", "mps"...; default: an accelerator if present.
    :param dtype: "float32", "bfloat16" or "float16"; default: float32 on CPU, bfloat16 elsewhere.
    :param revision: hub revision.
    :param trust_remote_code: allow model code from the hub repository.
    :param token: hub token for private models (not serialised).
    :param registry: a `grit_components.ModelRegistry` other than the default one (not serialised).
    """

    model_name: str = Field(default=DEFAULT_MODEL, description="Hub id, local directory, GGUF file or packaged alias.")
    context_window: Optional[int] = Field(default=None, gt=0, description="Context window; default from the model.")
    max_new_tokens: int = Field(default=256, gt=0, description="Most tokens to generate per call.")
    temperature: float = Field(default=0.0, ge=0.0, description="0 = greedy decoding; > 0 samples.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass when sampling.")
    stop_words: List[str] = Field(default_factory=list, description="Strings that end generation.")
    generate_kwargs: Dict[str, Any] = Field(default_factory=dict, description="Further generation defaults.")
    chat_format: Literal["auto", "grit", "template"] = Field(default="auto", description="Chat prompt format.")
    device: Optional[str] = Field(default=None, description="Torch device; default: accelerator if present.")
    dtype: Optional[str] = Field(default=None, description="float32, bfloat16 or float16; default by device.")
    revision: Optional[str] = Field(default=None, description="Hub revision (branch, tag or commit).")
    trust_remote_code: bool = Field(default=False, description="Allow model code from the hub repository.")

    _generator: GritGenerator = PrivateAttr()

    def __init__(self, model_name: str = DEFAULT_MODEL, *, token: Optional[str] = None,
                 registry: Optional[ModelRegistry] = None, **kwargs: Any) -> None:
        super().__init__(model_name=model_name, **kwargs)
        self._generator = GritGenerator(
            self.model_name, max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p,
            stop_words=self.stop_words, device=self.device, dtype=self.dtype, revision=self.revision, token=token,
            trust_remote_code=self.trust_remote_code, registry=registry)
        if self.chat_format != "auto":
            # The core components take the chat format only through the handle: give it one that asks for it.
            self._generator.handle = ModelHandle(
                self.model_name, device=self.device, dtype=self.dtype, revision=self.revision, token=token,
                trust_remote_code=self.trust_remote_code, chat_format=self.chat_format, registry=registry)
        self._generator.generation_kwargs(self.generate_kwargs)  # unknown keys fail here, not on first call

    @classmethod
    def class_name(cls) -> str:
        return "GritLLM"

    @property
    def generator(self) -> GritGenerator:
        """The core `GritGenerator` this class wraps."""
        return self._generator

    @property
    def metadata(self) -> LLMMetadata:
        context_window = self.context_window or self._generator.model.context_length
        return LLMMetadata(context_window=context_window, num_output=self.max_new_tokens, is_chat_model=True,
                           model_name=self.model_name)

    def warm_up(self) -> None:
        """Load (or attach to) the shared model now instead of on first use."""
        self._generator.warm_up()

    def close(self) -> None:
        """Release this object's reference to the shared model."""
        self._generator.close()

    # -- core calls ---------------------------------------------------------------------------------------

    def _kwargs(self, kwargs: Dict[str, Any]) -> Dict[str, Any]:
        return {**self.generate_kwargs, **kwargs}

    def _prompt_messages(self, prompt: str, formatted: bool) -> List[Dict[str, str]]:
        if not isinstance(prompt, str) or not prompt:
            raise ValueError("prompt must be a non-empty str")
        if not formatted:
            prompt = self.completion_to_prompt(prompt)
        return [{"role": "user", "content": prompt}]

    def _generate(self, messages: List[Dict[str, str]], kwargs: Dict[str, Any],
                  callback: Optional[Callable[[str], None]] = None) -> GenerationResult:
        return self._generator.generate(messages, streaming_callback=callback, **self._kwargs(kwargs))

    def _stream(self, messages: List[Dict[str, str]], kwargs: Dict[str, Any]) -> Iterator[tuple[str, Any]]:
        kwargs = self._kwargs(kwargs)
        self._generator.generation_kwargs(kwargs)  # validate before the thread starts
        return stream_in_thread(lambda callback: self._generator.generate(messages, streaming_callback=callback,
                                                                          **kwargs))

    # -- RAG answers from cached key/value states (used by GritQueryEngine) ----------------------------

    def answer(self, query: str, documents: Sequence[str], *, mode: str = "none", source: str = "embedding",
               order: str = "doc_first", streaming_callback: Optional[Callable[[str], None]] = None,
               **kwargs: Any) -> Any:
        """Answer `query` from `documents` with a GRIT cache mode; returns the core's `RagResult`.

        :param mode: "none", "query", "doc", "query_doc", "doc_query" or "multi_doc" (see `grit_components.rag`).
        :param source: "embedding" (states of the embedding pass, as in the GRIT paper) or "causal" (exact).
        :param order: prompt order of mode "none": "doc_first" or "query_first".
        :param kwargs: generation overrides, as for `complete`.
        """
        return self._generator.answer(query, list(documents), mode=mode, source=source, order=order,
                                      streaming_callback=streaming_callback, **self._kwargs(kwargs))

    # -- completion ---------------------------------------------------------------------------------------

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        result = self._generate(self._prompt_messages(prompt, formatted), kwargs)
        return CompletionResponse(text=result.text, raw=result, additional_kwargs=_usage(result))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        events = self._stream(self._prompt_messages(prompt, formatted), kwargs)

        def gen() -> CompletionResponseGen:
            text = ""
            for kind, value in events:
                if kind == "delta":
                    text += value
                    yield CompletionResponse(text=text, delta=value)
                else:
                    yield CompletionResponse(text=text, delta="", raw=value, additional_kwargs=_usage(value))

        return gen()

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return await asyncio.to_thread(self.complete, prompt, formatted, **kwargs)

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        return _to_async(self.stream_complete(prompt, formatted, **kwargs))

    # -- chat -----------------------------------------------------------------------------------------------

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        result = self._generate(to_core_messages(messages), kwargs)
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=result.text), raw=result,
                            additional_kwargs=_usage(result))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        events = self._stream(to_core_messages(messages), kwargs)

        def gen() -> ChatResponseGen:
            text = ""
            for kind, value in events:
                if kind == "delta":
                    text += value
                    yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=value)
                else:
                    yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta="",
                                       raw=value, additional_kwargs=_usage(value))

        return gen()

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await asyncio.to_thread(self.chat, messages, **kwargs)

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        return _to_async(self.stream_chat(messages, **kwargs))


async def _to_async(iterator: Iterator[Any]):
    """Drive a blocking iterator from a worker thread, one item at a time."""
    while True:
        item = await asyncio.to_thread(next, iterator, _DONE)
        if item is _DONE:
            return
        yield item
