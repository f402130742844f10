# SPDX-FileCopyrightText: 2026-present grit-components developers
#
# SPDX-License-Identifier: Apache-2.0
"""hayhooks deployment of the GRIT RAG pipeline (`pipelines/rag.yaml` by default).

Serve it with the launcher beside this folder, which keeps the server safe by default (no deploy routes,
localhost, an optional API key, no cross-origin access; see `deploy/hayhooks/serve.py`):
  python deploy/hayhooks/serve.py
  curl -X POST localhost:1416/grit_rag/run -H 'Content-Type: application/json' -d '{"question": "..."}'
or use the OpenAI-compatible `POST /v1/chat/completions` with `"model": "grit_rag"`: it streams tokens as
they are generated with `"stream": true`, answers the whole conversation (retrieval on the last user turn,
the earlier turns and system messages in the prompt) and reports `usage`.

Settings (environment variables, read at startup):
  GRIT_PIPELINE    bundled pipeline name or YAML path (default `rag`; also `rag_rerank`, `rag_doc_cache`,
                   `rag_answerability`)
  GRIT_DATA_DIR    data directory holding `qdrant/` (and `kv/`), as written by `grit index --data-dir`
  GRIT_QDRANT_URL  a Qdrant server instead of embedded Qdrant (needed to index while serving)
  GRIT_MODEL       replace the model of every GRIT component
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncGenerator, Generator
from typing import Any

from fastapi import HTTPException
from fastapi_openai_compat import ChatCompletion, Choice, Message
from hayhooks import BasePipelineWrapper, streaming_generator
from haystack.dataclasses import StreamingChunk

from grit_components import GenerationOptions
from haystack_integrations.common.grit import pipelines as hp

_END = object()
# OpenAI request fields that become generation options; other fields (user, n=1, ...) are ignored.
OPENAI_GENERATION_FIELDS = {"max_tokens": "max_new_tokens", "max_completion_tokens": "max_new_tokens",
                            "temperature": "temperature", "top_p": "top_p", "seed": "seed", "stop": "stop_words"}


def _text(content: Any, index: int) -> str:
    """An OpenAI message content (a str, or a list of parts of which the text parts count) as text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text")
    raise HTTPException(status_code=422, detail=f"messages[{index}].content must be a string or a list of parts")


def conversation(messages: list[dict]) -> tuple[list[dict[str, str]], str]:
    """The turns before the last user message (system/developer messages as system turns) and that message."""
    turns = []
    for i, message in enumerate(messages):
        role = message.get("role")
        role = "system" if role == "developer" else role
        if role not in hp.ROLES:
            raise HTTPException(status_code=422, detail=f"messages[{i}].role {role!r} is not supported here "
                                                        "(use system, developer, user or assistant)")
        turns.append({"role": role, "content": _text(message.get("content") or "", i)})
    if not turns or turns[-1]["role"] != "user" or not turns[-1]["content"].strip():
        raise HTTPException(status_code=400, detail="messages must end with a user message with text")
    return turns[:-1], turns[-1]["content"]


def generation_kwargs(body: dict) -> dict[str, Any]:
    """The request's OpenAI generation fields as GRIT generation options (checked: 422 naming a bad one)."""
    kwargs = {ours: body[theirs] for theirs, ours in OPENAI_GENERATION_FIELDS.items() if body.get(theirs) is not None}
    if isinstance(kwargs.get("stop_words"), str):
        kwargs["stop_words"] = [kwargs["stop_words"]]
    try:
        GenerationOptions(kwargs)
    except (TypeError, ValueError) as error:
        raise HTTPException(status_code=422, detail=str(error)) from error
    return kwargs


