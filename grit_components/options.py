"""The two option objects every component passes down: how a model is loaded (`LoadingOptions`) and how
text is generated (`GenerationOptions`).

They are defined here once. The core components take them (or their keywords), the Haystack and
LlamaIndex adapters build them from their own parameters, and the loading and generation code reads
them; no layer spells out the list of keys again.

- `LoadingOptions` carries everything `from_pretrained` gets (device or device map, dtype, revision,
  token, `trust_remote_code`, `model_kwargs` such as `quantization_config` or `attn_implementation`,
  `tokenizer_kwargs`) plus the settings of the shared model's state (chat format, KV store). Two
  requests share one loaded model only when everything that shapes the loaded weights is equal
  (`identity()`).
- `GenerationOptions` accepts every Hugging Face `GenerationConfig` key, which goes through to
  `model.generate`, plus this project's `stop_words` (the text is cut before them, also when streaming)
  and `seed`. `temperature=0` (the default) means greedy decoding.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from grit_components._checks import check_float, check_int

ChatFormat = Literal["auto", "grit", "template"]
CHAT_FORMATS = ("auto", "grit", "template")
# The forms a KV store keeps caches in (`kv_cache_dtype`); `kv_cache` converts between them.
KV_FLOAT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
KV_DTYPES: tuple[str, ...] = (*KV_FLOAT_DTYPES, "int8")

# Keys of `from_pretrained` that have their own option: given inside `model_kwargs` they are moved there
# (HF users write `model_kwargs={"torch_dtype": ...}`), unless the option says something else.
_LIFTED_MODEL_KWARGS = {"dtype": "dtype", "torch_dtype": "dtype", "device_map": "device_map", "revision": "revision",
                        "token": "token", "trust_remote_code": "trust_remote_code"}
_LIFTED_TOKENIZER_KWARGS = ("revision", "token", "trust_remote_code")


def _check_kwargs(name: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict, not {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise TypeError(f"{name} keys must be str, not {type(key).__name__}")
    return dict(value)


def check_kv_dtype(value, name: str = "kv_cache_dtype") -> str | None:
    """None (keep caches in the model's dtype) or one of `KV_DTYPES`; torch float dtypes are accepted."""
    if value is None:
        return None
    if isinstance(value, torch.dtype):
        for dtype_name, dtype in KV_FLOAT_DTYPES.items():
            if dtype == value:
                return dtype_name
        raise ValueError(f"{name} must be one of {list(KV_DTYPES)} or None (the model's dtype), got {value}")
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str (one of {list(KV_DTYPES)}), a torch dtype or None, "
                        f"not {type(value).__name__}")
    canonical = value.lower().removeprefix("torch.")
    if canonical == "model":
        return None
    if canonical not in KV_DTYPES:
        raise ValueError(f"{name} must be one of {list(KV_DTYPES)} or 'model' (the model's dtype), got {value!r}")
    return canonical


def _canonical(value: Any) -> Any:
    """A JSON-able stand-in for a loading option value (quantization configs, dtypes), for `identity()`."""
    if isinstance(value, torch.dtype):
        return str(value)
    if isinstance(value, torch.device):
        return str(value)
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return {"__class__": type(value).__name__, **to_dict()}
    return repr(value)


