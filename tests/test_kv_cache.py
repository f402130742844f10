"""KV cache objects, the store (budget, LRU, directory tier) and RoPE shift/composition."""

from __future__ import annotations

import threading
import warnings

import pytest
import torch

from grit_components import GritEmbedder, rag
from grit_components.kv_cache import (
    DocumentKVCache,
    KVStore,
    UnsupportedPositionEncodingError,
    cache_key,
    compose,
    compute_cache,
    default_max_bytes,
    rope_shift,
)


def _entry(seed: int, length: int = 8, layers: int = 2, dtype=torch.float32, fingerprint: str = "fp") -> DocumentKVCache:
    g = torch.Generator().manual_seed(seed)
    keys = tuple(torch.randn(1, 2, length, 16, generator=g).to(dtype) for _ in range(layers))
    values = tuple(torch.randn(1, 2, length, 16, generator=g).to(dtype) for _ in range(layers))
    return DocumentKVCache(tuple(range(seed, seed + length)), keys, values, "causal", fingerprint)


def _body(model):
    return model.model.get_decoder()


def test_cache_key_covers_fingerprint_source_and_every_token():
    base = cache_key("fp", "causal", [1, 2, 3])
    assert base == cache_key("fp", "causal", (1, 2, 3))
    assert len({base, cache_key("fp2", "causal", [1, 2, 3]), cache_key("fp", "embedding", [1, 2, 3]),
                cache_key("fp", "causal", [1, 2, 4]), cache_key("fp", "causal", [1, 2])}) == 5


def test_default_budget_is_a_positive_fraction_of_memory():
    import os

    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    budget = default_max_bytes()
    assert 0 < budget <= total * 0.25 + 1
    assert KVStore().max_bytes == budget


