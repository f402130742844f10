"""llama.cpp as a decode backend (`decode_backend="llama_cpp"`, the `[llama-cpp]` extra).

The loaded model (adapter merged) is written once as a float32 GGUF file (`export.export_gguf`, in the user
cache, keyed by the model's fingerprint), so llama.cpp computes with exactly the weights of the torch path.
One llama.cpp context per model serves every call, one call at a time (a lock). Cached documents are
llama.cpp's own saved states (its KV cells), kept in an in-memory LRU store of this engine by (source, token
ids; `SavedState`): a document computed once is restored for every later question, as the torch path does
with `KVStore`.
The "embedding" source runs the document with the causal mask off (`llama_set_causal_attn`), the states the
GRIT embedding pass computes; "causal" is a plain prefill.

What it serves: no retrieval and one cached text (modes "doc" and "query") from its own saved states, and
several cached texts (modes "query_doc", "doc_query", "multi_doc") from our `KVStore`: the torch path composes
them (`kv_cache.compose_states`: stored caches re-rotated to their places) and the engine writes the composed
states into llama.cpp's KV cells (`import_states`), in the sequence-state layout of the llama.cpp build at
hand, read off a state it saved itself (`StateFormat.probe`).
"""

from __future__ import annotations

import ctypes
import hashlib
import struct
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
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


# ggml type ids of the KV cells this module reads and writes (ggml.h: GGML_TYPE_F32 = 0, GGML_TYPE_F16 = 1)
CELL_DTYPES = {0: np.dtype("<f4"), 1: np.dtype("<f2")}


@dataclass(frozen=True)
class StateFormat:
    """The layout of one sequence's state as this llama.cpp build writes it (`llama_state_seq_get_data` of a
    unified KV cache): `header` (bytes before the stream count), one stream, the cells (position, sequence ids),
    then per layer the key rows (one per cell, `width` values of `k_type`), then per layer the values, transposed
    (one row per channel) when `v_trans`."""

    header: bytes
    layers: int
    width: int
    k_type: int
    v_type: int
    v_trans: bool

    @classmethod
    def probe(cls, data: bytes) -> StateFormat:
        """The format of `data`, a state llama.cpp saved; ValueError if it is not a layout this module writes."""
        return parse_state(data)[0]


def parse_state(data: bytes) -> tuple[StateFormat, list[int], list[np.ndarray], list[np.ndarray]]:
    """A saved sequence state: (its format, the cells' positions, per layer keys and values as (cells, width)
    arrays in llama.cpp's order). ValueError when the bytes are not that layout (another llama.cpp version)."""
    data = bytes(data)
    try:
        offset = 8
        streams, cells = struct.unpack_from("<II", data, offset)
        offset += 8
        if streams != 1:
            raise ValueError(f"{streams} KV streams")
        positions = []
        for _ in range(cells):
            position, count = struct.unpack_from("<iI", data, offset)
            offset += 8 + 4 * count
            positions.append(position)
        v_trans, layers = struct.unpack_from("<II", data, offset)
        offset += 8
        keys, values, k_types, v_types, widths = [], [], set(), set(), set()
        for _ in range(layers):
            k_type, k, offset = _rows(data, offset, cells)
            keys.append(k)
            k_types.add(k_type)
            widths.add(k.shape[1])
        for _ in range(layers):
            if v_trans:
                v_type, size, width = struct.unpack_from("<iII", data, offset)
                offset += 12
                dtype = CELL_DTYPES[v_type]
                if size != dtype.itemsize:
                    raise ValueError("value element size")
                v = np.frombuffer(data, dtype, width * cells, offset).reshape(width, cells).T
                offset += width * cells * size
            else:
                v_type, v, offset = _rows(data, offset, cells)
            values.append(v)
            v_types.add(v_type)
            widths.add(v.shape[1])
    except (struct.error, KeyError, ValueError) as error:
        raise ValueError(f"not a llama.cpp sequence state this module reads: {error}") from error
    if offset != len(data) or len(k_types) != 1 or len(v_types) != 1 or len(widths) != 1:
        raise ValueError("not a llama.cpp sequence state this module reads: unexpected layout")
    state_format = StateFormat(data[:8], layers, widths.pop(), k_types.pop(), v_types.pop(), bool(v_trans))
    return state_format, positions, keys, values


