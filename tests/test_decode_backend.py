"""`decode_backend`: the exact path ("torch") stays token-identical for causal-source caching, the compiled decode
step ("compile") agrees with it on greedy outputs, and bad values are ValueErrors naming the option."""

from __future__ import annotations

import pytest

from grit_components import GenerationOptions, rag
from grit_components.generation import generate_ids
from grit_components.kv_cache import KVStore
from grit_components.options import DECODE_BACKENDS

PAIRS = [
    ("Who wrote it?", "The novel was written by Jane Austen in 1813."),
    ("What is the capital?", "Paris is the capital and most populous city of France. " * 6),
    ("Which year?", "1066: the Battle of Hastings. 1215: Magna Carta. 1492: Columbus reaches the Americas."),
]


def test_backends_are_listed():
    assert DECODE_BACKENDS == ("torch", "compile", "llama_cpp")
    assert GenerationOptions().decode_backend == "torch"
    assert GenerationOptions(decode_backend="compile").decode_backend == "compile"
    assert GenerationOptions(decode_backend="llama_cpp").decode_backend == "llama_cpp"


@pytest.mark.parametrize("value", ["llama", "Torch", "", "inductor"])
def test_bad_backend_is_a_value_error_naming_the_option(value):
    with pytest.raises(ValueError, match="decode_backend"):
        GenerationOptions(decode_backend=value)


def test_non_str_backend_is_a_type_error_naming_the_option():
    with pytest.raises(TypeError, match="decode_backend"):
        GenerationOptions({"decode_backend": 1})


def test_bad_backend_fails_before_any_compute(tiny_model):
    with pytest.raises(ValueError, match="decode_backend"):
        rag.answer(tiny_model, "Who?", ["A text."], mode="doc", source="causal", store=KVStore(),
                   decode_backend="fast")


def test_exact_path_stays_token_identical_for_causal_caching(tiny_model):
    """decode_backend="torch" (explicit) gives, from a causal float32 cache, the tokens of uncached generation."""
    for query, doc in PAIRS:
        store = KVStore()
        prompt = rag.build_prompt(tiny_model, query, [doc], "doc")
        uncached = generate_ids(tiny_model, prompt.prompt_ids(), max_new_tokens=6, decode_backend="torch")
        cached = rag.answer(tiny_model, query, [doc], mode="doc", source="causal", max_new_tokens=6, store=store,
                            decode_backend="torch")
        assert (cached.text, cached.completion_tokens) == (uncached.text, uncached.completion_tokens)


@pytest.mark.slow
def test_compiled_decode_agrees_with_the_exact_path(tiny_model):
    """The compiled decode step over the pre-allocated cache: the same greedy answers as the exact path, from a
    cached document and with no retrieval (a fresh pre-allocated cache)."""
    pytest.importorskip("torch._inductor")
    for query, doc in PAIRS:
        store = KVStore()
        for mode, docs in (("doc", [doc]), ("none", [])):
            exact = rag.answer(tiny_model, query, docs, mode=mode, source="causal", max_new_tokens=6, store=store)
            fast = rag.answer(tiny_model, query, docs, mode=mode, source="causal", max_new_tokens=6, store=store,
                              decode_backend="compile")
            assert (fast.text, fast.completion_tokens) == (exact.text, exact.completion_tokens), (query, mode)
    assert hasattr(tiny_model.model, "_compiled_call")  # the compiled forward ran (no silent eager fallback)
    from torch._dynamo.utils import counters

    # six cache sizes: a static graph for the first, one dynamic graph after the first change (not one per size)
    print("dynamo unique graphs:", counters["stats"]["unique_graphs"], "frames:", dict(counters["frames"]))


