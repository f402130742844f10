"""Key/value caches of texts, and the store that keeps them: reuse prefill work across RAG requests.

A `DocumentKVCache` holds the per-layer keys and values of one exact token sequence (always starting
at position 0), computed either by the bidirectional embedding pass (source "embedding", what GRIT
reuses) or by a causal prefill (source "causal", exact for generation). It is never mutated: generation
gets a fresh copy (`to_dynamic_cache`, or `compose` with `reserve`, which pre-allocates a `StaticCache`
so long prefixes are not copied again at every generated token).

`KVStore` is content-addressed: the key is a hash of (model fingerprint, source, token ids), so a changed
text, a different model or the other source can never be served a stale entry. It keeps entries in
memory up to a byte budget (least recently used first out) and optionally in a directory (one
safetensors file per entry, written atomically, verified on load: checksum, model fingerprint, dtype,
layer and head counts, length, finite values; a file that fails any check is ignored with a warning, so
the caller recomputes). One store belongs to each loaded model: the registry entry creates it and hands
it to the `GritModel` (`model.kv_store`); its budget, directory and dtype are set once.

The store's dtype (`KV_DTYPES`) is the form entries are kept in, in memory and on disk: the model's own
dtype (the default), bfloat16, float16, or int8 (one float32 scale per head and token). A smaller form
holds more documents in the same budget and loads faster from disk; `compose` turns the stored form into
the cache generation reads (`decode_dtype`): 16-bit forms stay 16-bit, so each new token reads half the
bytes of a float32 cache.

Several caches compose into one prompt prefix (`compose`): each later cache is re-rotated from
position 0 to its place in the prompt (RoPE shift, exact up to float rounding) and concatenated.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from transformers.cache_utils import StaticLayer

from grit_components._checks import check_choice, check_int
from grit_components._compat import output_cache
from grit_components.options import KV_DTYPES, KV_FLOAT_DTYPES, check_kv_dtype

if TYPE_CHECKING:
    from transformers import Cache, DynamicCache, StaticCache

    from grit_components.models import LoadedModel

CacheSource = Literal["embedding", "causal"]
SOURCES: tuple[str, ...] = ("embedding", "causal")
FORMAT_VERSION = "2"  # 2: the header records dtype, layer/head counts, length and a checksum
_INT8_MAX = 127


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def cache_key(fingerprint: str, source: str, token_ids: Sequence[int]) -> str:
    """Content address of a cache: sha256 over the model fingerprint, the source and the exact token ids."""
    digest = hashlib.sha256()
    digest.update(f"grit-kv:1:{fingerprint}:{source}:".encode())  # independent of the file format version
    digest.update(torch.tensor(list(token_ids), dtype=torch.int64).numpy().tobytes())
    return digest.hexdigest()


def quantize_int8(states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one float32 scale per head and token (over head_dim): (int8 states, scales).

    `states` (B, heads, T, head_dim) -> int8 of the same shape and scales (B, heads, T, 1). A stored
    entry is quantized once and dequantized once per request (`compose`), never per generated token,
    which is why transformers' `QuantizedCache` (it re-dequantizes the whole cache at every step) is not
    used here.
    """
    x = states.to(torch.float32)
    scales = (x.abs().amax(dim=-1, keepdim=True) / _INT8_MAX).clamp_(min=torch.finfo(torch.float32).tiny)
    return torch.round(x / scales).clamp_(-_INT8_MAX, _INT8_MAX).to(torch.int8), scales


