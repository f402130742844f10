"""Evaluation harness: metrics against hand-computed values, BEIR loading, Qdrant search, BM25,
the corpus-embedding cache, and `grit eval retrieval` end to end on a toy set with a tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from grit_components.evaluation import cached_embed, evaluate_run, load_beir
from grit_components.evaluation import retrieval as ev

# 3 queries, 6 passages.
QRELS = {"q1": {"d1": 1}, "q2": {"d2": 1, "d3": 1}, "q3": {"d6": 1}}
RUN = {"q1": ["d2", "d1", "d3"], "q2": ["d3", "d4", "d2"], "q3": ["d1", "d2"]}


def test_metrics_equal_hand_computed_values():
    means, per_query = evaluate_run(QRELS, RUN)
    # q1: relevant at rank 2 -> DCG 1/log2(3), ideal 1. q2: relevant at ranks 1 and 3 -> DCG 1 + 1/log2(4),
    # ideal 1 + 1/log2(3). q3: relevant passage not retrieved.
    ndcg = {"q1": 1 / math.log2(3), "q2": (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)), "q3": 0.0}
    for q, value in ndcg.items():
        assert per_query["ndcg@10"][q] == pytest.approx(value, abs=1e-9)
    assert means["ndcg@10"] == pytest.approx(sum(ndcg.values()) / 3, abs=1e-9)
    assert means["recall@10"] == pytest.approx(2 / 3)
    assert means["recall@100"] == pytest.approx(2 / 3)
    assert per_query["mrr@10"] == pytest.approx({"q1": 0.5, "q2": 1.0, "q3": 0.0})
    assert means["mrr@10"] == pytest.approx(0.5)


def test_metrics_cutoff_and_ranked_order_is_kept():
    # Relevant at rank 11: outside @10, inside @100. Document ids sort differently from the ranking:
    # the given order must be used, not an id order.
    run = {"q1": [f"x{i:02d}" for i in range(10, 0, -1)] + ["d1"]}
    means, _ = evaluate_run({"q1": {"d1": 1}}, run)
    assert means["ndcg@10"] == 0.0 and means["recall@10"] == 0.0 and means["mrr@10"] == 0.0
    assert means["recall@100"] == 1.0
    means, _ = evaluate_run({"q1": {"a": 1}}, {"q1": ["z", "a"]})
    assert means["mrr@10"] == 0.5


def test_metrics_reject_unjudged_queries_and_empty_runs():
    with pytest.raises(ValueError, match="no relevance judgements"):
        evaluate_run(QRELS, {"q9": ["d1"]})
    with pytest.raises(ValueError, match="empty"):
        evaluate_run(QRELS, {})
    means, _ = evaluate_run(QRELS, {"q1": []})
    assert means["ndcg@10"] == 0.0


def write_toy_beir(root: Path) -> Path:
    passages = {
        "d1": ("Paris", "Paris is the capital and largest city of France."),
        "d2": ("Honey bee", "Honey bees collect nectar from flowers and make honey in wax combs."),
        "d3": ("Tokyo", "Tokyo is the capital of Japan and a huge metropolitan area."),
        "d4": ("Football", "An association football team fields eleven players on the pitch."),
        "d5": ("Tides", "Ocean tides are caused by the gravitational pull of the Moon."),
        "d6": ("Light", "Light travels through a vacuum at about 300,000 kilometres per second."),
    }
    queries = {"q1": "capital of France", "q2": "bees making honey", "q3": "speed of light in vacuum"}
    qrels = {"q1": "d1", "q2": "d2", "q3": "d6"}
    root.mkdir(parents=True, exist_ok=True)
    (root / "dev").mkdir(exist_ok=True)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as out:
        for doc_id, (title, text) in passages.items():
            out.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with open(root / "dev" / "queries.jsonl", "w", encoding="utf-8") as out:
        for query_id, text in queries.items():
            out.write(json.dumps({"_id": query_id, "text": text}) + "\n")
    (root / "dev" / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t1\n" for q, d in qrels.items()), encoding="utf-8")
    return root


def test_load_beir(tmp_path):
    dataset = load_beir(write_toy_beir(tmp_path / "toy"))
    assert list(dataset.queries) == ["q1", "q2", "q3"]
    assert dataset.qrels["q3"] == {"d6": 1}
    assert dataset.document_text("d1") == "Paris Paris is the capital and largest city of France."
    assert list(dataset.subset(2).queries) == ["q1", "q2"]
    with pytest.raises(FileNotFoundError):
        load_beir(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="corpus"):
        load_beir(tmp_path / "toy", corpus_file="nope.jsonl")


def test_load_wikidesc(wikidesc_dir):
    dataset = load_beir(wikidesc_dir, corpus_file="corpus-2k.jsonl")
    assert len(dataset.corpus) == 2000 and len(dataset.queries) == 400
    assert all(len(rel) == 1 for rel in dataset.qrels.values())


def test_qdrant_search_finds_nearest():
    docs = np.eye(4, dtype=np.float32)
    queries = np.array([[0.1, 0.9, 0, 0], [0, 0, 0.2, 1.0]], dtype=np.float32)
    hits = ev.qdrant_search(["a", "b", "c", "d"], docs, queries, k=2)
    assert [h[0][0] for h in hits] == ["b", "d"]
    assert [h[1][0] for h in hits] == ["a", "c"]
    assert len(hits[0]) == 2


def test_bm25_first_stage(tmp_path):
    dataset = load_beir(write_toy_beir(tmp_path / "toy"))
    result = ev.bm25_first_stage(dataset)
    assert result.run["q1"][0][0] == "d1"
    assert result.run["q2"][0][0] == "d2"
    means, _ = ev.score(result, dataset)
    assert means["recall@100"] == 1.0


def test_corpus_embedding_cache(tiny_model, tmp_path):
    texts = ["first passage", "a second, longer passage about something else"]
    first, cached = cached_embed(tiny_model, texts, cache_directory=tmp_path, progress_bar=False)
    assert not cached
    again, cached = cached_embed(tiny_model, texts, cache_directory=tmp_path, progress_bar=False)
    assert cached and np.array_equal(first, again)
    assert len(list(tmp_path.glob("*.npy"))) == 1
    # Different settings or texts are different entries.
    _, cached = cached_embed(tiny_model, texts, attention="causal", pooling="weighted_mean", cache_directory=tmp_path,
                             progress_bar=False)
    assert not cached
    _, cached = cached_embed(tiny_model, texts[:1], cache_directory=tmp_path, progress_bar=False)
    assert not cached
    assert len(list(tmp_path.glob("*.npy"))) == 3


def test_rerank_first_stage_keeps_tail_and_reorders_top(tiny_model, tmp_path):
    dataset = load_beir(write_toy_beir(tmp_path / "toy"))
    first = ev.SystemResult("toy", {q: [(d, 1.0 - i / 10) for i, d in enumerate(["d3", "d4", "d5", "d1", "d2", "d6"])]
                                    for q in dataset.queries})
    cache = ev.PointwiseScoreCache(tiny_model)
    result = ev.rerank_first_stage(first, dataset, mode="pointwise", model=tiny_model, depth=3, pointwise_cache=cache,
                                   progress_bar=False)
    for q in dataset.queries:
        top = [d for d, _ in result.run[q]]
        assert sorted(top[:3]) == ["d3", "d4", "d5"] and top[3:] == ["d1", "d2", "d6"]
        scores = [s for _, s in result.run[q][:3]]
        assert scores == sorted(scores, reverse=True)
    assert len(cache.scores) == 9
    ev.rerank_first_stage(first, dataset, mode="pointwise", model=tiny_model, depth=3, pointwise_cache=cache,
                          progress_bar=False)
    assert len(cache.scores) == 9  # nothing scored twice


def test_cli_eval_retrieval(tiny_llama_dir, tmp_path):
    from typer.testing import CliRunner

    from grit_components.cli import app

    data = write_toy_beir(tmp_path / "toy")
    out = tmp_path / "report.json"
    args = ["eval", "retrieval", "--data", str(data), "--model", str(tiny_llama_dir), "--rerank", "pointwise",
            "--rerank", "listwise", "--rerank-depth", "3", "--rerank-systems", "grit", "--output", str(out),
            "--cache-dir", str(tmp_path / "cache"), "--baseline", "none", "--query-instruction", "Find the passage"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "nDCG@10" in result.output and "BM25" in result.output
    report = json.loads(out.read_text())
    assert [s["kind"] for s in report["systems"]] == ["bm25", "grit"]
    assert report["systems"][1]["notes"]["corpus_embeddings_from_cache"] is False
    assert [r["name"].rsplit(" + ", 1)[1] for r in report["reranked"]] == ["pointwise", "listwise"]
    for item in report["reranked"]:
        assert set(item["metrics"]) == {"ndcg@10", "recall@10", "recall@100", "mrr@10"}
        # Reranking only the top 3 cannot change Recall@100.
        assert item["metrics"]["recall@100"] == item["first_stage_metrics"]["recall@100"]
    answers = report["reranked"][1]["notes"]["listwise_answers"]  # the model's raw listwise answers, kept as evidence
    assert answers and all(t["answer"].startswith("[") and sorted(t["permutation"]) == list(range(len(t["window"])))
                           for trace in answers.values() for t in trace)
    again = CliRunner().invoke(app, [*args[:6], "--output", str(out), "--cache-dir", str(tmp_path / "cache"),
                                     "--baseline", "none", "--no-bm25", "--query-instruction", "Find the passage"])
    assert again.exit_code == 0, again.output
    assert json.loads(out.read_text())["systems"][0]["notes"]["corpus_embeddings_from_cache"] is True


def test_cli_eval_bad_input(tiny_llama_dir, tmp_path):
    from typer.testing import CliRunner

    from grit_components.cli import app

    data = write_toy_beir(tmp_path / "toy")
    result = CliRunner().invoke(app, ["eval", "retrieval", "--data", str(data), "--rerank", "sideways"])
    assert result.exit_code == 2 and "--rerank" in result.output
    result = CliRunner().invoke(app, ["eval", "retrieval", "--data", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "cannot load" in result.output
    result = CliRunner().invoke(app, ["eval", "retrieval", "--data", str(data), "--embedding", "sideways:mean"])
    assert result.exit_code == 2 and "--embedding" in result.output


@pytest.mark.parametrize(("file", "content", "match"), [
    ("dev/qrels.tsv", "query-id\tcorpus-id\tscore\nq1\td1\n", r"qrels.tsv:2: expected 3 tab-separated columns"),
    ("dev/qrels.tsv", "q1\td1\thigh\n", r"qrels.tsv:1: the score 'high' is not an integer"),
    ("corpus.jsonl", '{"text": "no id"}\n', r"corpus.jsonl:1: no '_id' field"),
    ("corpus.jsonl", '["a", "list"]\n', r"corpus.jsonl:1: expected a JSON object, got list"),
    ("dev/queries.jsonl", '{"_id": "q1"}\n', r"queries.jsonl:1: no 'text' field"),
])
def test_load_beir_names_the_file_and_line_of_a_bad_row(tmp_path, file, content, match):
    (tmp_path / "dev").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "Paris"}\n')
    (tmp_path / "dev" / "queries.jsonl").write_text('{"_id": "q1", "text": "capital of France"}\n')
    (tmp_path / "dev" / "qrels.tsv").write_text("q1\td1\t1\n")
    load_beir(tmp_path)  # valid as written
    (tmp_path / file).write_text(content)
    with pytest.raises(ValueError, match=match):
        load_beir(tmp_path)