class PipelineWrapper(BasePipelineWrapper):
    def setup(self) -> None:
        self.pipeline = hp.load_pipeline(os.environ.get("GRIT_PIPELINE", "rag"),
                                         model=os.environ.get("GRIT_MODEL") or None)
        # Requests run concurrently: the GRIT components share one thread-safe model, and per-request
        # component timings are kept apart (hp.component_timings uses a context variable).

    def _ask(self, question: str) -> hp.Answer:
        try:
            return hp.ask(self.pipeline, question)
        except (ValueError, TypeError) as error:
            # The question (or what a component made of it: a prompt over the context) is the client's to
            # fix: 400 with the one-line reason. Anything else stays a server error, logged by hayhooks.
            raise HTTPException(status_code=400, detail=str(error)) from error

    def run_api(self, question: str) -> dict:
        """
        Answer a question from the indexed documents.

        :param question: The question.
        :returns: The answer, its sources (id, score, meta, content) and timings in seconds.
        """
        answer = self._ask(question)
        return {
            "answer": answer.text,
            "sources": [{"id": doc.id, "score": doc.score, "meta": doc.meta, "content": doc.content}
                        for doc in answer.sources],
            "timings": answer.timings,
        }

    def _chat_run(self, messages: list[dict], body: dict) -> dict:
        history, question = conversation(messages)
        try:
            data = hp.run_inputs(self.pipeline, question, history=history, generation_kwargs=generation_kwargs(body))
        except (ValueError, TypeError) as error:
            raise HTTPException(status_code=400, detail=str(error)) from error
        return data

    def _completion(self, model: str, messages: list[dict], body: dict) -> ChatCompletion:
        history, question = conversation(messages)
        try:
            answer = hp.ask(self.pipeline, question, history=history, generation_kwargs=generation_kwargs(body))
        except (ValueError, TypeError) as error:
            raise HTTPException(status_code=400, detail=str(error)) from error
        return ChatCompletion(
            id=f"chatcmpl-{uuid.uuid4().hex}", object="chat.completion", created=int(time.time()), model=model,
            choices=[Choice(index=0, message=Message(role="assistant", content=answer.text),
                            finish_reason=answer.meta.get("finish_reason", "stop"))],
            usage=answer.meta.get("usage"))

    @staticmethod
    def _usage_chunk(model: str, usage: dict | None) -> ChatCompletion:
        """The stream's last event: the usage, with no choices (as OpenAI's `stream_options.include_usage`)."""
        return ChatCompletion(id=f"chatcmpl-{uuid.uuid4().hex}", object="chat.completion.chunk",
                              created=int(time.time()), model=model, choices=[], usage=usage)

    def _stream(self, model: str, data: dict) -> Generator:
        """hayhooks' streaming generator over the pipeline, then one event with the usage."""
        usage = None
        # every streaming component: the generator, and an answerability router's reply when it declines
        for chunk in streaming_generator(self.pipeline, pipeline_run_args=data, streaming_components="all"):
            if isinstance(chunk, StreamingChunk) and chunk.meta.get("usage"):
                usage = chunk.meta["usage"]
            yield chunk
        yield self._usage_chunk(model, usage)

    def run_chat_completion(self, model: str, messages: list[dict], body: dict) -> ChatCompletion | Generator:
        """OpenAI-compatible chat (sync): the conversation's answer, streamed token by token with `stream`."""
        if not body.get("stream"):
            return self._completion(model, messages, body)
        return self._stream(model, self._chat_run(messages, body))

    async def run_chat_completion_async(self, model: str, messages: list[dict],
                                        body: dict) -> ChatCompletion | AsyncGenerator:
        """OpenAI-compatible chat (async, what hayhooks serves): as `run_chat_completion`, without blocking the
        event loop, so concurrent requests each stream their own answer.

        The pipeline runs synchronously in a worker thread (hayhooks' `streaming_generator`, driven from the
        loop) rather than through `async_streaming_generator`: that one runs `Pipeline.run_async`, whose
        Qdrant retriever opens the store's async client, and an embedded Qdrant folder admits one client
        (the sync one `setup` opened).
        """
        if not body.get("stream"):
            return await asyncio.to_thread(self._completion, model, messages, body)
        events = self._stream(model, self._chat_run(messages, body))

        async def drive() -> AsyncGenerator:
            while (event := await asyncio.to_thread(next, events, _END)) is not _END:
                yield event

        return drive()
