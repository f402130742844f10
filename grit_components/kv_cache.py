"""Key/value caches of texts, and the store that keeps them: reuse prefill work across RAG requests.

A `DocumentKVCache` holds the per-layer keys and values of one exact token sequence (always starting
at position 0), computed either by the bidirectional embedding pass (source "embedding", what GRIT
reuses) or by a causal prefill (source "causal", exact for generation). It is never mutated: generation
gets a fresh copy (`to_dynamic_cache`, or `compose` with `reserve`, which pre-allocates a `StaticCache`
so long prefixes are not copied again at every generated token).

`KVStore` is content-addressed: the key is a hash of (model fingerprint, source, token ids), so a changed
text, a different model or the other source can never be served a stale entry. It keeps entries in
memory up to a byte budget (least recently used first out) and optionally in a directory (one
safetensors file per entry, written atomically, verified on load; an unreadable or foreign file is
ignored, so the caller recomputes). One store belongs to each loaded model: the registry entry creates
it and hands it to the `GritModel` (`model.kv_store`); its budget and directory are set once.

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

from grit_components._checks import check_choice, check_int
from grit_components._compat import output_cache

if TYPE_CHECKING:
    from transformers import Cache, DynamicCache, StaticCache

    from grit_components.models import GritModel

CacheSource = Literal["embedding", "causal"]
SOURCES: tuple[str, ...] = ("embedding", "causal")
FORMAT_VERSION = "1"


def cache_key(fingerprint: str, source: str, token_ids: Sequence[int]) -> str:
    """Content address of a cache: sha256 over the model fingerprint, the source and the exact token ids."""
    digest = hashlib.sha256()
    digest.update(f"grit-kv:{FORMAT_VERSION}:{fingerprint}:{source}:".encode())
    digest.update(torch.tensor(list(token_ids), dtype=torch.int64).numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class DocumentKVCache:
    """Keys and values of one token sequence at positions 0..len-1; treat as read-only.

    `keys[i]` / `values[i]` have shape (1, kv_heads, len(token_ids), head_dim); keys are stored after
    RoPE (as transformers caches them).
    """

    token_ids: tuple[int, ...]
    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    source: str
    fingerprint: str
    key: str = field(default="")

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", cache_key(self.fingerprint, self.source, self.token_ids))

    @property
    def length(self) -> int:
        return len(self.token_ids)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer (key, value) views of the stored tensors (do not modify them)."""
        return list(zip(self.keys, self.values))

    def to_dynamic_cache(self, config=None, device=None) -> DynamicCache:
        """A fresh transformers `DynamicCache` holding copies: generation may grow it freely."""
        return make_dynamic_cache([(k.to(device).clone(), v.to(device).clone()) for k, v in self.layers()], config)


def make_dynamic_cache(layers: Sequence[tuple[torch.Tensor, torch.Tensor]], config=None) -> DynamicCache:
    """A `DynamicCache` holding `layers` (not copied). `config` picks per-layer types (sliding windows)."""
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=list(layers), config=config)


