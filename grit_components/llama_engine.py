"""llama.cpp as a decode backend (`decode_backend="llama_cpp"`, the `[llama-cpp]` extra).

The loaded model (adapter merged) is written once as a float32 GGUF file (`export.export_gguf`, in the user
cache, keyed by the model's fingerprint), so llama.cpp computes with exactly the weights of the torch path.
One llama.cpp context per model serves every call, one call at a time (a lock). Cached documents are
llama.cpp's own saved states (its KV cells), kept in an in-memory LRU store of this engine by (source, token
ids; `SavedState`): a document computed once is restored for every later question, as the torch path does
with `KVStore`.
The "embedding" source runs the document with the causal mask off (`llama_set_causal_attn`), the states the
GRIT embedding pass computes; "causal" is a plain prefill.

What it serves: no retrieval and one cached text (modes "doc" and "query"); several cached texts (they
are composed at shifted positions in the torch path) are the torch path's job, and say so.
"""

from __future__ import annotations

import ctypes
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from grit_components.export import export_gguf
from grit_components.models import LoadedModel, cache_dir

DEFAULT_STATE_BYTES = 2 * 1024**3
DEFAULT_BATCH = 2048  # prompt tokens per llama.cpp batch; an "embedding"-source document must fit in one


def import_llama_cpp():
    """The `llama_cpp` module, or an ImportError naming the extra that installs it."""
    try:
        import llama_cpp
    except ImportError as error:
        raise ImportError("decode_backend='llama_cpp' needs llama-cpp-python: pip install 'grit-components[llama-cpp]'"
                          ) from error
    return llama_cpp


class SavedState:
    """One sequence's KV cells as llama.cpp copies them out (`llama_state_seq_get_data`) and the tokens they hold.

    Not `Llama.save_state`: that also copies llama-cpp-python's logits buffer (batch x vocabulary floats) and
    scans all of it on every restore, which cost about a second per answer for SmolLM2 (a 400 MB buffer)."""

    __slots__ = ("data", "tokens")

    def __init__(self, data, tokens: list[int]) -> None:
        self.data = data
        self.tokens = tokens

    @property
    def nbytes(self) -> int:
        return len(self.data)


def last_logits(llm) -> np.ndarray:
    """The next-token logits after the last evaluated token of `llm` (`Llama.scores` holds them only with
    `logits_all`), copied out of llama.cpp's buffer."""
    llama_cpp = import_llama_cpp()
    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),)).copy()


def save_sequence(llm) -> SavedState:
    """The KV cells of sequence 0 of `llm` (a `llama_cpp.Llama`) and its tokens."""
    llama_cpp = import_llama_cpp()
    size = llama_cpp.llama_state_seq_get_size(llm.ctx, 0)
    data = (ctypes.c_uint8 * size)()
    if llama_cpp.llama_state_seq_get_data(llm.ctx, data, size, 0) != size:
        raise RuntimeError("llama.cpp did not copy the whole sequence state")
    return SavedState(data, [int(t) for t in llm.input_ids[: llm.n_tokens]])


def load_sequence(llm, state: SavedState) -> None:
    """Make `state` the whole context of `llm`: its KV cells in sequence 0, and its tokens."""
    llama_cpp = import_llama_cpp()
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)
    if llama_cpp.llama_state_seq_set_data(llm.ctx, state.data, len(state.data), 0) == 0:
        raise RuntimeError("llama.cpp could not restore the sequence state")
    count = len(state.tokens)
    llm.input_ids[:count] = state.tokens
    llm.n_tokens = count


class LlamaCppEngine:
    """One llama.cpp context over `model`'s float32 GGUF export, with a store of saved document states.

    :param model: the loaded model.
    :param threads: llama.cpp threads (default: torch's thread count at each call, so `torch.set_num_threads`
        governs both backends).
    :param state_bytes: memory budget of the saved document states (least recently used dropped first).
    :param batch: prompt tokens per llama.cpp batch; an "embedding"-source document may be at most this long.
    """

    def __init__(self, model: LoadedModel, *, threads: int | None = None, state_bytes: int = DEFAULT_STATE_BYTES,
                 batch: int = DEFAULT_BATCH) -> None:
        llama_cpp = import_llama_cpp()
        self.path = self._gguf(model)
        self.batch = min(batch, model.context_length)
        self.fixed_threads = threads
        self.threads = threads or torch.get_num_threads()
        self.llm = llama_cpp.Llama(model_path=str(self.path), n_ctx=model.context_length, n_batch=self.batch,
                                   n_ubatch=self.batch, n_threads=self.threads, n_threads_batch=self.threads,
                                   logits_all=False, verbose=False)
        self.state_bytes = state_bytes
        self.states: OrderedDict[tuple[str, str], SavedState] = OrderedDict()
        self.lock = threading.Lock()

    @staticmethod
    def _gguf(model: LoadedModel) -> Path:
        path = cache_dir() / "gguf" / f"{model.fingerprint}.f32.gguf"
        if not path.exists():
            try:
                export_gguf(model, path, dtype="f32")
            except ValueError as error:
                raise ValueError(f"decode_backend 'llama_cpp' cannot write {model.name} as GGUF: {error}") from error
        return path

    def start(self, prefix: Sequence[int] | None, source: str, suffix: Sequence[int]) -> tuple[np.ndarray, bool]:
        """Reset the context to `prefix` (restored from the store, or computed and stored) and evaluate
        `suffix` after it: (the next-token logits, whether the prefix came from the store). Hold `lock`."""
        llama_cpp = import_llama_cpp()
        threads = self.fixed_threads or torch.get_num_threads()
        if threads != self.threads:
            llama_cpp.llama_set_n_threads(self.llm.ctx, threads, threads)
            self.threads = threads
        hit = False
        self.llm.reset()
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.llm.ctx), True)
        if prefix:
            key = (source, hashlib.sha256(np.asarray(prefix, dtype=np.int64).tobytes()).hexdigest())
            state = self.states.get(key)
            if state is not None:
                self.states.move_to_end(key)
                load_sequence(self.llm, state)
                hit = True
            else:
                if source == "embedding":
                    if len(prefix) > self.batch:
                        raise ValueError(f"source 'embedding' with decode_backend='llama_cpp': the cached text has "
                                         f"{len(prefix)} tokens, more than one llama.cpp batch ({self.batch}); use "
                                         "source 'causal' or decode_backend 'torch'")
                    llama_cpp.llama_set_causal_attn(self.llm.ctx, False)
                try:
                    self.llm.eval(list(prefix))
                finally:
                    llama_cpp.llama_set_causal_attn(self.llm.ctx, True)
                self._store(key, save_sequence(self.llm))
        self.llm.eval(list(suffix))
        return last_logits(self.llm), hit

    def step(self, token: int) -> np.ndarray:
        """Evaluate one new token: the next logits. Hold `lock`."""
        self.llm.eval([int(token)])
        return last_logits(self.llm)

    def _store(self, key, state) -> None:
        self.states[key] = state
        while len(self.states) > 1 and sum(s.nbytes for s in self.states.values()) > self.state_bytes:
            self.states.popitem(last=False)


_ENGINES: dict[str, LlamaCppEngine] = {}
_ENGINES_LOCK = threading.Lock()


def engine_for(model: LoadedModel) -> LlamaCppEngine:
    """The process's llama.cpp engine of `model` (made on first use: the GGUF export, then the context)."""
    with _ENGINES_LOCK:
        engine = _ENGINES.get(model.fingerprint)
        if engine is None:
            engine = _ENGINES[model.fingerprint] = LlamaCppEngine(model)
        return engine
