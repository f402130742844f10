"""RAG cache modes: prompt assembly, exactness of causal caching, stats, streaming, GritGenerator.answer."""

from __future__ import annotations

import types

import pytest

from grit_components import GritEmbedder, GritGenerator, load_model, rag, templates
from grit_components.generation import generate_ids
from grit_components.kv_cache import CacheLayout, KVStore
from grit_components.rag import CacheMode

# 20 varied (query, document) pairs: lengths, punctuation, digits, unicode, leading spaces and newlines.
PROMPTS = [
    ("Who wrote it?", "The novel was written by Jane Austen in 1813."),
    ("When?", "The bridge opened on 12 May 1937 after four years of work."),
    ("What is the capital?", "Paris is the capital and most populous city of France."),
    ("Name the river.", "The Danube flows through ten countries, more than any other river in the world."),
    ("How tall is it?", "Mount Everest is 8,849 m tall."),
    ("What does it eat?", "The koala eats eucalyptus leaves almost exclusively.\nIt sleeps up to 20 hours a day."),
    ("Where is Zürich?", "Zürich is the largest city in Switzerland, on Lake Zürich."),
    ("  Leading spaces?", "  Indented text with    odd   spacing."),
    ("Which year?", "1066: the Battle of Hastings. 1215: Magna Carta. 1492: Columbus reaches the Americas."),
    ("Who?", "Marie Curie (1867–1934) won Nobel Prizes in physics and chemistry."),
    ("What language?", "Tokyo (東京) is the capital of Japan; its people speak Japanese."),
    ("Summarise.", "A " + "very " * 60 + "long sentence about nothing in particular."),
    ("Is it true?", "Yes."),
    ("What is pi?", "π ≈ 3.14159, the ratio of a circle's circumference to its diameter."),
    ("List the colours.", "- red\n- green\n- blue"),
    ("What code?", "def f(x):\n    return x * 2  # doubles x"),
    ("Define GRIT.", "GRIT unifies generative and embedding tasks in one model through instructions."),
    ("Why?", "Because the cache of the document is reused, the prefill is skipped; only the query is computed."),
    ("Quote?", '"To be, or not to be", says Hamlet.'),
    ("Final question: what is the answer to everything?", "According to a novel, the answer is 42."),
]


@pytest.fixture(scope="module")
def qwen_model(tiny_model_dirs):
    return load_model(str(tiny_model_dirs["qwen2"]))


def _mismatches(model, prompts, new_tokens):
    """(prompt index, mode) pairs where causal caching differs from greedy generation on the same ids."""
    bad = []
    for i, (query, doc) in enumerate(prompts):
        store = KVStore()
        for modes in (("doc", "multi_doc"), ("query",)):  # one-document multi_doc has the doc prompt
            prompt = rag.build_prompt(model, query, [doc], modes[0])
            uncached = generate_ids(model, prompt.prompt_ids(), max_new_tokens=new_tokens)
            for mode in modes:
                cached = rag.answer(model, query, [doc], mode=mode, source="causal", max_new_tokens=new_tokens,
                                    store=store)
                assert rag.build_prompt(model, query, [doc], mode).prompt_ids() == prompt.prompt_ids()
                assert cached.prompt_tokens == uncached.prompt_tokens
                if (cached.text, cached.completion_tokens) != (uncached.text, uncached.completion_tokens):
                    bad.append((i, mode))
    return bad


def test_causal_cache_is_token_identical_to_uncached_llama(tiny_model):
    assert _mismatches(tiny_model, PROMPTS, 4) == []


def test_causal_cache_is_token_identical_to_uncached_qwen2(qwen_model):
    assert _mismatches(qwen_model, PROMPTS[::2], 4) == []


@pytest.mark.integration
def test_causal_cache_is_token_identical_to_uncached_smollm2(smol):
    assert _mismatches(smol, PROMPTS[:2], 6) == []


