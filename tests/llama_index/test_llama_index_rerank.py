"""GritRerank: LlamaIndex base-class checks, order equal to the core's, embedding reuse, events, bad inputs."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.postprocessor.grit_rerank import GritRerank

from grit_components import GritEmbedder, ModelRegistry
from grit_components.rerank import GritReranker

QUERY = "capital of France"
TEXTS = ["Berlin is the capital of Germany.", "Paris is the capital of France.", "Cats purr when content.",
         "France is a country in Europe.", "The Seine flows through Paris."]


def make_nodes(texts=TEXTS):
    return [NodeWithScore(node=TextNode(text=text), score=1.0 - 0.1 * i) for i, text in enumerate(texts)]


def test_class_and_serialisation(tiny_grit_dir):
    assert BaseNodePostprocessor.__name__ in [cls.__name__ for cls in GritRerank.__mro__]
    assert GritRerank.class_name() == "GritRerank"
    registry = ModelRegistry()
    rerank = GritRerank(tiny_grit_dir, top_n=2, first_stage_top_n=4, mode="listwise", keep_retrieval_score=True,
                        query_instruction="Find it", registry=registry)
    data = rerank.to_dict()
    assert registry.loads == 0
    assert {k: data[k] for k in ("class_name", "model", "top_n", "first_stage_top_n", "mode", "keep_retrieval_score",
                                 "query_instruction")} == {
        "class_name": "GritRerank", "model": tiny_grit_dir, "top_n": 2, "first_stage_top_n": 4, "mode": "listwise",
        "keep_retrieval_score": True, "query_instruction": "Find it"}
    assert GritRerank.from_dict(data).to_dict() == data


@pytest.mark.parametrize("kwargs", [{"top_n": 0}, {"top_n": -1}, {"first_stage_top_n": 0}, {"mode": "pairwise"},
                                    {"first_stage": "retriever", "mode": "none"}])
def test_bad_settings(tiny_grit_dir, kwargs):
    with pytest.raises(ValueError):
        GritRerank(tiny_grit_dir, **kwargs)


def test_bad_queries(tiny_grit_dir):
    rerank = GritRerank(tiny_grit_dir)
    with pytest.raises(ValueError):
        rerank.postprocess_nodes(make_nodes())
    with pytest.raises(ValueError):
        rerank.postprocess_nodes(make_nodes(), query_str="")
    assert rerank.postprocess_nodes([], query_str=QUERY) == []


@pytest.mark.parametrize("mode", ["pointwise", "listwise"])
def test_order_equals_the_core(tiny_grit_dir, mode):
    rerank = GritRerank(tiny_grit_dir, top_n=3, first_stage_top_n=4, mode=mode)
    core = GritReranker(tiny_grit_dir, top_k=3, first_stage_top_k=4, cross_encoder=mode)
    nodes = rerank.postprocess_nodes(make_nodes(), query_str=QUERY)
    expected = core.rerank(QUERY, TEXTS)
    assert [n.node.get_content() for n in nodes] == [TEXTS[r.index] for r in expected]
    np.testing.assert_allclose([n.score for n in nodes], [r.score for r in expected], rtol=1e-6)


def test_nodes_without_text_are_skipped_and_scores_kept(tiny_grit_dir):
    rerank = GritRerank(tiny_grit_dir, top_n=10, keep_retrieval_score=True)
    nodes = make_nodes([TEXTS[0], "", TEXTS[1], "   ", TEXTS[2]])
    out = rerank.postprocess_nodes(nodes, query_str=QUERY)
    assert sorted(n.node.get_content() for n in out) == sorted(TEXTS[:3])
    assert {n.node.get_content(): n.node.metadata["retrieval_score"] for n in out} == {
        TEXTS[0]: 1.0, TEXTS[1]: 0.8, TEXTS[2]: pytest.approx(0.6)}


def test_reuses_query_and_node_embeddings(tiny_grit_dir, monkeypatch):
    core = GritEmbedder(tiny_grit_dir)
    nodes = make_nodes()
    for node, vector in zip(nodes, core.embed_documents(TEXTS)):
        node.node.embedding = vector.tolist()
    bundle = QueryBundle(QUERY, embedding=core.embed_query(QUERY).tolist())
    rerank = GritRerank(tiny_grit_dir, top_n=5, mode="none")
    expected = [n.node.get_content() for n in rerank.postprocess_nodes(make_nodes(), query_bundle=QueryBundle(QUERY))]

    def no_embedding(*args, **kwargs):
        raise AssertionError("the model embedded something it was given")

    monkeypatch.setattr(rerank.reranker.model, "embed", no_embedding)
    out = rerank.postprocess_nodes(nodes, query_bundle=bundle)
    assert [n.node.get_content() for n in out] == expected


def test_emits_rerank_events_and_async_parity(tiny_grit_dir):
    seen = []

    class Recorder(BaseEventHandler):
        def handle(self, event, **kwargs):
            seen.append(event.class_name())

    dispatcher = get_dispatcher()
    handler = Recorder()
    dispatcher.add_event_handler(handler)
    try:
        rerank = GritRerank(tiny_grit_dir, top_n=2)
        sync = rerank.postprocess_nodes(make_nodes(), query_str=QUERY)
    finally:
        dispatcher.event_handlers.remove(handler)
    assert "ReRankStartEvent" in seen and "ReRankEndEvent" in seen
    asynchronous = asyncio.run(rerank.apostprocess_nodes(make_nodes(), query_str=QUERY))
    assert [n.node.get_content() for n in asynchronous] == [n.node.get_content() for n in sync]
