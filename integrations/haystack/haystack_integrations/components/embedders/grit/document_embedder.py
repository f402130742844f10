# SPDX-FileCopyrightText: 2026-present grit-components developers
#
# SPDX-License-Identifier: Apache-2.0
"""Haystack document embedder for GRIT models: embeds Documents (usually without an instruction)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from haystack import Document, component, default_from_dict, default_to_dict
from haystack.utils import ComponentDevice, Secret, deserialize_secrets_inplace

from grit_components import DEFAULT_MODEL, GritEmbedder
from grit_components._checks import check_choice, check_int, check_str


@component
class GritDocumentEmbedder:
    """
    Computes embeddings of Documents with a GRIT model such as GritLM and stores them in `Document.embedding`.

    Documents are embedded in GRIT format with bidirectional attention and mean pooling over the text,
    with no instruction by default (as in the GRIT paper). Use `GritTextEmbedder` with the same model for
    queries. With `store_kv_cache=True` the key/value states of each document's embedding pass are also
    kept in the model's KV store, so a `GritChatGenerator` with `cache_mode="doc"` reuses them instead of
    reading the document again.

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
        device: ComponentDevice | None = None,
        dtype: str | None = None,
        revision: str | None = None,
        token: Secret | None = Secret.from_env_var(["HF_API_TOKEN", "HF_TOKEN"], strict=False),
        trust_remote_code: bool = False,
    ) -> None:
        """
        Creates a GritDocumentEmbedder. Nothing is loaded until `warm_up` (or the first `run`).

        :param model: Hugging Face hub id (e.g. `GritLM/GritLM-7B`), local model directory, GGUF file or the
            packaged alias `smollm2-135m-instruct`.
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
        :param kv_cache_directory: Folder where the model's KV store also writes caches (safetensors files),
            so that a separate query process finds them; `None` keeps them in memory only.
        :param device: The device to load the model on; `None` picks the best available one.
        :param dtype: `"float32"`, `"bfloat16"` or `"float16"`; `None` means float32 on CPU, bfloat16 elsewhere.
        :param revision: Hub revision (branch, tag or commit) of the model.
        :param token: Hugging Face token for private models.
        :param trust_remote_code: Allow model code from the hub repository.
        """
        self.model = check_str("model", model, allow_empty=False)
        self.instruction = check_str("instruction", instruction)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        for name, flag in (("progress_bar", progress_bar), ("normalize_embeddings", normalize_embeddings),
                           ("store_kv_cache", store_kv_cache)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, not {type(flag).__name__}")
        self.progress_bar = progress_bar
        if meta_fields_to_embed is not None and (
            isinstance(meta_fields_to_embed, str) or not all(isinstance(f, str) for f in meta_fields_to_embed)
        ):
            raise TypeError("meta_fields_to_embed must be a list of str")
        self.meta_fields_to_embed = list(meta_fields_to_embed or [])
        self.embedding_separator = check_str("embedding_separator", embedding_separator)
        self.max_length = check_int("max_length", max_length, minimum=2)
        self.normalize_embeddings = normalize_embeddings
        self.truncation = check_choice("truncation", truncation, ("warn", "error"))
        self.store_kv_cache = store_kv_cache
        if store_kv_cache and instruction:
            raise ValueError("store_kv_cache=True needs instruction='' (cached documents are in GRIT document format)")
        self.kv_cache_directory = None if kv_cache_directory is None else check_str(
            "kv_cache_directory", kv_cache_directory, allow_empty=False)
        if device is not None and not isinstance(device, ComponentDevice):
            raise TypeError(f"device must be a ComponentDevice or None, not {type(device).__name__}")
        self.device = device
        self.dtype = dtype
        self.revision = revision
        if token is not None and not isinstance(token, Secret):  # a str would be written out by to_dict
            raise TypeError(f"token must be a haystack Secret (e.g. Secret.from_env_var('HF_TOKEN')) or None, "
                            f"not {type(token).__name__}")
        self.token = token
        self.trust_remote_code = trust_remote_code
        self._embedder: GritEmbedder | None = None

    def to_dict(self) -> dict[str, Any]:
        """
        Serializes the component to a dictionary.

        :returns: Dictionary with serialized data.
        """
        return default_to_dict(
            self,
            model=self.model,
            instruction=self.instruction,
            batch_size=self.batch_size,
            progress_bar=self.progress_bar,
            meta_fields_to_embed=self.meta_fields_to_embed,
            embedding_separator=self.embedding_separator,
            max_length=self.max_length,
            normalize_embeddings=self.normalize_embeddings,
            truncation=self.truncation,
            store_kv_cache=self.store_kv_cache,
            kv_cache_directory=self.kv_cache_directory,
            device=self.device.to_dict() if self.device is not None else None,
            dtype=self.dtype,
            revision=self.revision,
            token=self.token.to_dict() if self.token is not None else None,
            trust_remote_code=self.trust_remote_code,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GritDocumentEmbedder:
        """
        Deserializes the component from a dictionary.

        :param data: Dictionary to deserialize from.
        :returns: Deserialized component.
        """
        init_params = data.get("init_parameters", {})
        if init_params.get("device") is not None:
            init_params["device"] = ComponentDevice.from_dict(init_params["device"])
        deserialize_secrets_inplace(init_params, keys=["token"])
        return default_from_dict(cls, data)

    def warm_up(self) -> None:
        """Loads the model (or attaches to the copy already loaded by another component). Idempotent."""
        if self._embedder is None:
            self._embedder = GritEmbedder(
                self.model,
                document_instruction=self.instruction,
                batch_size=self.batch_size,
                max_length=self.max_length,
                normalize=self.normalize_embeddings,
                truncation=self.truncation,
                device=self.device.to_torch_str() if self.device is not None else None,
                dtype=self.dtype,
                revision=self.revision,
                token=self.token.resolve_value() if self.token is not None else None,
                trust_remote_code=self.trust_remote_code,
            )
        self._embedder.warm_up()
        if self.kv_cache_directory is not None:
            self._embedder.model.kv_store.configure(directory=self.kv_cache_directory)

    @property
    def embedder(self) -> GritEmbedder:
        """The core embedder this component wraps (available after `warm_up`)."""
        self.warm_up()
        assert self._embedder is not None
        return self._embedder

    def _text_to_embed(self, document: Document) -> str:
        meta_values = [str(document.meta[key]) for key in self.meta_fields_to_embed
                       if document.meta.get(key) is not None]
        return self.embedding_separator.join([*meta_values, document.content or ""])

    @component.output_types(documents=list[Document])
    def run(self, documents: list[Document]) -> dict[str, list[Document]]:
        """
        Embeds a list of Documents.

        :param documents: Documents to embed.
        :returns: A dictionary with the key `documents`: new Documents (same ids, content and meta) with
            `embedding` set.
        :raises TypeError: If the input is not a list of Documents.
        :raises ValueError: If a Document has nothing to embed (no content and no embedded meta field).
        """
        if not isinstance(documents, list) or not all(isinstance(doc, Document) for doc in documents):
            raise TypeError(
                "GritDocumentEmbedder expects a list of Documents as input. "
                "To embed a string, use the GritTextEmbedder."
            )
        if not documents:
            return {"documents": []}
        texts = [self._text_to_embed(doc) for doc in documents]
        for doc, text in zip(documents, texts):
            if not text:
                raise ValueError(f"Document {doc.id} has no content to embed")
        vectors = self.embedder.embed_documents(texts, progress_bar=self.progress_bar,
                                                store_kv_cache=self.store_kv_cache)
        return {"documents": [replace(doc, embedding=vector.tolist()) for doc, vector in zip(documents, vectors)]}

    @component.output_types(documents=list[Document])
    async def run_async(self, documents: list[Document]) -> dict[str, list[Document]]:
        """
        Asynchronously embeds a list of Documents (the forward passes run in a worker thread).

        :param documents: Documents to embed.
        :returns: A dictionary with the key `documents`.
        """
        return await asyncio.to_thread(self.run, documents)
