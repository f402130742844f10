"""Multi-task training data: each task is trained in exactly the token layout its component builds, and a
RAG answer from cached texts is trained on the very states the composed cache holds at inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from grit_components import rag
from grit_components.grit_model import GritModel
from grit_components.kv_cache import compose, compute_cache
from grit_components.models import load_weights
from grit_components.rerank import pointwise_prompt_ids
from grit_components.training import EmbeddingRecord
from grit_components.training.collator import GritCollator
from grit_components.training.loss import generative_loss, ranking_loss, selected_generative_loss
from grit_components.training.tasks import (CLOZE_BLANK, PointwiseRecord, RagRecord, RankingGroup, encode_rag,
                                            fact_cloze_records, inverse_cloze_records, pointwise_records, rag_records,
                                            ranking_groups)
from grit_components.training.trainer import GritTrainingModel

pytest.importorskip("peft")

DOCS = ("The Parthenon is a former temple on the Athenian Acropolis, Greece.",
        "Alum is a double sulfate salt of aluminium used in water purification.",
        "The Hussite Wars were fought in Bohemia in the fifteenth century.")


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir) -> GritModel:
    model, tokenizer, resolved = load_weights(str(tiny_llama_dir), device="cpu", dtype=torch.float32)
    return GritModel(model, tokenizer, name=str(tiny_llama_dir), key=resolved.key)


def cached_answer_logits(model: GritModel, record: RagRecord, answer: list[int]) -> torch.Tensor:
    """Logits over suffix + answer when continuing from the composed caches, as `rag.answer` does."""
    prompt = rag.build_prompt(model, record.question, list(record.documents), record.fmt)
    entries = [compute_cache(model, ids, record.source) for ids in prompt.segments]
    _, cache = compose(model, entries, drop_leading=prompt.drop_leading)
    suffix = prompt.suffix_ids + answer
    total = prompt.cached_length + len(suffix)
    with torch.no_grad():
        out = model.model(input_ids=torch.tensor([suffix]), attention_mask=torch.ones(1, total, dtype=torch.long),
                          past_key_values=cache, use_cache=True)
    return out.logits[0]  # (len(suffix), V)


@pytest.mark.parametrize("fmt,source,documents", [
    ("doc", "embedding", DOCS[:1]), ("doc", "causal", DOCS[:2]), ("query", "embedding", DOCS[:2]),
    ("multi_doc", "embedding", DOCS), ("multi_doc", "causal", DOCS[:2]), ("doc_query", "embedding", DOCS[:1]),
    ("query_doc", "causal", DOCS[:2])])
def test_cached_format_layout_equals_composed_cache_inference(tiny, fmt, source, documents):
    record = RagRecord("What is described as 'Temple in Athens'?", documents, fmt, source, "Parthenon")
    sequence = encode_rag(tiny, record)
    collator = GritCollator(tiny, generative_max_length=1024)
    batch = collator.generative_batch([record, RagRecord("q?", (), "no_retrieval", "causal", "a")])
    assert batch["gen_attention_mask"].dim() == 4 and "gen_position_ids" in batch
    with torch.no_grad():
        full = tiny.model(input_ids=batch["gen_input_ids"], attention_mask=batch["gen_attention_mask"],
                          position_ids=batch["gen_position_ids"]).logits[0]
    answer = [t for t in sequence.labels if t != -100]
    expected = cached_answer_logits(tiny, record, answer)
    suffix_start = len(sequence.ids) - expected.shape[0]
    torch.testing.assert_close(full[suffix_start:len(sequence.ids)], expected, atol=2e-4, rtol=1e-3)


def test_uncached_formats_are_the_generators_prompt(tiny):
    record = RagRecord("What is described as 'Temple in Athens'?", DOCS[:2], "query_first", "causal", "Parthenon")
    sequence = encode_rag(tiny, record)
    prompt = rag.build_prompt(tiny, record.question, list(DOCS[:2]), "none", order="query_first")
    assert sequence.blocks is None
    assert sequence.ids[: len(prompt.suffix_ids)] == prompt.suffix_ids
    assert tiny.tokenizer.decode([t for t in sequence.labels if t != -100]).startswith("Parthenon")


def test_pointwise_record_is_the_rerankers_prompt_answered_yes_or_no(tiny):
    collator = GritCollator(tiny, rerank_passage_tokens=8)
    for relevant, word in ((True, "yes"), (False, "no")):
        sequence = collator.encode_generative(PointwiseRecord("temple", DOCS[0], relevant))
        prompt = pointwise_prompt_ids(tiny, "temple", DOCS[0], max_passage_tokens=8)
        assert sequence.ids[: len(prompt)] == prompt
        answer = [t for t in sequence.labels if t != -100]
        assert answer == tiny.tokenize(word) + [tiny.tokenizer.eos_token_id]


def test_selected_logits_loss_equals_full_logits_loss(tiny):
    collator = GritCollator(tiny, generative_max_length=1024)
    records = [RagRecord("What is X?", DOCS[:2], "multi_doc", "embedding", "Alum"),
               PointwiseRecord("temple", DOCS[0], True), RagRecord("What is Y?", DOCS[:1], "doc_first", "causal", "Hussite Wars")]
    batch = collator.generative_batch(records)
    wrapper = GritTrainingModel(tiny.model)
    with torch.no_grad():
        full = wrapper(batch["gen_input_ids"], batch["gen_attention_mask"], position_ids=batch["gen_position_ids"])
        selected = wrapper(batch["gen_input_ids"], batch["gen_attention_mask"], labels=batch["gen_labels"],
                           position_ids=batch["gen_position_ids"])
    for averaging in ("token", "sample"):
        torch.testing.assert_close(selected_generative_loss(selected, batch["gen_labels"], averaging=averaging),
                                   generative_loss(full, batch["gen_labels"], averaging=averaging))


def test_rag_records_place_the_gold_passage_anywhere_and_cycle_formats():
    records = [EmbeddingRecord((None, f"query {i}"), ((None, f"Gold{i} gold passage {i}."),),
                               tuple((None, f"Other{i}{j} distractor {j}.") for j in range(3))) for i in range(60)]
    titles = {f"Gold{i} gold passage {i}.": f"Gold{i}" for i in range(60)}
    out = rag_records(records, [f"Gold{i}" for i in range(60)], question="What is '{query}'?", titles=titles, seed=1)
    assert {r.fmt for r in out} == {"doc_first", "query_first", "doc", "query", "doc_query", "query_doc", "multi_doc"}
    assert {r.source for r in out} == {"embedding", "causal"}
    positions = {next(i for i, d in enumerate(r.documents) if "gold passage" in d) for r in out}
    assert positions == {0, 1, 2}  # the gold passage is not always first
    assert all(len(r.documents) >= 2 for r in out if r.fmt == "multi_doc")
    untitled = [r for r in out if not any(d.startswith("Gold") for d in r.documents)]
    assert 0 < len(untitled) < len(out)  # some prompts show passages without their title
    with pytest.raises(ValueError, match="formats"):
        rag_records(records, ["a"] * 60, question="{query}", formats=["doc", "nope"])


def test_pointwise_records_are_balanced():
    records = [EmbeddingRecord((None, f"q{i}"), ((None, f"p{i}"),), ((None, "n1"), (None, "n2"))) for i in range(10)]
    out = pointwise_records(records, negatives_per_positive=1)
    assert sum(r.relevant for r in out) == sum(not r.relevant for r in out) == 10


def test_inverse_cloze_pairs_take_a_sentence_out_of_its_passage():
    passages = ["Alum is a salt. It is used in water purification plants worldwide. It tastes sour and dry.",
                "One sentence only here."]
    out = inverse_cloze_records(passages, keep_sentence=0.0, min_words=3, seed=3)
    assert len(out) == 1  # a one-sentence passage gives no pair
    query, positive = out[0].query[1], out[0].pos[0][1]
    assert query in passages[0] and query not in positive


def test_fact_cloze_blanks_a_fact_the_passage_states():
    body = ("Polaris is a star in the northern circumpolar constellation of Ursa Minor. "
            "It is the brightest star in the constellation and lies about 433 light-years away. Short one.")
    documents = [(f"Polaris {body}", body, "Polaris")]
    answers = set()
    for seed in range(30):
        [(record, answer)] = fact_cloze_records(documents, min_words=8, seed=seed)
        question, positive = record.query[1], record.pos[0][1]
        assert positive == documents[0][0] and record.neg == ()
        assert CLOZE_BLANK in question and answer not in question
        assert question.replace(CLOZE_BLANK, answer) in body  # the passage states the answer verbatim
        answers.add(answer)
    # sentence starts ("Polaris", "It"), the title and function words are never the answer
    assert answers <= {"Ursa Minor", "433"} and len(answers) == 2
    # possessives lose their ending; a part of a longer name and two-letter abbreviations are not used
    [(record, answer)] = fact_cloze_records([("t", "Most of all it was Georges Seurat's best known work.", "X")])
    assert answer == "Georges Seurat" and record.query[1] == f"Most of all it was {CLOZE_BLANK}'s best known work."
    assert fact_cloze_records([("t", "The tale is part of One Thousand and One Nights in 800 AD.", "X")])[0][1] == "800"
    assert fact_cloze_records([("t", "Nothing at all here to be asked about in this.", "X")]) == []
    # max_words: only whole sentences a prompt cut to that many words (title included) still shows
    long = "It was built in 1201 by the monks of the order. " + "It was rebuilt in 1450 after a great fire there. " * 3
    cut = [(f"Abbey {long}", long, "Abbey")]
    assert {fact_cloze_records(cut, max_words=22, seed=s)[0][1] for s in range(20)} == {"1201", "1450"}
    assert {fact_cloze_records(cut, max_words=21, seed=s)[0][1] for s in range(20)} == {"1201"}


def test_ranking_groups_put_the_positive_first_and_skip_short_queries():
    records = [EmbeddingRecord((None, f"q{i}"), ((None, f"p{i}"),), tuple((None, f"n{i}{j}") for j in range(i)))
               for i in range(6)]
    groups = ranking_groups(records, group_size=4, seed=0)
    assert [g.query for g in groups] == ["q3", "q4", "q5"]  # q0-q2 have fewer than 3 negatives
    assert all(len(g.passages) == 4 and g.passages[0] == f"p{g.query[1:]}" for g in groups)
    assert all(set(g.passages[1:]) <= {f"n{g.query[1:]}{j}" for j in range(6)} for g in groups)
    with pytest.raises(ValueError, match="group_size"):
        ranking_groups(records, group_size=1)
    with pytest.raises(TypeError, match="group_size"):
        ranking_groups(records, group_size=2.0)


def test_ranking_batch_scores_are_the_rerankers_scores(tiny):
    """The trained score is exactly what `GritReranker` sorts by: same prompts, same log-odds."""
    from grit_components.rerank import pointwise_scores
    from grit_components.training.trainer import GritTrainer

    groups = [RankingGroup("temple in Athens", DOCS), RankingGroup("salt for water", (DOCS[1], DOCS[2], DOCS[0]))]
    collator = GritCollator(tiny, rerank_passage_tokens=12)
    batch = collator([{"embedding": None, "generative": None, "ranking": g} for g in groups])
    assert batch["rank_input_ids"].shape[0] == 6 and batch["rank_group_size"].tolist() == [3, 3]
    for row, (g, passage) in enumerate((g, p) for g in groups for p in g.passages):
        prompt = pointwise_prompt_ids(tiny, g.query, passage, max_passage_tokens=12)
        assert batch["rank_input_ids"][row, : len(prompt)].tolist() == prompt
        assert int(batch["rank_last"][row]) == len(prompt) - 1
    trainer = GritTrainer.__new__(GritTrainer)  # only relevance_scores is used: no Trainer set-up needed
    trainer.grit_model, trainer._answer_ids = tiny, None
    with torch.no_grad():
        logits = GritTrainingModel(tiny.model)(batch["rank_input_ids"], batch["rank_attention_mask"],
                                               last=batch["rank_last"])
        trained = trainer.relevance_scores(logits).double().numpy()
    expected = np.concatenate([pointwise_scores(tiny, g.query, list(g.passages), max_passage_tokens=12) for g in groups])
    np.testing.assert_allclose(trained, expected, atol=1e-4)
    with pytest.raises(ValueError, match="same size"):
        collator.ranking_batch([groups[0], RankingGroup("x", DOCS[:2])])


def test_ranking_loss_is_softmax_cross_entropy_with_an_optional_pointwise_term():
    scores = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    expected = -(torch.log_softmax(scores, dim=1)[:, 0]).mean()
    assert ranking_loss(scores).item() == pytest.approx(expected.item(), rel=1e-6)
    labels = torch.tensor([[1.0, 0, 0], [1.0, 0, 0]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(scores, labels)
    assert ranking_loss(scores, bce_weight=0.5).item() == pytest.approx((expected + 0.5 * bce).item(), rel=1e-6)
    with pytest.raises(ValueError, match="scores"):
        ranking_loss(torch.zeros(4))
    with pytest.raises(ValueError, match="bce_weight"):
        ranking_loss(scores, bce_weight=-1.0)


def test_query_likelihood_groups_score_as_the_reranker_does(tiny):
    """Query-likelihood groups: the trainer's per-row sums over the query tokens, divided by their count, are
    the reranker's query_likelihood_scores."""
    from grit_components.rerank import query_likelihood_scores

    groups = [RankingGroup("temple in Athens", DOCS, score="query_likelihood"),
              RankingGroup("salt", (DOCS[1], DOCS[2], DOCS[0]), score="query_likelihood")]
    collator = GritCollator(tiny, rerank_passage_tokens=12)
    batch = collator.ranking_batch(groups)
    labels = batch["rank_labels"]
    with torch.no_grad():
        logits = GritTrainingModel(tiny.model)(batch["rank_input_ids"], batch["rank_attention_mask"], labels=labels,
                                               float_head=True)
    targets = labels[:, 1:][labels[:, 1:] != -100]
    token = logits.log_softmax(-1).gather(1, targets[:, None])[:, 0]
    rows = torch.nonzero(labels[:, 1:] != -100)[:, 0]
    means = torch.zeros(6).index_add(0, rows, token) / (labels[:, 1:] != -100).sum(1)
    expected = np.concatenate([query_likelihood_scores(tiny, g.query, list(g.passages), max_passage_tokens=12)
                               for g in groups])
    np.testing.assert_allclose(means.numpy(), expected, atol=1e-4)
    with pytest.raises(ValueError, match="one score"):
        collator.ranking_batch([groups[0], RankingGroup("x", DOCS)])
    with pytest.raises(ValueError, match="score"):
        ranking_groups([], score="bm25")


