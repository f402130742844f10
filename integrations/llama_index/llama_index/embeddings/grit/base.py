"""GritEmbedding: a LlamaIndex `BaseEmbedding` backed by the core `GritEmbedder` (one shared GRIT model)."""

from __future__ import annotations

import asyncio
from typing import Any, List, Optional

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field

from grit_components.components import GritEmbedder
from grit_components.models import DEFAULT_MODEL
from grit_components.registry import ModelRegistry
from llama_index.utils.grit import GritModelFields


class GritEmbedding(GritModelFields, BaseEmbedding):
    """Embeddings from a GRIT model (GritLM): bidirectional attention, mean pooling over the text tokens.

    Queries get `query_instruction`, documents (node text) get `text_instruction` (none by default, as in
    the GRIT paper). The model is loaded on first use and shared, through the `grit_components` registry,
    with every `GritRerank` and `GritLLM` naming the same model: one copy of the weights serves all three.

    Examples:
        ```python
        from llama_index.core import Settings
        from llama_index.embeddings.grit import GritEmbedding

        Settings.embed_model = GritEmbedding(
            model_name="smollm2-135m-instruct",
            query_instruction="Given a short description, retrieve the Wikipedia passage about the entity it describes",
        )
        vector = Settings.embed_model.get_query_embedding("Temple on the Athenian Acropolis, Greece")
        ```

    :param model_name: hub id (`GritLM/GritLM-7B`), local directory, GGUF file or packaged alias.
    :param query_instruction: instruction put before every query; None (default) = the model's own
        (declared in its `grit_model.json`), else a generic retrieval instruction.
    :param text_instruction: instruction put before every document text ("" = none).
    :param embed_batch_size: texts per forward pass.
    :param max_length: longest input in tokens, instruction included; longer texts are cut with a warning.
    :param normalize: L2-normalise embeddings (cosine similarity = dot product).
    :param store_kv_cache: also keep each document's KV states from the embedding pass in the model's KV
        store, so a `GritCacheSynthesizer` with `cache_source="embedding"` reuses them. Needs
        `text_instruction=""`; documents cut at `max_length` are not cached.
    :param token: hub token for private models (not serialised).
    :param registry: a `grit_components.ModelRegistry` other than the default one (not serialised).
    Model loading fields (`device`, `device_map`, `dtype`, `revision`, `trust_remote_code`, `model_kwargs`,
    `tokenizer_kwargs`, `kv_cache_directory`, `kv_cache_max_bytes`, `kv_cache_dtype`): see `llama_index.utils.grit.GritModelFields`.
    """

    model_name: str = Field(default=DEFAULT_MODEL, description="Hub id, local directory, GGUF file or packaged alias.")
    query_instruction: Optional[str] = Field(default=None, description="Instruction put before queries (None: the model's own).")
    text_instruction: str = Field(default="", description="Instruction put before document texts ('' = none).")
    embed_batch_size: int = Field(default=32, gt=0, description="Texts per forward pass.")
    max_length: int = Field(default=512, ge=2, description="Longest input in tokens, instruction included.")
    normalize: bool = Field(default=True, description="L2-normalise embeddings.")
    store_kv_cache: bool = Field(
        default=False, description="Keep document KV states from the embedding pass for cache-aware generation."
    )

    def __init__(self, model_name: str = DEFAULT_MODEL, *, token: Optional[str] = None,
                 registry: Optional[ModelRegistry] = None, **kwargs: Any) -> None:
        super().__init__(model_name=model_name, **kwargs)
        self._core = GritEmbedder(
            self.model_name, query_instruction=self.query_instruction, document_instruction=self.text_instruction,
            batch_size=self.embed_batch_size, max_length=self.max_length, normalize=self.normalize,
            loading=self._loading_options(token), registry=registry)

    @property
    def embedder(self) -> GritEmbedder:
        """The core `GritEmbedder` this class wraps."""
        return self._core

    @classmethod
    def class_name(cls) -> str:
        return "GritEmbedding"

    def _get_query_embedding(self, query: str) -> Embedding:
        return self.embedder.embed_query(query).tolist()

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    def _get_text_embeddings(self, texts: List[str]) -> List[Embedding]:
        if not texts:
            return []
        if self.store_kv_cache:
            vectors = self.embedder.embed_documents(texts, store_kv_cache=True)
        else:
            vectors = self.embedder.embed_documents(texts)
        return vectors.tolist()

    async def _aget_text_embeddings(self, texts: List[str]) -> List[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
