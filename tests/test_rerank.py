"""GritReranker and its building blocks: listwise parsing, batched pointwise scoring, the two stages,
bad input; and (integration) a planted relevant passage with the real SmolLM2 model."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest

import grit_components.rerank as rr
from grit_components import GritReranker, RankedDocument
from grit_components.generation import GenerationResult
from grit_components.registry import ModelRegistry

DOCS = [
    "Paris is the capital and largest city of France.",
    "Bananas are yellow fruit grown in the tropics, and they are rich in potassium.",
    "Berlin is the capital of Germany.",
    "The Moon's gravity causes the ocean tides.",
    "Honey bees make honey from the nectar of flowers they visit during the day.",
]


@pytest.fixture(scope="module")
def registry():
    return ModelRegistry()


def reranker(tiny_llama_dir, registry, **kwargs) -> GritReranker:
    return GritReranker(str(tiny_llama_dir), registry=registry, **kwargs)


# -- listwise parsing ---------------------------------------------------------------------------------


def test_parse_ranking_well_formed():
    assert rr.parse_ranking("[2] > [3] > [1]", 3) == [1, 2, 0]
    assert rr.parse_ranking("[ 2 ]>[1]", 2) == [1, 0]


def test_parse_ranking_partial_keeps_missing_in_previous_order():
    assert rr.parse_ranking("[4] > [2]", 5) == [3, 1, 0, 2, 4]


def test_parse_ranking_repeated_and_out_of_range():
    assert rr.parse_ranking("[2] > [2] > [9] > [0] > [1] > [2]", 3) == [1, 0, 2]


def test_parse_ranking_empty_or_unreadable_keeps_order():
    assert rr.parse_ranking("", 3) == [0, 1, 2]
    assert rr.parse_ranking("I cannot rank these.", 3) == [0, 1, 2]
    assert rr.parse_ranking("[1]", 0) == []


def test_parse_ranking_bare_numbers_only_without_brackets():
    assert rr.parse_ranking("3 > 1 > 2", 3) == [2, 0, 1]
    # With bracketed identifiers, stray numbers (e.g. from passage text) are ignored.
    assert rr.parse_ranking("[2] (1999) > [1]", 2) == [1, 0]


# -- listwise order actually applied, sliding window ---------------------------------------------------


def fake_listwise_generation(monkeypatch, calls: list):
    """Replace generation by an oracle that ranks the passages of the prompt by the number after 'score'."""

    def fake(model, prompt_ids, **kwargs):
        text = model.tokenizer.decode(prompt_ids)
        listed = re.findall(r"\[(\d+)\] item score (\d+)", text)
        calls.append([int(n) for n, _ in listed])
        ranked = sorted(listed, key=lambda item: -int(item[1]))
        answer = " > ".join(f"[{n}]" for n, _ in ranked)[1:]  # the "[" is already in the prompt
        return GenerationResult(text=answer, finish_reason="stop", prompt_tokens=len(prompt_ids), completion_tokens=1)

    monkeypatch.setattr(rr, "generate_ids", fake)


def test_listwise_order_applies_parsed_permutation(tiny_model, monkeypatch):
    calls: list = []
    fake_listwise_generation(monkeypatch, calls)
    passages = [f"item score {s}" for s in (3, 9, 1, 7)]
    assert rr.listwise_order(tiny_model, "q", passages, window_size=10) == [1, 3, 0, 2]
    assert calls == [[1, 2, 3, 4]]


def test_listwise_sliding_window_brings_best_to_front(tiny_model, monkeypatch):
    calls: list = []
    fake_listwise_generation(monkeypatch, calls)
    scores = [5, 2, 8, 1, 9, 3, 7]
    passages = [f"item score {s}" for s in scores]
    order = rr.listwise_order(tiny_model, "q", passages, window_size=3, step=2)
    assert sorted(order) == list(range(7))
    assert order[0] == 4  # the best passage bubbles up through the windows
    assert [len(c) for c in calls] == [3, 3, 3]  # windows [4:7], [2:5], [0:3]


def test_listwise_trace_records_each_window_answer(tiny_model, monkeypatch):
    fake_listwise_generation(monkeypatch, [])
    passages = [f"item score {s}" for s in (5, 2, 8, 1, 9)]
    trace: list = []
    order = rr.listwise_order(tiny_model, "q", passages, window_size=3, step=2, trace=trace)
    assert [t["window"] for t in trace] == [[2, 3, 4], [0, 1, 4]]  # the second window holds the bubbled-up best
    assert trace[0]["answer"] == "[3] > [1] > [2]" and trace[0]["permutation"] == [2, 0, 1]
    assert order[0] == 4


def test_listwise_reranker_scores(tiny_llama_dir, registry, monkeypatch):
    calls: list = []
    fake_listwise_generation(monkeypatch, calls)
    docs = [f"item score {s}" for s in (3, 9, 1, 7)]
    ranker = reranker(tiny_llama_dir, registry, first_stage="none", cross_encoder="listwise", top_k=4)
    result = ranker.rerank("q", docs)
    assert [r.index for r in result] == [1, 3, 0, 2]
    assert [r.score for r in result] == [1.0, 0.5, pytest.approx(1 / 3), 0.25]


def test_listwise_with_real_generation_returns_permutation(tiny_llama_dir, registry):
    ranker = reranker(tiny_llama_dir, registry, first_stage="none", cross_encoder="listwise", top_k=10)
    result = ranker.rerank("capital of France", DOCS)
    assert sorted(r.index for r in result) == list(range(len(DOCS)))


# -- pointwise -----------------------------------------------------------------------------------------


def test_yes_no_tokens_are_single_and_distinct(tiny_model):
    yes, no = rr.answer_token_ids(tiny_model, rr.YES_WORDS), rr.answer_token_ids(tiny_model, rr.NO_WORDS)
    assert len(yes) == 2 and len(no) == 2 and not set(yes) & set(no)
    assert [tiny_model.tokenizer.decode([i]) for i in yes] == ["yes", "Yes"]


def test_pointwise_batched_equals_one_at_a_time(tiny_model):
    batched = rr.pointwise_scores(tiny_model, "capital of France", DOCS, batch_size=4)
    single = np.array([rr.pointwise_scores(tiny_model, "capital of France", [d], batch_size=1)[0] for d in DOCS])
    assert batched.shape == (len(DOCS),)
    np.testing.assert_allclose(batched, single, atol=1e-4)
    assert np.ptp(batched) > 0  # the scores depend on the passage


def test_pointwise_truncates_by_tokens(tiny_model):
    long = " ".join(["word"] * 500)
    cut = rr.truncate_tokens(tiny_model, long, 16)
    assert len(tiny_model.tokenize(cut)) == 16
    assert rr.truncate_tokens(tiny_model, "short text", 16) == "short text"
    long_ids = rr.pointwise_prompt_ids(tiny_model, "q", long, max_passage_tokens=16)
    short_ids = rr.pointwise_prompt_ids(tiny_model, "q", cut, max_passage_tokens=16)
    assert long_ids == short_ids


def test_rerank_is_deterministic_and_sorted(tiny_llama_dir, registry):
    ranker = reranker(tiny_llama_dir, registry, top_k=5, first_stage_top_k=4)
    first = ranker.rerank("capital of France", DOCS)
    second = ranker.rerank("capital of France", DOCS)
    assert first == second
    assert len(first) == 4  # only the first-stage top 4 are cross-encoded and returned
    assert [r.score for r in first] == sorted((r.score for r in first), reverse=True)
    assert all(isinstance(r, RankedDocument) and r.first_stage_score is not None for r in first)
    # The candidates are the 4 best by cosine similarity.
    stage1 = ranker.first_stage_scores("capital of France", DOCS)
    assert {r.index for r in first} == set(np.argsort(-stage1, kind="stable")[:4].tolist())
    assert ranker.rerank("capital of France", DOCS, top_k=2) == first[:2]


def test_stored_embeddings_are_reused(tiny_llama_dir, registry):
    ranker = reranker(tiny_llama_dir, registry, cross_encoder="none", top_k=5, first_stage_top_k=None)
    computed = ranker.first_stage_scores("capital of France", DOCS)
    stored = ranker.model.embed(DOCS)
    reused = ranker.first_stage_scores("capital of France", DOCS, document_embeddings=list(stored))
    np.testing.assert_allclose(reused, computed, atol=1e-5)
    # Planted embeddings decide the order: the stored vectors are used, not recomputed.
    query = ranker.model.embed(["capital of France"], instruction=ranker.query_instruction)[0]
    planted = [None, None, query, None, -query]
    result = ranker.rerank("capital of France", DOCS, document_embeddings=planted)
    assert result[0].index == 2 and result[0].score == pytest.approx(1.0, abs=1e-5)
    assert result[-1].index == 4
    # A vector of another dimension (another model) is not used: that document is embedded here.
    other = ranker.first_stage_scores("capital of France", DOCS, document_embeddings=[np.ones(3)] + [None] * 4)
    np.testing.assert_allclose(other, computed, atol=1e-5)
    # A given query embedding is used as is.
    flipped = ranker.first_stage_scores("anything", DOCS, query_embedding=-query, document_embeddings=list(stored))
    np.testing.assert_allclose(flipped, -ranker.first_stage_scores("capital of France", DOCS), atol=1e-5)


def test_scores_are_scaled_by_default_and_per_call(tiny_llama_dir, registry):
    ranker = reranker(tiny_llama_dir, registry, first_stage="none", cross_encoder="pointwise")
    assert ranker.scale_score is True
    scaled = ranker.rerank("capital of France", DOCS)
    raw = ranker.rerank("capital of France", DOCS, scale_score=False)
    assert raw == reranker(tiny_llama_dir, registry, first_stage="none", cross_encoder="pointwise",
                           scale_score=False).rerank("capital of France", DOCS)
    assert [r.index for r in raw] == [r.index for r in scaled]
    for a, b in zip(raw, scaled):
        assert b.score == pytest.approx(1 / (1 + np.exp(-a.score)))  # sigmoid of the log-odds
        assert 0.0 < b.score < 1.0 and a.first_stage_score is None


def test_score_threshold_at_init_and_per_call(tiny_llama_dir, registry):
    scaled = reranker(tiny_llama_dir, registry, first_stage="none", cross_encoder="pointwise").rerank(
        "capital of France", DOCS)
    threshold = scaled[1].score
    kept = reranker(tiny_llama_dir, registry, first_stage="none", cross_encoder="pointwise",
                    score_threshold=threshold).rerank("capital of France", DOCS)
    assert [r.index for r in kept] == [r.index for r in scaled[:2]]
    ranker = reranker(tiny_llama_dir, registry, first_stage="none", cross_encoder="pointwise")
    assert ranker.rerank("capital of France", DOCS, score_threshold=threshold) == kept
    assert ranker.rerank("capital of France", DOCS, score_threshold=threshold, top_k=1) == kept[:1]
    with pytest.raises(TypeError, match="score_threshold"):
        ranker.rerank("q", DOCS, score_threshold="high")
    with pytest.raises(TypeError, match="scale_score"):
        ranker.rerank("q", DOCS, scale_score=1)


def test_ties_keep_first_stage_order(tiny_llama_dir, registry, monkeypatch):
    monkeypatch.setattr(GritReranker, "cross_encoder_scores", lambda self, q, docs: np.zeros(len(docs)))
    result = reranker(tiny_llama_dir, registry, first_stage="none").rerank("q", DOCS)
    assert [r.index for r in result] == [0, 1, 2, 3, 4]


# -- bad input -----------------------------------------------------------------------------------------


def test_empty_documents_give_empty_result(tiny_llama_dir, registry):
    assert reranker(tiny_llama_dir, registry).rerank("q", []) == []


def test_documents_without_content_are_skipped_with_warning(tiny_llama_dir, registry):
    ranker = reranker(tiny_llama_dir, registry, first_stage="none", cross_encoder="pointwise")
    with pytest.warns(UserWarning, match="2 of 4 documents have no text"):
        result = ranker.rerank("q", ["first", "", None, "second"])
    assert sorted(r.index for r in result) == [0, 3]
    with pytest.warns(UserWarning):
        assert ranker.rerank("q", ["   "]) == []


def test_every_document_is_kept_and_a_repeated_text_is_scored_once(tiny_llama_dir, registry, monkeypatch):
    ranker = reranker(tiny_llama_dir, registry, first_stage="none", cross_encoder="pointwise")
    scored: list[list[str]] = []
    real = GritReranker.cross_encoder_scores
    monkeypatch.setattr(GritReranker, "cross_encoder_scores",
                        lambda self, q, docs: scored.append(list(docs)) or real(self, q, docs))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is dropped, so nothing is warned about
        warnings.filterwarnings("ignore", category=rr.UntrainedCrossEncoderWarning)
        result = ranker.rerank("q", ["same text", "other", "same text"])
    assert sorted(r.index for r in result) == [0, 1, 2]
    assert scored == [["same text", "other"]]
    by_index = {r.index: r.score for r in result}
    assert by_index[0] == by_index[2]


def test_deduplicate_keeps_the_first_of_a_repeated_text(tiny_llama_dir, registry):
    ranker = reranker(tiny_llama_dir, registry, first_stage="none", cross_encoder="pointwise", deduplicate=True)
    assert sorted(r.index for r in ranker.rerank("q", ["same text", "other", "same text"])) == [0, 1]
    with pytest.raises(TypeError, match="deduplicate"):
        reranker(tiny_llama_dir, registry, deduplicate="yes")


def test_bad_top_k(tiny_llama_dir, registry):
    with pytest.raises(ValueError, match="top_k"):
        reranker(tiny_llama_dir, registry, top_k=0)
    with pytest.raises(ValueError, match="top_k"):
        reranker(tiny_llama_dir, registry).rerank("q", DOCS, top_k=-1)
    with pytest.raises(TypeError, match="top_k"):
        reranker(tiny_llama_dir, registry).rerank("q", DOCS, top_k=2.5)
    with pytest.raises(ValueError, match="first_stage_top_k"):
        reranker(tiny_llama_dir, registry, first_stage_top_k=0)


def test_bad_arguments(tiny_llama_dir, registry):
    with pytest.raises(ValueError, match="cross_encoder"):
        reranker(tiny_llama_dir, registry, cross_encoder="pairwise")
    with pytest.raises(ValueError, match="first_stage"):
        reranker(tiny_llama_dir, registry, first_stage="bm25")
    with pytest.raises(ValueError, match="both be 'none'"):
        reranker(tiny_llama_dir, registry, first_stage="none", cross_encoder="none")
    with pytest.raises(TypeError, match="scale_score"):
        reranker(tiny_llama_dir, registry, scale_score="yes")
    with pytest.raises(TypeError, match="score_threshold"):
        reranker(tiny_llama_dir, registry, score_threshold="high")
    ranker = reranker(tiny_llama_dir, registry)
    with pytest.raises(TypeError, match="documents must be a list"):
        ranker.rerank("q", "a single string")
    with pytest.raises(TypeError, match=r"documents\[1\]"):
        ranker.rerank("q", ["ok", 3])
    with pytest.raises(ValueError, match="query"):
        ranker.rerank("", DOCS)
    with pytest.raises(ValueError, match=r"documents\[1\] contains an unpaired surrogate"):
        ranker.rerank("q", ["ok", "caf\udce9"])
    with pytest.raises(ValueError, match="query contains an unpaired surrogate"):
        ranker.rerank("caf\udce9", DOCS)
    with pytest.raises(ValueError, match="document_embeddings"):
        ranker.rerank("q", DOCS, document_embeddings=[None])


# -- integration: real SmolLM2 -------------------------------------------------------------------------

PLANTED = [
    ("How do bees make honey?", "Honey bees collect nectar from flowers, store it in their honey stomach, and evaporate it in wax combs until it thickens into honey."),
    ("What is the boiling point of water at sea level?", "At sea level, pure water boils at 100 degrees Celsius (212 degrees Fahrenheit); at higher altitudes it boils at lower temperatures."),
    ("Who painted the Mona Lisa?", "The Mona Lisa is a half-length portrait painted by the Italian artist Leonardo da Vinci in the early sixteenth century."),
    ("Why do leaves change colour in autumn?", "In autumn, trees stop producing green chlorophyll, so yellow and orange pigments in the leaves become visible before they fall."),
    ("How many players are on a football team?", "An association football team fields eleven players, one of whom is the goalkeeper, and may use substitutes during a match."),
    ("What causes tides in the ocean?", "Ocean tides are caused mainly by the gravitational pull of the Moon, with a smaller contribution from the Sun."),
    ("What is the capital city of Japan?", "Tokyo is the capital of Japan and the most populous metropolitan area in the world."),
    ("How does a vaccine protect against disease?", "A vaccine trains the immune system to recognise a pathogen, so that the body can fight the real infection quickly later."),
    ("What language is spoken in Brazil?", "Portuguese is the official and most widely spoken language of Brazil, a legacy of Portuguese colonisation."),
    ("How fast does light travel?", "Light travels through a vacuum at about 299,792 kilometres per second, the fastest speed possible in the universe."),
]


def _planted_wins(model, scorer=rr.pointwise_scores) -> int:
    passages = [p for _, p in PLANTED]
    wins = 0
    for i, (query, _) in enumerate(PLANTED):
        scores = scorer(model, query, passages, batch_size=10)
        wins += int(np.argmax(scores)) == i
    return wins


@pytest.mark.integration
def test_planted_passage_moves_to_rank_one_with_the_shipped_grit_model(grit_smol):
    """Each query's passage among the 9 other queries' passages: the GRIT-trained default, with the
    cross-encoder it declares (query likelihood, what GritReranker uses for it by default), puts it first."""
    assert grit_smol.metadata.declares("query_likelihood_rerank")
    assert GritReranker("grit-smollm2-135m").cross_encoder == "query_likelihood"
    wins = _planted_wins(grit_smol, rr.query_likelihood_scores)
    assert wins >= 8, f"planted passage ranked first for {wins}/10 queries"


@pytest.mark.integration
@pytest.mark.xfail(strict=True, reason=(
    "SmolLM2-135M-Instruct is not GRIT-trained and too small to judge relevance: with the reference pointwise "
    "prompt its yes/no margin depends mostly on the passage, not on the query (see docs/reranking.md)"))
def test_planted_passage_moves_to_rank_one_with_untrained_smollm2(smol):
    wins = _planted_wins(smol)
    assert wins >= 8, f"planted passage ranked first for {wins}/10 queries"


def test_query_likelihood_is_the_mean_log_probability_of_the_query(tiny_model):
    """query_likelihood_scores = mean log p(query token | passage prompt, earlier query tokens), read from a
    plain full forward pass; batching does not change it."""
    import torch

    query = "capital of France"
    batched = rr.query_likelihood_scores(tiny_model, query, DOCS, batch_size=4)
    query_ids = tiny_model.tokenize(query)
    for doc, score in zip(DOCS, batched):
        prompt = rr.query_likelihood_prompt_ids(tiny_model, doc)
        with torch.no_grad():
            logits = tiny_model.model(input_ids=torch.tensor([prompt + query_ids])).logits[0].float()
        log_probs = logits.log_softmax(-1)[len(prompt) - 1 : -1]
        expected = log_probs.gather(1, torch.tensor(query_ids)[:, None]).mean().item()
        assert score == pytest.approx(expected, abs=1e-4)
    assert np.all(batched < 0) and np.ptp(batched) > 0
    with pytest.raises(ValueError, match="query"):
        rr.query_likelihood_scores(tiny_model, "", DOCS)


def test_query_likelihood_reranker_scales_to_a_probability(tiny_llama_dir, registry):
    reranker = GritReranker(str(tiny_llama_dir), cross_encoder="query_likelihood", registry=registry, top_k=3)
    with pytest.warns(rr.UntrainedCrossEncoderWarning, match="query_likelihood"):
        ranked = reranker.rerank("capital of France", DOCS)
    raw = reranker.rerank("capital of France", DOCS, scale_score=False)
    assert [r.index for r in ranked] == [r.index for r in raw]
    assert all(0 < r.score <= 1 for r in ranked)
    assert ranked[0].score == pytest.approx(math.exp(raw[0].score))


def test_default_cross_encoder_of_a_model_that_declares_none(tiny_llama_dir, registry):
    """An undeclared model gets no cross-encoder after a bi-encoder first stage, and query likelihood (not the
    yes/no judgement, which ranks worse untrained) when the input order is the first stage."""
    assert reranker(tiny_llama_dir, registry).cross_encoder == "none"
    with pytest.warns(rr.UntrainedCrossEncoderWarning):
        assert reranker(tiny_llama_dir, registry, first_stage="none").cross_encoder == "query_likelihood"
    with pytest.warns(rr.UntrainedCrossEncoderWarning):
        assert reranker(tiny_llama_dir, registry, cross_encoder="pointwise").cross_encoder == "pointwise"