@pytest.mark.integration
def test_smollm2_embedder_fills_the_cache_the_generator_uses(smol):
    embedder = GritEmbedder("smollm2-135m-instruct", max_length=256)
    assert embedder.model is smol  # one shared model, one shared store
    doc = ["The Eiffel Tower is a wrought-iron lattice tower in Paris, France, completed in 1889."]
    embedder.embed_documents(doc, store_kv_cache=True)
    result = GritGenerator("smollm2-135m-instruct", cache_mode="doc", generation_kwargs={"max_new_tokens": 4}).answer(
        "In which city is the Eiffel Tower?", doc)
    assert result.stats["source"] == "embedding" and result.stats["cache_hits"] == 1
    assert result.stats["cache_misses"] == 0 and result.completion_tokens > 0
    embedder.close()


def test_prompt_pieces_follow_the_templates(tiny_model):
    query, doc = "Who?", "Alice did it."
    bos = tiny_model.bos_ids
    embed = tiny_model.tokenize(templates.embed_prefix(""))
    p = rag.build_prompt(tiny_model, query, [doc], "doc")
    assert p.segments == [bos + embed + tiny_model.tokenize(doc)]
    assert p.prompt_ids() == p.segments[0] + p.suffix_ids
    suffix = tiny_model.tokenizer.decode(p.suffix_ids)
    assert suffix.startswith("\n") and query in suffix and templates.RAG_ANSWER_DOC_FIRST in suffix
    assert doc not in suffix
    q = rag.build_prompt(tiny_model, query, [doc], "query")
    assert q.segments == [bos + embed + tiny_model.tokenize(query)]
    assert doc in tiny_model.tokenizer.decode(q.suffix_ids)
    qd = rag.build_prompt(tiny_model, query, [doc], "query_doc")
    assert qd.cached_texts == [query, doc]
    # one BOS per prompt: the second cached text contributes everything but its BOS
    assert qd.prompt_ids()[: len(qd.segments[0])] == qd.segments[0]
    assert qd.prompt_ids()[: qd.cached_length].count(bos[0]) == 1
    dq = rag.build_prompt(tiny_model, query, [doc], CacheMode.DOC_QUERY)
    assert dq.cached_texts == [doc, query]
    multi = rag.build_prompt(tiny_model, query, ["a", "b", "c"], "multi_doc")
    assert multi.cached_texts == ["a", "b", "c"] and len(multi.segments) == 3
    joined = rag.build_prompt(tiny_model, query, ["a", "b"], "doc")
    assert joined.cached_texts == ["a" + templates.RAG_DOCUMENT_SEPARATOR + "b"]


def test_uncached_orders_and_no_retrieval(tiny_model):
    query, doc = "Who?", "Alice did it."
    first = tiny_model.tokenizer.decode(rag.build_prompt(tiny_model, query, [doc], "none").suffix_ids)
    assert first.index(doc) < first.index(query) and templates.RAG_ANSWER_DOC_FIRST in first
    qfirst = tiny_model.tokenizer.decode(rag.build_prompt(tiny_model, query, [doc], "none", order="query_first").suffix_ids)
    assert qfirst.index(query) < qfirst.index(doc) and templates.RAG_ANSWER_QUERY_FIRST in qfirst
    plain = tiny_model.tokenizer.decode(rag.build_prompt(tiny_model, query, [], "none").suffix_ids)
    assert query in plain and "prior" not in plain
    result = rag.answer(tiny_model, query, [], mode="none", max_new_tokens=2, store=KVStore())
    assert result.stats["cached_tokens"] == 0 and result.stats["prefill_tokens"] == result.prompt_tokens


def test_grit_chat_format_suffix():
    class _Tok:
        eos_token = "</s>"

    class _Model:
        uses_grit_chat_format = True
        tokenizer = _Tok()

    text = rag.chat_turn_text(_Model(), "q\n\n" + templates.RAG_ANSWER_DOC_FIRST)
    assert text == f"<|user|>\nq\n\n{templates.RAG_ANSWER_DOC_FIRST}\n<|assistant|>\n"