@dataclass(frozen=True)
class LoadingOptions:
    """How to load a model and set up its shared state.

    :param device: "cpu", "cuda", "cuda:1", "mps" (default: the best available). Not with `device_map`.
    :param dtype: "float32", "bfloat16", "float16" or a `torch.dtype` (default: float32 on CPU, bfloat16
        on an accelerator). bfloat16 on a CPU without native bfloat16 (AMX, AVX512-BF16) is tens of times
        slower than float32; loading so warns (`SlowPrecisionWarning`).
    :param revision: hub revision (branch, tag or commit).
    :param token: hub token for private models (never shown in `repr`).
    :param trust_remote_code: allow model code from the hub repository.
    :param model_kwargs: further keyword arguments of `AutoModelForCausalLM.from_pretrained`, e.g.
        `{"attn_implementation": "sdpa"}` or `{"quantization_config": {"load_in_4bit": True}}`. Keys that
        have their own option above (`dtype`/`torch_dtype`, `device_map`, `revision`, `token`,
        `trust_remote_code`) are moved there; a conflicting value is a ValueError.
    :param tokenizer_kwargs: further keyword arguments of `AutoTokenizer.from_pretrained`.
    :param device_map: spread the model over devices: "auto", "balanced", ... or a {module: device} dict, as
        `from_pretrained(device_map=...)` takes it (needs `accelerate`).
    :param chat_format: "grit", "template" or "auto" (GRIT chat format for GritLM models and tokenizers
        without a template); it belongs to the shared model, so components on one model must agree.
    :param kv_cache_directory: folder (str or path) where the model's shared KV store also keeps caches (set once
        per model).
    :param kv_cache_max_bytes: memory budget of the model's shared KV store (set once per model).
    :param kv_cache_dtype: the form the model's shared KV store keeps caches in (set once per model): "bfloat16",
        "float16", "int8", "float32", a torch float dtype, or None / "model" for the model's own dtype.
    """

    device: str | None = None
    dtype: str | torch.dtype | None = None
    revision: str | None = None
    token: str | None = field(default=None, repr=False)
    trust_remote_code: bool = False
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    tokenizer_kwargs: Mapping[str, Any] = field(default_factory=dict)
    device_map: str | Mapping[str, Any] | None = None
    chat_format: ChatFormat = "auto"
    kv_cache_directory: str | os.PathLike | None = None
    kv_cache_max_bytes: int | None = None
    kv_cache_dtype: str | torch.dtype | None = None

    def __post_init__(self) -> None:
        model_kwargs = _check_kwargs("model_kwargs", self.model_kwargs)
        tokenizer_kwargs = _check_kwargs("tokenizer_kwargs", self.tokenizer_kwargs)
        for key, option in _LIFTED_MODEL_KWARGS.items():
            if key in model_kwargs:
                self._lift(f"model_kwargs[{key!r}]", option, model_kwargs.pop(key))
        for key in _LIFTED_TOKENIZER_KWARGS:
            if key in tokenizer_kwargs:
                self._lift(f"tokenizer_kwargs[{key!r}]", key, tokenizer_kwargs.pop(key))
        object.__setattr__(self, "model_kwargs", model_kwargs)
        object.__setattr__(self, "tokenizer_kwargs", tokenizer_kwargs)
        if isinstance(self.kv_cache_directory, os.PathLike):
            object.__setattr__(self, "kv_cache_directory", os.fspath(self.kv_cache_directory))

        for name in ("device", "revision", "token", "kv_cache_directory"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a str or None, not {type(value).__name__}")
        if self.dtype is not None and not isinstance(self.dtype, (str, torch.dtype)):
            raise TypeError(f"dtype must be a str or torch.dtype, not {type(self.dtype).__name__}")
        if not isinstance(self.trust_remote_code, bool):
            raise TypeError(f"trust_remote_code must be a bool, not {type(self.trust_remote_code).__name__}")
        if self.device_map is not None:
            if not isinstance(self.device_map, (str, Mapping)):
                raise TypeError(f"device_map must be a str or a dict, not {type(self.device_map).__name__}")
            if self.device is not None:
                raise ValueError(f"give device={self.device!r} or device_map, not both: a device map places the "
                                 "model's modules itself")
        if self.chat_format not in CHAT_FORMATS:
            raise ValueError(f"chat_format must be one of {list(CHAT_FORMATS)}, got {self.chat_format!r}")
        if self.kv_cache_max_bytes is not None:
            check_int("kv_cache_max_bytes", self.kv_cache_max_bytes, minimum=0)
        if self.kv_cache_directory == "":
            raise ValueError("kv_cache_directory must not be empty (None keeps caches in memory only)")
        object.__setattr__(self, "kv_cache_dtype", check_kv_dtype(self.kv_cache_dtype))

    def _lift(self, where: str, option: str, value: Any) -> None:
        default = LOADING_DEFAULTS[option]
        current = getattr(self, option)
        if current != default and current != value:
            raise ValueError(f"{where}={value!r} conflicts with {option}={current!r}; give it once")
        object.__setattr__(self, option, value)

    def replace(self, **changes: Any) -> LoadingOptions:
        """A copy with some options changed (checked like the constructor's)."""
        return dataclasses.replace(self, **changes)

    def identity(self) -> str:
        """What, besides the model spec, decides which weights get loaded: requests with equal identities
        share one model object. The token and the shared-state settings are not part of it."""
        shaping = {"trust_remote_code": self.trust_remote_code, "model_kwargs": self.model_kwargs,
                   "tokenizer_kwargs": self.tokenizer_kwargs, "device_map": self.device_map}
        return json.dumps(shaping, sort_keys=True, default=_canonical)


LOADING_DEFAULTS = {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
                    for f in dataclasses.fields(LoadingOptions)}


# ------------------------------------------------------------------------------------------------------
# Generation

DEFAULT_MAX_NEW_TOKENS = 256
MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes 64-bit seeds
PROJECT_GENERATION_KEYS = ("stop_words", "seed", "decode_backend")
# How new tokens are computed (`decode_backend`). "torch": transformers' eager forward at every step, the exact
# path (a causal-source cache gives the tokens of uncached generation). "compile": the decode step (one new token
# over a pre-allocated cache) compiled by `torch.compile` (inductor), the prompt and the first token eager as before;
# outputs agree with "torch" up to float rounding, not token for token by construction. "llama_cpp": llama.cpp (the
# `[llama-cpp]` extra) on the same float32 weights written as GGUF, with its own store of saved document states
# (`llama_engine`); no retrieval and one cached text. See docs/kv-caching.md ("Decode backends").
DECODE_BACKENDS = ("torch", "compile", "llama_cpp")
DEFAULT_DECODE_BACKEND = "torch"

# GenerationConfig keys a component decides itself, and why: it returns one text reply and streams it.
OWNED_GENERATION_KEYS = {
    "num_return_sequences": "a reply is one text; call again for another",
    "return_dict_in_generate": "the reply is text (with usage and timings), not generate()'s output object",
    "output_scores": "the reply is text, not scores",
    "output_logits": "the reply is text, not logits",
    "output_attentions": "the reply is text, not attention maps",
    "output_hidden_states": "the reply is text, not hidden states",
    "stop_strings": "use stop_words (the reply is cut before them, also while streaming)",
    "transformers_version": "it records the library version, it is not an option",
}

# Bounds of common GenerationConfig keys that transformers checks only while generating (after the
# prompt was computed): checked up front so a bad value fails at once, naming the key.
_INT_BOUNDS = {"top_k": 0, "num_beams": 1, "num_beam_groups": 1, "no_repeat_ngram_size": 0, "min_new_tokens": 0,
               "min_length": 0, "max_length": 1, "encoder_no_repeat_ngram_size": 0}
_FLOAT_BOUNDS = {"repetition_penalty": (0.0, None, True), "encoder_repetition_penalty": (0.0, None, True),
                 "min_p": (0.0, 1.0, False), "typical_p": (0.0, 1.0, True), "epsilon_cutoff": (0.0, 1.0, False),
                 "eta_cutoff": (0.0, 1.0, False), "diversity_penalty": (0.0, None, False),
                 "length_penalty": (None, None, False), "max_time": (0.0, None, True),
                 "guidance_scale": (None, None, False), "top_h": (0.0, 1.0, False)}


@functools.cache
def generation_config_keys() -> frozenset[str]:
    """Every public key of the installed transformers' `GenerationConfig`."""
    from transformers import GenerationConfig

    return frozenset(key for key in GenerationConfig().to_dict() if not key.startswith("_"))


def valid_generation_keys() -> list[str]:
    """What `generation_kwargs` may contain, sorted."""
    return sorted((generation_config_keys() - set(OWNED_GENERATION_KEYS)) | set(PROJECT_GENERATION_KEYS))


def _check_stop_words(name: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise TypeError(f"{name}['stop_words'] must be a list of str, not {type(value).__name__}")
    for i, word in enumerate(value):
        if not isinstance(word, str) or not word:
            raise ValueError(f"{name}['stop_words'][{i}] must be a non-empty str")
    return tuple(value)


def check_decode_backend(value: Any, name: str = "decode_backend") -> str:
    """One of `DECODE_BACKENDS` (None: the default, "torch")."""
    if value is None:
        return DEFAULT_DECODE_BACKEND
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str (one of {list(DECODE_BACKENDS)}), not {type(value).__name__}")
    if value not in DECODE_BACKENDS:
        raise ValueError(f"{name} must be one of {list(DECODE_BACKENDS)}, got {value!r}")
    return value


class GenerationOptions(Mapping[str, Any]):
    """Generation parameters: any Hugging Face `GenerationConfig` key, plus `stop_words`, `seed` and `decode_backend`.

    Build it from a dict or keywords; it is an immutable mapping of exactly what was given (so it
    serialises as given), and `merged` applies per-call overrides. Unknown keys are a ValueError listing
    the valid ones; values are checked before any model call.

        >>> options = GenerationOptions({"max_new_tokens": 64, "repetition_penalty": 1.2})
        >>> options.merged({"temperature": 0.7, "seed": 0}).sampling
        True

    Project semantics: `temperature` 0 (the default) is greedy decoding, > 0 samples (`top_k` then
    defaults to 0, i.e. off, so `top_p` alone shapes the distribution); `max_new_tokens` defaults to 256
    and is capped by the model's context length; `stop_words` end the reply, which is cut before the first
    one; `seed` (an int in [0, 2**64)) makes sampling reproducible, drawing from a random generator of the
    call only (the same text under concurrent calls; the process-wide torch generator is left alone);
    `decode_backend` ("torch", the default and exact path; "compile": the decode step compiled by
    `torch.compile`; "llama_cpp": llama.cpp on the same float32 weights, `[llama-cpp]` extra; `DECODE_BACKENDS`)
    says how new tokens are computed.

    :param options: the parameters as a dict (e.g. Haystack's `generation_kwargs`).
    :param name: how errors name the parameter the dict came from.
    :param kwargs: more parameters, as keywords.
    """

    def __init__(self, options: Mapping[str, Any] | None = None, /, *, name: str = "generation_kwargs",
                 **kwargs: Any) -> None:
        if isinstance(options, GenerationOptions):
            options = options.to_dict()
        values = {**_check_kwargs(name, options), **kwargs}
        self._name = name
        self._values = self._validate(values, name)

    @staticmethod
    def _validate(values: dict[str, Any], name: str) -> dict[str, Any]:
        owned = sorted(set(values) & set(OWNED_GENERATION_KEYS))
        if owned:
            key = owned[0]
            raise ValueError(f"{name}[{key!r}] cannot be set: {OWNED_GENERATION_KEYS[key]}")
        unknown = sorted(set(values) - set(valid_generation_keys()))
        if unknown:
            raise ValueError(f"unknown {name} {unknown}; valid keys are the Hugging Face GenerationConfig keys and "
                             f"stop_words, seed, decode_backend: {valid_generation_keys()}")
        for key, value in values.items():
            if value is None:
                continue
            if key == "max_new_tokens":
                check_int(f"{name}['max_new_tokens']", value, minimum=1)
            elif key == "temperature":
                check_float(f"{name}['temperature']", value, minimum=0.0)
            elif key == "top_p":
                check_float(f"{name}['top_p']", value, minimum=0.0, maximum=1.0, exclusive_minimum=True)
            elif key == "seed":
                check_int(f"{name}['seed']", value, minimum=0, maximum=MAX_SEED)
            elif key == "decode_backend":
                check_decode_backend(value, f"{name}['decode_backend']")
            elif key == "do_sample" and not isinstance(value, bool):
                raise TypeError(f"{name}['do_sample'] must be a bool, not {type(value).__name__}")
            elif key in _INT_BOUNDS:
                check_int(f"{name}[{key!r}]", value, minimum=_INT_BOUNDS[key])
            elif key in _FLOAT_BOUNDS:
                low, high, exclusive = _FLOAT_BOUNDS[key]
                check_float(f"{name}[{key!r}]", value, minimum=low, maximum=high, exclusive_minimum=exclusive)
        values = dict(values)
        if "stop_words" in values:
            values["stop_words"] = list(_check_stop_words(name, values["stop_words"]))
        if values.get("do_sample") is True and values.get("temperature") == 0:
            raise ValueError(f"{name}: do_sample=True with temperature=0 (greedy); give a temperature > 0 to sample")
        hf = {k: v for k, v in _generate_kwargs(values).items() if v is not None}
        if hf:
            from transformers import GenerationConfig

            try:  # transformers' own checks of values and combinations (e.g. an invalid cache_implementation)
                GenerationConfig().update(**hf)
            except (ValueError, TypeError) as error:
                raise ValueError(f"{name}: {error}") from error
        return values

    # -- the Mapping interface: exactly what was given -------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"GenerationOptions({self._values!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._values == dict(other)
        return NotImplemented

    __hash__ = None  # mutable-looking values (lists) inside; compare, do not hash

    def to_dict(self) -> dict[str, Any]:
        """The parameters as given (what `to_dict` of a component stores)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in self._values.items()}

    def merged(self, overrides: Mapping[str, Any] | None = None, /, **kwargs: Any) -> GenerationOptions:
        """These options with `overrides`, then `kwargs`, on top (as Haystack merges `generation_kwargs`)."""
        if isinstance(overrides, GenerationOptions):
            overrides = overrides.to_dict()
        return GenerationOptions({**self._values, **_check_kwargs(self._name, overrides), **kwargs}, name=self._name)

    # -- resolved values ------------------------------------------------------------------------------

    @property
    def max_new_tokens(self) -> int:
        return self._values.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS

    @property
    def temperature(self) -> float:
        value = self._values.get("temperature")
        return 0.0 if value is None else float(value)

    @property
    def sampling(self) -> bool:
        """Whether tokens are sampled (`do_sample`, else `temperature > 0`)."""
        return _sampling(self._values)

    @property
    def stop_words(self) -> tuple[str, ...]:
        return tuple(self._values.get("stop_words") or ())

    @property
    def seed(self) -> int | None:
        return self._values.get("seed")

    @property
    def decode_backend(self) -> str:
        """"torch" (the exact path, the default), "compile" or "llama_cpp" (`DECODE_BACKENDS`)."""
        return self._values.get("decode_backend") or DEFAULT_DECODE_BACKEND

    @property
    def num_beams(self) -> int:
        return self._values.get("num_beams") or 1

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `model.generate` (not `max_new_tokens`, which the caller caps by the context).

        Greedy decoding silences the model's own sampling defaults (its `generation_config.json` may set
        temperature or top_p); sampling turns `top_k` off unless it was given.
        """
        return _generate_kwargs(self._values)


def _sampling(values: Mapping[str, Any]) -> bool:
    do_sample = values.get("do_sample")
    return do_sample if do_sample is not None else (values.get("temperature") or 0.0) > 0


def _generate_kwargs(values: Mapping[str, Any]) -> dict[str, Any]:
    kwargs = {k: v for k, v in values.items()
              if k not in PROJECT_GENERATION_KEYS and k != "max_new_tokens" and v is not None}
    kwargs["do_sample"] = _sampling(values)
    if kwargs["do_sample"]:
        kwargs.setdefault("temperature", 1.0)
        kwargs.setdefault("top_p", 1.0)
        kwargs.setdefault("top_k", 0)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    return kwargs


def as_generation_options(value: GenerationOptions | Mapping[str, Any] | None, *,
                          name: str = "generation_kwargs") -> GenerationOptions:
    """`value` as `GenerationOptions` (a dict is checked; None is no options)."""
    if isinstance(value, GenerationOptions):
        return value
    return GenerationOptions(value, name=name)


__all__ = ["ChatFormat", "DECODE_BACKENDS", "DEFAULT_MAX_NEW_TOKENS", "GenerationOptions", "LoadingOptions", "MAX_SEED",
           "as_generation_options", "valid_generation_keys"]
