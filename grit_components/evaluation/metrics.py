"""Retrieval metrics through ranx (no hand-written formulas): nDCG@10, Recall@10/100, MRR@10.

A run is `{query_id: [doc_id, ...]}` in ranked order (best first), or `{query_id: {doc_id: score}}`.
Ranked lists are turned into strictly decreasing scores, so ranx sees exactly the intended order
(ranx orders equal scores by document id, which would silently reorder ties).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

DEFAULT_METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")


def _as_scores(ranking: Sequence[str] | Mapping[str, float]) -> dict[str, float]:
    if isinstance(ranking, Mapping):
        return {str(doc): float(score) for doc, score in ranking.items()}
    ranking = list(dict.fromkeys(ranking))  # a document counts once, at its best rank
    return {str(doc): float(len(ranking) - rank) for rank, doc in enumerate(ranking)}


def evaluate_run(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Sequence[str] | Mapping[str, float]],
                 metrics: Sequence[str] = DEFAULT_METRICS) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Mean and per-query metrics of `run` against `qrels`, over the queries in `run`.

    A query of the run with no retrieved document scores 0 on every metric.
    :returns: ({metric: mean}, {metric: {query_id: value}}).
    """
    from ranx import Qrels, Run, evaluate

    if not run:
        raise ValueError("run is empty: no query to evaluate")
    missing = [q for q in run if q not in qrels]
    if missing:
        raise ValueError(f"{len(missing)} queries of the run have no relevance judgements (first: {missing[0]!r})")
    judged = {q: {str(d): int(r) for d, r in qrels[q].items()} for q in run}
    scored = {q: _as_scores(run[q]) for q in run}
    empty = [q for q, docs in scored.items() if not docs]
    for q in empty:  # ranx needs one document per query; an irrelevant placeholder scores 0 everywhere
        scored[q] = {"\x00no-result": 0.0}
    per_query_raw = evaluate(Qrels(judged), Run(scored), list(metrics), return_mean=False, make_comparable=True)
    per_query: dict[str, dict[str, float]] = {}
    means: dict[str, float] = {}
    query_ids = list(scored)
    for metric in metrics:
        values = per_query_raw[metric] if len(metrics) > 1 else per_query_raw
        per_query[metric] = {q: float(v) for q, v in zip(query_ids, values)}
        means[metric] = float(sum(per_query[metric].values()) / len(query_ids))
    return means, per_query
