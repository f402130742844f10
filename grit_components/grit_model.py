"""`GritModel`: the loaded model that embeds and generates, the object users hold.

It is a `models.LoadedModel` (weights, tokenizer, chat format, fingerprint, KV store) with the two uses of
one GRIT model as methods, `embed` and `generate`. They are thin: the work is `embedding.embed` and
`generation.generate`, which read a `LoadedModel` and so never import this module. The class lives here,
one layer above both, for the reason transformers' `LlamaForCausalLM` combines `LlamaPreTrainedModel` and
`GenerationMixin` in a module above both: the model below stays free of what is built on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from grit_components import embedding, generation
from grit_components.models import LoadedModel

if TYPE_CHECKING:
    import numpy as np

    from grit_components.generation import GenerationResult, Messages, StreamingCallback
    from grit_components.options import GenerationOptions


class GritModel(LoadedModel):
    """One loaded decoder LLM used both as an embedder (bidirectional) and as a generator (causal).

    Obtain it with `grit_components.load_model(spec)` (shared through the registry); do not build it
    from weights yourself unless you manage sharing. All methods are safe to call from several threads:
    no call changes model state (bidirectional attention uses a per-call 4D mask).

    Its attributes (`model`, `tokenizer`, `name`, `fingerprint`, `uses_grit_chat_format`, `metadata`,
    `kv_store`), properties and `tokenize` are those of `models.LoadedModel`.
    """

    def embed(self, texts: Sequence[str], **options: Any) -> np.ndarray:
        """Embed texts in GRIT format: `grit_components.embedding.embed(self, texts, **options)`, where every
        option is documented (instruction, batch_size, max_length, normalize, ...)."""
        return embedding.embed(self, texts, **options)

    def generate(self, messages: Messages, options: GenerationOptions | Mapping[str, Any] | None = None, *,
                 tools: Sequence[Mapping[str, Any]] | None = None, streaming_callback: StreamingCallback | None = None,
                 **generation_kwargs: Any) -> GenerationResult:
        """Chat generation: `grit_components.generation.generate(self, messages, ...)`, where every parameter
        is documented (`options` and `generation_kwargs`: see `grit_components.options.GenerationOptions`)."""
        return generation.generate(self, messages, options, tools=tools, streaming_callback=streaming_callback,
                                   **generation_kwargs)
