"""GRIT (GritLM) answerability gate for LlamaIndex: drop retrieved nodes that cannot answer the query."""

from llama_index.postprocessor.grit_answerability.base import GritAnswerabilityPostprocessor

__all__ = ["GritAnswerabilityPostprocessor"]