def test_stats_hits_misses_and_prefill(tiny_model):
    store = KVStore()
    docs = ["Doc one is here.", "Doc two is there, a little longer."]
    cold = rag.answer(tiny_model, "Which?", docs, mode="multi_doc", source="embedding", max_new_tokens=2, store=store)
    warm = rag.answer(tiny_model, "Which?", docs, mode="multi_doc", source="embedding", max_new_tokens=2, store=store)
    prompt = rag.build_prompt(tiny_model, "Which?", docs, "multi_doc")
    assert cold.stats["cache_misses"] == 2 and cold.stats["cache_hits"] == 0
    assert warm.stats["cache_misses"] == 0 and warm.stats["cache_hits"] == 2
    assert warm.stats["prefill_tokens"] == len(prompt.suffix_ids)
    assert cold.stats["prefill_tokens"] == len(prompt.suffix_ids) + sum(len(s) for s in prompt.segments)
    assert warm.stats["cached_tokens"] == prompt.cached_length
    assert cold.prompt_tokens == len(prompt.prompt_ids())
    assert set(warm.timings) >= {"cache_lookup", "cache_fill", "compose", "generate", "time_to_first_token", "total"}
    assert warm.usage["prompt_tokens"] == warm.prompt_tokens
    # the other source is a different cache
    other = rag.answer(tiny_model, "Which?", docs, mode="multi_doc", source="causal", max_new_tokens=2, store=store)
    assert other.stats["cache_misses"] == 2


def test_streaming_pieces_add_up_to_the_text(tiny_model):
    pieces: list[str] = []
    result = rag.answer(tiny_model, "Tell me.", ["Some context."], mode="doc", source="causal", max_new_tokens=8,
                        streaming_callback=pieces.append, store=KVStore())
    assert "".join(pieces) == result.text


def test_changed_document_is_never_served_a_stale_cache(tiny_model):
    store = KVStore()
    rag.answer(tiny_model, "Q?", ["The value is 41."], mode="doc", source="causal", max_new_tokens=2, store=store)
    changed = rag.answer(tiny_model, "Q?", ["The value is 42."], mode="doc", source="causal", max_new_tokens=2, store=store)
    assert changed.stats["cache_misses"] == 1 and changed.stats["cache_hits"] == 0


def test_bad_arguments(tiny_model):
    with pytest.raises(ValueError, match="mode"):
        rag.answer(tiny_model, "q", ["d"], mode="docs")
    with pytest.raises(TypeError, match="mode"):
        rag.answer(tiny_model, "q", ["d"], mode=3)
    with pytest.raises(ValueError, match="source"):
        rag.answer(tiny_model, "q", ["d"], mode="doc", source="bidirectional")
    with pytest.raises(ValueError, match="query"):
        rag.answer(tiny_model, "", ["d"], mode="doc")
    with pytest.raises(TypeError, match="documents"):
        rag.answer(tiny_model, "q", "a bare string", mode="doc")
    with pytest.raises(ValueError, match="at least one document"):
        rag.answer(tiny_model, "q", [], mode="doc")
    with pytest.raises(ValueError, match="order"):
        rag.answer(tiny_model, "q", ["d"], order="random")
    with pytest.raises(ValueError, match="max_new_tokens"):
        rag.answer(tiny_model, "q", ["d"], mode="doc", max_new_tokens=0)
    with pytest.raises(TypeError, match="store"):
        rag.answer(tiny_model, "q", ["d"], store={})
    with pytest.raises(ValueError, match="context length"):
        rag.answer(tiny_model, "q", ["word " * 5000], mode="doc", store=KVStore())
    with pytest.raises(TypeError, match="seed"):
        rag.answer(tiny_model, "q", ["d"], mode="doc", temperature=1.0, seed="a", store=KVStore())
    with pytest.raises(TypeError, match="streaming_callback"):
        rag.answer(tiny_model, "q", ["d"], mode="doc", streaming_callback="print", store=KVStore())


