"""GritModelFields: the model-loading fields of GritEmbedding, GritRerank and GritLLM, declared once, and the
`warm_up`/`close` they share.

They are the pydantic form of the core's `grit_components.LoadingOptions`, which the classes build with
`_loading_options(token)`; the token and a custom registry are init arguments, never serialised.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Union

from llama_index.core.bridge.pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from grit_components.options import LoadingOptions


class GritModelFields(BaseModel):
    """Model-loading fields (see `grit_components.LoadingOptions`); equal fields share one loaded model."""

    # `model_kwargs` is a field name here, not pydantic's namespace.
    model_config = ConfigDict(protected_namespaces=())

    device: Optional[str] = Field(default=None, description="Torch device; default: accelerator if present.")
    device_map: Optional[Union[str, Dict[str, Any]]] = Field(
        default=None, description="Spread the model over devices ('auto' or {module: device}); not with device.")
    dtype: Optional[str] = Field(default=None, description="float32, bfloat16 or float16; default by device.")
    revision: Optional[str] = Field(default=None, description="Hub revision (branch, tag or commit).")
    trust_remote_code: bool = Field(default=False, description="Allow model code from the hub repository.")
    model_kwargs: Dict[str, Any] = Field(
        default_factory=dict,
        description="Keywords of from_pretrained: attn_implementation, quantization_config, ...")
    tokenizer_kwargs: Dict[str, Any] = Field(default_factory=dict,
                                             description="Keywords of AutoTokenizer.from_pretrained.")
    kv_cache_directory: Optional[str] = Field(
        default=None, description="Folder where the model's shared KV store also keeps caches (set once per model).")
    kv_cache_max_bytes: Optional[int] = Field(
        default=None, ge=0, description="Memory budget of the model's shared KV store (set once per model).")
    kv_cache_dtype: Optional[str] = Field(
        default=None, description="Form the model's shared KV store keeps caches in (set once per model): None (the "
                                  "model's dtype), 'bfloat16', 'float16' or 'int8'.")

    # The core component (`grit_components.ModelComponent`) the class wraps; set in its `__init__`.
    _core: Any = PrivateAttr(default=None)

    def warm_up(self) -> None:
        """Load (or attach to) the shared model now instead of on first use."""
        self._core.warm_up()

    def close(self) -> None:
        """Release this object's reference to the shared model."""
        self._core.close()

    def _loading_options(self, token: Optional[str], **extra: Any) -> LoadingOptions:
        return LoadingOptions(device=self.device, device_map=self.device_map, dtype=self.dtype, revision=self.revision,
                              token=token, trust_remote_code=self.trust_remote_code, model_kwargs=self.model_kwargs,
                              tokenizer_kwargs=self.tokenizer_kwargs, kv_cache_directory=self.kv_cache_directory,
                              kv_cache_max_bytes=self.kv_cache_max_bytes, kv_cache_dtype=self.kv_cache_dtype, **extra)
