# SPDX-FileCopyrightText: 2026-present grit-components developers
#
# SPDX-License-Identifier: Apache-2.0
"""Haystack text embedder for GRIT models: embeds a query (with an instruction) in GRIT format."""

from __future__ import annotations

import asyncio
from typing import Any

from haystack import component
from haystack.utils import ComponentDevice, Secret

from grit_components import DEFAULT_MODEL, GritEmbedder, LoadingOptions
from haystack_integrations.common.grit.component import GritModelComponent


@component
class GritTextEmbedder(GritModelComponent):
    """
    Embeds a string (usually a query) with a GRIT model such as GritLM.

    The text is embedded with bidirectional attention and mean pooling, after the instruction in GRIT format
    (`<|user|>\\n{instruction}\\n<|embed|>\\n{text}`). Pair it with `GritDocumentEmbedder` on the same model:
    both share one loaded copy through the model registry, and so does a `GritChatGenerator` naming the
    same model with the same loading parameters.

    ### Usage example

    ```python
    from haystack_integrations.components.embedders.grit import GritTextEmbedder

    embedder = GritTextEmbedder(model="smollm2-135m-instruct",
                                instruction="Given a question, retrieve passages that answer it")
    result = embedder.run("What is the capital of France?")
    print(len(result["embedding"]))  # 576 for SmolLM2-135M
    ```
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        instruction: str | None = None,
        max_length: int = 512,
        truncation: str = "warn",
        normalize_embeddings: bool = True,
        device: ComponentDevice | None = None,
        token: Secret | None = Secret.from_env_var(["HF_API_TOKEN", "HF_TOKEN"], strict=False),
        model_kwargs: dict[str, Any] | None = None,
        tokenizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """
        :param instruction: Task instruction put before the text (GRIT embeds queries with one); "" for none;
            `None` (default) uses the model's own (declared in its `grit_model.json`), else a generic one.
        :param max_length: Longest input in tokens, instruction included. Longer texts are cut with a warning.
        :param truncation: `"warn"` to cut over-long texts with a warning, `"error"` to raise instead.
        :param normalize_embeddings: L2-normalise the embedding (cosine similarity = dot product).
        :param model, device, token, model_kwargs, tokenizer_kwargs: The model (default `grit-smollm2-135m`) and
            how to load it: see `GritModelComponent`.
        """
        self.instruction = instruction
        self.max_length = max_length
        self.truncation = truncation
        self.normalize_embeddings = normalize_embeddings
        self._set_model_parameters(model, device, token, model_kwargs, tokenizer_kwargs)

    def _build_core(self, loading: LoadingOptions) -> GritEmbedder:
        return GritEmbedder(self.model, query_instruction=self.instruction, max_length=self.max_length,
                            normalize=self.normalize_embeddings, truncation=self.truncation,
                            loading=loading)

    @property
    def embedder(self) -> GritEmbedder:
        """The core embedder this component wraps (loaded on first access)."""
        return self._warm_core()

    @component.output_types(embedding=list[float])
    def run(self, text: str) -> dict[str, list[float]]:
        """
        Embeds a single string.

        :param text: Text to embed.
        :returns: A dictionary with the key `embedding`: the embedding of the text as a list of floats.
        :raises TypeError: If the input is not a string.
        :raises ValueError: If the string is empty.
        """
        if not isinstance(text, str):
            raise TypeError(
                "GritTextEmbedder expects a string as input. "
                "To embed a list of Documents, use the GritDocumentEmbedder."
            )
        return {"embedding": self.embedder.embed_query(text).tolist()}

    @component.output_types(embedding=list[float])
    async def run_async(self, text: str) -> dict[str, list[float]]:
        """
        Asynchronously embeds a single string (the forward pass runs in a worker thread).

        :param text: Text to embed.
        :returns: A dictionary with the key `embedding`.
        """
        return await asyncio.to_thread(self.run, text)
