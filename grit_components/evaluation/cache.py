"""Corpus embeddings cached on disk, so a second evaluation run skips the expensive embedding pass.

A cache entry is keyed by everything that changes the vectors: the model fingerprint, the embedding
settings (instruction, attention, pooling, max_length, normalisation) and a hash of the exact texts.
Entries are `.npy` files (never pickle) written atomically, with a small JSON sidecar describing them.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from grit_components.models import cache_dir

if TYPE_CHECKING:
    from grit_components.grit_model import GritModel


def texts_hash(texts: Sequence[str]) -> str:
    """sha256 over the texts, length-prefixed so ["ab", "c"] and ["a", "bc"] differ."""
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def embedding_cache_key(fingerprint: str, settings: dict, corpus_hash: str) -> str:
    payload = json.dumps({"fingerprint": fingerprint, "settings": settings, "corpus": corpus_hash}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def default_embedding_cache_dir() -> Path:
    return cache_dir() / "eval-embeddings"


def cached_embed(
    model: GritModel,
    texts: Sequence[str],
    *,
    instruction: str = "",
    batch_size: int = 16,
    max_length: int = 256,
    attention: str = "bidirectional",
    pooling: str = "mean",
    normalize: bool = True,
    progress_bar: bool = True,
    cache_directory: str | Path | None = None,
) -> tuple[np.ndarray, bool]:
    """Embed `texts` with `model.embed`, or load the vectors of an identical earlier call.

    Truncation to `max_length` tokens is expected here (documented in the run settings), so it is not
    warned about. Returns (float32 array of shape (n, dim), whether it came from the cache).
    `cache_directory=None` uses `default_embedding_cache_dir()`; pass `False`-y "" to disable caching.
    """
    settings = {"instruction": instruction, "max_length": max_length, "attention": attention, "pooling": pooling,
                "normalize": normalize}
    directory = default_embedding_cache_dir() if cache_directory is None else (Path(cache_directory) if cache_directory else None)
    key = embedding_cache_key(model.fingerprint, settings, texts_hash(texts))
    path = directory / f"{key}.npy" if directory else None
    if path is not None and path.exists():
        vectors = np.load(path, allow_pickle=False)
        if vectors.shape[0] == len(texts):
            return vectors, True
    import warnings

    from grit_components.embedding import TruncationWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        from grit_components.embedding import embed

        vectors = embed(model, texts, instruction=instruction, batch_size=batch_size, max_length=max_length,
                        normalize=normalize, progress_bar=progress_bar, attention=attention, pooling=pooling)
    if path is not None:
        directory.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=directory, suffix=".npy.tmp")
        os.close(handle)
        try:
            with open(tmp, "wb") as out:
                np.save(out, vectors, allow_pickle=False)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        meta = {"model": model.name, "fingerprint": model.fingerprint, "settings": settings, "count": len(texts)}
        (directory / f"{key}.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return vectors, False
