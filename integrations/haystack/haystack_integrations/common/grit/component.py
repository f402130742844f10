# SPDX-FileCopyrightText: 2026-present grit-components developers
#
# SPDX-License-Identifier: Apache-2.0
"""What every GRIT Haystack component shares: its model parameters turned into the core's `LoadingOptions`,
serialisation symmetric with `__init__`, and telemetry.

The components keep each `__init__` parameter as an attribute of the same name, which is what
Haystack's own serialisation fallback relies on; `to_dict` here reads them back through the signature,
so `to_dict`/`from_dict` cannot drift from `__init__`. Secrets and `ComponentDevice` go through
`default_to_dict`/`default_from_dict` the stock way; `model_kwargs` through Haystack's Hugging Face
helpers (a `torch.dtype` is written as a string), and a streaming callback as its import path.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

from haystack import Document, default_from_dict, default_to_dict
from haystack.utils import ComponentDevice, Secret, deserialize_callable, serialize_callable
from haystack.utils.hf import deserialize_hf_model_kwargs, serialize_hf_model_kwargs

from grit_components._checks import check_str
from grit_components.options import LoadingOptions

def _plain(value: Any) -> Any:
    """Objects in `model_kwargs` that know their dict form (a `BitsAndBytesConfig`) as that dict, so a
    pipeline with one can be saved as YAML; `from_pretrained` takes the dict back."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    to_dict = getattr(value, "to_dict", None)
    return to_dict() if callable(to_dict) and not isinstance(value, type) else value


class GritModelComponent:
    """Base of the GRIT Haystack components: model parameters, serialisation and telemetry.

    The model parameters every component takes, as the stock Hugging Face components take them:

    - `model`: hub id, local directory, GGUF file or packaged alias.
    - `device`: a `ComponentDevice`: one device, or a device map (`ComponentDevice.from_multiple`), which
      goes to `from_pretrained(device_map=...)`; `None` picks the best available device.
    - `token`: a `Secret` with the Hugging Face token for private models.
    - `model_kwargs`: keyword arguments of `AutoModelForCausalLM.from_pretrained`: `torch_dtype`/`dtype`
      (default float32 on CPU, bfloat16 on an accelerator), `revision`, `trust_remote_code`,
      `attn_implementation`, `quantization_config` (a dict such as `{"load_in_4bit": true}`), `device_map`
      ("auto"), ... A `torch.dtype` is saved as a string.
    - `tokenizer_kwargs`: keyword arguments of `AutoTokenizer.from_pretrained`.

    They become the core's `grit_components.LoadingOptions`; components whose model parameters are equal
    share one loaded model. Nothing is loaded until `warm_up` (or the first `run`).

    A subclass's `__init__` stores every parameter under its own name (the model parameters through
    `_set_model_parameters`, last) and implements `_build_core`, which makes the core component it wraps:
    the core checks the values, so a bad one fails in `__init__` with the core's error naming it.
    """

    _core: Any = None

    def _set_model_parameters(self, model: str, device: ComponentDevice | None, token: Secret | None,
                              model_kwargs: dict[str, Any] | None, tokenizer_kwargs: dict[str, Any] | None) -> None:
        """Keep the model parameters, then check every parameter now, not at `warm_up`: the core component is
        built (it loads nothing) and raises on a bad value, naming the parameter."""
        self.model = check_str("model", model, allow_empty=False)
        if device is not None and not isinstance(device, ComponentDevice):
            raise TypeError(f"device must be a ComponentDevice or None, not {type(device).__name__}")
        if token is not None and not isinstance(token, Secret):  # a str would be written out by to_dict
            raise TypeError(f"token must be a haystack Secret (e.g. Secret.from_env_var('HF_TOKEN')) or None, "
                            f"not {type(token).__name__}")
        self.device, self.token, self.model_kwargs, self.tokenizer_kwargs = device, token, model_kwargs, tokenizer_kwargs
        self._build_core(self._loading_options(token=None))

    def _build_core(self, loading: LoadingOptions) -> Any:
        """The core component (`grit_components.ModelComponent`) this component wraps, not loaded yet."""
        raise NotImplementedError

    def warm_up(self) -> None:
        """Loads the model, or attaches to the copy another component already loaded. Idempotent."""
        if self._core is None:
            self._core = self._build_core(self.loading_options())
        self._core.warm_up()

    def _warm_core(self) -> Any:
        self.warm_up()
        return self._core

    def _loading_options(self, token: str | None) -> LoadingOptions:
        device, device_map = None, None
        if self.device is not None:
            if self.device.has_multiple_devices:
                device_map = self.device.to_hf()  # {module: device}, what `from_pretrained(device_map=...)` takes
            else:
                device = self.device.to_torch_str()
        return LoadingOptions(device=device, device_map=device_map, token=token, model_kwargs=self.model_kwargs,
                              tokenizer_kwargs=self.tokenizer_kwargs,
                              kv_cache_directory=getattr(self, "kv_cache_directory", None),
                              kv_cache_max_bytes=getattr(self, "kv_cache_max_bytes", None),
                              kv_cache_dtype=getattr(self, "kv_cache_dtype", None))

    def loading_options(self) -> LoadingOptions:
        """The core's loading options of this component (the token resolved)."""
        return self._loading_options(self.token.resolve_value() if self.token is not None else None)

    def _get_telemetry_data(self) -> dict[str, Any]:
        """Data that is sent to Posthog for usage analytics."""
        return {"model": self.model}

    def to_dict(self) -> dict[str, Any]:
        """
        Serializes the component to a dictionary.

        :returns: Dictionary with serialized data.
        """
        names = [name for name in inspect.signature(type(self).__init__).parameters if name != "self"]
        params = {name: getattr(self, name) for name in names}
        if params.get("streaming_callback") is not None:
            params["streaming_callback"] = serialize_callable(params["streaming_callback"])
        if params.get("model_kwargs") is not None:
            params["model_kwargs"] = _plain(copy.deepcopy(params["model_kwargs"]))
            serialize_hf_model_kwargs(params["model_kwargs"])
        return default_to_dict(self, **params)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """
        Deserializes the component from a dictionary.

        :param data: Dictionary to deserialize from.
        :returns: Deserialized component.
        """
        init_params = dict(data.get("init_parameters", {}))
        data = {**data, "init_parameters": init_params}
        if init_params.get("streaming_callback"):
            init_params["streaming_callback"] = deserialize_callable(init_params["streaming_callback"])
        if init_params.get("model_kwargs") is not None:
            init_params["model_kwargs"] = copy.deepcopy(init_params["model_kwargs"])
            deserialize_hf_model_kwargs(init_params["model_kwargs"])
        return default_from_dict(cls, data)


def check_meta_fields(meta_fields_to_embed: Any) -> list[str]:
    """`meta_fields_to_embed` as a list of str (None: no fields)."""
    if meta_fields_to_embed is None:
        return []
    if isinstance(meta_fields_to_embed, str) or not all(isinstance(f, str) for f in meta_fields_to_embed):
        raise TypeError("meta_fields_to_embed must be a list of str")
    return list(meta_fields_to_embed)


def text_with_meta(document: Document, meta_fields: list[str], separator: str) -> str:
    """The text a component reads of `document`: the values of `meta_fields` it has, then its content."""
    meta_values = [str(document.meta[key]) for key in meta_fields if document.meta.get(key) is not None]
    return separator.join([*meta_values, document.content or ""])
