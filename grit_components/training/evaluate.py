"""Evaluation during training: nDCG@10 / Recall@10 on a small BEIR dev sample, and L_gen on dev answers.

Kept small on purpose (a sample of queries over their relevant passages plus distractors) so that it can
run every few hundred steps on a CPU; measure final numbers with the full evaluation harness.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grit_components.grit_model import GritModel


@dataclass
class RetrievalEvalSet:
    """Queries, a passage list and, per query, {passage index: relevance}."""

    queries: list[str]
    passages: list[str]
    relevant: list[dict[int, int]]

    @classmethod
    def from_beir(cls, data_dir, *, split: str = "dev", corpus_file: str | None = None,
                  max_queries: int | None = 100, max_corpus: int | None = 500) -> RetrievalEvalSet:
        """The first `max_queries` queries; corpus = their relevant passages, then others in file order up to
        `max_corpus` passages in all."""
        from grit_components.evaluation.data import load_beir

        beir = load_beir(data_dir, split=split, corpus_file=corpus_file).subset(max_queries)
        needed = list(dict.fromkeys(d for q in beir.queries for d in beir.qrels[q]))
        others = [d for d in beir.corpus if d not in set(needed)]
        limit = len(beir.corpus) if max_corpus is None else max(max_corpus, len(needed))
        doc_ids = needed + others[: max(0, limit - len(needed))]
        position = {d: i for i, d in enumerate(doc_ids)}
        return cls(list(beir.queries.values()), [beir.document_text(d) for d in doc_ids],
                   [{position[d]: s for d, s in beir.qrels[q].items()} for q in beir.queries])


def ranking_metrics(scores: np.ndarray, relevant: list[dict[int, int]], k: int = 10) -> dict[str, float]:
    """Mean nDCG@k (graded gains, log2 discount) and Recall@k of a (queries, passages) score matrix."""
    ndcg, recall = [], []
    for row, rel in zip(scores, relevant):
        top = np.argsort(-row, kind="stable")[:k]
        dcg = sum(rel.get(int(d), 0) / np.log2(rank + 2) for rank, d in enumerate(top))
        ideal = sum(g / np.log2(rank + 2) for rank, g in enumerate(sorted(rel.values(), reverse=True)[:k]))
        ndcg.append(dcg / ideal if ideal > 0 else 0.0)
        recall.append(len({int(d) for d in top} & set(rel)) / len(rel) if rel else 0.0)
    return {f"ndcg@{k}": float(np.mean(ndcg)), f"recall@{k}": float(np.mean(recall))}


def evaluate_retrieval(model: GritModel, evalset: RetrievalEvalSet, *, query_instruction: str,
                       passage_instruction: str = "", query_max_length: int = 64, passage_max_length: int = 256,
                       batch_size: int = 16) -> dict[str, float]:
    """Embed with `GritModel.embed` (the inference path) and score by cosine similarity."""
    docs = model.embed(evalset.passages, instruction=passage_instruction, batch_size=batch_size,
                       max_length=passage_max_length, truncation="warn")
    queries = model.embed(evalset.queries, instruction=query_instruction, batch_size=batch_size,
                          max_length=query_max_length)
    return ranking_metrics(queries @ docs.T, evalset.relevant)
