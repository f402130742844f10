"""benchmarks/answerability.py: the relevance signals, the gate fitted on calibration queries and its
refusal rates (mechanics, on a tiny random model and a tiny BEIR folder)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import answerability
from benchmarks.host import CPU_FLAGS, cpu_flags

pytestmark = pytest.mark.usefixtures("one_thread")


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


@pytest.fixture()
def tiny_beir(tmp_path):
    topics = ["river", "castle", "violin", "comet", "glacier", "falcon", "harbor", "lantern", "meadow", "orchard",
              "pyramid", "quarry", "saddle", "temple", "volcano", "walrus"]
    corpus = [{"_id": f"d{i}", "title": topic.title(), "text": f"The {topic} is item {i}, known for {topic} things."}
              for i, topic in enumerate(topics)]
    for name in ("corpus.jsonl", "corpus-2k.jsonl"):
        _write_jsonl(tmp_path / name, corpus)
    (tmp_path / "dev").mkdir()
    _write_jsonl(tmp_path / "dev" / "queries.jsonl",
                 [{"_id": f"q{i}", "text": f"item known for {t} things", "metadata": {"answer": t.title()}}
                  for i, t in enumerate(topics[:12])])
    (tmp_path / "dev" / "qrels.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(12)), encoding="utf-8")
    _write_jsonl(tmp_path / "facts.jsonl", [{"_id": "f0", "question": "What is item 3?", "answer": "Comet", "gold": "d3"},
                                            {"_id": "f1", "question": "What is item 5?", "answer": "Falcon", "gold": "d5"}])
    return tmp_path


def test_auc_counts_pairs_and_ties():
    assert answerability.auc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert answerability.auc(np.array([0.0]), np.array([1.0])) == 0.0
    assert answerability.auc(np.array([1.0, 2.0]), np.array([1.0])) == 0.75


def test_gate_is_fitted_on_calibration_queries_and_reports_what_it_refuses(tiny_llama_dir, tiny_beir, tmp_path):
    output = tmp_path / "answerability.json"
    results = answerability.main(["--model", str(tiny_llama_dir), "--data", str(tiny_beir), "--evaluation", "4",
                                  "--calibration-end", "12", "--fact-questions", str(tiny_beir / "facts.jsonl"),
                                  "--fact-corpus", str(tiny_beir / "corpus-2k.jsonl"), "--new-tokens", "2",
                                  "--output", str(output)])
    assert json.loads(output.read_text()) == json.loads(json.dumps(results))
    report = results["models"][str(tiny_llama_dir)]
    gate, wiki, facts = report["gate"], report["wikidesc_dev"], report["fact_questions"]
    assert gate["calibration_queries"] == 8 and wiki["queries"] == 4 and facts["questions"] == 2
    signals = report["records"]["wikidesc_signals"]
    assert len(signals) == 12 and all(len(s["pmi"]) == len(s["cos"]) == 5 for s in signals.values())
    # a set's score is the fitted linear function of its best PMI and best cosine, shifted by the threshold
    first = signals["q0"]
    gold_score = np.dot(gate["weights"], [first["pmi"][0], first["cos"][0]]) + gate["bias"]
    assert gold_score == pytest.approx(gate["scores"]["wikidesc_dev"]["gold"][0])
    # the reported rates are the shares of sets scoring below zero
    for kind, key in (("without_gold_3", "gate_refusals_without_gold_3"), ("gold", "gate_false_refusals_gold"),
                      ("gold_3", "gate_false_refusals_gold_3")):
        assert wiki[key] == np.mean(np.array(gate["scores"]["wikidesc_dev"][kind]) < 0)
    assert facts["gate_refusals_without_gold_3"] == np.mean(np.array(gate["scores"]["fact_questions"]["without_gold_3"]) < 0)
    assert len(report["records"]["answers"]["wikidesc_without_gold_3"]) == 4
    assert 0.0 <= wiki["generator_refusals_without_gold_3"] <= 1.0 and 0.0 <= wiki["auc_gold_3_vs_without"] <= 1.0
    assert results["setup"]["host"]["cpu_flags"] == cpu_flags()


def test_saved_weights_are_what_the_gate_component_applies(tiny_llama_dir, tiny_beir, tmp_path):
    import shutil

    from grit_components import GritAnswerabilityGate, ModelRegistry
    from grit_components.metadata import ModelMetadata

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_llama_dir, model_dir)
    args = ["--model", str(model_dir), "--data", str(tiny_beir), "--evaluation", "4", "--calibration-end", "12",
            "--fact-questions", str(tiny_beir / "facts.jsonl"), "--fact-corpus", str(tiny_beir / "corpus-2k.jsonl"),
            "--new-tokens", "1", "--output", str(tmp_path / "a.json")]
    with pytest.raises(SystemExit):
        answerability.main([*args, "--model", "other", "--save-weights", str(model_dir)])  # one model only
    report = answerability.main([*args, "--save-weights", str(model_dir)])["models"][str(model_dir)]
    saved = ModelMetadata.read(model_dir).answerability
    assert [saved.query_likelihood_gain, saved.cosine] == pytest.approx(report["gate"]["weights"])
    assert saved.bias == pytest.approx(report["gate"]["bias"]) and "dev queries 5-12" in saved.fitted_on
    # the component, reading the saved gate (a new registry: this process loaded the model before it was saved), scores the first evaluation query's gold passage as the benchmark did
    verdict = GritAnswerabilityGate(str(model_dir), registry=ModelRegistry()).judge("item known for river things",
                                                                        ["The river is item 0, known for river things."])
    assert verdict.score == pytest.approx(report["gate"]["scores"]["wikidesc_dev"]["gold"][0], abs=1e-3)


def test_pmi_is_query_likelihood_over_the_empty_passage(tiny_model):
    from grit_components.rerank import query_likelihood_scores

    passages = ["The comet is bright.", "The walrus swims."]
    sig = answerability.signals(tiny_model, "a bright comet", passages, "")
    ql = query_likelihood_scores(tiny_model, "a bright comet", passages, max_passage_tokens=answerability.PASSAGE_TOKENS)
    null = query_likelihood_scores(tiny_model, "a bright comet", [""], max_passage_tokens=answerability.PASSAGE_TOKENS)
    assert sig["pmi"] == pytest.approx((ql - null[0]).tolist())
    assert len(sig["cos"]) == 2 and all(-1.0 <= c <= 1.0 + 1e-6 for c in sig["cos"])


def test_cpu_flags_are_among_the_known_ones():
    assert set(cpu_flags()) <= set(CPU_FLAGS)
