# SPDX-FileCopyrightText: 2026-present grit-components developers
#
# SPDX-License-Identifier: Apache-2.0
"""Haystack ranker for GRIT models: bi-encoder stage, then the same model as a cross-encoder."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from haystack import Document, component, logging
from haystack.utils import ComponentDevice, Secret
from haystack.utils.misc import _deduplicate_documents

from grit_components import DEFAULT_MODEL, LoadingOptions
from grit_components._checks import check_bool, check_int, check_str
from grit_components.rerank import GritReranker
from haystack_integrations.common.grit.component import GritModelComponent, check_meta_fields, text_with_meta

logger = logging.getLogger(__name__)


@component
class GritRanker(GritModelComponent):
    """
    Ranks Documents by relevance to a query with a GRIT model, in two stages.

    Stage one (`first_stage="bi_encoder"`) scores documents by cosine similarity of GRIT embeddings (the
    documents' stored embeddings are reused when they come from the same model); stage two
    (`cross_encoder="query_likelihood"`, `"pointwise"` or `"listwise"`) asks the same model to judge the top
    `first_stage_top_k` hits. After a `QdrantEmbeddingRetriever` that already ranked by GRIT embeddings,
    use `first_stage="none"`: the retriever's order is then the first stage. Scores are in [0, 1] by
    default (`scale_score=True`: the geometric-mean probability of the query's tokens for query likelihood,
    the sigmoid of the yes/no log-odds for pointwise), and every Document is ranked:
    Documents with the same text are not dropped (`deduplicate=True` ranks each id once).

    ### Usage example

    ```python
    from haystack import Document
    from haystack_integrations.components.rankers.grit import GritRanker

    ranker = GritRanker(model="smollm2-135m-instruct", top_k=2)
    docs = [Document(content="Paris is the capital of France."), Document(content="Bananas are yellow."),
            Document(content="Berlin is the capital of Germany.")]
    result = ranker.run(query="What is the capital of France?", documents=docs)
    print([(doc.content, round(doc.score, 2)) for doc in result["documents"]])
    ```
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        top_k: int = 10,
        first_stage: str = "bi_encoder",
        first_stage_top_k: int | None = 10,
        cross_encoder: str | None = None,
        query_instruction: str | None = None,
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
        max_passage_tokens: int | None = None,
        scale_score: bool = True,
        score_threshold: float | None = None,
        deduplicate: bool = False,
        batch_size: int = 8,
        device: ComponentDevice | None = None,
        token: Secret | None = Secret.from_env_var(["HF_API_TOKEN", "HF_TOKEN"], strict=False),
        model_kwargs: dict[str, Any] | None = None,
        tokenizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """
        :param top_k: The maximum number of Documents to return.
        :param first_stage: `"bi_encoder"` (cosine similarity of GRIT embeddings) or `"none"` (the input order
            is the first-stage ranking).
        :param first_stage_top_k: How many first-stage hits the cross-encoder judges (`None` = all). Only those
            can be returned.
        :param cross_encoder: `"query_likelihood"` (how likely the model finds the query given each document),
            `"pointwise"` (yes/no log-odds per document), `"listwise"` (the model orders a window of passages)
            or `"none"` (first stage only); `None` (default) = the one the model declares it was trained for
            (`"query_likelihood"` for the default `grit-smollm2-135m`), else `"none"` (with `first_stage="none"`:
            `"query_likelihood"`).
        :param query_instruction: Instruction for the query embedding of the bi-encoder stage; `None` = the
            model's own.
        :param meta_fields_to_embed: Meta fields whose values are put before the content when ranking.
        :param embedding_separator: Separator between those meta values and the content.
        :param max_passage_tokens: Passages are cut to this many tokens in cross-encoder prompts (`None` = what
            the model was trained with, else 256 pointwise and query likelihood, 128 listwise).
        :param scale_score: Scores in [0, 1] (default): query likelihood, exp of the mean log-probability of the
            query's tokens; pointwise, the sigmoid of the yes/no log-odds, which is p(yes) / (p(yes) + p(no));
            bi-encoder only, (1 + cosine) / 2. `False` gives the raw scores.
        :param score_threshold: Return only Documents with a (scaled, if `scale_score`) score of at least this.
        :param deduplicate: Rank Documents with the same id once, keeping the one with the highest incoming
            score, as Haystack's rankers do. Off by default: every Document is ranked and returned (two
            Documents with the same text but another id, e.g. from two files, both come back).
        :param batch_size: Prompts or texts per forward pass.
        :param model, device, token, model_kwargs, tokenizer_kwargs: The model (default `grit-smollm2-135m`) and
            how to load it: see `GritModelComponent`.
        :raises ValueError: If `top_k` or `first_stage_top_k` is not positive, or both stages are `"none"`.
        """
        self.top_k = top_k
        self.first_stage = first_stage
        self.first_stage_top_k = first_stage_top_k
        self.cross_encoder = cross_encoder
        self.query_instruction = query_instruction
        self.meta_fields_to_embed = check_meta_fields(meta_fields_to_embed)
        self.embedding_separator = check_str("embedding_separator", embedding_separator)
        self.max_passage_tokens = max_passage_tokens
        self.scale_score = scale_score
        self.score_threshold = score_threshold
        self.deduplicate = check_bool("deduplicate", deduplicate)
        self.batch_size = batch_size
        self._set_model_parameters(model, device, token, model_kwargs, tokenizer_kwargs)

    def _build_core(self, loading: LoadingOptions) -> GritReranker:
        return GritReranker(self.model, top_k=self.top_k, first_stage=self.first_stage,
                            first_stage_top_k=self.first_stage_top_k, cross_encoder=self.cross_encoder,
                            query_instruction=self.query_instruction, max_passage_tokens=self.max_passage_tokens,
                            batch_size=self.batch_size, scale_score=self.scale_score,
                            score_threshold=self.score_threshold, loading=loading)

    @property
    def reranker(self) -> GritReranker:
        """The core reranker this component wraps (loaded on first access)."""
        return self._warm_core()

    @component.output_types(documents=list[Document])
    def run(
        self,
        query: str,
        documents: list[Document],
        top_k: int | None = None,
        scale_score: bool | None = None,
        score_threshold: float | None = None,
        query_embedding: list[float] | None = None,
    ) -> dict[str, list[Document]]:
        """
        Returns the `top_k` Documents most relevant to the query, best first.

        :param query: The query.
        :param documents: Documents to rank. Their `embedding` is reused by the bi-encoder stage when it has
            the model's dimension. Every Document is ranked (with `deduplicate=True`, once per id); a Document
            with no text to rank is left out, with a logged warning.
        :param top_k: The maximum number of Documents to return (default: the init `top_k`).
        :param scale_score: Scale scores to [0, 1] for this call (default: the init `scale_score`).
        :param score_threshold: Return only Documents with a score of at least this (default: the init value).
        :param query_embedding: The query's embedding from the same model and instruction, if already computed.
        :returns: A dictionary with the key `documents`: new Documents with `score` set to the ranking score
            (and `meta["first_stage_score"]` with the bi-encoder score when that stage ran).
        :raises TypeError: If `query` is not a str or `documents` not a list of Documents.
        :raises ValueError: If `top_k` is not positive or the query is empty.
        """
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, not {type(query).__name__}")
        if not isinstance(documents, list) or not all(isinstance(doc, Document) for doc in documents):
            raise TypeError("GritRanker expects a list of Documents as input")
        if top_k is not None:
            check_int("top_k", top_k, minimum=1)
        if self.deduplicate:
            documents = _deduplicate_documents(documents)
        texts = [text_with_meta(doc, self.meta_fields_to_embed, self.embedding_separator) for doc in documents]
        unrankable = [doc.id for doc, text in zip(documents, texts) if not text.strip()]
        if unrankable:
            logger.warning("{count} Documents have no text to rank and are left out: {document_ids}",
                           count=len(unrankable), document_ids=unrankable)
            documents = [doc for doc, text in zip(documents, texts) if text.strip()]
            texts = [text for text in texts if text.strip()]
        if not documents:
            return {"documents": []}
        embeddings = [doc.embedding for doc in documents]
        ranked = self.reranker.rerank(query, texts, top_k=top_k, scale_score=scale_score,
                                      score_threshold=score_threshold, query_embedding=query_embedding,
                                      document_embeddings=embeddings)
        out = []
        for item in ranked:
            doc = documents[item.index]
            meta = doc.meta
            if item.first_stage_score is not None:
                meta = {**meta, "first_stage_score": item.first_stage_score}
            out.append(replace(doc, score=item.score, meta=meta))
        return {"documents": out}

    @component.output_types(documents=list[Document])
    async def run_async(
        self,
        query: str,
        documents: list[Document],
        top_k: int | None = None,
        scale_score: bool | None = None,
        score_threshold: float | None = None,
        query_embedding: list[float] | None = None,
    ) -> dict[str, list[Document]]:
        """
        Asynchronously ranks Documents (the model runs in a worker thread). See `run`.

        :param query: The query.
        :param documents: Documents to rank.
        :param top_k: The maximum number of Documents to return.
        :param scale_score: Scale scores to [0, 1] for this call.
        :param score_threshold: Return only Documents with a score of at least this.
        :param query_embedding: The query's embedding, if already computed.
        :returns: A dictionary with the key `documents`.
        """
        return await asyncio.to_thread(self.run, query, documents, top_k, scale_score, score_threshold,
                                       query_embedding)