def test_backend_benchmark_runs_both_paths_in_one_run(tiny_model):
    """benchmarks/decode_backends.py on a tiny model: rows per backend and dtype, ratios of medians (exact path only
    here: compiling is the slow test's job)."""
    from benchmarks.decode_backends import decode_backend_latency, name_of

    result = decode_backend_latency(tiny_model, length=48, backends=["torch"], kv_dtypes=["model", "bfloat16"],
                                    threads=[1], repeats=1, log=lambda _: None)
    entry = result["threads"]["1"]
    assert {"uncached_doc_first", "no_retrieval", "doc", "doc@bfloat16"} <= set(entry["rows"])
    ratios = entry["ratios"]["torch"]["kv_dtypes"]
    assert ratios["model"]["doc_vs_torch_doc_total"] == 1.0 and ratios["model"]["same_text_as_torch"]
    assert ratios["bfloat16"]["doc_vs_no_retrieval_total"] > 0
    assert name_of("doc@int8", "compile") == "doc@int8#compile" and name_of("doc", "torch") == "doc"
    with pytest.raises(ValueError, match="decode_backend"):
        decode_backend_latency(tiny_model, length=48, backends=["llama"], kv_dtypes=["model"], threads=[1], repeats=1)


@pytest.mark.integration
def test_llama_cpp_answers_from_a_restored_document_state(tmp_path):
    """llama.cpp's saved state of a document stands for evaluating it: the answer from the restored state is the
    uncached doc-first answer ([llama-cpp] extra; skipped without it). On the float16 export: the packaged Q4_1
    file crashes llama.cpp's AMX kernels on AMX CPUs (docs/kv-caching.md)."""
    pytest.importorskip("llama_cpp")
    from benchmarks.decode_backends import llama_cpp_doc_cache, llama_cpp_variants
    from grit_components import load_model, rag

    model = load_model("smollm2-135m-instruct")
    gguf, _ = llama_cpp_variants(model, ["f16"], tmp_path)["f16"]
    document = "The Moon orbits the Earth once every 27.3 days. " * 8
    prompt = rag.build_prompt(model, "How long does the Moon take to orbit the Earth?", [document], "doc")
    no_retrieval = rag.build_prompt(model, "How long does the Moon take to orbit the Earth?", [], "none").prompt_ids()
    result = llama_cpp_doc_cache(gguf, prompt, no_retrieval, threads=1, new_tokens=6, repeats=1)
    assert result["document_tokens"] == len(prompt.segments[0]) and result["state_bytes"] > 0
    assert result["ratios"]["same_text_doc_and_uncached"], result["rows"]
    assert result["rows"]["doc"]["text"] != result["rows"]["no_retrieval"]["text"]  # the state held the document


@pytest.mark.integration
def test_llama_cpp_backend_gives_the_exact_paths_answers(grit_smol):
    """decode_backend="llama_cpp" on the shipped model: the torch path's tokens with no retrieval, from a cached
    document of either source (stored once, restored after), sampled with a seed, and streamed with a stop word
    ([llama-cpp] extra; skipped without it)."""
    pytest.importorskip("llama_cpp")
    from grit_components import rag

    doc = ("Alum is a chemical compound, usually a hydrated double sulfate salt of aluminium. It is used in water "
           "purification, in pickling and as a mordant in dyeing.")
    question = "What is alum used for?"
    for source in ("causal", "embedding"):
        exact = rag.answer(grit_smol, question, [doc], mode="doc", source=source, max_new_tokens=16)
        first = rag.answer(grit_smol, question, [doc], mode="doc", source=source, max_new_tokens=16,
                           decode_backend="llama_cpp")
        again = rag.answer(grit_smol, question, [doc], mode="doc", source=source, max_new_tokens=16,
                           decode_backend="llama_cpp")
        assert first.text == again.text == exact.text, source
        assert (first.stats["cache_misses"], again.stats["cache_hits"]) == (1, 1)
        assert again.stats["prefill_tokens"] < first.stats["prefill_tokens"]
    for kwargs in ({}, {"temperature": 0.8, "seed": 3}):
        exact = rag.answer(grit_smol, question, [doc], mode="none", max_new_tokens=16, **kwargs)
        fast = rag.answer(grit_smol, question, [doc], mode="none", max_new_tokens=16, decode_backend="llama_cpp",
                          **kwargs)
        assert fast.text == exact.text and fast.finish_reason == exact.finish_reason, kwargs
    pieces: list[str] = []
    stopped = rag.answer(grit_smol, question, [doc], mode="doc", source="causal", max_new_tokens=24,
                         decode_backend="llama_cpp", stop_words=["water"], streaming_callback=pieces.append)
    assert "".join(pieces) == stopped.text and "water" not in stopped.text and stopped.finish_reason == "stop"
    assert grit_smol.generate("Say hi", max_new_tokens=8, decode_backend="llama_cpp").text == \
        grit_smol.generate("Say hi", max_new_tokens=8).text


