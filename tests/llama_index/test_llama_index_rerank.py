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
                        query_instruction="Find it", scale_score=False, deduplicate=True,
                        model_kwargs={"attn_implementation": "eager"}, registry=registry)
    data = rerank.to_dict()
    assert registry.loads == 0
    assert {k: data[k] for k in ("class_name", "model", "top_n", "first_stage_top_n", "mode", "keep_retrieval_score",
                                 "query_instruction", "scale_score", "deduplicate", "model_kwargs")} == {
        "class_name": "GritRerank", "model": tiny_grit_dir, "top_n": 2, "first_stage_top_n": 4, "mode": "listwise",
        "keep_retrieval_score": True, "query_instruction": "Find it", "scale_score": False, "deduplicate": True,
        "model_kwargs": {"attn_implementation": "eager"}}
    assert GritRerank(tiny_grit_dir).scale_score is True
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
    core = GritReranker(tiny_grit_dir, top_k=3, first_stage_top_k=4, cross_encoder=mode)  # scaled by default too
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


def test_scores_in_0_1_by_default_and_raw_on_request(tiny_grit_dir):
    scaled = GritRerank(tiny_grit_dir, top_n=5, first_stage="retriever", mode="pointwise").postprocess_nodes(
        make_nodes(), query_str=QUERY)
    raw = GritRerank(tiny_grit_dir, top_n=5, first_stage="retriever", mode="pointwise",
                     scale_score=False).postprocess_nodes(make_nodes(), query_str=QUERY)
    assert all(0 < n.score < 1 for n in scaled)
    np.testing.assert_allclose([n.score for n in scaled], [1 / (1 + np.exp(-n.score)) for n in raw], rtol=1e-6)


def test_every_node_is_kept_and_deduplicate_is_by_node_id(tiny_grit_dir):
    same_text = [NodeWithScore(node=TextNode(text=TEXTS[1], id_="a"), score=0.5),
                 NodeWithScore(node=TextNode(text=TEXTS[1], id_="b"), score=0.4)]
    out = GritRerank(tiny_grit_dir, top_n=5, mode="none").postprocess_nodes(same_text + make_nodes()[:1],
                                                                            query_str=QUERY)
    assert {n.node.node_id for n in out} >= {"a", "b"} and len(out) == 3  # same text, two nodes: both kept
    repeated = [NodeWithScore(node=TextNode(text=TEXTS[1], id_="a"), score=0.2),
                NodeWithScore(node=TextNode(text=TEXTS[1], id_="a"), score=0.9)]
    rerank = GritRerank(tiny_grit_dir, top_n=5, mode="none", deduplicate=True, keep_retrieval_score=True)
    out = rerank.postprocess_nodes(repeated, query_str=QUERY)
    assert len(out) == 1 and out[0].node.metadata["retrieval_score"] == 0.9
