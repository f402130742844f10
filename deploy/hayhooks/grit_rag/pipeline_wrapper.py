# SPDX-FileCopyrightText: 2026-present grit-components developers
#
# SPDX-License-Identifier: Apache-2.0
"""hayhooks deployment of the GRIT RAG pipeline (`pipelines/rag.yaml` by default).

Serve it with the launcher beside this folder, which keeps the server safe by default (no deploy routes,
localhost, an optional API key, no cross-origin access; see `deploy/hayhooks/serve.py`):
  python deploy/hayhooks/serve.py
  curl -X POST localhost:1416/grit_rag/run -H 'Content-Type: application/json' -d '{"question": "..."}'
or use the OpenAI-compatible `POST /v1/chat/completions` with `"model": "grit_rag"`.

Settings (environment variables, read at startup):
  GRIT_PIPELINE    bundled pipeline name or YAML path (default `rag`; also `rag_rerank`, `rag_doc_cache`)
  GRIT_DATA_DIR    data directory holding `qdrant/` (and `kv/`), as written by `grit index --data-dir`
  GRIT_QDRANT_URL  a Qdrant server instead of embedded Qdrant (needed to index while serving)
  GRIT_MODEL       replace the model of every GRIT component
"""

from __future__ import annotations

import os

from fastapi import HTTPException
from hayhooks import BasePipelineWrapper, get_last_user_message

from haystack_integrations.common.grit import pipelines as hp


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

    def run_chat_completion(self, model: str, messages: list[dict], body: dict) -> str:
        """OpenAI-compatible chat: answers the last user message."""
        question = get_last_user_message(messages)
        if not isinstance(question, str) or not question.strip():
            raise HTTPException(status_code=400, detail="messages must contain a user message with text")
        return self._ask(question).text
