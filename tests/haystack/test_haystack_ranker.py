"""GritRanker: init, serialization, input checks, top_k, and ranking with a tiny model."""

from __future__ import annotations

import asyncio
import copy
import math
from dataclasses import replace

import pytest
from haystack import Document
from haystack.utils import ComponentDevice, Secret

from grit_components import DEFAULT_MODEL
from haystack_integrations.components.rankers.grit import GritRanker

TOKEN_DICT = {"type": "env_var", "env_vars": ["HF_API_TOKEN", "HF_TOKEN"], "strict": False}

TYPE = "haystack_integrations.components.rankers.grit.ranker.GritRanker"
DOCS = [Document(content="Paris is the capital of France."), Document(content="Bananas are yellow."),
        Document(content="Berlin is the capital of Germany."), Document(content="Rust is a language.")]


def test_init_defaults():
    ranker = GritRanker()
    assert (ranker.top_k, ranker.first_stage, ranker.first_stage_top_k, ranker.cross_encoder) == (
        10, "bi_encoder", 10, None)  # None: pointwise for a model trained to judge relevance
    assert ranker.scale_score is True and ranker.score_threshold is None and ranker.deduplicate is False
    assert ranker._core is None


def test_to_dict_defaults():
    assert GritRanker().to_dict() == {
        "type": TYPE,
        "init_parameters": {
            "model": DEFAULT_MODEL,
            "top_k": 10,
            "first_stage": "bi_encoder",
            "first_stage_top_k": 10,
            "cross_encoder": None,
            "query_instruction": None,
            "meta_fields_to_embed": [],
            "embedding_separator": "\n",
            "max_passage_tokens": None,
            "batch_size": 8,
            "scale_score": True,
            "score_threshold": None,
            "deduplicate": False,
            "device": None,
            "token": TOKEN_DICT,
            "model_kwargs": None,
            "tokenizer_kwargs": None,
        },
    }


def test_from_dict_round_trip(tiny):
    ranker = GritRanker(tiny, top_k=3, first_stage="none", first_stage_top_k=None, cross_encoder="listwise",
                        query_instruction="Find", meta_fields_to_embed=["title"], embedding_separator=" - ",
                        max_passage_tokens=64, batch_size=2, scale_score=False, score_threshold=0.1,
                        deduplicate=True, device=ComponentDevice.from_str("cpu"),
                        token=Secret.from_env_var("MY_TOKEN", strict=False), model_kwargs={"torch_dtype": "float32"})
    data = ranker.to_dict()
    restored = GritRanker.from_dict(copy.deepcopy(data))
    assert restored.to_dict() == data
    assert restored.first_stage_top_k is None and restored.cross_encoder == "listwise"


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"top_k": 0}, ValueError), ({"top_k": -1}, ValueError), ({"top_k": "3"}, TypeError),
    ({"first_stage_top_k": 0}, ValueError), ({"first_stage": "bm25"}, ValueError),
    ({"cross_encoder": "colbert"}, ValueError), ({"first_stage": "none", "cross_encoder": "none"}, ValueError),
    ({"scale_score": 1}, TypeError), ({"score_threshold": "0.5"}, TypeError), ({"device": "cpu"}, TypeError),
    ({"deduplicate": "no"}, TypeError),
])
def test_init_rejects_bad_values(kwargs, error):
    with pytest.raises(error):
        GritRanker(**kwargs)


@pytest.mark.parametrize("cross_encoder", ["pointwise", "listwise", "none"])
def test_run(tiny, cross_encoder):
    ranker = GritRanker(tiny, top_k=2, cross_encoder=cross_encoder)
    ranker.warm_up()
    ranker.warm_up()
    out = ranker.run(query="capital of France", documents=DOCS)["documents"]
    assert len(out) == 2
    assert all(isinstance(d.score, float) for d in out)
    assert out[0].score >= out[1].score
    assert {d.id for d in out} <= {d.id for d in DOCS}
    assert all("first_stage_score" in d.meta for d in out)
    assert DOCS[0].score is None  # inputs are not mutated


def test_run_top_k_override_and_async(tiny):
    ranker = GritRanker(tiny, top_k=3, cross_encoder="none")
    assert len(ranker.run(query="capital", documents=DOCS, top_k=1)["documents"]) == 1
    assert len(asyncio.run(ranker.run_async(query="capital", documents=DOCS))["documents"]) == 3
    with pytest.raises(ValueError):
        ranker.run(query="capital", documents=DOCS, top_k=0)


