"""GritRanker: init, serialization, input checks, top_k, and ranking with a tiny model."""

from __future__ import annotations

import asyncio
import copy

import pytest
from haystack import Document
from haystack.utils import ComponentDevice, Secret

from grit_components import DEFAULT_QUERY_INSTRUCTION
from haystack_integrations.components.rankers.grit import GritRanker

TOKEN_DICT = {"type": "env_var", "env_vars": ["HF_API_TOKEN", "HF_TOKEN"], "strict": False}

TYPE = "haystack_integrations.components.rankers.grit.ranker.GritRanker"
DOCS = [Document(content="Paris is the capital of France."), Document(content="Bananas are yellow."),
        Document(content="Berlin is the capital of Germany."), Document(content="Rust is a language.")]


def test_init_defaults():
    ranker = GritRanker()
    assert (ranker.top_k, ranker.first_stage, ranker.first_stage_top_k, ranker.cross_encoder) == (
        10, "bi_encoder", 10, None)
    assert ranker.scale_score is False and ranker.score_threshold is None and ranker._reranker is None


def test_to_dict_defaults():
    assert GritRanker().to_dict() == {
        "type": TYPE,
        "init_parameters": {
            "model": "grit-smollm2-135m",
            "top_k": 10,
            "first_stage": "bi_encoder",
            "first_stage_top_k": 10,
            "cross_encoder": None,
            "query_instruction": None,
            "meta_fields_to_embed": [],
            "embedding_separator": "\n",
            "max_passage_tokens": None,
            "batch_size": 8,
            "scale_score": False,
            "score_threshold": None,
            "device": None,
            "dtype": None,
            "revision": None,
            "token": TOKEN_DICT,
            "trust_remote_code": False,
        },
    }


def test_from_dict_round_trip(tiny):
    ranker = GritRanker(tiny, top_k=3, first_stage="none", first_stage_top_k=None, cross_encoder="listwise",
                        query_instruction="Find", meta_fields_to_embed=["title"], embedding_separator=" - ",
                        max_passage_tokens=64, batch_size=2, scale_score=True, score_threshold=0.1,
                        device=ComponentDevice.from_str("cpu"), dtype="float32",
                        token=Secret.from_env_var("MY_TOKEN", strict=False))
    data = ranker.to_dict()
    restored = GritRanker.from_dict(copy.deepcopy(data))
    assert restored.to_dict() == data
    assert restored.first_stage_top_k is None and restored.cross_encoder == "listwise"


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"top_k": 0}, ValueError), ({"top_k": -1}, ValueError), ({"top_k": "3"}, TypeError),
    ({"first_stage_top_k": 0}, ValueError), ({"first_stage": "bm25"}, ValueError),
    ({"cross_encoder": "colbert"}, ValueError), ({"first_stage": "none", "cross_encoder": "none"}, ValueError),
    ({"scale_score": 1}, TypeError), ({"score_threshold": "0.5"}, TypeError), ({"device": "cpu"}, TypeError),
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
