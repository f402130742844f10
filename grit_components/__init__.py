"""grit-components: one GRIT model (GritLM) that embeds, reranks and generates in RAG pipelines."""

from grit_components.answerability import Answerability, GritAnswerabilityGate
from grit_components.components import GritEmbedder, GritGenerator
from grit_components.embedding import DEFAULT_QUERY_INSTRUCTION, EmptyTextWarning, TruncationWarning
from grit_components.generation import GenerationResult
from grit_components.grit_model import GritModel
from grit_components.kv_cache import DocumentKVCache, KVStore
from grit_components.models import DEFAULT_MODEL, DamagedModelError, ModelNotAvailableError
from grit_components.options import GenerationOptions, LoadingOptions
from grit_components.rag import CacheMode, RagResult
from grit_components.registry import ModelHandle, ModelRegistry, default_registry, load_model
from grit_components.rerank import GritReranker, RankedDocument

__all__ = [
    "Answerability",
    "CacheMode",
    "DEFAULT_MODEL",
    "DEFAULT_QUERY_INSTRUCTION",
    "DamagedModelError",
    "DocumentKVCache",
    "GenerationOptions",
    "GenerationResult",
    "GritAnswerabilityGate",
    "GritEmbedder",
    "GritGenerator",
    "GritReranker",
    "GritModel",
    "KVStore",
    "LoadingOptions",
    "ModelHandle",
    "ModelNotAvailableError",
    "ModelRegistry",
    "RagResult",
    "RankedDocument",
    "TruncationWarning",
    "EmptyTextWarning",
    "default_registry",
    "load_model",
]