def dequantize_int8(quantized: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (quantized.to(torch.float32) * scales).to(dtype)


@dataclass(frozen=True, eq=False)
class DocumentKVCache:
    """Keys and values of one token sequence at positions 0..len-1; treat as read-only.

    `keys[i]` / `values[i]` have shape (1, kv_heads, len(token_ids), head_dim); keys are stored after
    RoPE (as transformers caches them). An int8 entry (`dtype == "int8"`) also holds `key_scales[i]` /
    `value_scales[i]`, float32 of shape (1, kv_heads, len, 1); read it through `layers()`.
    """

    token_ids: tuple[int, ...]
    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    source: str
    fingerprint: str
    key: str = field(default="")
    key_scales: tuple[torch.Tensor, ...] | None = None
    value_scales: tuple[torch.Tensor, ...] | None = None

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", cache_key(self.fingerprint, self.source, self.token_ids))
        if (self.key_scales is None) != (self.value_scales is None):
            raise ValueError("key_scales and value_scales go together (both set for an int8 entry, else both None)")

    @property
    def length(self) -> int:
        return len(self.token_ids)

    @property
    def quantized(self) -> bool:
        return self.key_scales is not None

    @property
    def dtype(self) -> str:
        """The stored form: "float32", "bfloat16", "float16" or "int8"."""
        return "int8" if self.quantized else dtype_name(self.keys[0].dtype)

    def tensors(self) -> list[torch.Tensor]:
        """Every stored tensor (keys, values and, for int8, scales)."""
        return [*self.keys, *self.values, *(self.key_scales or ()), *(self.value_scales or ())]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def layers(self, dtype: torch.dtype | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer (key, value) float tensors. In the stored dtype (and `dtype` None or equal) they are the
        stored tensors themselves: do not modify them. Otherwise converted copies (int8: dequantized, to
        `dtype` or float32)."""
        if self.quantized:
            dtype = dtype or torch.float32
            return [(dequantize_int8(k, ks, dtype), dequantize_int8(v, vs, dtype))
                    for k, v, ks, vs in zip(self.keys, self.values, self.key_scales, self.value_scales)]
        return [(k.to(dtype), v.to(dtype)) if dtype is not None else (k, v) for k, v in zip(self.keys, self.values)]

    def to_dtype(self, dtype: str) -> DocumentKVCache:
        """This entry stored as `dtype` (one of `KV_DTYPES`); itself when it already is. The key stays: it
        addresses the content (model, source, tokens), not the form."""
        dtype = check_kv_dtype(dtype, "dtype")
        if dtype is None or dtype == self.dtype:
            return self
        if dtype == "int8":
            keys, key_scales = zip(*(quantize_int8(k) for k, _ in self.layers()))
            values, value_scales = zip(*(quantize_int8(v) for _, v in self.layers()))
            return DocumentKVCache(self.token_ids, keys, values, self.source, self.fingerprint, self.key,
                                   key_scales, value_scales)
        target = KV_FLOAT_DTYPES[dtype]
        pairs = self.layers(target)
        if dtype == "float16" and not all(torch.isfinite(t).all() for pair in pairs for t in pair):
            raise ValueError("kv_cache_dtype='float16' cannot hold this model's key/value states: some exceed "
                             "float16's range (65504); use 'bfloat16' (same size, float32's range)")
        return DocumentKVCache(self.token_ids, tuple(k for k, _ in pairs), tuple(v for _, v in pairs), self.source,
                               self.fingerprint, self.key)

    def to_dynamic_cache(self, config=None, device=None, dtype: torch.dtype | None = None) -> DynamicCache:
        """A fresh transformers `DynamicCache` holding copies: generation may grow it freely."""
        return make_dynamic_cache([(k.to(device).clone(), v.to(device).clone()) for k, v in self.layers(dtype)], config)


@dataclass(frozen=True)
class CacheLayout:
    """What every cache of one model looks like: a stored file must match it to be used."""

    layers: int
    kv_heads: int
    head_dim: int
    dtype: str  # the stored form, one of KV_DTYPES

    @classmethod
    def of(cls, model: LoadedModel, dtype: str | None = None) -> CacheLayout:
        """The layout of `model`'s caches, stored as `dtype` (None: the model's own dtype)."""
        config = model.model.config
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(int(config.num_hidden_layers), int(getattr(config, "num_key_value_heads", None) or heads),
                   int(head_dim), dtype or dtype_name(model.dtype))


def make_dynamic_cache(layers: Sequence[tuple[torch.Tensor, torch.Tensor]], config=None) -> DynamicCache:
    """A `DynamicCache` holding `layers` (not copied). `config` picks per-layer types (sliding windows)."""
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=list(layers), config=config)


def compute_cache(model: LoadedModel, token_ids: Sequence[int], source: str) -> DocumentKVCache:
    """Run one unpadded forward over `token_ids` and capture its keys and values (in the model's dtype).

    "embedding": bidirectional attention, the same pass as GRIT embedding; "causal": causal prefill.
    """
    from grit_components.attention import bidirectional_forward, causal_forward

    check_choice("source", source, SOURCES)
    if not token_ids:
        raise ValueError("token_ids must not be empty")
    ids = torch.tensor([list(token_ids)], dtype=torch.long, device=model.device)  # (1, T)
    mask = torch.ones_like(ids)
    forward = bidirectional_forward if source == "embedding" else causal_forward
    with torch.inference_mode():
        out = forward(model.model, ids, mask, use_cache=True)
    layers = output_cache(out).layers
    return DocumentKVCache(tuple(int(i) for i in token_ids), tuple(layer.keys.clone() for layer in layers),
                           tuple(layer.values.clone() for layer in layers), source, model.fingerprint)


# --- RoPE shift and composition -------------------------------------------------------------------


class UnsupportedPositionEncodingError(ValueError):
    """The model does not use (full, static) rotary position embeddings, so caches cannot be moved."""


def check_composable(model: LoadedModel) -> None:
    """Raise `UnsupportedPositionEncodingError` unless cached texts of `model` can be moved (RoPE)."""
    _rotary(model)


def _rotary(model: LoadedModel):
    body = model.model.get_decoder() if hasattr(model.model, "get_decoder") else model.model.model
    rotary = getattr(body, "rotary_emb", None)
    inv_freq = getattr(rotary, "inv_freq", None)
    name = type(model.model).__name__
    if rotary is None or inv_freq is None:
        raise UnsupportedPositionEncodingError(
            f"{name} does not use rotary position embeddings (RoPE); composing several cached texts "
            "(modes multi_doc, query_doc, doc_query) needs RoPE. Use mode 'doc', 'query' or 'none' with this model.")
    rope_type = getattr(rotary, "rope_type", "default")
    if rope_type in ("dynamic", "longrope"):
        raise UnsupportedPositionEncodingError(
            f"{name} uses {rope_type!r} RoPE scaling, whose frequencies depend on the sequence length; cached "
            "texts cannot be moved exactly. Use mode 'doc', 'query' or 'none' with this model.")
    head_dim = getattr(model.model.config, "head_dim", None) or (
        model.model.config.hidden_size // model.model.config.num_attention_heads)
    if inv_freq.numel() * 2 != head_dim:
        raise UnsupportedPositionEncodingError(
            f"{name} applies RoPE to part of each head only; composing cached texts is not supported for it.")
    return inv_freq


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope_shift(keys: torch.Tensor, delta: int, inv_freq: torch.Tensor, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Keys rotated as if every position were `delta` later (a new tensor; `keys` is untouched).

    `keys`: (B, kv_heads, T, head_dim), after RoPE in the rotate-half layout of Llama/Mistral/Qwen2.
    RoPE is a rotation by position x frequency, so moving by `delta` is one more rotation; the angles
    are computed in float64 so large shifts lose no precision, the rotation in float32, and the result is
    rounded once, to `dtype` (default: the dtype of `keys`).
    """
    dtype = dtype or keys.dtype
    if delta == 0:
        return keys.to(dtype, copy=True)
    angles = float(delta) * inv_freq.to(device=keys.device, dtype=torch.float64)  # (head_dim/2,)
    angles = torch.cat((angles, angles))  # (head_dim,)
    cos, sin = angles.cos().to(torch.float32), angles.sin().to(torch.float32)
    k = keys.to(torch.float32)
    return (k * cos + _rotate_half(k) * sin).to(dtype)


def decode_dtype(model: LoadedModel, stored: str, *, static: bool = True) -> torch.dtype:
    """The dtype of the cache generation reads, for entries stored as `stored`.

    A 16-bit stored form stays 16-bit and int8 becomes bfloat16 (or the model's 16-bit dtype), so each
    new token reads half the bytes of a float32 cache; attention then runs in that dtype
    (`attention.enable_cache_dtype_attention`). This needs the model's sdpa attention and a pre-allocated
    cache (`static`); otherwise the cache is converted once to the model's dtype.
    """
    from grit_components.attention import enable_cache_dtype_attention

    if stored == "int8":
        target = model.dtype if model.dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
    else:
        target = KV_FLOAT_DTYPES[stored]
    if target == model.dtype or not static or not enable_cache_dtype_attention(model):
        return model.dtype
    return target


def compose(model: LoadedModel, caches: Sequence[DocumentKVCache], *, drop_leading: int = 0,
            reserve: int | None = None) -> tuple[list[int], Cache]:
    """Concatenate caches into one prefix: (token ids, a fresh transformers cache holding copies).

    The first cache is used whole. Every later cache loses its first `drop_leading` tokens (the BOS:
    one prompt has one BOS, as in training) and is re-rotated so its remaining tokens continue the
    positions of the prefix. Each text's states were computed on their own: texts do not attend to
    each other (as if encoded jointly under a block-diagonal mask). The result holds the states in
    `decode_dtype` of the caches' stored form (the model's dtype for caches stored in it).

    :param reserve: room to leave for the tokens that follow (uncached suffix + new tokens). When given
        and every layer of the model attends to the full context, the result is a pre-allocated
        `StaticCache` of exactly prefix + `reserve` positions: generation then writes each new token in
        place, where a `DynamicCache` copies the whole (long) prefix at every step. Otherwise, and for
        sliding-window models, a `DynamicCache`.
    """
    if reserve is not None:
        check_int("reserve", reserve, minimum=1)
    forms = _check_composable(caches)
    length = caches[0].length + sum(cache.length - drop_leading for cache in caches[1:])
    static = static_cache(model, length + reserve) if reserve is not None else None
    target = decode_dtype(model, forms, static=static is not None)
    if static is not None and target != model.dtype:
        static.layers = [_CastingStaticLayer(max_cache_len=layer.max_cache_len) for layer in static.layers]
    ids, parts = _composed_parts(model, caches, drop_leading, target)
    if static is not None:
        for layer, pieces in zip(static.layers, parts):
            for k, v in pieces:
                layer.update(k, v)  # copies into the pre-allocated tensors; the stored entry is untouched
        return ids, static
    return ids, make_dynamic_cache(_joined(parts), model.model.config)


def compose_states(model: LoadedModel, caches: Sequence[DocumentKVCache], *, drop_leading: int = 0,
                   ) -> tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]]:
    """`compose` as plain tensors: (token ids, per layer (keys, values) of shape (1, kv_heads, tokens,
    head_dim), copies in `decode_dtype` of the stored form), for an engine with its own cache
    (`llama_engine.LlamaCppEngine.start_from_states`)."""
    forms = _check_composable(caches)
    ids, parts = _composed_parts(model, caches, drop_leading, decode_dtype(model, forms, static=False))
    return ids, _joined(parts)


