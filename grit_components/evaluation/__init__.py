"""Evaluation: BEIR-format loading, first-stage retrieval through Qdrant, GRIT reranking, ranx metrics."""

from grit_components.evaluation.cache import cached_embed
from grit_components.evaluation.data import RetrievalDataset, load_beir
from grit_components.evaluation.metrics import DEFAULT_METRICS, evaluate_run

__all__ = ["DEFAULT_METRICS", "RetrievalDataset", "cached_embed", "evaluate_run", "load_beir"]