def test_llama_cpp_backend_refuses_what_it_does_not_do(tiny_model):
    """Checked before any llama.cpp work, so they hold without the extra as well."""
    from grit_components import rag

    with pytest.raises(ValueError, match=r"does not apply \['num_beams'\]"):
        rag.answer(tiny_model, "q", ["a"], mode="none", decode_backend="llama_cpp", num_beams=2)
    with pytest.raises(ValueError, match="cannot take a torch past_key_values"):
        from grit_components.generation import generate_ids
        from grit_components.kv_cache import static_cache

        generate_ids(tiny_model, [1, 2], past_key_values=static_cache(tiny_model, 8), decode_backend="llama_cpp")


@pytest.mark.integration
def test_llama_cpp_backend_composes_several_cached_texts(grit_smol):
    """Modes with several cached texts under decode_backend="llama_cpp": the torch path composes them from the
    store and the engine writes the composed states into llama.cpp's cells; the answers are the torch path's.
    A single document's causal cache written that way gives llama.cpp's own prefill answer ([llama-cpp] extra)."""
    pytest.importorskip("llama_cpp")
    from grit_components import rag
    from grit_components.generation import generate_llama_cpp
    from grit_components.kv_cache import compute_cache
    from grit_components.options import GenerationOptions

    docs = ["The novel Pride and Prejudice was written by Jane Austen in 1813.",
            "Paris is the capital and most populous city of France.",
            "The Battle of Hastings took place in 1066 in England."]
    for question in ("Who wrote Pride and Prejudice?", "What is the capital of France?"):
        for mode, source in (("multi_doc", "causal"), ("multi_doc", "embedding"), ("query_doc", "causal"),
                             ("doc_query", "embedding")):
            store = KVStore()
            exact = rag.answer(grit_smol, question, docs, mode=mode, source=source, max_new_tokens=12, store=store)
            fast = rag.answer(grit_smol, question, docs, mode=mode, source=source, max_new_tokens=12, store=store,
                              decode_backend="llama_cpp")
            assert fast.text == exact.text, (question, mode, source)
            assert fast.stats["cache_hits"] == len(rag.build_prompt(grit_smol, question, docs, mode).segments)
    prompt = rag.build_prompt(grit_smol, "Who wrote it?", docs[:1], "doc")
    options = GenerationOptions(max_new_tokens=12, decode_backend="llama_cpp")
    own, _ = generate_llama_cpp(grit_smol, prompt.suffix_ids, options, prefix_ids=prompt.segments[0])
    written, hit = generate_llama_cpp(grit_smol, prompt.suffix_ids, options, prefix_ids=prompt.segments[0],
                                      prefix_states=compute_cache(grit_smol, prompt.segments[0], "causal").layers())
    assert written.text == own.text and "Austen" in own.text and not hit


@pytest.mark.integration
def test_llama_cpp_backend_takes_long_embedding_documents_from_the_store(grit_smol, monkeypatch):
    """An "embedding"-source document longer than one llama.cpp batch (a non-causal pass must be one) is computed
    by the torch path into the store and written into llama.cpp's cells: the torch path's answer ([llama-cpp])."""
    pytest.importorskip("llama_cpp")
    from grit_components import rag
    from grit_components.llama_engine import engine_for

    doc = "Alum is a chemical compound. It is used in water purification and as a mordant in dyeing. " * 3
    question = "What is alum used for?"
    monkeypatch.setattr(engine_for(grit_smol), "batch", 16)  # the document is longer than this batch
    store = KVStore()
    exact = rag.answer(grit_smol, question, [doc], mode="doc", source="embedding", max_new_tokens=12, store=store)
    fast = rag.answer(grit_smol, question, [doc], mode="doc", source="embedding", max_new_tokens=12, store=store,
                      decode_backend="llama_cpp")
    assert fast.text == exact.text and fast.stats["cache_hits"] == 1 and len(store) == 1


