# SPDX-FileCopyrightText: 2026-present grit-components developers
#
# SPDX-License-Identifier: Apache-2.0
"""Haystack document embedder for GRIT models: embeds Documents (usually without an instruction)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from haystack import Document, component, logging
from haystack.utils import ComponentDevice, Secret

from grit_components import DEFAULT_MODEL, GritEmbedder, LoadingOptions
from grit_components._checks import check_bool, check_str
from haystack_integrations.common.grit.component import GritModelComponent, check_meta_fields, text_with_meta

logger = logging.getLogger(__name__)


@component
class GritDocumentEmbedder(GritModelComponent):
    """
    Computes embeddings of Documents with a GRIT model such as GritLM and stores them in `Document.embedding`.

    Documents are embedded in GRIT format with bidirectional attention and mean pooling over the text,
    with no instruction by default (as in the GRIT paper). Use `GritTextEmbedder` with the same model for
    queries. With `store_kv_cache=True` the key/value states of each document's embedding pass are also
    kept in the model's KV store, so a `GritChatGenerator` with `cache_mode="doc"` reuses them instead of
    reading the document again. A Document with no text is passed on without an embedding (and a logged
    warning), never failing the batch.

    ### Usage example

    ```python
    from haystack import Document
    from haystack_integrations.components.embedders.grit import GritDocumentEmbedder

    embedder = GritDocumentEmbedder(model="smollm2-135m-instruct")
    result = embedder.run([Document(content="Paris is the capital of France.")])
    print(len(result["documents"][0].embedding))  # 576 for SmolLM2-135M
    ```
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        instruction: str = "",
        batch_size: int = 32,
        progress_bar: bool = True,
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
        max_length: int = 512,
        normalize_embeddings: bool = True,
        truncation: str = "warn",
        store_kv_cache: bool = False,
        kv_cache_directory: str | None = None,
        kv_cache_max_bytes: int | None = None,
        kv_cache_dtype: str | None = None,
        device: ComponentDevice | None = None,
        token: Secret | None = Secret.from_env_var(["HF_API_TOKEN", "HF_TOKEN"], strict=False),
        model_kwargs: dict[str, Any] | None = None,
        tokenizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """
        :param instruction: Instruction put before each document; "" (the default) embeds the text alone.
        :param batch_size: Documents per forward pass (documents are length-sorted into batches).
        :param progress_bar: Show a progress bar while embedding.
        :param meta_fields_to_embed: Meta fields whose values are put before the content, each followed by
            `embedding_separator`.
        :param embedding_separator: Separator between the meta values and the content.
        :param max_length: Longest input in tokens, instruction included. Longer texts are cut with a warning.
        :param normalize_embeddings: L2-normalise the embeddings.
        :param truncation: `"warn"` to cut over-long texts with a warning, `"error"` to raise instead.
        :param store_kv_cache: Also keep each document's KV cache in the model's KV store (for doc caching).
            Needs `instruction=""` and documents that fit in `max_length` (longer ones are not cached).
        :param kv_cache_directory: Folder where the model's shared KV store also writes caches (safetensors
            files), so that a separate query process finds them; `None` keeps them in memory only.
        :param kv_cache_max_bytes: Memory budget of the model's shared KV store (set once per model).
        :param kv_cache_dtype: The form the model's shared KV store keeps caches in (set once per model):
            `None` (the model's dtype; exact), `"bfloat16"`, `"float16"` or `"int8"`: smaller caches, fewer
            bytes read per new token, an approximation (see the KV caching docs).
        :param model, device, token, model_kwargs, tokenizer_kwargs: The model (default `grit-smollm2-135m`) and
            how to load it: see `GritModelComponent`.
        """
        self.instruction = instruction
        self.batch_size = batch_size
        self.progress_bar = check_bool("progress_bar", progress_bar)
        self.meta_fields_to_embed = check_meta_fields(meta_fields_to_embed)
        self.embedding_separator = check_str("embedding_separator", embedding_separator)
        self.max_length = max_length
        self.normalize_embeddings = normalize_embeddings
        self.truncation = truncation
        self.store_kv_cache = check_bool("store_kv_cache", store_kv_cache)
        if store_kv_cache and instruction:
            raise ValueError("store_kv_cache=True needs instruction='' (cached documents are in GRIT document format)")
        self.kv_cache_directory = kv_cache_directory
        self.kv_cache_max_bytes = kv_cache_max_bytes
        self.kv_cache_dtype = kv_cache_dtype
        self._set_model_parameters(model, device, token, model_kwargs, tokenizer_kwargs)

    def _build_core(self, loading: LoadingOptions) -> GritEmbedder:
        return GritEmbedder(self.model, document_instruction=self.instruction, batch_size=self.batch_size,
                            max_length=self.max_length, normalize=self.normalize_embeddings,
                            truncation=self.truncation, loading=loading)

    @property
    def embedder(self) -> GritEmbedder:
        """The core embedder this component wraps (loaded on first access)."""
        return self._warm_core()

    def _text_to_embed(self, document: Document) -> str:
        return text_with_meta(document, self.meta_fields_to_embed, self.embedding_separator)

    @component.output_types(documents=list[Document])
    def run(self, documents: list[Document]) -> dict[str, list[Document]]:
        """
        Embeds a list of Documents.

        :param documents: Documents to embed.
        :returns: A dictionary with the key `documents`: new Documents (same ids, content and meta) with
            `embedding` set. A Document with nothing to embed (no content and no embedded meta field) is
            returned as it is, without an embedding, and a warning is logged: it never stops the batch.
        :raises TypeError: If the input is not a list of Documents.
        """
        if not isinstance(documents, list) or not all(isinstance(doc, Document) for doc in documents):
            raise TypeError(
                "GritDocumentEmbedder expects a list of Documents as input. "
                "To embed a string, use the GritTextEmbedder."
            )
        texts = [self._text_to_embed(doc) for doc in documents]
        embeddable = [i for i, text in enumerate(texts) if text.strip()]
        if len(embeddable) < len(documents):
            skipped = [documents[i].id for i in range(len(documents)) if i not in set(embeddable)]
            logger.warning("{count} Documents have no content to embed and are returned without an embedding: "
                           "{document_ids}", count=len(skipped), document_ids=skipped)
        if not embeddable:
            return {"documents": list(documents)}
        vectors = self.embedder.embed_documents([texts[i] for i in embeddable], progress_bar=self.progress_bar,
                                                store_kv_cache=self.store_kv_cache)
        out = list(documents)
        for i, vector in zip(embeddable, vectors):
            out[i] = replace(documents[i], embedding=vector.tolist())
        return {"documents": out}

    @component.output_types(documents=list[Document])
    async def run_async(self, documents: list[Document]) -> dict[str, list[Document]]:
        """
        Asynchronously embeds a list of Documents (the forward passes run in a worker thread).

        :param documents: Documents to embed.
        :returns: A dictionary with the key `documents`.
        """
        return await asyncio.to_thread(self.run, documents)
