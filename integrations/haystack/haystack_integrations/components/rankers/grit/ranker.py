# SPDX-FileCopyrightText: 2026-present grit-components developers
#
# SPDX-License-Identifier: Apache-2.0
"""Haystack ranker for GRIT models: bi-encoder stage, then the same model as a cross-encoder."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from haystack import Document, component, default_from_dict, default_to_dict
from haystack.utils import ComponentDevice, Secret, deserialize_secrets_inplace

from grit_components import DEFAULT_MODEL
from grit_components._checks import check_choice, check_int, check_str
from grit_components.rerank import CROSS_ENCODERS, FIRST_STAGES, GritReranker


@component
class GritRanker:
    """
    Ranks Documents by relevance to a query with a GRIT model, in two stages.

    Stage one (`first_stage="bi_encoder"`) scores documents by cosine similarity of GRIT embeddings (the
    documents' stored embeddings are reused when they come from the same model); stage two
    (`cross_encoder="pointwise"` or `"listwise"`) asks the same model to judge the top
    `first_stage_top_k` hits. After a `QdrantEmbeddingRetriever` that already ranked by GRIT embeddings,
    use `first_stage="none"`: the retriever's order is then the first stage.

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
        batch_size: int = 8,
        scale_score: bool = False,
        score_threshold: float | None = None,
        device: ComponentDevice | None = None,
        dtype: str | None = None,
        revision: str | None = None,
        token: Secret | None = Secret.from_env_var(["HF_API_TOKEN", "HF_TOKEN"], strict=False),
        trust_remote_code: bool = False,
    ) -> None:
        """
        Creates a GritRanker. Nothing is loaded until `warm_up` (or the first `run`).

        :param model: Hugging Face hub id (e.g. `GritLM/GritLM-7B`), local model directory, GGUF file or the
            packaged alias `smollm2-135m-instruct`.
        :param top_k: How many Documents to return.
        :param first_stage: `"bi_encoder"` (cosine similarity of GRIT embeddings) or `"none"` (the input order
            is the first-stage ranking).
        :param first_stage_top_k: How many first-stage hits the cross-encoder judges (`None` = all). Only those
            can be returned.
        :param cross_encoder: `"pointwise"` (yes/no log-odds per document), `"listwise"` (the model orders a
            window of passages) or `"none"` (first stage only); `None` (default) = `"pointwise"` for a model
            that declares it was trained to judge relevance (the default `grit-smollm2-135m`), else `"none"`.
        :param query_instruction: Instruction for the query embedding of the bi-encoder stage; `None` = the
            model's own.
        :param meta_fields_to_embed: Meta fields whose values are put before the content when ranking.
        :param embedding_separator: Separator between those meta values and the content.
        :param max_passage_tokens: Passages are cut to this many tokens in cross-encoder prompts (`None` = 256
            pointwise, 128 listwise).
        :param batch_size: Prompts or texts per forward pass.
        :param scale_score: Map scores to [0, 1] (pointwise: probability of "yes").
        :param score_threshold: Drop Documents whose (scaled, if `scale_score`) score is below this.
        :param device: The device to load the model on; `None` picks the best available one.
        :param dtype: `"float32"`, `"bfloat16"` or `"float16"`; `None` means float32 on CPU, bfloat16 elsewhere.
        :param revision: Hub revision (branch, tag or commit) of the model.
        :param token: Hugging Face token for private models.
        :param trust_remote_code: Allow model code from the hub repository.
        :raises ValueError: If `top_k` or `first_stage_top_k` is not positive, or both stages are `"none"`.
        """
        self.model = check_str("model", model, allow_empty=False)
        self.top_k = check_int("top_k", top_k, minimum=1)
        self.first_stage = check_choice("first_stage", first_stage, FIRST_STAGES)
        self.first_stage_top_k = (None if first_stage_top_k is None
                                  else check_int("first_stage_top_k", first_stage_top_k, minimum=1))
        self.cross_encoder = None if cross_encoder is None else check_choice("cross_encoder", cross_encoder,
                                                                             CROSS_ENCODERS)
        if first_stage == "none" and cross_encoder == "none":
            raise ValueError("first_stage and cross_encoder cannot both be 'none': nothing would score the documents")
        self.query_instruction = None if query_instruction is None else check_str("query_instruction",
                                                                                   query_instruction)
        if meta_fields_to_embed is not None and (
            isinstance(meta_fields_to_embed, str) or not all(isinstance(f, str) for f in meta_fields_to_embed)
        ):
            raise TypeError("meta_fields_to_embed must be a list of str")
        self.meta_fields_to_embed = list(meta_fields_to_embed or [])
        self.embedding_separator = check_str("embedding_separator", embedding_separator)
        self.max_passage_tokens = (None if max_passage_tokens is None
                                   else check_int("max_passage_tokens", max_passage_tokens, minimum=1))
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        if not isinstance(scale_score, bool):
            raise TypeError(f"scale_score must be a bool, not {type(scale_score).__name__}")
        self.scale_score = scale_score
        if score_threshold is not None and (isinstance(score_threshold, bool)
                                            or not isinstance(score_threshold, (int, float))):
            raise TypeError(f"score_threshold must be a number or None, not {type(score_threshold).__name__}")
        self.score_threshold = score_threshold
        if device is not None and not isinstance(device, ComponentDevice):
            raise TypeError(f"device must be a ComponentDevice or None, not {type(device).__name__}")
        self.device = device
        self.dtype = dtype
        self.revision = revision
        if token is not None and not isinstance(token, Secret):  # a str would be written out by to_dict
            raise TypeError(f"token must be a haystack Secret (e.g. Secret.from_env_var('HF_TOKEN')) or None, "
                            f"not {type(token).__name__}")
        self.token = token
        self.trust_remote_code = trust_remote_code
        self._reranker: GritReranker | None = None

    def to_dict(self) -> dict[str, Any]:
        """
        Serializes the component to a dictionary.

        :returns: Dictionary with serialized data.
        """
        return default_to_dict(
            self,
            model=self.model,
            top_k=self.top_k,
            first_stage=self.first_stage,
            first_stage_top_k=self.first_stage_top_k,
            cross_encoder=self.cross_encoder,
            query_instruction=self.query_instruction,
            meta_fields_to_embed=self.meta_fields_to_embed,
            embedding_separator=self.embedding_separator,
            max_passage_tokens=self.max_passage_tokens,
            batch_size=self.batch_size,
            scale_score=self.scale_score,
            score_threshold=self.score_threshold,
            device=self.device.to_dict() if self.device is not None else None,
            dtype=self.dtype,
            revision=self.revision,
            token=self.token.to_dict() if self.token is not None else None,
            trust_remote_code=self.trust_remote_code,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GritRanker:
        """
        Deserializes the component from a dictionary.

        :param data: Dictionary to deserialize from.
        :returns: Deserialized component.
        """
        init_params = data.get("init_parameters", {})
        if init_params.get("device") is not None:
            init_params["device"] = ComponentDevice.from_dict(init_params["device"])
        deserialize_secrets_inplace(init_params, keys=["token"])
        return default_from_dict(cls, data)

    def warm_up(self) -> None:
        """Loads the model (or attaches to the copy already loaded by another component). Idempotent."""
        if self._reranker is None:
            self._reranker = GritReranker(
                self.model,
                top_k=self.top_k,
                first_stage=self.first_stage,
                first_stage_top_k=self.first_stage_top_k,
                cross_encoder=self.cross_encoder,
                query_instruction=self.query_instruction,
                max_passage_tokens=self.max_passage_tokens,
                batch_size=self.batch_size,
                scale_score=self.scale_score,
                score_threshold=self.score_threshold,
                device=self.device.to_torch_str() if self.device is not None else None,
                dtype=self.dtype,
                revision=self.revision,
                token=self.token.resolve_value() if self.token is not None else None,
                trust_remote_code=self.trust_remote_code,
            )
        self._reranker.warm_up()

    @property
    def reranker(self) -> GritReranker:
        """The core reranker this component wraps (available after `warm_up`)."""
        self.warm_up()
        assert self._reranker is not None
        return self._reranker

    def _text_to_rank(self, document: Document) -> str | None:
        meta_values = [str(document.meta[key]) for key in self.meta_fields_to_embed
                       if document.meta.get(key) is not None]
        if not meta_values:
            return document.content
        return self.embedding_separator.join([*meta_values, document.content or ""])

    @component.output_types(documents=list[Document])
    def run(
        self,
        query: str,
        documents: list[Document],
        top_k: int | None = None,
        query_embedding: list[float] | None = None,
    ) -> dict[str, list[Document]]:
        """
        Returns the `top_k` Documents most relevant to the query, best first.

        :param query: The query.
        :param documents: Documents to rank. Their `embedding` is reused by the bi-encoder stage when it has
            the model's dimension; Documents without content are skipped (with a warning), duplicates of a
            content seen before are dropped.
        :param top_k: How many Documents to return (default: the init `top_k`).
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
        if not documents:
            return {"documents": []}
        embeddings = [doc.embedding for doc in documents]
        ranked = self.reranker.rerank(
            query,
            [self._text_to_rank(doc) for doc in documents],
            top_k=top_k,
            query_embedding=query_embedding,
            document_embeddings=embeddings if any(e is not None for e in embeddings) else None,
        )
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
        query_embedding: list[float] | None = None,
    ) -> dict[str, list[Document]]:
        """
        Asynchronously ranks Documents (the model runs in a worker thread). See `run`.

        :param query: The query.
        :param documents: Documents to rank.
        :param top_k: How many Documents to return.
        :param query_embedding: The query's embedding, if already computed.
        :returns: A dictionary with the key `documents`.
        """
        return await asyncio.to_thread(self.run, query, documents, top_k, query_embedding)
