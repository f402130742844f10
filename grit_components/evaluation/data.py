"""Load a retrieval data set in BEIR layout: corpus.jsonl, queries.jsonl and qrels (TSV with a header)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RetrievalDataset:
    """Corpus, queries and relevance judgements of one split.

    `corpus` maps doc id -> {"title", "text"}; `queries` maps query id -> text (in file order);
    `qrels` maps query id -> {doc id: relevance}. Only queries with at least one judgement are kept.
    """

    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    name: str = ""
    files: dict[str, str] = field(default_factory=dict)

    def document_text(self, doc_id: str) -> str:
        """What gets embedded / indexed: BEIR's usual "title text" concatenation."""
        doc = self.corpus[doc_id]
        return f"{doc['title']} {doc['text']}".strip() if doc.get("title") else doc["text"]

    def subset(self, max_queries: int | None) -> RetrievalDataset:
        """The first `max_queries` queries (file order), same corpus."""
        if max_queries is None or max_queries >= len(self.queries):
            return self
        keep = list(self.queries)[:max_queries]
        return RetrievalDataset(self.corpus, {q: self.queries[q] for q in keep}, {q: self.qrels[q] for q in keep},
                                self.name, dict(self.files))


def _read_jsonl(path: Path, required: tuple[str, ...] = ("_id",)) -> list[dict]:
    """The JSON objects of a JSONL file; a line that is not an object with the `required` keys is an error
    naming the file and line."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{number} is not valid JSON: {error}") from error
                if not isinstance(row, dict):
                    raise ValueError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
                missing = [key for key in required if key not in row]
                if missing:
                    raise ValueError(f"{path}:{number}: no {', '.join(map(repr, missing))} field")
                rows.append(row)
    return rows


def _read_qrels(path: Path) -> list[tuple[str, str, int]]:
    """(query id, doc id, relevance) rows of a BEIR qrels TSV (header optional)."""
    rows = []
    with open(path, encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.reader(handle, delimiter="\t"), 1):
            if not row or row[0] in ("query-id", "query_id", "qid"):
                continue
            if len(row) < 3:
                raise ValueError(f"{path}:{number}: expected 3 tab-separated columns (query-id, corpus-id, score), "
                                 f"got {len(row)}: {row!r}")
            try:
                score = int(row[2])
            except ValueError:
                raise ValueError(f"{path}:{number}: the score {row[2]!r} is not an integer") from None
            rows.append((row[0], row[1], score))
    return rows


def _find(directory: Path, names: list[str], what: str) -> Path:
    for name in names:
        if (directory / name).exists():
            return directory / name
    raise FileNotFoundError(f"no {what} in {directory} (looked for {', '.join(names)})")


def load_beir(data_dir: str | Path, *, split: str = "dev", corpus_file: str | None = None) -> RetrievalDataset:
    """Load a BEIR-layout folder.

    Looks for the corpus at `corpus_file` (relative to `data_dir`) or `corpus.jsonl`; queries at
    `<split>/queries.jsonl` or `queries.jsonl`; qrels at `<split>/qrels.tsv` or `qrels/<split>.tsv`.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"data directory {root} does not exist")
    corpus_path = root / corpus_file if corpus_file else _find(root, ["corpus.jsonl"], "corpus.jsonl")
    if not corpus_path.exists():
        raise FileNotFoundError(f"corpus file {corpus_path} does not exist")
    queries_path = _find(root, [f"{split}/queries.jsonl", "queries.jsonl"], "queries.jsonl")
    qrels_path = _find(root, [f"{split}/qrels.tsv", f"qrels/{split}.tsv"], f"qrels for split {split!r}")

    corpus = {}
    for row in _read_jsonl(corpus_path):
        corpus[str(row["_id"])] = {"title": row.get("title") or "", "text": row.get("text") or ""}
    qrels: dict[str, dict[str, int]] = {}
    for query_id, doc_id, score in _read_qrels(qrels_path):
        if score > 0 and doc_id in corpus:
            qrels.setdefault(query_id, {})[doc_id] = score
    queries = {str(row["_id"]): row["text"] for row in _read_jsonl(queries_path, ("_id", "text"))
               if str(row["_id"]) in qrels}
    qrels = {q: qrels[q] for q in queries}
    if not queries:
        raise ValueError(f"no query in {queries_path} has a relevant passage in {corpus_path}")
    return RetrievalDataset(corpus, queries, qrels, name=root.name,
                            files={"corpus": str(corpus_path), "queries": str(queries_path), "qrels": str(qrels_path)})
