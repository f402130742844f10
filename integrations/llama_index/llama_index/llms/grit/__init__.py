"""GRIT (GritLM) LLM and cache-aware response synthesizer for LlamaIndex."""

from llama_index.llms.grit.base import GritLLM
from llama_index.llms.grit.synthesizer import GritCacheSynthesizer

__all__ = ["GritCacheSynthesizer", "GritLLM"]