def test_generator_answer_uses_defaults_and_overrides(tiny_llama_dir):
    generator = GritGenerator(str(tiny_llama_dir), cache_mode="doc", cache_source="causal",
                              generation_kwargs={"max_new_tokens": 3})
    generator.model.kv_store.clear()
    first = generator.answer("Who?", ["Alice did it."])
    assert first.stats["mode"] == "doc" and first.stats["source"] == "causal" and first.completion_tokens <= 3
    second = generator.answer("Who?", ["Alice did it."], mode=CacheMode.MULTI_DOC, max_new_tokens=1)
    assert second.stats["mode"] == "multi_doc" and second.stats["cache_hits"] == 1 and second.completion_tokens == 1
    plain = generator.answer("Who?", ["Alice did it."], mode="none", order="query_first")
    assert plain.stats["cache_hits"] == plain.stats["cache_misses"] == 0
    with pytest.raises(ValueError, match="unknown generation_kwargs"):
        generator.answer("Who?", ["x"], beams=2)
    with pytest.raises(ValueError, match="mode"):
        GritGenerator(str(tiny_llama_dir), cache_mode="everything")
    with pytest.raises(ValueError, match="cache_source"):
        GritGenerator(str(tiny_llama_dir), cache_source="disk")


def test_cache_documents_prefills_the_store(tiny_model):
    store = KVStore()
    counts = rag.cache_documents(tiny_model, ["one", "two"], source="embedding", store=store)
    assert counts == {"hits": 0, "computed": 2}
    assert rag.cache_documents(tiny_model, ["one", "two"], source="embedding", store=store) == {"hits": 2, "computed": 0}
    result = rag.answer(tiny_model, "q?", ["one", "two"], mode="multi_doc", max_new_tokens=1, store=store)
    assert result.stats["cache_hits"] == 2
    with pytest.raises(ValueError, match="source"):
        rag.cache_documents(tiny_model, ["one"], source="nope", store=store)


def test_latency_benchmark_reports_every_mode_and_the_goal_ratios(tiny_model):
    from benchmarks.rag_cache import latency_for_model, ratios

    result = latency_for_model(tiny_model, lengths=(24, 48), repeats=2, new_tokens=4, multi_docs=3, multi_tokens=16,
                               kv_dtypes=("model", "bfloat16", "int8"), log=lambda _: None)
    row = result["lengths"]["48"]
    for name in ("no_retrieval", "uncached_doc_first", "uncached_query_first", "query", "doc", "query_doc", "doc_query"):
        assert row[name]["total"]["n"] == 2 and row[name]["total"]["mean"] > 0
    # cached modes prefill only the uncached suffix; the document comes from the warm store
    assert row["doc"]["cached_tokens"] >= 48 and row["doc"]["prefill_tokens"] < row["uncached_doc_first"]["prefill_tokens"]
    assert row["no_retrieval"]["cached_tokens"] == 0
    assert result["multi_doc"]["multi_doc"]["cached_tokens"] >= 3 * 16
    assert result["disk_tier"]["tokens"] >= 48
    goals = ratios(result)
    assert set(goals) >= {"doc_vs_uncached_doc_first_total", "doc_vs_no_retrieval_total", "multi_doc_vs_uncached_ttft",
                          "disk_load_vs_recompute", "longest_cache_vs_weight_bytes"}
    expected_share = row["doc"]["cached_tokens"] * result["kv_bytes_per_token"] / result["weight_bytes"]
    assert goals["longest_cache_vs_weight_bytes"] == pytest.approx(expected_share)
    # the cache dtype is a dimension: doc and multi_doc from each store, bytes kept and read, the floor they set
    assert row["doc@bfloat16"]["cached_tokens"] == row["doc"]["cached_tokens"]
    assert result["multi_doc"]["multi_doc@int8"]["total"]["n"] == 2
    per_dtype = goals["kv_dtypes"]
    assert per_dtype["bfloat16"]["stored_bytes_per_token_vs_model_dtype"] == pytest.approx(0.5, rel=0.01)
    head_dim = CacheLayout.of(tiny_model).head_dim  # int8: one byte per value plus a float32 scale per head_dim
    assert per_dtype["int8"]["stored_bytes_per_token_vs_model_dtype"] == pytest.approx((head_dim + 4) / (4 * head_dim))
    assert result["kv_dtypes"]["int8"]["decode_dtype"] == "bfloat16"
    model_read = result["weight_bytes"] + row["doc"]["prompt_tokens"] * result["kv_bytes_per_token"]
    assert per_dtype["model"]["bytes_read_per_new_token"] == model_read
    assert 1 < per_dtype["bfloat16"]["decode_floor"] < per_dtype["model"]["decode_floor"]
    from benchmarks.rag_cache import latency_markdown

    table = latency_markdown({"models": {"tiny": result | {"parameters": 1e6}}, "ratios": {"tiny": goals}})
    assert "| bfloat16 | " in table and "| int8 | " in table


