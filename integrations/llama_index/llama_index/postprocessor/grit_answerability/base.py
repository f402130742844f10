"""GritAnswerabilityPostprocessor: a LlamaIndex node postprocessor backed by the core `GritAnswerabilityGate`."""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

from llama_index.core.bridge.pydantic import Field
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from grit_components.answerability import Answerability, GritAnswerabilityGate
from grit_components.models import DEFAULT_MODEL
from grit_components.registry import ModelRegistry
from llama_index.utils.grit import GritModelFields

logger = logging.getLogger(__name__)


class GritAnswerabilityPostprocessor(GritModelFields, BaseNodePostprocessor):
    """Keep the retrieved nodes only when, together, they can answer the query; otherwise return none.

    The GRIT model's own relevance signals decide, before the LLM is asked: the best query-likelihood gain
    over the nodes (how much a node raises the likelihood of the query above no node) and the best
    embedding cosine (reusing `query_bundle.embedding` and node embeddings when their dimension matches),
    weighed by the logistic gate the model declares in its `grit_model.json` (fitted at 5 % false refusals
    of answerable questions). Nodes that pass come back unchanged and in order; nodes that fail are all
    dropped, as `SimilarityPostprocessor` drops nodes under its cut-off, so a query engine answers with its
    no-nodes response ("Empty Response" from the stock synthesizers) instead of an answer the nodes do not
    support. Put it after any reranker, so it judges the nodes the LLM would see.

    Examples:
        ```python
        from llama_index.postprocessor.grit_answerability import GritAnswerabilityPostprocessor

        gate = GritAnswerabilityPostprocessor()   # the default grit-smollm2-135m declares its gate
        query_engine = index.as_query_engine(similarity_top_k=3, node_postprocessors=[gate])
        ```

    :param model: hub id, local directory, GGUF file or packaged alias (shared with `GritEmbedding`, `GritLLM`).
    :param threshold: drop the nodes when the gate's score is below this (0: the fitted 5 %-false-refusal
        point; higher refuses more, lower answers more).
    :param weights: the gate as a dict (`query_likelihood_gain`, `cosine`, `bias`, `max_passage_tokens`); None =
        the model's own (a model without one fails on first use).
    :param query_instruction: instruction for embedding the query (None: the model's own, as fitted).
    :param batch_size: prompts per forward pass.
    :param metadata_mode: node content that is judged.
    :param token: hub token for private models (not serialised).
    :param registry: a `grit_components.ModelRegistry` other than the default one (not serialised).
    Model loading fields (`device`, `dtype`, `model_kwargs`, ...): see `llama_index.utils.grit.GritModelFields`.
    """

    model: str = Field(default=DEFAULT_MODEL, description="Hub id, local directory, GGUF file or packaged alias.")
    threshold: float = Field(default=0.0, description="Drop the nodes when the gate's score is below this.")
    weights: Optional[Dict[str, Any]] = Field(default=None, description="The gate; None = the model's own.")
    query_instruction: Optional[str] = Field(default=None, description="Query instruction (None: the model's own).")
    batch_size: int = Field(default=8, gt=0, description="Prompts per forward pass.")
    metadata_mode: MetadataMode = Field(default=MetadataMode.EMBED, description="Node content that is judged.")

    def __init__(self, model: str = DEFAULT_MODEL, *, token: Optional[str] = None,
                 registry: Optional[ModelRegistry] = None, **kwargs: Any) -> None:
        super().__init__(model=model, **kwargs)
        self._core = GritAnswerabilityGate(self.model, threshold=self.threshold, weights=self.weights,
                                           query_instruction=self.query_instruction, batch_size=self.batch_size,
                                           loading=self._loading_options(token), registry=registry)

    @property
    def gate(self) -> GritAnswerabilityGate:
        """The core `GritAnswerabilityGate` this class wraps."""
        return self._core

    @classmethod
    def class_name(cls) -> str:
        return "GritAnswerabilityPostprocessor"

    def judge(self, nodes: List[NodeWithScore], query_bundle: QueryBundle) -> Answerability:
        """The gate's verdict on `nodes` for the query (what `postprocess_nodes` acts on)."""
        if not query_bundle.query_str or not query_bundle.query_str.strip():
            raise ValueError("query must be a non-empty str")
        texts = [node.node.get_content(metadata_mode=self.metadata_mode) for node in nodes]
        embeddings = [getattr(node.node, "embedding", None) for node in nodes]
        return self.gate.judge(query_bundle.query_str, texts, query_embedding=query_bundle.embedding,
                               document_embeddings=embeddings)

    def _postprocess_nodes(self, nodes: List[NodeWithScore],
                           query_bundle: Optional[QueryBundle] = None) -> List[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("GritAnswerabilityPostprocessor needs the query: pass query_bundle or query_str")
        verdict = self.judge(nodes, query_bundle)
        if verdict.answerable:
            return nodes
        logger.info("GritAnswerabilityPostprocessor: the %d nodes cannot answer the query (score %.2f below %.2f)",
                    len(nodes), verdict.score, verdict.threshold)
        return []
