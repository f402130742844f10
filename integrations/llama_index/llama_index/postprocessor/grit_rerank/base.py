"""GritRerank: a LlamaIndex node postprocessor backed by the core `GritReranker` (one shared GRIT model)."""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Literal, Optional

from llama_index.core.bridge.pydantic import Field
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from grit_components.models import DEFAULT_MODEL
from grit_components.registry import ModelRegistry
from grit_components.rerank import GritReranker
from llama_index.utils.grit import GritModelFields

dispatcher = get_dispatcher(__name__)
logger = logging.getLogger(__name__)


class GritRerank(GritModelFields, BaseNodePostprocessor):
    """Rerank retrieved nodes with a GRIT model: bi-encoder, then the same model as a cross-encoder.

    Stage 1 orders the nodes by GRIT embedding similarity, reusing the query embedding the retriever
    already put in `query_bundle.embedding` (and node embeddings, when the vector store returns them)
    whenever their dimension matches the model's; `first_stage_top_n` of them go to stage 2, where the
    model judges each passage ("query_likelihood": how likely it finds the query given the passage;
    "pointwise": the probability of "yes", from its log-odds) or ranks them in one prompt ("listwise"). Every node with text is scored and returned (up to `top_n`); nodes without
    text are left out. The model is shared, through the `grit_components` registry, with
    every `GritEmbedding` and `GritLLM` naming the same model.

    Examples:
        ```python
        from llama_index.postprocessor.grit_rerank import GritRerank

        rerank = GritRerank(model="smollm2-135m-instruct", top_n=3, first_stage_top_n=10, mode="pointwise")
        query_engine = index.as_query_engine(similarity_top_k=10, node_postprocessors=[rerank])
        ```

    :param model: hub id, local directory, GGUF file or packaged alias.
    :param top_n: how many nodes to return, best first (> 0).
    :param first_stage: "bi_encoder" (GRIT embedding similarity) or "retriever" (keep the incoming order).
    :param first_stage_top_n: how many first-stage nodes the cross-encoder rescores (None = all).
    :param mode: cross-encoder: "query_likelihood", "pointwise", "listwise" or "none" (bi-encoder scores
        only); None (default) = the one the model declares it was trained for ("query_likelihood" for the
        default grit-smollm2-135m), else "none" (with first_stage="retriever": "query_likelihood").
    :param keep_retrieval_score: keep each node's incoming score in `node.metadata["retrieval_score"]`.
    :param query_instruction: instruction for embedding the query in stage 1 (None: the model's own).
    :param scale_score: scores in [0, 1] (default): query likelihood, exp of the mean log-probability of the
        query's tokens; pointwise, the sigmoid of the yes/no log-odds, which is p(yes) / (p(yes) + p(no));
        bi-encoder only, (1 + cosine) / 2. False gives the raw scores.
    :param score_threshold: return only nodes whose (scaled, if `scale_score`) score is at least this.
    :param deduplicate: rerank each node id once, keeping the node with the highest incoming score. Off by
        default: every node is scored and returned (nodes with the same text are scored once).
    :param max_passage_tokens: passages are cut to this many tokens in cross-encoder prompts (None = core default).
    :param batch_size: prompts per forward pass.
    :param metadata_mode: node content that is scored.
    :param token: hub token for private models (not serialised).
    :param registry: a `grit_components.ModelRegistry` other than the default one (not serialised).
    Model loading fields (`device`, `dtype`, `model_kwargs`, ...): see `llama_index.utils.grit.GritModelFields`.
    """

    model: str = Field(default=DEFAULT_MODEL, description="Hub id, local directory, GGUF file or packaged alias.")
    top_n: int = Field(default=5, gt=0, description="Number of nodes to return, best first.")
    first_stage: Literal["bi_encoder", "retriever"] = Field(
        default="bi_encoder", description="Stage 1: GRIT embedding similarity, or the incoming (retriever) order.")
    first_stage_top_n: Optional[int] = Field(default=None, gt=0,
                                             description="Nodes rescored by the cross-encoder (None = all).")
    mode: Optional[Literal["query_likelihood", "pointwise", "listwise", "none"]] = Field(
        default=None, description="Cross-encoder kind; None = the one the model declares it was trained for, else none.")
    keep_retrieval_score: bool = Field(default=False, description="Keep the incoming score in node metadata.")
    query_instruction: Optional[str] = Field(default=None, description="Query instruction for stage 1 (None: the model's own).")
    scale_score: bool = Field(default=True, description="Scores in [0, 1] (query-token probability, or p(yes)).")
    score_threshold: Optional[float] = Field(default=None, description="Return only nodes scoring at least this.")
    deduplicate: bool = Field(default=False, description="Rerank each node id once (keeping the best incoming score).")
    max_passage_tokens: Optional[int] = Field(default=None, gt=0, description="Passage cut in cross-encoder prompts.")
    batch_size: int = Field(default=8, gt=0, description="Prompts per forward pass.")
    metadata_mode: MetadataMode = Field(default=MetadataMode.EMBED, description="Node content that is scored.")

    def __init__(self, model: str = DEFAULT_MODEL, *, token: Optional[str] = None,
                 registry: Optional[ModelRegistry] = None, **kwargs: Any) -> None:
        super().__init__(model=model, **kwargs)
        if self.first_stage == "retriever" and self.mode == "none":
            raise ValueError("first_stage='retriever' with mode='none' would not score the nodes at all")
        self._core = GritReranker(
            self.model, top_k=self.top_n, first_stage="bi_encoder" if self.first_stage == "bi_encoder" else "none",
            first_stage_top_k=self.first_stage_top_n, cross_encoder=self.mode, query_instruction=self.query_instruction,
            max_passage_tokens=self.max_passage_tokens, batch_size=self.batch_size, scale_score=self.scale_score,
            score_threshold=self.score_threshold, loading=self._loading_options(token), registry=registry)

    @property
    def reranker(self) -> GritReranker:
        """The core `GritReranker` this class wraps."""
        return self._core

    @classmethod
    def class_name(cls) -> str:
        return "GritRerank"

    def _postprocess_nodes(self, nodes: List[NodeWithScore],
                           query_bundle: Optional[QueryBundle] = None) -> List[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("GritRerank needs the query: pass query_bundle or query_str")
        if not query_bundle.query_str or not query_bundle.query_str.strip():
            raise ValueError("query must be a non-empty str")
        dispatcher.event(ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=self.top_n, model_name=self.model))
        if self.deduplicate:
            nodes = _best_per_node_id(nodes)
        texts = [node.node.get_content(metadata_mode=self.metadata_mode) for node in nodes]
        scorable = [i for i, text in enumerate(texts) if text.strip()]
        if len(scorable) < len(nodes):  # images, empty chunks: nothing to score
            logger.info("GritRerank leaves out %d nodes without text", len(nodes) - len(scorable))
        nodes, texts = [nodes[i] for i in scorable], [texts[i] for i in scorable]
        if not nodes:
            dispatcher.event(ReRankEndEvent(nodes=[]))
            return []

        embeddings = [getattr(node.node, "embedding", None) for node in nodes]
        with self.callback_manager.event(
            CBEventType.RERANKING,
            payload={EventPayload.NODES: nodes, EventPayload.MODEL_NAME: self.model,
                     EventPayload.QUERY_STR: query_bundle.query_str, EventPayload.TOP_K: self.top_n},
        ) as event:
            ranked = self.reranker.rerank(
                query_bundle.query_str, texts, query_embedding=query_bundle.embedding,
                document_embeddings=embeddings)
            new_nodes = []
            for item in ranked:
                node = nodes[item.index]
                if self.keep_retrieval_score:
                    node.node.metadata["retrieval_score"] = node.score
                new_nodes.append(NodeWithScore(node=node.node, score=item.score))
            event.on_end(payload={EventPayload.NODES: new_nodes})

        dispatcher.event(ReRankEndEvent(nodes=new_nodes))
        return new_nodes


def _best_per_node_id(nodes: List[NodeWithScore]) -> List[NodeWithScore]:
    """One node per node id, the one with the highest incoming score, in first-seen order."""
    best: Dict[str, NodeWithScore] = {}
    for node in nodes:
        kept = best.get(node.node.node_id)
        if kept is None or (node.score or float("-inf")) > (kept.score or float("-inf")):
            best[node.node.node_id] = node
    return list(best.values())