def test_latency_benchmark_runs_only_the_chosen_modes(tiny_model):
    from benchmarks.rag_cache import check_latency_modes, latency_for_model, latency_markdown, ratios

    result = latency_for_model(tiny_model, lengths=(24,), repeats=1, new_tokens=3, kv_dtypes=("model", "bfloat16"),
                               modes=["doc"], log=lambda _: None)
    row = result["lengths"]["24"]
    assert set(row) - {"document_tokens", "fill_seconds"} == {"no_retrieval", "doc", "doc@bfloat16"}
    assert "multi_doc" not in result
    goals = ratios(result)
    assert "doc_vs_uncached_doc_first_total" not in goals and "multi_doc_vs_uncached_ttft" not in goals
    assert goals["doc_vs_no_retrieval_total"] == pytest.approx(row["doc"]["total"]["mean"]
                                                               / row["no_retrieval"]["total"]["mean"])
    assert "multi_doc_vs_uncached_ttft" not in goals["kv_dtypes"]["bfloat16"]
    table = latency_markdown({"models": {"tiny": result | {"parameters": 1e6}}, "ratios": {"tiny": goals}})
    assert "| document tokens | no_retrieval | doc |" in table and "| bfloat16 | " in table
    assert check_latency_modes(["query"]) == ("no_retrieval", "query", "doc")  # the baselines always run
    with pytest.raises(ValueError, match="modes"):
        check_latency_modes(["docs"])


def test_quality_benchmark_runs_chosen_configs_and_scores_matches(tiny_llama_dir, wikidesc_dir, tmp_path):
    import json

    from benchmarks.rag_cache import run_quality

    out = tmp_path / "quality.json"
    report = run_quality(str(tiny_llama_dir), wikidesc_dir, limit=3, output=out, new_tokens=3,
                         configs=["uncached_doc_first", "doc/causal"])
    assert list(report["results"]) == ["uncached_doc_first", "doc/causal"]
    for result in report["results"].values():
        assert result["n"] == 3
        assert result["match"] == sum(o["match"] for o in result["outputs"]) / 3
    # causal doc caching is exact: the same greedy outputs as the uncached doc-first prompt
    assert [o["output"] for o in report["results"]["doc/causal"]["outputs"]] == \
        [o["output"] for o in report["results"]["uncached_doc_first"]["outputs"]]
    assert json.loads(out.read_text())["setup"]["queries"] == 3
    with pytest.raises(ValueError, match="configs"):
        run_quality(str(tiny_llama_dir), wikidesc_dir, limit=1, output=out, configs=["doc/bogus"])


