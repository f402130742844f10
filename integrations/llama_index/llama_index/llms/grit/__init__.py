"""GRIT (GritLM) LLM and cache-aware RAG query engine for LlamaIndex."""

from llama_index.llms.grit.base import GritLLM
from llama_index.llms.grit.query_engine import GritQueryEngine

__all__ = ["GritLLM", "GritQueryEngine"]
