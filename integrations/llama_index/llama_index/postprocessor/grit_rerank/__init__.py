"""GRIT (GritLM) reranking for LlamaIndex."""

from llama_index.postprocessor.grit_rerank.base import GritRerank

__all__ = ["GritRerank"]