def test_budget_is_never_exceeded_and_eviction_is_lru():
    one = _entry(0).nbytes
    store = KVStore(max_bytes=10 * one + one // 2)
    for i in range(500):
        entry = _entry(i)
        store.put(entry)
        assert store.nbytes <= store.max_bytes
        if i == 3:  # touch entry 0: it becomes most recently used
            assert store.get("fp", "causal", range(0, 8)) is not None
    assert len(store) == 10
    assert store.stats.evictions == 490
    assert store.get("fp", "causal", range(499, 507)) is not None
    assert store.get("fp", "causal", range(0, 8)) is None  # evicted long ago despite the early touch
    # an entry larger than the whole budget is refused rather than flushing everything
    small = KVStore(max_bytes=one // 2)
    small.put(_entry(1))
    assert len(small) == 0 and small.nbytes == 0 and small.stats.rejected == 1


def test_lru_touch_protects_recent_entry():
    one = _entry(0).nbytes
    store = KVStore(max_bytes=3 * one)
    for i in range(3):
        store.put(_entry(i * 100))
    assert store.get("fp", "causal", range(0, 8)) is not None  # entry 0 becomes most recent
    store.put(_entry(300))  # evicts entry 100, the least recently used
    assert store.get("fp", "causal", range(0, 8)) is not None
    assert store.get("fp", "causal", range(100, 108)) is None


def test_store_rejects_bad_arguments():
    with pytest.raises(TypeError, match="max_bytes"):
        KVStore(max_bytes="1GB")
    with pytest.raises(ValueError, match="max_bytes"):
        KVStore(max_bytes=-1)
    with pytest.raises(TypeError, match="directory"):
        KVStore(directory=3)
    with pytest.raises(TypeError, match="entry"):
        KVStore().put("not a cache")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_directory_tier_round_trips_bit_identically(tmp_path, dtype):
    entry = _entry(7, dtype=dtype)
    KVStore(directory=tmp_path).put(entry)
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temporary file
    fresh = KVStore(directory=tmp_path)
    loaded = fresh.get("fp", "causal", entry.token_ids)
    assert loaded is not None and fresh.stats.disk_hits == 1
    assert loaded.token_ids == entry.token_ids and loaded.key == entry.key
    for a, b in zip((*loaded.keys, *loaded.values), (*entry.keys, *entry.values)):
        assert a.dtype == dtype and torch.equal(a, b)
    # another model (fingerprint) or source never sees it
    assert fresh.get("other", "causal", entry.token_ids) is None
    assert fresh.get("fp", "embedding", entry.token_ids) is None


def _corrupt(path, how):
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(b"\x00not a safetensors file" * 10)
    elif how == "empty":
        path.write_bytes(b"")


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty", "foreign"])
def test_unusable_files_are_ignored_then_replaced(tmp_path, how):
    entry = _entry(3)
    KVStore(directory=tmp_path).put(entry)
    (path,) = tmp_path.glob("*.safetensors")
    if how == "foreign":  # a valid file of another entry, renamed to this key
        other_dir = tmp_path / "other"
        KVStore(directory=other_dir).put(_entry(4))
        (other,) = other_dir.glob("*.safetensors")
        other.replace(path)
    else:
        _corrupt(path, how)
    fresh = KVStore(directory=tmp_path)
    with pytest.warns(RuntimeWarning, match="unusable KV cache file"):
        assert fresh.get("fp", "causal", entry.token_ids) is None
    assert fresh.stats.disk_errors == 1 and fresh.stats.misses == 1
    fresh.put(entry)  # the recomputed entry replaces the bad file
    again = KVStore(directory=tmp_path).get("fp", "causal", entry.token_ids)
    assert again is not None and torch.equal(again.keys[0], entry.keys[0])


def test_corrupt_file_is_recomputed_by_answer(tiny_model, tmp_path):
    store = KVStore(directory=tmp_path)
    query, docs = "Who built it?", ["The bridge was built in 1890 by a Scottish firm."]
    first = rag.answer(tiny_model, query, docs, mode="doc", source="causal", max_new_tokens=4, store=store)
    (path,) = tmp_path.glob("*.safetensors")
    _corrupt(path, "truncated")
    fresh = KVStore(directory=tmp_path)
    with pytest.warns(RuntimeWarning):
        second = rag.answer(tiny_model, query, docs, mode="doc", source="causal", max_new_tokens=4, store=fresh)
    assert second.stats["cache_misses"] == 1 and second.text == first.text
    third = rag.answer(tiny_model, query, docs, mode="doc", source="causal", max_new_tokens=4,
                       store=KVStore(directory=tmp_path))
    assert third.stats["cache_hits"] == 1 and third.text == first.text


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_rope_shift_equals_cache_computed_at_later_positions(tiny_model_dirs, arch):
    from grit_components import load_model

    model = load_model(str(tiny_model_dirs[arch]))
    ids = rag.cached_text_ids(model, "A short text about rotary position embeddings and shifts.")
    at_zero = compute_cache(model, ids, "causal")
    inv_freq = _body(model).rotary_emb.inv_freq
    for offset in (1, 37, 1500):
        positions = torch.arange(offset, offset + len(ids))[None]
        with torch.inference_mode():
            direct = _body(model)(input_ids=torch.tensor([ids]), position_ids=positions, use_cache=True)
        for layer, (k, v) in enumerate(at_zero.layers()):
            shifted = rope_shift(k, offset, inv_freq)
            torch.testing.assert_close(shifted, direct.past_key_values.layers[layer].keys, atol=2e-4, rtol=1e-3)
            torch.testing.assert_close(v, direct.past_key_values.layers[layer].values, atol=2e-4, rtol=1e-3)
        assert not torch.allclose(rope_shift(at_zero.keys[0], offset, inv_freq), at_zero.keys[0])
    assert torch.equal(at_zero.keys[0], compute_cache(model, ids, "causal").keys[0])  # shift did not mutate


def _block_mask(lengths, causal: bool) -> torch.Tensor:
    total = sum(lengths)
    mask = torch.zeros(total, total, dtype=torch.bool)
    start = 0
    for n in lengths:
        block = torch.ones(n, n, dtype=torch.bool)
        mask[start:start + n, start:start + n] = torch.tril(block) if causal else block
        start += n
    return mask[None, None]  # (1, 1, T, T), True = attend


@pytest.mark.parametrize("source", ["causal", "embedding"])
def test_composition_equals_joint_encoding_under_block_diagonal_mask(tiny_model, source):
    texts = ["First document, about rivers.", "Second one: mountains and snow, longer than the first.", "Third."]
    segments = [rag.cached_text_ids(tiny_model, t) for t in texts]
    caches = [compute_cache(tiny_model, ids, source) for ids in segments]
    bos = len(tiny_model.bos_ids)
    ids, cache = compose(tiny_model, caches, drop_leading=bos)
    # Joint: every document keeps its BOS, blocks see only themselves; a later document's BOS sits one
    # position before its first kept token, so kept tokens get the composed positions.
    joint_ids, positions, keep, pos = [], [], [], 0
    for i, seg in enumerate(segments):
        start = pos if i == 0 else pos - bos
        joint_ids += seg
        positions += list(range(start, start + len(seg)))
        keep += [True] * len(seg) if i == 0 else [False] * bos + [True] * (len(seg) - bos)
        pos = start + len(seg)
    with torch.inference_mode():
        out = _body(tiny_model)(input_ids=torch.tensor([joint_ids]), position_ids=torch.tensor([positions]),
                                      attention_mask=_block_mask([len(s) for s in segments], source == "causal"),
                                      use_cache=True)
    keep_t = torch.tensor(keep)
    assert ids == [t for t, k in zip(joint_ids, keep) if k]
    assert cache.get_seq_length() == len(ids)
    for layer in range(len(caches[0].keys)):
        torch.testing.assert_close(cache.layers[layer].keys, out.past_key_values.layers[layer].keys[:, :, keep_t],
                                   atol=2e-4, rtol=1e-3)
        torch.testing.assert_close(cache.layers[layer].values, out.past_key_values.layers[layer].values[:, :, keep_t],
                                   atol=2e-4, rtol=1e-3)


def test_non_rope_model_gets_a_clear_error(tiny_llama_dir):
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from grit_components.grit_model import GritModel

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=256,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = GritModel(GPT2LMHeadModel(config), tokenizer, name="tiny-gpt2")
    with pytest.raises(UnsupportedPositionEncodingError, match="rotary"):
        rag.answer(model, "q?", ["doc one", "doc two"], mode="multi_doc", source="causal", max_new_tokens=2,
                   store=KVStore())
    with pytest.raises(ValueError, match="RoPE"):
        rag.answer(model, "q?", ["doc one"], mode="query_doc", source="causal", max_new_tokens=2, store=KVStore())


def test_entries_are_never_mutated_over_100_queries(tiny_model):
    store = KVStore()
    doc = ["The lighthouse on the northern cape was automated in 1987 and still works."]
    rag.cache_documents(tiny_model, doc, source="causal", store=store)
    (entry,) = store._entries.values()
    snapshot = [t.clone() for t in (*entry.keys, *entry.values)]
    outputs = [rag.answer(tiny_model, f"Question number {i % 5}?", doc, mode="doc", source="causal",
                          max_new_tokens=2, store=store).text for i in range(100)]
    assert store.stats.misses == 1 and store.stats.hits == 100  # the one miss is the initial fill
    for a, b in zip((*entry.keys, *entry.values), snapshot):
        assert torch.equal(a, b)
    assert all(outputs[i] == outputs[i % 5] for i in range(100))


def test_threads_sharing_cached_documents_match_one_thread(tiny_model):
    store = KVStore()
    docs = ["Alpha is a mountain.", "Beta is a river in the east.", "Gamma is a city with a port."]
    rag.cache_documents(tiny_model, docs, source="causal", store=store)
    jobs = [(f"What about item {i}?", docs[i % 3:] or docs, ("doc", "multi_doc", "doc_query")[i % 3]) for i in range(24)]

    def run(job):
        query, ds, mode = job
        return rag.answer(tiny_model, query, ds, mode=mode, source="causal", max_new_tokens=4, store=store).text

    expected = [run(job) for job in jobs]
    results: list[str | None] = [None] * len(jobs)
    errors: list[BaseException] = []

    def worker(start: int) -> None:
        try:
            for i in range(start, len(jobs), 8):
                results[i] = run(jobs[i])
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert results == expected


def test_embed_documents_stores_the_embedding_pass_cache(tiny_llama_dir):
    embedder = GritEmbedder(str(tiny_llama_dir), max_length=40)
    model = embedder.model
    model.kv_store.clear()
    short, long = "A short document about owls.", " ".join(["word"] * 80)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vectors = embedder.embed_documents([short, long], store_kv_cache=True)
    assert vectors.shape == (2, model.embedding_dim)
    ids = rag.cached_text_ids(model, short)
    entry = model.kv_store.get(model.fingerprint, "embedding", ids)
    assert entry is not None and len(model.kv_store) == 1  # the cut long document is not stored
    direct = compute_cache(model, ids, "embedding")
    for a, b in zip(entry.keys, direct.keys):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # the embedding pass's states differ from a causal prefill beyond layer 0 (the attention mismatch)
    causal = compute_cache(model, ids, "causal")
    assert not torch.allclose(entry.keys[-1], causal.keys[-1], atol=1e-4)
    result = rag.answer(model, "What about owls?", [short], mode="doc", source="embedding", max_new_tokens=2)
    assert result.stats["cache_hits"] == 1 and result.stats["cache_misses"] == 0
    np_same = embedder.embed_documents([short])  # no store: same embedding
    assert abs(float(np_same[0] @ vectors[0]) - 1.0) < 1e-5


def test_embed_documents_store_needs_no_instruction(tiny_llama_dir):
    embedder = GritEmbedder(str(tiny_llama_dir), document_instruction="Represent the document")
    with pytest.raises(ValueError, match="document_instruction"):
        embedder.embed_documents(["x"], store_kv_cache=True)
    with pytest.raises(TypeError, match="store_kv_cache"):
        embedder.embed_documents(["x"], store_kv_cache="yes")


def test_model_owns_one_store(tiny_model):
    assert tiny_model.kv_store is tiny_model.kv_store
    assert isinstance(tiny_model.kv_store, KVStore)


def test_compose_with_reserve_preallocates_a_static_cache(tiny_model):
    from transformers import DynamicCache, StaticCache

    tok = tiny_model.tokenizer
    entries = [compute_cache(tiny_model, tok(text).input_ids, "causal") for text in ("first text here", "second one")]
    before = [k.clone() for k in entries[1].keys]
    ids_dyn, dynamic = compose(tiny_model, entries, drop_leading=1)
    ids_static, static = compose(tiny_model, entries, drop_leading=1, reserve=5)
    assert isinstance(dynamic, DynamicCache) and isinstance(static, StaticCache)
    assert ids_static == ids_dyn
    n = len(ids_dyn)
    assert int(static.get_seq_length()) == n
    for dyn_layer, static_layer in zip(dynamic.layers, static.layers):
        assert static_layer.keys.shape[2] == n + 5
        assert torch.equal(static_layer.keys[:, :, :n], dyn_layer.keys)
        assert torch.equal(static_layer.values[:, :, :n], dyn_layer.values)
        assert not static_layer.keys[:, :, n:].any()  # the reserved room is empty
    assert all(torch.equal(a, b) for a, b in zip(entries[1].keys, before))  # stored entries untouched
    with pytest.raises(ValueError, match="reserve"):
        compose(tiny_model, entries, reserve=0)
    with pytest.raises(TypeError, match="reserve"):
        compose(tiny_model, entries, reserve=2.5)


def test_static_and_dynamic_prefix_generate_the_same_tokens(tiny_model):
    from grit_components.generation import generate_ids

    tok = tiny_model.tokenizer
    entry = compute_cache(tiny_model, tok("a cached document about rivers and mountains " * 20).input_ids, "causal")
    suffix = tok(" Question: what is it about?").input_ids
    _, dynamic = compose(tiny_model, [entry])
    _, static = compose(tiny_model, [entry], reserve=len(suffix) + 12)
    out_dyn = generate_ids(tiny_model, suffix, past_key_values=dynamic, max_new_tokens=12)
    out_static = generate_ids(tiny_model, suffix, past_key_values=static, max_new_tokens=12)
    assert out_static.text == out_dyn.text and out_static.prompt_tokens == out_dyn.prompt_tokens
    # the pre-allocated cache bounds the output; a cache without room for the prompt is an error
    _, small = compose(tiny_model, [entry], reserve=len(suffix) + 2)
    assert generate_ids(tiny_model, suffix, past_key_values=small, max_new_tokens=12).completion_tokens <= 3
    _, tiny = compose(tiny_model, [entry], reserve=1)
    with pytest.raises(ValueError, match="past_key_values"):
        generate_ids(tiny_model, suffix, past_key_values=tiny, max_new_tokens=4)


def test_sliding_window_model_keeps_a_dynamic_cache(tiny_model_dirs):
    from transformers import DynamicCache

    from grit_components import load_model

    mistral = load_model(str(tiny_model_dirs["mistral"]))  # MistralConfig defaults to a sliding window
    assert mistral.model.config.sliding_window is not None
    entry = compute_cache(mistral, mistral.tokenizer("some document").input_ids, "causal")
    _, cache = compose(mistral, [entry], reserve=4)
    assert isinstance(cache, DynamicCache)


# --- cache dtype (stored form) -------------------------------------------------------------------

from grit_components.kv_cache import CacheLayout, dequantize_int8, quantize_int8  # noqa: E402
from grit_components.options import KV_DTYPES, check_kv_dtype  # noqa: E402


@pytest.mark.parametrize("dtype", KV_DTYPES)
def test_store_keeps_entries_in_its_dtype_with_bounded_error(dtype):
    entry = _entry(5, length=32)
    store = KVStore(dtype=dtype)
    stored = store.put(entry)
    assert stored.dtype == dtype and stored.key == entry.key and stored is store.get("fp", "causal", entry.token_ids)
    expected_bytes = {"float32": 1.0, "bfloat16": 0.5, "float16": 0.5, "int8": (16 + 4) / (16 * 4)}[dtype]
    assert stored.nbytes == pytest.approx(entry.nbytes * expected_bytes)  # head_dim 16: one float32 scale per 16
    assert store.nbytes == stored.nbytes
    # every value within half a step of its form: bf16 keeps 8 significant bits, fp16 11, int8 a 1/127 row step
    for (k, v), (k0, v0) in zip(stored.layers(torch.float32), entry.layers()):
        for got, want in ((k, k0), (v, v0)):
            if dtype == "int8":
                bound = want.abs().amax(dim=-1, keepdim=True) / 127 / 2 + 1e-7
            else:
                bound = want.abs() * {"float32": 0.0, "bfloat16": 2**-8, "float16": 2**-11}[dtype] + 1e-7
            assert ((got - want).abs() <= bound).all()


def test_int8_round_trip_of_extreme_rows():
    states = torch.tensor([[[[0.0, 0.0, 0.0, 0.0], [1e-30, -2e-30, 0.0, 3e-30], [300.0, -0.5, 0.25, -300.0]]]])
    quantized, scales = quantize_int8(states)
    assert quantized.dtype == torch.int8 and scales.shape == (1, 1, 3, 1)
    restored = dequantize_int8(quantized, scales)
    assert torch.isfinite(restored).all() and torch.equal(restored[0, 0, 0], states[0, 0, 0])  # all-zero row: zeros
    assert restored[0, 0, 2, 0] == 300.0 and restored[0, 0, 2, 3] == -300.0  # the row maximum is exact


def test_float16_store_refuses_states_beyond_its_range():
    entry = _entry(2)
    big = DocumentKVCache(entry.token_ids, tuple(k * 1e5 for k in entry.keys), entry.values, "causal", "fp")
    with pytest.raises(ValueError, match="bfloat16"):
        KVStore(dtype="float16").put(big)
    assert KVStore(dtype="bfloat16").put(big).dtype == "bfloat16"


def test_kv_dtype_is_checked_and_set_once():
    assert check_kv_dtype(None) is None and check_kv_dtype("model") is None
    assert check_kv_dtype(torch.bfloat16) == "bfloat16" and check_kv_dtype("torch.float16") == "float16"
    with pytest.raises(ValueError, match="kv_cache_dtype"):
        check_kv_dtype("int4")
    with pytest.raises(ValueError, match="kv_cache_dtype"):
        check_kv_dtype(torch.int8)
    with pytest.raises(TypeError, match="kv_cache_dtype"):
        check_kv_dtype(8)
    with pytest.raises(TypeError, match="dtype"):
        KVStore(dtype=8)
    store = KVStore()
    store.put(_entry(1))
    store.configure(dtype="bfloat16")  # unset until now: entries in memory are converted
    (held,) = store._entries.values()
    assert held.dtype == "bfloat16" and store.nbytes == held.nbytes
    store.configure(dtype="bfloat16")
    store.configure(dtype=None)  # leaving it unset changes nothing
    with pytest.raises(ValueError, match=r"kv_cache_dtype='int8' conflicts .* 'bfloat16'"):
        store.configure(dtype="int8")
    assert store.dtype == "bfloat16"


def test_registry_sets_the_kv_dtype_once_per_model(tiny_llama_dir):
    from grit_components import GritEmbedder, GritGenerator, ModelRegistry

    registry = ModelRegistry()
    generator = GritGenerator(str(tiny_llama_dir), kv_cache_dtype="bfloat16", registry=registry)
    assert generator.model.kv_store.dtype == "bfloat16"
    same = GritEmbedder(str(tiny_llama_dir), registry=registry)  # unset: shares the store as configured
    assert same.model.kv_store is generator.model.kv_store
    other = GritEmbedder(str(tiny_llama_dir), kv_cache_dtype="int8", registry=registry)
    with pytest.raises(ValueError, match=r"kv_cache_dtype='int8' conflicts"):
        other.warm_up()
    with pytest.raises(ValueError, match="kv_cache_dtype"):
        GritGenerator(str(tiny_llama_dir), kv_cache_dtype="int4", registry=registry)


@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_directory_tier_files_shrink_with_the_dtype_and_round_trip(tmp_path, dtype):
    entry = _entry(9, length=64)
    KVStore(directory=tmp_path / "full").put(entry)
    stored = KVStore(directory=tmp_path / dtype, dtype=dtype).put(entry)
    (full,) = (tmp_path / "full").glob("*.safetensors")
    (small,) = (tmp_path / dtype).glob("*.safetensors")
    header = 4096  # safetensors JSON header, token ids: small against the tensors
    assert small.stat().st_size <= full.stat().st_size * stored.nbytes / entry.nbytes + header
    loaded = KVStore(directory=tmp_path / dtype, dtype=dtype).get("fp", "causal", entry.token_ids)
    assert loaded is not None and loaded.dtype == dtype
    assert all(torch.equal(a, b) for a, b in zip(loaded.tensors(), stored.tensors()))


# --- verified files (a file is used only if it is exactly what was written for this model) ---------


def _rewrite(path, *, tensors=None, forge_checksum=True, **meta_changes):
    """Rewrite a cache file with changed tensors and/or header fields; with `forge_checksum` the checksum is
    recomputed (a consistent forgery), else the original one stays."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from grit_components.kv_cache import _checksum

    with safe_open(str(path), framework="pt") as handle:
        meta = dict(handle.metadata())
        current = {name: handle.get_tensor(name).clone() for name in handle.keys()}
    order = ["token_ids"] + [name for name in _entry_order(current)]
    current = {name: current[name] for name in order}
    if tensors is not None:
        current = tensors(current)
    meta.update(meta_changes)
    if forge_checksum:
        meta["sha256"] = _checksum(current)
    save_file(current, str(path), metadata=meta)


def _entry_order(tensors):
    layers = sum(name.startswith("keys.") for name in tensors)
    kinds = ("keys", "values", "key_scales", "value_scales") if "key_scales.0" in tensors else ("keys", "values")
    return [f"{kind}.{i}" for i in range(layers) for kind in kinds]


def _flip_one_value(tensors):
    tensors["values.1"][0, 0, 3, 2] += 1.0
    return tensors


def _with_nan(tensors):
    tensors["keys.0"][0, 1, 2, 0] = float("nan")
    return tensors


def _drop_last_layer(tensors):
    last = max(int(name.split(".")[1]) for name in tensors if name.startswith("keys."))
    return {name: t for name, t in tensors.items() if not name.endswith(f".{last}")}


def _drop_a_head(tensors):
    return {name: (t if name == "token_ids" else t[:, :1].contiguous()) for name, t in tensors.items()}


def _as_bfloat16(tensors):
    return {name: (t if name == "token_ids" else t.to(torch.bfloat16)) for name, t in tensors.items()}


CORRUPTIONS = {
    "a changed value, header intact": (lambda path: _rewrite(path, tensors=_flip_one_value, forge_checksum=False), {}),
    "a changed value, checksum forged": (lambda path: _rewrite(path, tensors=_flip_one_value), None),
    "NaN, checksum forged": (lambda path: _rewrite(path, tensors=_with_nan), {}),
    "one layer fewer, header forged": (lambda path: _rewrite(path, tensors=_drop_last_layer, layers="1"), {"layout": True}),
    "one head fewer, header forged": (lambda path: _rewrite(path, tensors=_drop_a_head, kv_heads="1"), {"layout": True}),
    "another dtype, header forged": (lambda path: _rewrite(path, tensors=_as_bfloat16, dtype="bfloat16"), {}),
    "a header without counts": (lambda path: _rewrite(path, length="many"), {}),
    "an old format version": (lambda path: _rewrite(path, version="1"), {}),
}


@pytest.mark.parametrize("how", list(CORRUPTIONS))
def test_a_file_that_does_not_match_is_ignored_with_a_warning(tmp_path, how):
    corrupt, needs = CORRUPTIONS[how]
    entry = _entry(3)  # 2 layers, 2 heads, head_dim 16, float32
    KVStore(directory=tmp_path).put(entry)
    (path,) = tmp_path.glob("*.safetensors")
    corrupt(path)
    layout = CacheLayout(layers=2, kv_heads=2, head_dim=16, dtype="float32")
    fresh = KVStore(directory=tmp_path)
    if needs is None:  # a consistent forgery of the values themselves cannot be told from a real file
        assert fresh.get("fp", "causal", entry.token_ids, layout=layout) is not None
        return
    if needs.get("layout"):  # without the model's layout a consistent file of another shape is self-consistent
        assert KVStore(directory=tmp_path).get("fp", "causal", entry.token_ids) is not None
    with pytest.warns(RuntimeWarning, match="unusable KV cache file"):
        assert fresh.get("fp", "causal", entry.token_ids, layout=layout) is None
    assert fresh.stats.disk_errors == 1 and not path.exists()


@pytest.mark.parametrize("how", ["one layer fewer, header forged", "NaN, checksum forged", "a changed value, header intact",
                                 "another dtype, header forged"])
def test_answer_recomputes_a_mismatched_file_and_answers_as_before(tiny_model, tmp_path, how):
    query, docs = "Who built it?", ["The bridge was built in 1890 by a Scottish firm."]
    first = rag.answer(tiny_model, query, docs, mode="doc", source="causal", max_new_tokens=6,
                       store=KVStore(directory=tmp_path))
    (path,) = tmp_path.glob("*.safetensors")
    CORRUPTIONS[how][0](path)
    fresh = KVStore(directory=tmp_path)
    with pytest.warns(RuntimeWarning, match="unusable KV cache file"):
        second = rag.answer(tiny_model, query, docs, mode="doc", source="causal", max_new_tokens=6, store=fresh)
    assert second.stats["cache_misses"] == 1 and second.text == first.text
    third = rag.answer(tiny_model, query, docs, mode="doc", source="causal", max_new_tokens=6,
                       store=KVStore(directory=tmp_path))  # the recomputed file replaced the bad one
    assert third.stats["cache_hits"] == 1 and third.text == first.text


# --- generation from a cache in another dtype ----------------------------------------------------


@pytest.fixture
def tiny_separate(tiny_llama_dir):
    """A model of its own (its attention implementation may be switched by these tests)."""
    from grit_components.grit_model import GritModel
    from grit_components.models import load_weights

    model, tokenizer, resolved = load_weights(str(tiny_llama_dir), device="cpu", dtype=torch.float32)
    return GritModel(model, tokenizer, name=str(tiny_llama_dir), key=resolved.key)


def test_model_dtype_store_keeps_the_exact_path(tiny_separate):
    docs = ["The lighthouse on the northern cape was automated in 1987."]
    result = rag.answer(tiny_separate, "When?", docs, mode="doc", source="causal", max_new_tokens=4, store=KVStore())
    assert result.stats["cache_misses"] == 1
    assert tiny_separate.model.config._attn_implementation == "sdpa"  # nothing switched for the exact path


@pytest.mark.parametrize("dtype,decode", [("bfloat16", torch.bfloat16), ("float16", torch.float16),
                                          ("int8", torch.bfloat16)])
def test_decode_reads_the_cache_in_its_own_dtype(tiny_separate, dtype, decode):
    from transformers import StaticCache

    from grit_components.generation import generate_ids

    model = tiny_separate
    store = KVStore(dtype=dtype)
    texts = ["A cached document about rivers and mountains, " * 6, "and a second one about snow."]
    entries = [store.put(compute_cache(model, rag.cached_text_ids(model, t), "causal")) for t in texts]
    suffix = model.tokenize(" Question: what is it about?")
    ids, cache = compose(model, entries, drop_leading=1, reserve=len(suffix) + 8)
    assert isinstance(cache, StaticCache) and all(layer.keys.dtype == decode for layer in cache.layers)
    pointers = [layer.keys.data_ptr() for layer in cache.layers]
    result = generate_ids(model, suffix, past_key_values=cache, max_new_tokens=8)
    assert result.completion_tokens >= 1
    # generation wrote into the same 16-bit tensors: the cache was never converted, per step or at all
    assert [layer.keys.data_ptr() for layer in cache.layers] == pointers
    assert all(layer.keys.dtype == decode for layer in cache.layers)
    # next-token logits after the cached prefix stay close to those from the float32 entries
    exact_entries = [compute_cache(model, rag.cached_text_ids(model, t), "causal") for t in texts]
    _, exact = compose(model, exact_entries, drop_leading=1, reserve=len(suffix) + 1)
    _, low = compose(model, entries, drop_leading=1, reserve=len(suffix) + 1)
    with torch.inference_mode():
        logits = [model.model(input_ids=torch.tensor([suffix]), attention_mask=torch.ones(1, len(ids) + len(suffix)),
                              **{_cache_kwarg(model): c}).logits[0, -1] for c in (exact, low)]
    assert logits[1].dtype == torch.float32
    torch.testing.assert_close(logits[1], logits[0], atol=0.05 * logits[0].abs().max().item(), rtol=0)


def _cache_kwarg(model):
    from grit_components._compat import cache_argument

    return cache_argument(model.model)


def test_sliding_window_model_decodes_a_16_bit_store_in_its_own_dtype(tiny_model_dirs):
    from grit_components import load_model

    mistral = load_model(str(tiny_model_dirs["mistral"]))
    entry = KVStore(dtype="bfloat16").put(compute_cache(mistral, mistral.tokenizer("some document").input_ids, "causal"))
    _, cache = compose(mistral, [entry], reserve=4)  # a DynamicCache (sliding window): converted once, to float32
    assert all(layer.keys.dtype == torch.float32 for layer in cache.layers)
