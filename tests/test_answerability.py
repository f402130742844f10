"""GritAnswerabilityGate: the gate's weights in grit_model.json, its features against the ranker's, its
decision and threshold, bad input; and (integration) the shipped model's gate on WikiDesc and against the
scores `benchmarks/answerability.py` recorded for it."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from grit_components import Answerability, GritAnswerabilityGate
from grit_components.answerability import query_likelihood_gains
from grit_components.metadata import METADATA_FILE, AnswerabilityWeights, ModelMetadata
from grit_components.registry import ModelRegistry
from grit_components.rerank import cosine_scores, query_likelihood_scores

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = {"query_likelihood_gain": 1.5, "cosine": 3.0, "bias": -2.0, "max_passage_tokens": 64}
DOCS = ["Paris is the capital and largest city of France.", "Bananas are yellow fruit grown in the tropics."]


@pytest.fixture(scope="module")
def registry():
    return ModelRegistry()


@pytest.fixture(scope="module")
def gated_dir(tiny_llama_dir, tmp_path_factory):
    """The tiny model, declaring a gate in its grit_model.json."""
    target = tmp_path_factory.mktemp("gated") / "model"
    shutil.copytree(tiny_llama_dir, target)
    (target / METADATA_FILE).write_text(json.dumps({"format": 1, "answerability": WEIGHTS}))
    return target


def test_weights_round_trip_through_the_metadata_file(tmp_path):
    metadata = ModelMetadata.from_dict({"format": 1, "answerability": {**WEIGHTS, "fitted_on": "dev 101-300"}})
    assert metadata.answerability == AnswerabilityWeights(1.5, 3.0, -2.0, 64, "dev 101-300")
    metadata.write(tmp_path)
    assert ModelMetadata.read(tmp_path).answerability == metadata.answerability
    assert ModelMetadata.from_dict({"format": 1}).answerability is None
    assert "answerability" not in ModelMetadata().to_dict()
    assert metadata.answerability.score(2.0, 0.5) == pytest.approx(1.5 * 2.0 + 3.0 * 0.5 - 2.0)


@pytest.mark.parametrize("change, message", [
    ({"cosine": "high"}, "cosine must be a finite number"),
    ({"bias": float("nan")}, "bias must be a finite number"),
    ({"query_likelihood_gain": True}, "query_likelihood_gain must be a finite number"),
    ({"max_passage_tokens": 0}, "max_passage_tokens must be a positive int"),
    ({"threshold": 1.0}, "unknown field"),
])
def test_malformed_weights_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        ModelMetadata.from_dict({"format": 1, "answerability": {**WEIGHTS, **change}})
    with pytest.raises(ValueError, match=message):
        GritAnswerabilityGate("grit-smollm2-135m", weights={**WEIGHTS, **change})
    without = {k: v for k, v in WEIGHTS.items() if k != "cosine"}
    with pytest.raises(ValueError, match="cosine must be a finite number"):
        ModelMetadata.from_dict({"format": 1, "answerability": without})


def test_the_packaged_default_declares_its_gate():
    declared = json.loads((ROOT / "grit_components/adapters/grit-smollm2-135m" / METADATA_FILE).read_text())
    weights = ModelMetadata.from_dict(declared).answerability
    assert weights is not None and weights.query_likelihood_gain > 0 and weights.cosine > 0
    assert weights.max_passage_tokens == declared["pointwise_max_passage_tokens"]  # the ranker's passage length


def test_gains_are_query_likelihood_minus_an_empty_passage(tiny_model):
    query = "capital of France"
    gains = query_likelihood_gains(tiny_model, query, DOCS, max_passage_tokens=64)
    scores = query_likelihood_scores(tiny_model, query, [*DOCS, ""], max_passage_tokens=64)
    np.testing.assert_allclose(gains, scores[:2] - scores[2], atol=1e-5)
    # the same order as query likelihood within one query
    assert list(np.argsort(gains)) == list(np.argsort(scores[:2]))


def test_the_verdict_is_the_declared_gate_on_the_best_gain_and_cosine(gated_dir, registry):
    gate = GritAnswerabilityGate(str(gated_dir), registry=registry)
    gate.warm_up()
    model = gate.model
    verdict = gate.judge("capital of France", [DOCS[0], None, DOCS[1]])
    assert isinstance(verdict, Answerability)
    gains = query_likelihood_gains(model, "capital of France", DOCS, max_passage_tokens=64)
    cosines = cosine_scores(model, "capital of France", DOCS, query_instruction=gate.query_instruction)
    assert verdict.gain == pytest.approx(gains.max(), abs=1e-5)
    assert verdict.cosine == pytest.approx(cosines.max(), abs=1e-5)
    assert verdict.score == pytest.approx(1.5 * gains.max() + 3.0 * cosines.max() - 2.0, abs=1e-4)
    assert math.isnan(verdict.gains[1]) and math.isnan(verdict.cosines[1])  # no text: no evidence
    assert verdict.gains[0] == pytest.approx(gains[0], abs=1e-5)
    assert verdict.answerable == (verdict.score >= 0.0) and verdict.threshold == 0.0

    above = gate.judge("capital of France", DOCS, threshold=verdict.score - 0.01)
    below = gate.judge("capital of France", DOCS, threshold=verdict.score + 0.01)
    assert above.answerable and not below.answerable
    assert above.score == pytest.approx(below.score)


def test_given_weights_win_and_stored_embeddings_are_used(gated_dir, registry):
    always = GritAnswerabilityGate(str(gated_dir), weights={**WEIGHTS, "bias": 100.0}, registry=registry)
    never = GritAnswerabilityGate(str(gated_dir), weights=AnswerabilityWeights(1.5, 3.0, -100.0, 64),
                                  registry=registry)
    assert always.judge("capital of France", DOCS).answerable
    assert not never.judge("capital of France", DOCS).answerable

    gate = GritAnswerabilityGate(str(gated_dir), registry=registry)
    dim = gate.model.embedding_dim
    query = np.zeros(dim, dtype=np.float32)
    query[0] = 1.0
    stored = [query * 2, None]  # the first document's stored embedding points exactly along the query
    verdict = gate.judge("capital of France", DOCS, query_embedding=query, document_embeddings=stored)
    assert verdict.cosines[0] == pytest.approx(1.0)
    assert verdict.cosine == pytest.approx(1.0)


def test_no_passages_are_not_answerable(gated_dir, registry):
    gate = GritAnswerabilityGate(str(gated_dir), registry=registry)
    for documents in ([], ["", "   ", None]):
        verdict = gate.judge("capital of France", documents)
        assert not verdict.answerable and verdict.score == -math.inf and verdict.gain is None


def test_bad_input_names_the_parameter(gated_dir, tiny_llama_dir, registry):
    gate = GritAnswerabilityGate(str(gated_dir), registry=registry)
    with pytest.raises(TypeError, match="documents must be a list of str"):
        gate.judge("q", "one passage")
    with pytest.raises(TypeError, match=r"documents\[1\] must be a str"):
        gate.judge("q", ["a", 3])
    with pytest.raises(ValueError, match="query"):
        gate.judge("", DOCS)
    with pytest.raises(ValueError, match="document_embeddings has 1 entries for 2 documents"):
        gate.judge("q", DOCS, document_embeddings=[None])
    with pytest.raises(TypeError, match="threshold"):
        GritAnswerabilityGate(str(gated_dir), threshold="high", registry=registry)
    with pytest.raises(TypeError, match="weights must be"):
        GritAnswerabilityGate(str(gated_dir), weights=[1.0, 2.0, 3.0], registry=registry)
    undeclared = GritAnswerabilityGate(str(tiny_llama_dir), registry=registry)
    with pytest.raises(ValueError, match="declares no answerability gate"):
        undeclared.warm_up()


# -- the shipped model ----------------------------------------------------------------------------------


@pytest.mark.integration
def test_the_shipped_gate_reproduces_the_benchmark_and_separates_wikidesc(grit_smol, wikidesc_dir):
    """The component computes what benchmarks/answerability.py measured for the shipped adapter, and on
    WikiDesc dev queries the benchmark did not fit on, declines passages without the gold one far more often
    than the gold passage."""
    from benchmarks.rag_cache import bm25_distractors, load_wikidesc_dev

    gate = GritAnswerabilityGate("grit-smollm2-135m")
    declared = gate.weights
    fitted = [report for path in sorted((ROOT / "benchmarks/results").glob("answerability_*.json"))
              for report in json.loads(path.read_text())["models"].values()
              if np.allclose(report["gate"]["weights"], [declared.query_likelihood_gain, declared.cosine], atol=1e-3)
              and abs(report["gate"]["bias"] - declared.bias) < 1e-3]
    assert len(fitted) == 1, "the declared gate is the one a committed benchmarks/answerability.py run fitted"
    signals = fitted[0]["records"]["wikidesc_signals"]
    items = load_wikidesc_dev(wikidesc_dir, 24)
    declined_gold = declined_without = 0
    for item, distractors in zip(items, bm25_distractors(wikidesc_dir, items, 4)):
        texts = [item["passage"], *distractors]
        verdict = gate.judge(item["query"], texts)
        np.testing.assert_allclose(verdict.gains, signals[item["id"]]["pmi"], atol=0.02)
        np.testing.assert_allclose(verdict.cosines, signals[item["id"]]["cos"], atol=0.01)
        declined_gold += not gate.judge(item["query"], texts[:1]).answerable
        declined_without += not gate.judge(item["query"], distractors[:3]).answerable
    assert declined_gold <= 3
    assert declined_without >= declined_gold + 6