def test_llama_cpp_cells_are_the_gguf_exports_key_order():
    """`cells_of` puts each key row in the order `export._permute` gives the key projection's rows (the layout
    llama.cpp computes keys in), values as they are; `write_state` and `parse_state` are inverses."""
    import numpy as np
    import torch

    from grit_components.export import _permute
    from grit_components.llama_engine import StateFormat, cells_of, parse_state, write_state

    heads, tokens, dim = 3, 5, 8
    keys = torch.randn(1, heads, tokens, dim)
    values = torch.randn(1, heads, tokens, dim)
    k_cells, v_cells = cells_of([(keys, values)])
    flat = keys[0].permute(1, 0, 2).reshape(tokens, heads * dim).numpy()  # transformers' column order
    assert np.array_equal(k_cells[0], _permute(flat.T, heads).T)
    assert np.array_equal(v_cells[0], values[0].permute(1, 0, 2).reshape(tokens, heads * dim).numpy())
    for k_type, v_trans in ((1, True), (0, False)):
        state_format = StateFormat(b"\x01" * 8, 2, heads * dim, k_type, k_type, v_trans)
        data = write_state(state_format, k_cells * 2, v_cells * 2)
        parsed, positions, k_back, v_back = parse_state(data)
        assert parsed == state_format and positions == list(range(tokens))
        tolerance = 1e-2 if k_type == 1 else 0
        assert np.allclose(k_back[1], k_cells[0], atol=tolerance) and np.allclose(v_back[0], v_cells[0], atol=tolerance)
    with pytest.raises(ValueError, match="not a llama.cpp sequence state"):
        parse_state(data[:-3])
    with pytest.raises(ValueError, match="layers"):
        write_state(state_format, k_cells, v_cells)


@pytest.mark.integration
def test_llama_cpp_engine_keeps_its_states_within_budget(grit_smol):
    """The engine's store of saved states drops the least recently used beyond `state_bytes` and keeps count of
    the bytes it holds ([llama-cpp] extra)."""
    pytest.importorskip("llama_cpp")
    from grit_components.llama_engine import LlamaCppEngine

    ids = [grit_smol.tokenizer(f"Document number {n} is about topic {n}.")["input_ids"] for n in range(3)]
    probe = LlamaCppEngine(grit_smol, threads=1)
    probe.start(ids[0], "causal", [])
    size = probe.stored_bytes
    engine = LlamaCppEngine(grit_smol, threads=1, state_bytes=int(size * 2.5))
    for prefix in (ids[0], ids[1], ids[0], ids[2]):
        _, hit = engine.start(prefix, "causal", [])
    assert hit is False and len(engine.states) == 2  # ids[1], the least recently used, was dropped
    assert engine.stored_bytes == sum(s.nbytes for s in engine.states.values()) <= engine.state_bytes
    assert engine.start(ids[0], "causal", [])[1] is True and engine.start(ids[1], "causal", [])[1] is False


def test_packaged_llama_cpp_variant_is_refused_on_an_amx_cpu(tiny_model, tmp_path, monkeypatch):
    """The packaged Q4_1 file segfaults in llama.cpp's AMX kernels: on a CPU with AMX-INT8 the benchmark
    refuses that variant before loading anything (a crash would lose every figure of the run), elsewhere not."""
    from benchmarks import decode_backends

    monkeypatch.setattr(decode_backends, "cpu_flags", lambda: ["avx512f", "amx_int8"])
    with pytest.raises(ValueError, match=r"packaged variant .* AMX .* use f32 or f16"):
        decode_backends.llama_cpp_variants(tiny_model, ["packaged"], tmp_path)
    monkeypatch.setattr(decode_backends, "cpu_flags", lambda: ["avx2"])
    with pytest.raises(ValueError, match="not a packaged model"):  # past the guard: a tiny model has no packaged file
        decode_backends.llama_cpp_variants(tiny_model, ["packaged"], tmp_path)
