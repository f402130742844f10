"""GritAnswerabilityPostprocessor: LlamaIndex base class and serialisation, nodes kept or all dropped by the
core gate, a query engine answering with its no-nodes response, bad input; and (integration) the shipped
model's gate over real passages."""

from __future__ import annotations

import pytest
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.postprocessor.grit_answerability import GritAnswerabilityPostprocessor

from grit_components import ModelRegistry

WEIGHTS = {"query_likelihood_gain": 1.0, "cosine": 1.0, "bias": 0.0, "max_passage_tokens": 64}
TEXTS = ["Paris is the capital of France.", "Cats purr when content.", "The Seine flows through Paris."]


def make_nodes(texts=TEXTS):
    return [NodeWithScore(node=TextNode(text=text), score=1.0 - 0.1 * i) for i, text in enumerate(texts)]


def test_class_and_serialisation(tiny_grit_dir):
    assert BaseNodePostprocessor in GritAnswerabilityPostprocessor.__mro__
    assert GritAnswerabilityPostprocessor.class_name() == "GritAnswerabilityPostprocessor"
    registry = ModelRegistry()
    gate = GritAnswerabilityPostprocessor(tiny_grit_dir, threshold=0.5, weights=WEIGHTS, batch_size=2,
                                          registry=registry)
    data = gate.to_dict()
    assert registry.loads == 0
    assert {k: data[k] for k in ("class_name", "model", "threshold", "weights", "batch_size")} == {
        "class_name": "GritAnswerabilityPostprocessor", "model": tiny_grit_dir, "threshold": 0.5,
        "weights": WEIGHTS, "batch_size": 2}
    assert GritAnswerabilityPostprocessor.from_dict(data).to_dict() == data


def test_bad_settings_name_the_field(tiny_grit_dir):
    with pytest.raises(ValueError, match="bias must be a finite number"):
        GritAnswerabilityPostprocessor(tiny_grit_dir, weights={**WEIGHTS, "bias": "x"})
    with pytest.raises(ValueError, match="batch_size"):
        GritAnswerabilityPostprocessor(tiny_grit_dir, batch_size=0)
    with pytest.raises(ValueError, match="declares no answerability gate"):
        GritAnswerabilityPostprocessor(tiny_grit_dir).warm_up()


def test_keeps_every_node_or_none_as_the_core_decides(tiny_grit_dir):
    keep = GritAnswerabilityPostprocessor(tiny_grit_dir, weights={**WEIGHTS, "bias": 100.0})
    nodes = make_nodes()
    kept = keep.postprocess_nodes(nodes, query_str="capital of France")
    assert [n.node.text for n in kept] == TEXTS and [n.score for n in kept] == [n.score for n in nodes]
    drop = GritAnswerabilityPostprocessor(tiny_grit_dir, weights={**WEIGHTS, "bias": -100.0})
    assert drop.postprocess_nodes(make_nodes(), query_str="capital of France") == []

    verdict = keep.judge(make_nodes(), QueryBundle("capital of France"))
    core = keep.gate.judge("capital of France", TEXTS)
    assert verdict.score == pytest.approx(core.score) and verdict.answerable
    # the threshold is the decision point on that same score
    edge = GritAnswerabilityPostprocessor(tiny_grit_dir, weights=WEIGHTS, threshold=core.score - 100.0 + 0.01)
    assert edge.postprocess_nodes(make_nodes(), query_str="capital of France") == []


def test_bad_queries(tiny_grit_dir):
    gate = GritAnswerabilityPostprocessor(tiny_grit_dir, weights=WEIGHTS)
    with pytest.raises(ValueError, match="needs the query"):
        gate.postprocess_nodes(make_nodes())
    with pytest.raises(ValueError, match="non-empty"):
        gate.postprocess_nodes(make_nodes(), query_str="  ")


@pytest.mark.integration
def test_the_shipped_gate_in_a_query_engine(grit_smol):
    """With the shipped model's own gate: a passage that answers the question is kept, passages about other
    things are dropped, and a stock query engine then gives its no-nodes response instead of an answer."""
    from llama_index.core import VectorStoreIndex
    from llama_index.embeddings.grit import GritEmbedding
    from llama_index.llms.grit import GritLLM

    gate = GritAnswerabilityPostprocessor()
    answering = ["Diogenes the Cynic, also known as Diogenes of Sinope, was an ancient Greek philosopher and one of "
                 "the founders of Cynicism."]
    unrelated = ["Carpenter ants are a genus of ants found nearly worldwide except in Antarctica.",
                 "The rock dove is a member of the bird family Columbidae."]
    question = "Which school of philosophy did Diogenes of Sinope found?"
    assert len(gate.postprocess_nodes(make_nodes(answering + unrelated), query_str=question)) == 3
    assert gate.postprocess_nodes(make_nodes(unrelated), query_str=question) == []

    index = VectorStoreIndex([TextNode(text=text) for text in unrelated], embed_model=GritEmbedding())
    engine = index.as_query_engine(llm=GritLLM(max_new_tokens=16), similarity_top_k=2, node_postprocessors=[gate])
    response = engine.query(question)
    assert response.source_nodes == [] and str(response) == "Empty Response"