def compute_cache(model: GritModel, token_ids: Sequence[int], source: str) -> DocumentKVCache:
    """Run one unpadded forward over `token_ids` and capture its keys and values.

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


def check_composable(model: GritModel) -> None:
    """Raise `UnsupportedPositionEncodingError` unless cached texts of `model` can be moved (RoPE)."""
    _rotary(model)


def _rotary(model: GritModel):
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


def rope_shift(keys: torch.Tensor, delta: int, inv_freq: torch.Tensor) -> torch.Tensor:
    """Keys rotated as if every position were `delta` later (a new tensor; `keys` is untouched).

    `keys`: (B, kv_heads, T, head_dim), after RoPE in the rotate-half layout of Llama/Mistral/Qwen2.
    RoPE is a rotation by position x frequency, so moving by `delta` is one more rotation; the angles
    are computed in float64 so large shifts lose no precision.
    """
    if delta == 0:
        return keys.clone()
    angles = float(delta) * inv_freq.to(device=keys.device, dtype=torch.float64)  # (head_dim/2,)
    angles = torch.cat((angles, angles))  # (head_dim,)
    cos, sin = angles.cos().to(torch.float32), angles.sin().to(torch.float32)
    k = keys.to(torch.float32)
    return (k * cos + _rotate_half(k) * sin).to(keys.dtype)


def compose(model: GritModel, caches: Sequence[DocumentKVCache], *, drop_leading: int = 0,
            reserve: int | None = None) -> tuple[list[int], Cache]:
    """Concatenate caches into one prefix: (token ids, a fresh transformers cache holding copies).

    The first cache is used whole. Every later cache loses its first `drop_leading` tokens (the BOS:
    one prompt has one BOS, as in training) and is re-rotated so its remaining tokens continue the
    positions of the prefix. Each text's states were computed on their own: texts do not attend to
    each other (as if encoded jointly under a block-diagonal mask).

    :param reserve: room to leave for the tokens that follow (uncached suffix + new tokens). When given
        and every layer of the model attends to the full context, the result is a pre-allocated
        `StaticCache` of exactly prefix + `reserve` positions: generation then writes each new token in
        place, where a `DynamicCache` copies the whole (long) prefix at every step. Otherwise, and for
        sliding-window models, a `DynamicCache`.
    """
    if not caches:
        raise ValueError("caches must not be empty")
    if reserve is not None:
        check_int("reserve", reserve, minimum=1)
    inv_freq = _rotary(model) if len(caches) > 1 else None
    ids: list[int] = list(caches[0].token_ids)
    parts = [[(k.to(model.device), v.to(model.device))] for k, v in caches[0].layers()]  # per layer: (k, v) pieces
    for cache in caches[1:]:
        if cache.length <= drop_leading:
            raise ValueError("a cached text has no tokens after its BOS")
        delta = len(ids) - drop_leading  # old position p -> new position len(ids) + p - drop_leading
        for layer, (k, v) in enumerate(cache.layers()):
            k, v = k[:, :, drop_leading:].to(model.device), v[:, :, drop_leading:].to(model.device)
            parts[layer].append((rope_shift(k, delta, inv_freq), v))
        ids.extend(cache.token_ids[drop_leading:])
    if reserve is not None:
        static = _static_cache(model, len(ids) + reserve)
        if static is not None:
            for layer, pieces in zip(static.layers, parts):
                for k, v in pieces:
                    layer.update(k, v)  # copies into the pre-allocated tensors; the stored entry is untouched
            return ids, static
    layers = [(torch.cat([k for k, _ in pieces], dim=2), torch.cat([v for _, v in pieces], dim=2))
              if len(pieces) > 1 else (pieces[0][0].clone(), pieces[0][1].clone()) for pieces in parts]
    return ids, make_dynamic_cache(layers, model.model.config)


def _static_cache(model: GritModel, max_cache_len: int) -> StaticCache | None:
    """An empty `StaticCache` of `max_cache_len` positions, or None if a layer is not plain full attention."""
    from transformers import StaticCache
    from transformers.cache_utils import StaticLayer

    cache = StaticCache(config=model.model.config, max_cache_len=max_cache_len)
    if all(type(layer) is StaticLayer for layer in cache.layers):
        return cache
    return None


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
    """

    def __init__(self, max_bytes: int | None = None, directory: str | os.PathLike | None = None) -> None:
        self._lock = threading.RLock()
        self._entries: OrderedDict[str, DocumentKVCache] = OrderedDict()
        self._bytes = 0
        self.stats = StoreStats()
        self.max_bytes = default_max_bytes() if max_bytes is None else check_int("max_bytes", max_bytes, minimum=0)
        self.directory = self._check_directory(directory)
        self._configured: set[str] = {name for name, value in (("max_bytes", max_bytes), ("directory", directory))
                                      if value is not None}

    @staticmethod
    def _check_directory(directory) -> Path | None:
        if directory is None:
            return None
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"directory must be a str or path, not {type(directory).__name__}")
        path = Path(directory).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return path

    def configure(self, *, max_bytes: int | None = None, directory: str | os.PathLike | None = None) -> KVStore:
        """Set the budget (evicting at once if needed) and/or the directory tier, once. Returns self.

        The store is shared by every component on its model, so a setting is made once: asking again for
        the same value is fine, asking for another one is a ValueError naming both (settings left as None
        are not changed).
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
            if max_bytes is not None:
                self.max_bytes = max_bytes
                self._configured.add("max_bytes")
                self._evict()
            if directory is not None:
                self.directory = path
                self._configured.add("directory")
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

    def get(self, fingerprint: str, source: str, token_ids: Sequence[int]) -> DocumentKVCache | None:
        """The cache of exactly these tokens for this model and source, or None (memory, then directory)."""
        token_ids = tuple(int(i) for i in token_ids)
        key = cache_key(fingerprint, source, token_ids)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.token_ids == token_ids:
                self._entries.move_to_end(key)
                self.stats.hits += 1
                return entry
        entry = self._load(key, fingerprint, source, token_ids)
        with self._lock:
            if entry is None:
                self.stats.misses += 1
                return None
            self.stats.hits += 1
            self.stats.disk_hits += 1
            self._insert(entry)
        return entry

    def put(self, entry: DocumentKVCache, *, write_through: bool = True) -> None:
        """Keep `entry` (in memory within the budget, and in the directory tier if there is one)."""
        if not isinstance(entry, DocumentKVCache):
            raise TypeError(f"entry must be a DocumentKVCache, not {type(entry).__name__}")
        with self._lock:
            self._insert(entry)
        if write_through and self.directory is not None and not self._path(entry.key).exists():
            self._save(entry)

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

        tensors = {"token_ids": torch.tensor(entry.token_ids, dtype=torch.int64)}
        for i, (k, v) in enumerate(entry.layers()):
            tensors[f"keys.{i}"] = k.detach().to("cpu").contiguous()
            tensors[f"values.{i}"] = v.detach().to("cpu").contiguous()
        metadata = {"format": "grit-kv", "version": FORMAT_VERSION, "fingerprint": entry.fingerprint,
                    "source": entry.source, "key": entry.key, "layers": str(len(entry.keys))}
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

    def _load(self, key: str, fingerprint: str, source: str, token_ids: tuple[int, ...]) -> DocumentKVCache | None:
        if self.directory is None:
            return None
        path = self._path(key)
        if not path.exists():
            return None
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                if (meta.get("format"), meta.get("version"), meta.get("fingerprint"), meta.get("source"),
                        meta.get("key")) != ("grit-kv", FORMAT_VERSION, fingerprint, source, key):
                    raise ValueError("metadata does not match")
                stored_ids = tuple(handle.get_tensor("token_ids").tolist())
                if stored_ids != token_ids:
                    raise ValueError("token ids differ")
                layers = int(meta["layers"])
                # get_tensor maps the file: copy, so a file replaced or truncated later cannot touch (or
                # SIGBUS) an entry already in memory.
                keys = tuple(handle.get_tensor(f"keys.{i}").clone() for i in range(layers))
                values = tuple(handle.get_tensor(f"values.{i}").clone() for i in range(layers))
            for k, v in zip(keys, values):
                if k.dim() != 4 or k.shape[2] != len(token_ids) or v.shape[:3] != k.shape[:3]:
                    raise ValueError("tensor shapes do not match the token ids")
            return DocumentKVCache(token_ids, keys, values, source, fingerprint, key)
        except Exception as error:  # noqa: BLE001 - any unusable file means: recompute, never crash
            with self._lock:
                self.stats.disk_errors += 1
            warnings.warn(f"ignoring unusable KV cache file {path.name} (it will be recomputed): {error}",
                          RuntimeWarning, stacklevel=3)
            with contextlib.suppress(OSError):
                path.unlink()  # so that the recomputed entry is written in its place
            return None
