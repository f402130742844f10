"""What the GRIT LlamaIndex classes share: their model-loading fields."""

from llama_index.utils.grit.base import GritModelFields

__all__ = ["GritModelFields"]
