# SPDX-FileCopyrightText: 2026-present grit-components developers
#
# SPDX-License-Identifier: Apache-2.0
"""Haystack text embedder for GRIT models: embeds a query (with an instruction) in GRIT format."""

from __future__ import annotations

import asyncio
from typing import Any

from haystack import component, default_from_dict, default_to_dict
from haystack.utils import ComponentDevice, Secret, deserialize_secrets_inplace

from grit_components import DEFAULT_MODEL, GritEmbedder
from grit_components._checks import check_choice, check_int, check_str


@component
class GritTextEmbedder:
    """
    Embeds a string (usually a query) with a GRIT model such as GritLM.

    The text is embedded with bidirectional attention and mean pooling, after the instruction in GRIT format
    (`<|user|>\\n{instruction}\\n<|embed|>\\n{text}`). Pair it with `GritDocumentEmbedder` on the same model:
    both share one loaded copy through the model registry, and so does a `GritChatGenerator` naming the
    same model.

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
        normalize_embeddings: bool = True,
        truncation: str = "warn",
        device: ComponentDevice | None = None,
        dtype: str | None = None,
        revision: str | None = None,
        token: Secret | None = Secret.from_env_var(["HF_API_TOKEN", "HF_TOKEN"], strict=False),
        trust_remote_code: bool = False,
    ) -> None:
        """
        Creates a GritTextEmbedder. Nothing is loaded until `warm_up` (or the first `run`).

        :param model: Hugging Face hub id (e.g. `GritLM/GritLM-7B`), local model directory, GGUF file or the
            packaged alias `smollm2-135m-instruct`.
        :param instruction: Task instruction put before the text (GRIT embeds queries with one); "" for none;
            `None` (default) uses the model's own (declared in its `grit_model.json`), else a generic one.
        :param max_length: Longest input in tokens, instruction included. Longer texts are cut with a warning.
        :param normalize_embeddings: L2-normalise the embedding (cosine similarity = dot product).
        :param truncation: `"warn"` to cut over-long texts with a warning, `"error"` to raise instead.
        :param device: The device to load the model on; `None` picks the best available one.
        :param dtype: `"float32"`, `"bfloat16"` or `"float16"`; `None` means float32 on CPU, bfloat16 elsewhere.
        :param revision: Hub revision (branch, tag or commit) of the model.
        :param token: Hugging Face token for private models.
        :param trust_remote_code: Allow model code from the hub repository.
        """
        self.model = check_str("model", model, allow_empty=False)
        self.instruction = None if instruction is None else check_str("instruction", instruction)
        self.max_length = check_int("max_length", max_length, minimum=2)
        if not isinstance(normalize_embeddings, bool):
            raise TypeError(f"normalize_embeddings must be a bool, not {type(normalize_embeddings).__name__}")
        self.normalize_embeddings = normalize_embeddings
        self.truncation = check_choice("truncation", truncation, ("warn", "error"))
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
            max_length=self.max_length,
            normalize_embeddings=self.normalize_embeddings,
            truncation=self.truncation,
            device=self.device.to_dict() if self.device is not None else None,
            dtype=self.dtype,
            revision=self.revision,
            token=self.token.to_dict() if self.token is not None else None,
            trust_remote_code=self.trust_remote_code,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GritTextEmbedder:
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
                query_instruction=self.instruction,
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

    @property
    def embedder(self) -> GritEmbedder:
        """The core embedder this component wraps (available after `warm_up`)."""
        self.warm_up()
        assert self._embedder is not None
        return self._embedder

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