def _rows(data: bytes, offset: int, cells: int) -> tuple[int, np.ndarray, int]:
    """One layer's rows, one per cell, at `offset`: (ggml type, (cells, width) array, the offset after them)."""
    ggml_type, row = struct.unpack_from("<iQ", data, offset)
    dtype = CELL_DTYPES[ggml_type]
    array = np.frombuffer(data, dtype, cells * row // dtype.itemsize, offset + 12).reshape(cells, -1)
    return ggml_type, array, offset + 12 + cells * row


def cells_of(layers: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per layer (keys, values) of transformers' layout ((1, kv_heads, tokens, head_dim), keys in rotate-half
    order) as llama.cpp's cells: (tokens, kv_heads * head_dim) float32, keys in the interleaved pair order of
    the GGUF export (`export._permute` of the key projection)."""
    keys, values = [], []
    for k, v in layers:
        _, heads, tokens, dim = k.shape
        k = k[0].to(torch.float32).permute(1, 0, 2).reshape(tokens, heads, 2, dim // 2).transpose(2, 3)
        keys.append(k.reshape(tokens, heads * dim).numpy())
        values.append(v[0].to(torch.float32).permute(1, 0, 2).reshape(tokens, heads * dim).numpy())
    return keys, values


def write_state(state_format: StateFormat, keys: Sequence[np.ndarray], values: Sequence[np.ndarray]) -> bytes:
    """The bytes of one sequence (id 0, positions 0..n-1) holding `keys` and `values` ((cells, width) per
    layer, llama.cpp's order), in `state_format`."""
    if len(keys) != state_format.layers or len(values) != state_format.layers:
        raise ValueError(f"the states have {len(keys)} layers; the llama.cpp model has {state_format.layers}")
    cells = keys[0].shape[0]
    if any(a.shape != (cells, state_format.width) for a in (*keys, *values)):
        raise ValueError(f"every layer's states must be ({cells}, {state_format.width})")
    k_dtype, v_dtype = CELL_DTYPES[state_format.k_type], CELL_DTYPES[state_format.v_type]
    meta = np.zeros((cells, 3), dtype="<i4")
    meta[:, 0] = np.arange(cells)
    meta[:, 1] = 1  # one sequence id per cell: 0
    parts = [state_format.header, struct.pack("<II", 1, cells), meta.tobytes(),
             struct.pack("<II", int(state_format.v_trans), state_format.layers)]
    row = state_format.width * k_dtype.itemsize
    for k in keys:
        parts += [struct.pack("<iQ", state_format.k_type, row), np.ascontiguousarray(k, dtype=k_dtype).tobytes()]
    for v in values:
        if state_format.v_trans:
            parts += [struct.pack("<iII", state_format.v_type, v_dtype.itemsize, state_format.width),
                      np.ascontiguousarray(v.T, dtype=v_dtype).tobytes()]
        else:
            parts += [struct.pack("<iQ", state_format.v_type, state_format.width * v_dtype.itemsize),
                      np.ascontiguousarray(v, dtype=v_dtype).tobytes()]
    return b"".join(parts)


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
        self.stored_bytes = 0  # sum of the states' nbytes
        self.lock = threading.Lock()
        self._format: StateFormat | None = None
        self._bos = model.tokenizer.bos_token_id if model.tokenizer.bos_token_id is not None else 0

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
        self._set_threads(llama_cpp)
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

    def state_format(self) -> StateFormat:
        """This build's sequence-state layout, read off a one-token state it saves (once). Hold `lock`."""
        if self._format is None:
            llama_cpp = import_llama_cpp()
            self.llm.reset()
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.llm.ctx), True)
            self.llm.eval([self._bos])
            self._format = StateFormat.probe(save_sequence(self.llm).data)
            self.llm.reset()
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.llm.ctx), True)
        return self._format

    def start_from_states(self, prefix: Sequence[int], layers: Sequence[tuple[torch.Tensor, torch.Tensor]],
                          suffix: Sequence[int]) -> np.ndarray:
        """Reset the context to `prefix` with its states given (`layers`: per layer (keys, values) in
        transformers' layout, e.g. composed by `kv_cache.compose_states`), written into llama.cpp's cells, and
        evaluate `suffix` after it: the next-token logits. Hold `lock`."""
        llama_cpp = import_llama_cpp()
        self._set_threads(llama_cpp)
        if layers[0][0].shape[2] != len(prefix):
            raise ValueError(f"the states hold {layers[0][0].shape[2]} tokens; prefix has {len(prefix)}")
        data = write_state(self.state_format(), *cells_of(layers))
        load_sequence(self.llm, SavedState((ctypes.c_uint8 * len(data)).from_buffer_copy(data), list(prefix)))
        self.llm.eval(list(suffix))
        return last_logits(self.llm)

    def _set_threads(self, llama_cpp) -> None:
        threads = self.fixed_threads or torch.get_num_threads()
        if threads != self.threads:
            llama_cpp.llama_set_n_threads(self.llm.ctx, threads, threads)
            self.threads = threads

    def step(self, token: int) -> np.ndarray:
        """Evaluate one new token: the next logits. Hold `lock`."""
        self.llm.eval([int(token)])
        return last_logits(self.llm)

    def _store(self, key, state) -> None:
        old = self.states.pop(key, None)
        self.stored_bytes += state.nbytes - (old.nbytes if old is not None else 0)
        self.states[key] = state
        while len(self.states) > 1 and self.stored_bytes > self.state_bytes:
            self.stored_bytes -= self.states.popitem(last=False)[1].nbytes


_ENGINES: dict[str, LlamaCppEngine] = {}
_ENGINES_LOCK = threading.Lock()


def engine_for(model: LoadedModel) -> LlamaCppEngine:
    """The process's llama.cpp engine of `model` (made on first use: the GGUF export, then the context)."""
    with _ENGINES_LOCK:
        engine = _ENGINES.get(model.fingerprint)
        if engine is None:
            engine = _ENGINES[model.fingerprint] = LlamaCppEngine(model)
        return engine