def test_quality_benchmark_gives_multi_doc_and_its_uncached_control_the_same_three_passages(tiny_llama_dir,
                                                                                             wikidesc_dir, tmp_path):
    from benchmarks.rag_cache import run_quality

    report = run_quality(str(tiny_llama_dir), wikidesc_dir, limit=2, output=tmp_path / "q.json", new_tokens=2,
                         configs=["uncached_doc_first", "multi_doc_3/causal", "uncached_doc_first_3"])
    passages = {name: [o["passages"] for o in result["outputs"]] for name, result in report["results"].items()}
    assert passages == {"uncached_doc_first": [1, 1], "multi_doc_3/causal": [3, 3], "uncached_doc_first_3": [3, 3]}


def test_quality_benchmark_scores_refusals_without_the_gold_passage(tiny_llama_dir, wikidesc_dir, tmp_path,
                                                                    monkeypatch):
    from benchmarks import rag_cache
    from grit_components.templates import NO_ANSWER

    seen = []

    def planted(model, question, documents, **kwargs):  # the model's reply, planted: refuse on odd calls
        seen.append(list(documents))
        return types.SimpleNamespace(text=NO_ANSWER if len(seen) % 2 else "Parthenon")

    monkeypatch.setattr(rag_cache.rag, "answer", planted)
    report = rag_cache.run_quality(str(tiny_llama_dir), wikidesc_dir, limit=2, output=tmp_path / "q.json",
                                   configs=["uncached_doc_first_5", "unanswerable_3"])
    items = rag_cache.load_wikidesc_dev(wikidesc_dir, 2)
    golds = {item["passage"] for item in items}
    assert [len(docs) for docs in seen] == [5, 5, 3, 3]
    assert all(any(d in golds for d in docs) for docs in seen[:2]) and not any(d in golds for docs in seen[2:] for d in docs)
    unanswerable = report["results"]["unanswerable_3"]
    assert unanswerable["match"] == 0.5 and unanswerable["refusals"] == 0.5  # a refusal is its match
    assert report["results"]["uncached_doc_first_5"]["refusals"] == 0.5  # false refusals where the answer is given


def test_quality_benchmark_compares_cache_dtypes_with_the_model_dtype(tiny_llama_dir, wikidesc_dir, tmp_path):
    from benchmarks.rag_cache import run_quality

    report = run_quality(str(tiny_llama_dir), wikidesc_dir, limit=2, output=tmp_path / "q.json", new_tokens=3,
                         configs=["no_retrieval", "doc/causal"], kv_dtypes=["int8"])
    assert list(report["results"]) == ["doc/causal", "doc/causal@int8", "no_retrieval"]  # uncached: one dtype
    agreement = report["results"]["doc/causal@int8"]["agreement_with_model_dtype"]
    assert 0 <= agreement["tokens"] <= 1 and 0 <= agreement["identical"] <= 1


def test_token_agreement_counts_positions_over_the_longer_answer(tiny_model):
    assert token_agreement_of(tiny_model, ["Paris is nice"], ["Paris is nice"]) == {"identical": 1.0, "tokens": 1.0}
    partial = token_agreement_of(tiny_model, ["Paris is nice", "a"], ["Paris was nice", "a"])
    assert partial["identical"] == 0.5 and 0.5 < partial["tokens"] < 1


def token_agreement_of(model, outputs, reference):
    from benchmarks.rag_cache import token_agreement

    return token_agreement(model, outputs, reference)


def test_says_no_answer_reads_the_trained_refusal_in_any_case():
    assert rag.says_no_answer(templates.NO_ANSWER)
    assert rag.says_no_answer("the passages  do not say. They are about rivers.")
    assert not rag.says_no_answer("The passages say it is Paris.")
    with pytest.raises(TypeError, match="text"):
        rag.says_no_answer(None)