def _check_composable(caches: Sequence[DocumentKVCache]) -> str:
    """The one stored dtype of `caches` (ValueError for none, or for caches of several stores)."""
    if not caches:
        raise ValueError("caches must not be empty")
    forms = {cache.dtype for cache in caches}
    if len(forms) > 1:
        raise ValueError(f"caches are stored in different dtypes {sorted(forms)}; compose caches of one store")
    return forms.pop()


def _composed_parts(model: LoadedModel, caches: Sequence[DocumentKVCache], drop_leading: int,
                    target: torch.dtype) -> tuple[list[int], list[list[tuple[torch.Tensor, torch.Tensor]]]]:
    """(token ids, per layer the pieces of keys and values in `target`, each later cache re-rotated)."""
    inv_freq = _rotary(model) if len(caches) > 1 else None
    ids: list[int] = list(caches[0].token_ids)
    parts = [[(k.to(model.device), v.to(model.device))] for k, v in caches[0].layers(target)]  # per layer: pieces
    for cache in caches[1:]:
        if cache.length <= drop_leading:
            raise ValueError("a cached text has no tokens after its BOS")
        delta = len(ids) - drop_leading  # old position p -> new position len(ids) + p - drop_leading
        for layer, (k, v) in enumerate(cache.layers(torch.float32 if cache.quantized else None)):  # rotated in fp32
            k, v = k[:, :, drop_leading:].to(model.device), v[:, :, drop_leading:].to(model.device)
            parts[layer].append((rope_shift(k, delta, inv_freq, dtype=target), v.to(target)))
        ids.extend(cache.token_ids[drop_leading:])
    return ids, parts