@pytest.mark.parametrize("averaging", ["token", "sample"])
def test_sequence_chunks_give_the_padded_batchs_loss_and_gradients(tiny, averaging):
    """`loss.sequence_chunk_size`: generative sequences (plain, cached layouts with 4D masks, relevance
    prompts) and query-likelihood groups run a few rows at a time, each chunk cut to its longest row; the
    losses and every gradient are those of the whole padded batch."""
    from grit_components.training.trainer import GritTrainer

    collator = GritCollator(tiny, generative_max_length=1024, rerank_passage_tokens=40)
    generative = [RagRecord("What is X?", DOCS, "multi_doc", "embedding", "Alum"),
                  PointwiseRecord("temple", DOCS[0], True),
                  RagRecord("What is described as 'a war in Bohemia'?", DOCS[1:], "query_doc", "causal", "Hussite Wars"),
                  RagRecord("Y?", DOCS[:1], "doc_first", "causal", "Parthenon, a temple")]
    groups = [RankingGroup("temple in Athens", DOCS, score="query_likelihood"),
              RankingGroup("salt used to purify water", (DOCS[1], DOCS[2], DOCS[0]), score="query_likelihood")]
    batch = {**collator.generative_batch(generative), **collator.ranking_batch(groups)}
    assert len(set(batch["gen_lengths"].tolist())) == 4 and len(set(batch["rank_lengths"].tolist())) > 1
    wrapper = GritTrainingModel(tiny.model)

    def run(chunk_size):
        trainer = GritTrainer.__new__(GritTrainer)  # only grit_losses is used: no Trainer set-up needed
        trainer.rep_weight = trainer.gen_weight = trainer.rank_weight = trainer.rank_lm_weight = 1.0
        trainer.gen_averaging, trainer.sequence_chunk_size, trainer.gradcache_chunk_size = averaging, chunk_size, None
        wrapper.zero_grad()
        losses = trainer.grit_losses(wrapper, batch)
        (losses["loss_gen"] + losses["loss_rank"]).backward()
        return losses, {name: p.grad.clone() for name, p in wrapper.named_parameters() if p.grad is not None}

    padded, padded_grads = run(None)
    for size in (1, 3):
        chunked, grads = run(size)
        for name in ("loss_gen", "loss_rank"):
            torch.testing.assert_close(chunked[name], padded[name], atol=1e-5, rtol=1e-5)
        assert grads.keys() == padded_grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(grad, padded_grads[name], atol=1e-5, rtol=1e-4)