def test_first_stage_reuses_document_embeddings(tiny):
    from haystack_integrations.components.embedders.grit import GritDocumentEmbedder

    embedded = GritDocumentEmbedder(tiny, progress_bar=False).run(DOCS)["documents"]
    ranker = GritRanker(tiny, top_k=4, cross_encoder="none")
    with_vectors = ranker.run(query="capital", documents=embedded)["documents"]
    without = ranker.run(query="capital", documents=DOCS)["documents"]
    assert [d.id for d in with_vectors] == [d.id for d in without]
    assert [d.score for d in with_vectors] == pytest.approx([d.score for d in without], abs=1e-4)


def test_empty_and_wrong_inputs(tiny):
    ranker = GritRanker(tiny)
    assert ranker.run(query="q", documents=[]) == {"documents": []}
    with pytest.raises(TypeError):
        ranker.run(query="q", documents=["text"])
    with pytest.raises(TypeError):
        ranker.run(query=None, documents=DOCS)
    with pytest.raises(ValueError):
        ranker.run(query="", documents=DOCS)


def test_scores_in_0_1_by_default_and_run_time_scale_score_and_threshold(tiny):
    ranker = GritRanker(tiny, top_k=4, first_stage="none", cross_encoder="pointwise")
    scaled = ranker.run(query="capital of France", documents=DOCS)["documents"]
    assert all(0.0 < d.score < 1.0 for d in scaled)
    raw = ranker.run(query="capital of France", documents=DOCS, scale_score=False)["documents"]
    assert [d.id for d in raw] == [d.id for d in scaled]
    assert [d.score for d in scaled] == pytest.approx([1 / (1 + math.exp(-d.score)) for d in raw])
    threshold = scaled[1].score
    kept = ranker.run(query="capital of France", documents=DOCS, score_threshold=threshold)["documents"]
    assert [d.id for d in kept] == [d.id for d in scaled[:2]]
    assert asyncio.run(ranker.run_async(query="capital of France", documents=DOCS, top_k=1, scale_score=False,
                                        score_threshold=-1e9))["documents"][0].score == pytest.approx(raw[0].score)


def test_every_document_is_ranked_even_with_repeated_content(tiny):
    # One paragraph in two files: same text, different meta and ids; both keep their citation.
    first = Document(content="Paris is the capital of France.", meta={"file_path": "a.txt"})
    second = Document(content="Paris is the capital of France.", meta={"file_path": "b.txt"})
    ranker = GritRanker(tiny, top_k=10, cross_encoder="none")
    out = ranker.run(query="capital of France", documents=[first, DOCS[1], second])["documents"]
    assert {d.meta["file_path"] for d in out if "file_path" in d.meta} == {"a.txt", "b.txt"} and len(out) == 3
    scores = {d.meta.get("file_path"): d.score for d in out}
    assert scores["a.txt"] == pytest.approx(scores["b.txt"])


def test_deduplicate_ranks_each_id_once_keeping_the_best_incoming_score(tiny):
    low, high = replace(DOCS[0], score=0.1), replace(DOCS[0], score=0.9)
    ranker = GritRanker(tiny, top_k=10, cross_encoder="none", deduplicate=True)
    out = ranker.run(query="capital", documents=[low, DOCS[1], high])["documents"]
    assert sorted(d.id for d in out) == sorted([DOCS[0].id, DOCS[1].id])
    assert len(GritRanker(tiny, top_k=10, cross_encoder="none").run(
        query="capital", documents=[low, DOCS[1], high])["documents"]) == 3


def test_documents_without_text_are_left_out_with_a_log(tiny, caplog):
    ranker = GritRanker(tiny, top_k=10, cross_encoder="none")
    empty = Document(content="")
    with caplog.at_level("WARNING"):
        out = ranker.run(query="capital", documents=[empty, DOCS[0]])["documents"]
    assert [d.id for d in out] == [DOCS[0].id]
    assert "1 Documents have no text to rank" in caplog.text and empty.id in caplog.text
    assert ranker.run(query="capital", documents=[empty]) == {"documents": []}