def _joined(parts) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.cat([k for k, _ in pieces], dim=2), torch.cat([v for _, v in pieces], dim=2))
            if len(pieces) > 1 else (pieces[0][0].clone(), pieces[0][1].clone()) for pieces in parts]


def static_cache(model: LoadedModel, max_cache_len: int) -> StaticCache | None:
    """An empty `StaticCache` of `max_cache_len` positions, or None if a layer is not plain full attention."""
    from transformers import StaticCache

    cache = StaticCache(config=model.model.config, max_cache_len=max_cache_len)
    if all(type(layer) is StaticLayer for layer in cache.layers):
        return cache
    return None


class _CastingStaticLayer(StaticLayer):
    """A `StaticLayer` whose states keep the dtype they were first written in: the states of each new
    token (computed in the model's dtype) are rounded to it as they are written, one token at a time."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if self.is_initialized:
            key_states, value_states = key_states.to(self.keys.dtype), value_states.to(self.values.dtype)
        return super().update(key_states, value_states, *args, **kwargs)


# --- Store ----------------------------------------------------------------------------------------


def default_max_bytes(fraction: float = 0.25) -> int:
    """A quarter of physical memory, but at most half of what is available now (at least 64 MiB)."""
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        total = os.sysconf("SC_PHYS_PAGES") * page
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * page
        except (ValueError, OSError):
            available = total
        budget = int(min(total * fraction, available * 0.5))
    except (ValueError, OSError, AttributeError):
        budget = 2 * 1024**3
    return max(budget, 64 * 1024**2)


@dataclass
class StoreStats:
    hits: int = 0
    misses: int = 0
    disk_hits: int = 0
    disk_writes: int = 0
    disk_errors: int = 0  # files found but unusable (corrupt, truncated, foreign): ignored
    evictions: int = 0
    rejected: int = 0  # entries larger than the whole memory budget (kept on disk only, if any)


class KVStore:
    """Thread-safe, content-addressed store of `DocumentKVCache` entries with a byte budget.

    :param max_bytes: memory budget for cached tensors; None = `default_max_bytes()`. Least recently
        used entries are evicted first; an entry larger than the whole budget is not kept in memory.
    :param directory: optional folder of safetensors files (one per entry) that survives restarts
        and is shared by processes; entries evicted from memory are found there again.
    :param dtype: the form entries are kept in, in memory and on disk: "float32", "bfloat16", "float16",
        "int8" (`KV_DTYPES`), or None to keep them in the dtype they were computed in (the model's).
    """

    def __init__(self, max_bytes: int | None = None, directory: str | os.PathLike | None = None,
                 dtype: str | torch.dtype | None = None) -> None:
        self._lock = threading.RLock()
        self._entries: OrderedDict[str, DocumentKVCache] = OrderedDict()
        self._bytes = 0
        self.stats = StoreStats()
        self.max_bytes = default_max_bytes() if max_bytes is None else check_int("max_bytes", max_bytes, minimum=0)
        self.directory = self._check_directory(directory)
        self.dtype: str | None = check_kv_dtype(dtype, "dtype")
        self._configured: set[str] = {name for name, value in (("max_bytes", max_bytes), ("directory", directory),
                                                               ("dtype", self.dtype)) if value is not None}

    @staticmethod
    def _check_directory(directory) -> Path | None:
        if directory is None:
            return None
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"directory must be a str or path, not {type(directory).__name__}")
        path = Path(directory).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return path

    def configure(self, *, max_bytes: int | None = None, directory: str | os.PathLike | None = None,
                  dtype: str | torch.dtype | None = None) -> KVStore:
        """Set the budget (evicting at once if needed), the directory tier and/or the dtype, once. Returns self.

        The store is shared by every component on its model, so a setting is made once: asking again for
        the same value is fine, asking for another one is a ValueError naming both (settings left as None
        are not changed). Entries already in memory are converted to a newly set dtype.
        """
        with self._lock:
            if max_bytes is not None:
                check_int("max_bytes", max_bytes, minimum=0)
                if "max_bytes" in self._configured and self.max_bytes != max_bytes:
                    raise ValueError(f"kv_cache_max_bytes={max_bytes} conflicts with the KV store's budget "
                                     f"{self.max_bytes}, set earlier for this shared model; every component on one "
                                     "model shares one store, so give them the same value (or leave it unset)")
            if directory is not None:
                path = self._check_directory(directory)
                if "directory" in self._configured and self.directory != path:
                    raise ValueError(f"kv_cache_directory={str(path)!r} conflicts with the KV store's directory "
                                     f"{str(self.directory)!r}, set earlier for this shared model; every component "
                                     "on one model shares one store, so give them the same folder (or leave it unset)")
            dtype = check_kv_dtype(dtype)
            if dtype is not None and "dtype" in self._configured and self.dtype != dtype:
                raise ValueError(f"kv_cache_dtype={dtype!r} conflicts with the KV store's dtype {self.dtype!r}, set "
                                 "earlier for this shared model; every component on one model shares one store, so "
                                 "give them the same dtype (or leave it unset)")
            if dtype is not None and dtype != self.dtype:
                self.dtype = dtype
                converted = OrderedDict((key, entry.to_dtype(dtype)) for key, entry in self._entries.items())
                self._entries, self._bytes = converted, sum(entry.nbytes for entry in converted.values())
            if dtype is not None:
                self._configured.add("dtype")
            if max_bytes is not None:
                self.max_bytes = max_bytes
                self._configured.add("max_bytes")
            if directory is not None:
                self.directory = path
                self._configured.add("directory")
            self._evict()
        return self

    @property
    def nbytes(self) -> int:
        """Bytes of tensors held in memory."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def clear(self) -> None:
        """Forget every in-memory entry (files in the directory tier stay)."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def get(self, fingerprint: str, source: str, token_ids: Sequence[int], *,
            layout: CacheLayout | None = None) -> DocumentKVCache | None:
        """The cache of exactly these tokens for this model and source, or None (memory, then directory).

        :param layout: what the model's caches look like (`CacheLayout.of(model, store.dtype)`); a file
            that does not match it is not used. Without it, a file is only checked against its own header.
        """
        token_ids = tuple(int(i) for i in token_ids)
        key = cache_key(fingerprint, source, token_ids)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.token_ids == token_ids:
                self._entries.move_to_end(key)
                self.stats.hits += 1
                return entry
        entry = self._load(key, fingerprint, source, token_ids, layout)
        with self._lock:
            if entry is None:
                self.stats.misses += 1
                return None
            self.stats.hits += 1
            self.stats.disk_hits += 1
            self._insert(entry)
        return entry

    def put(self, entry: DocumentKVCache, *, write_through: bool = True) -> DocumentKVCache:
        """Keep `entry` in the store's dtype (in memory within the budget, and in the directory tier if
        there is one). Returns the entry as stored: use it, not `entry`, so that a first answer reads the
        same states as every later one."""
        if not isinstance(entry, DocumentKVCache):
            raise TypeError(f"entry must be a DocumentKVCache, not {type(entry).__name__}")
        if self.dtype is not None:
            entry = entry.to_dtype(self.dtype)
        with self._lock:
            self._insert(entry)
        if write_through and self.directory is not None and not self._path(entry.key).exists():
            self._save(entry)
        return entry

    def _insert(self, entry: DocumentKVCache) -> None:
        if entry.key in self._entries:
            self._entries.move_to_end(entry.key)
            return
        if entry.nbytes > self.max_bytes:
            self.stats.rejected += 1
            return
        self._entries[entry.key] = entry
        self._bytes += entry.nbytes
        self._evict()

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and self._entries:
            _, old = self._entries.popitem(last=False)
            self._bytes -= old.nbytes
            self.stats.evictions += 1

    # --- directory tier ---

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / f"{key}.safetensors"

    def _save(self, entry: DocumentKVCache) -> None:
        from safetensors.torch import save_file

        tensors = _file_tensors(entry)
        keys = entry.keys[0]
        metadata = {"format": "grit-kv", "version": FORMAT_VERSION, "fingerprint": entry.fingerprint,
                    "source": entry.source, "key": entry.key, "dtype": entry.dtype, "layers": str(len(entry.keys)),
                    "kv_heads": str(keys.shape[1]), "head_dim": str(keys.shape[3]), "length": str(entry.length),
                    "sha256": _checksum(tensors)}
        target = self._path(entry.key)
        handle, tmp = tempfile.mkstemp(prefix=f".{entry.key[:16]}.", suffix=".tmp", dir=target.parent)
        os.close(handle)
        try:
            save_file(tensors, tmp, metadata=metadata)
            os.replace(tmp, target)  # atomic: readers see the old file or the whole new one
            with self._lock:
                self.stats.disk_writes += 1
        except OSError as error:
            warnings.warn(f"could not write KV cache file {target}: {error}", RuntimeWarning, stacklevel=3)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _load(self, key: str, fingerprint: str, source: str, token_ids: tuple[int, ...],
              layout: CacheLayout | None) -> DocumentKVCache | None:
        if self.directory is None:
            return None
        path = self._path(key)
        if not path.exists():
            return None
        try:
            return _read_verified(path, key, fingerprint, source, token_ids, self.dtype or (layout and layout.dtype),
                                  layout)
        except Exception as error:  # noqa: BLE001 - any unusable file means: recompute, never crash
            with self._lock:
                self.stats.disk_errors += 1
            warnings.warn(f"ignoring unusable KV cache file {path.name} (it will be recomputed): {error}",
                          RuntimeWarning, stacklevel=3)
            with contextlib.suppress(OSError):
                path.unlink()  # so that the recomputed entry is written in its place
            return None


def _file_tensors(entry: DocumentKVCache) -> dict[str, torch.Tensor]:
    """The tensors of a file, in checksum order."""
    tensors = {"token_ids": torch.tensor(entry.token_ids, dtype=torch.int64)}
    for i in range(len(entry.keys)):
        tensors[f"keys.{i}"] = entry.keys[i]
        tensors[f"values.{i}"] = entry.values[i]
        if entry.quantized:
            tensors[f"key_scales.{i}"] = entry.key_scales[i]
            tensors[f"value_scales.{i}"] = entry.value_scales[i]
    return {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}


def _checksum(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name, tensor in tensors.items():
        digest.update(f"{name}:{dtype_name(tensor.dtype)}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _read_verified(path: Path, key: str, fingerprint: str, source: str, token_ids: tuple[int, ...],
                   dtype: str | None, layout: CacheLayout | None) -> DocumentKVCache:
    """Read a cache file, raising ValueError on anything that does not match what the caller asked for."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
        if (meta.get("format"), meta.get("version")) != ("grit-kv", FORMAT_VERSION):
            raise ValueError(f"format {meta.get('format')!r} version {meta.get('version')!r} is not "
                             f"grit-kv version {FORMAT_VERSION}")
        for name, expected in (("fingerprint", fingerprint), ("source", source), ("key", key)):
            if meta.get(name) != expected:
                raise ValueError(f"{name} {meta.get(name)!r} does not match {expected!r}")
        try:
            layers, heads, head_dim, length = (int(meta[name]) for name in ("layers", "kv_heads", "head_dim", "length"))
        except (KeyError, ValueError):
            raise ValueError("the header lacks layer/head counts or length") from None
        stored = meta.get("dtype")
        if stored not in KV_DTYPES:
            raise ValueError(f"dtype {stored!r} is not one of {list(KV_DTYPES)}")
        if dtype is not None and stored != dtype:
            raise ValueError(f"dtype {stored!r} does not match the store's {dtype!r}")
        if layout is not None and (layers, heads, head_dim) != (layout.layers, layout.kv_heads, layout.head_dim):
            raise ValueError(f"{layers} layers x {heads} KV heads x {head_dim} do not match the model's "
                             f"{layout.layers} x {layout.kv_heads} x {layout.head_dim}")
        if length != len(token_ids):
            raise ValueError(f"length {length} does not match the {len(token_ids)} token ids")
        quantized = stored == "int8"
        names = ["token_ids"] + [f"{kind}.{i}" for i in range(layers)
                                 for kind in (("keys", "values", "key_scales", "value_scales") if quantized
                                              else ("keys", "values"))]
        if set(handle.keys()) != set(names):
            raise ValueError(f"the file holds tensors {sorted(handle.keys())[:6]}..., not those of {layers} layers")
        # get_tensor maps the file: copy, so a file replaced or truncated later cannot touch (or SIGBUS) an
        # entry already in memory.
        tensors = {name: handle.get_tensor(name).clone() for name in names}
    if _checksum(tensors) != meta.get("sha256"):
        raise ValueError("checksum mismatch (the tensors changed after the file was written)")
    if tuple(tensors["token_ids"].tolist()) != token_ids:
        raise ValueError("token ids differ")
    state_dtype = torch.int8 if quantized else KV_FLOAT_DTYPES[stored]
    for name, tensor in tensors.items():
        if name == "token_ids":
            continue
        scale = "scales" in name
        shape = (1, heads, length, 1 if scale else head_dim)
        if tuple(tensor.shape) != shape or tensor.dtype != (torch.float32 if scale else state_dtype):
            raise ValueError(f"{name} is {tensor.dtype} {tuple(tensor.shape)}, not {stored} {shape}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"{name} holds NaN or infinite values")
    pick = lambda kind: tuple(tensors[f"{kind}.{i}"] for i in range(layers))  # noqa: E731
    return DocumentKVCache(token_ids, pick("keys"), pick("values"), source, fingerprint, key,
                           pick("key_scales") if quantized else None, pick("value_scales") if quantized else None)
