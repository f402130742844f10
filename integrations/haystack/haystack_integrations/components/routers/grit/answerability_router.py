# SPDX-FileCopyrightText: 2026-present grit-components developers
#
# SPDX-License-Identifier: Apache-2.0
"""Haystack router for GRIT models: send retrieved Documents on to generation only when they can answer."""

from __future__ import annotations

import asyncio
from typing import Any

from haystack import Document, component, logging
from haystack.dataclasses import ChatMessage, ComponentInfo, StreamingChunk
from haystack.dataclasses.streaming_chunk import StreamingCallbackT, select_streaming_callback
from haystack.utils import ComponentDevice, Secret

from grit_components import DEFAULT_MODEL, LoadingOptions, templates
from grit_components.answerability import Answerability, GritAnswerabilityGate
from grit_components._checks import check_float, check_str
from haystack_integrations.common.grit.component import GritModelComponent, check_meta_fields, text_with_meta

logger = logging.getLogger(__name__)


@component
class GritAnswerabilityRouter(GritModelComponent):
    """
    Routes retrieved Documents to generation when they can answer the query, else to a "no answer" reply.

    The GRIT model's own relevance signals decide, before anything is generated: the best query-likelihood
    gain over the Documents (how much a Document raises the likelihood of the query above no Document) and
    the best embedding cosine, weighed by the logistic gate the model declares in its `grit_model.json`
    (fitted at 5 % false refusals of answerable questions; docs/training.md, "Refusing before generating").
    When the Documents pass, they go out on `documents` (connect it to the prompt builder); when they do not,
    the generator is skipped and `no_answer` carries one assistant `ChatMessage` saying
    "The passages do not say." (connect it and the generator's `replies` to a `BranchJoiner`). `answerability`
    always carries the verdict.

    ### Usage example

    ```python
    from haystack import Document
    from haystack_integrations.components.routers.grit import GritAnswerabilityRouter

    router = GritAnswerabilityRouter()   # the default grit-smollm2-135m declares its gate
    docs = [Document(content="The banana is an elongated, edible fruit.")]
    result = router.run(query="Who wrote Hamlet?", documents=docs)
    print(result.get("no_answer"), result["answerability"]["score"])
    ```
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        threshold: float = 0.0,
        weights: dict[str, Any] | None = None,
        query_instruction: str | None = None,
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
        no_answer: str = templates.NO_ANSWER,
        batch_size: int = 8,
        device: ComponentDevice | None = None,
        token: Secret | None = Secret.from_env_var(["HF_API_TOKEN", "HF_TOKEN"], strict=False),
        model_kwargs: dict[str, Any] | None = None,
        tokenizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """
        :param threshold: Refuse when the gate's score is below this. 0 (default) is where the gate was fitted
            to refuse 5 % of answerable questions; higher refuses more, lower answers more.
        :param weights: The gate as a dict (`query_likelihood_gain`, `cosine`, `bias`, `max_passage_tokens`);
            `None` = the one the model declares (a model without one fails at `warm_up`).
        :param query_instruction: Instruction for the query embedding; `None` = the model's own (the gate was
            fitted with it).
        :param meta_fields_to_embed: Meta fields whose values are put before the content, as the ranker and the
            embedders read them.
        :param embedding_separator: Separator between those meta values and the content.
        :param no_answer: The reply when the Documents cannot answer.
        :param batch_size: Prompts or texts per forward pass.
        :param model, device, token, model_kwargs, tokenizer_kwargs: The model (default `grit-smollm2-135m`) and
            how to load it: see `GritModelComponent`.
        :raises ValueError: If `weights` is malformed or `no_answer` is empty.
        """
        self.threshold = check_float("threshold", threshold)
        self.weights = weights
        self.query_instruction = query_instruction
        self.meta_fields_to_embed = check_meta_fields(meta_fields_to_embed)
        self.embedding_separator = check_str("embedding_separator", embedding_separator)
        self.no_answer = check_str("no_answer", no_answer, allow_empty=False)
        self.batch_size = batch_size
        self._set_model_parameters(model, device, token, model_kwargs, tokenizer_kwargs)

    def _build_core(self, loading: LoadingOptions) -> GritAnswerabilityGate:
        return GritAnswerabilityGate(self.model, threshold=self.threshold, weights=self.weights,
                                     query_instruction=self.query_instruction, batch_size=self.batch_size,
                                     loading=loading)

    @property
    def gate(self) -> GritAnswerabilityGate:
        """The core gate this component wraps (loaded on first access)."""
        return self._warm_core()

    @component.output_types(documents=list[Document], no_answer=list[ChatMessage], answerability=dict[str, Any])
    def run(
        self,
        query: str,
        documents: list[Document],
        threshold: float | None = None,
        query_embedding: list[float] | None = None,
        streaming_callback: StreamingCallbackT | None = None,
    ) -> dict[str, Any]:
        """
        Judges whether `documents` can answer `query` and routes them.

        :param query: The query.
        :param documents: The retrieved Documents. Their `embedding` is reused when it has the model's
            dimension; Documents without text hold no evidence and are not judged.
        :param threshold: This call's threshold (default: the init `threshold`).
        :param query_embedding: The query's embedding from the same model and instruction (a
            `GritTextEmbedder`'s `embedding`), which saves embedding the query again.
        :param streaming_callback: Called with the `no_answer` reply as one `StreamingChunk` when the Documents
            cannot answer, so a client streaming the generator's tokens (hayhooks' OpenAI endpoint) gets that
            reply instead of nothing.
        :returns: A dictionary with `answerability` (`answerable`, `score`, `threshold`, `gain`, `cosine`) and
            either `documents` (the input Documents, unchanged, when they can answer) or `no_answer` (one
            assistant `ChatMessage` with the `no_answer` text and the verdict in its `meta`).
        :raises TypeError: If `query` is not a str or `documents` not a list of Documents.
        :raises ValueError: If the query is empty.
        """
        emit = select_streaming_callback(None, streaming_callback, requires_async=False)
        result = self._route(query, documents, threshold, query_embedding)
        if emit is not None and "no_answer" in result:
            emit(self._chunk(result))
        return result

    @component.output_types(documents=list[Document], no_answer=list[ChatMessage], answerability=dict[str, Any])
    async def run_async(
        self,
        query: str,
        documents: list[Document],
        threshold: float | None = None,
        query_embedding: list[float] | None = None,
        streaming_callback: StreamingCallbackT | None = None,
    ) -> dict[str, Any]:
        """
        Asynchronously judges and routes (the model runs in a worker thread). See `run`.

        :param query: The query.
        :param documents: The retrieved Documents.
        :param threshold: This call's threshold.
        :param query_embedding: The query's embedding, if already computed.
        :param streaming_callback: An async callback given the `no_answer` reply as one `StreamingChunk`.
        :returns: A dictionary with `answerability` and `documents` or `no_answer`.
        """
        emit = select_streaming_callback(None, streaming_callback, requires_async=True)
        result = await asyncio.to_thread(self._route, query, documents, threshold, query_embedding)
        if emit is not None and "no_answer" in result:
            await emit(self._chunk(result))
        return result

    def _route(self, query: str, documents: list[Document], threshold: float | None,
               query_embedding: list[float] | None) -> dict[str, Any]:
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, not {type(query).__name__}")
        if not isinstance(documents, list) or not all(isinstance(doc, Document) for doc in documents):
            raise TypeError("GritAnswerabilityRouter expects a list of Documents as input")
        texts = [text_with_meta(doc, self.meta_fields_to_embed, self.embedding_separator) for doc in documents]
        embeddings = [doc.embedding for doc in documents]
        verdict = self.gate.judge(query, texts, threshold=threshold, query_embedding=query_embedding,
                                  document_embeddings=embeddings)
        answerability = _as_dict(verdict)
        if verdict.answerable:
            return {"documents": documents, "answerability": answerability}
        logger.debug("GritAnswerabilityRouter: {count} Documents cannot answer the query (score {score:.2f})",
                     count=len(documents), score=verdict.score)
        reply = ChatMessage.from_assistant(self.no_answer, meta={"answerability": answerability})
        return {"no_answer": [reply], "answerability": answerability}

    def _chunk(self, result: dict[str, Any]) -> StreamingChunk:
        return StreamingChunk(content=self.no_answer, component_info=ComponentInfo.from_component(self), index=0,
                              start=True, finish_reason="stop", meta={"answerability": result["answerability"]})


def _as_dict(verdict: Answerability) -> dict[str, Any]:
    return {"answerable": verdict.answerable, "score": verdict.score, "threshold": verdict.threshold,
            "gain": verdict.gain, "cosine": verdict.cosine}
