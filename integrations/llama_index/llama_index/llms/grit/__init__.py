"""GRIT (GritLM) LLM and cache-aware RAG query engine for LlamaIndex."""

from llama_index.llms.grit.base import GritLLM

__all__ = ["GritLLM"]
