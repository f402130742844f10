"""GRIT (GritLM) embeddings for LlamaIndex."""

from llama_index.embeddings.grit.base import GritEmbedding

__all__ = ["GritEmbedding"]
