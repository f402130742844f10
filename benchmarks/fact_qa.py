"""Full-pipeline RAG on questions the WikiDesc training never saw: recall@3 and answer match per model.

The 36 questions of `benchmarks/data/fact-questions.jsonl` ask for a fact stated in one passage of
WikiDesc's corpus-2k ("Which bacterium caused the Black Death?"), unlike the training's "What is
described as '<description>'?". For each model: the 2,000 passages are embedded (no instruction,
passages cut to 256 tokens, cached on disk like `grit eval retrieval`), each question is embedded
with the model's own query instruction (what `GritEmbedder` uses by default), the top 3 passages are
retrieved by cosine similarity and `GritGenerator.answer` writes the answer from them (uncached
doc-first RAG, greedy, 32 new tokens). recall@3: the gold passage is among the three; match: the
answer contains the expected string (case-insensitive).

    python benchmarks/fact_qa.py --model grit-smollm2-135m --model smollm2-135m-instruct

Writes benchmarks/results/fact_qa.json (every answer kept as evidence).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from grit_components import GritEmbedder, GritGenerator  # noqa: E402
from grit_components.evaluation.cache import cached_embed  # noqa: E402

QUESTIONS = ROOT / "benchmarks" / "data" / "fact-questions.jsonl"
CORPUS = ROOT.parent / "shared" / "data" / "wikidesc" / "corpus-2k.jsonl"


def load_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_model(spec: str, questions: list[dict], corpus: list[dict], *, top_k: int, new_tokens: int) -> dict:
    embedder = GritEmbedder(spec)
    generator = GritGenerator(spec, generation_kwargs={"max_new_tokens": new_tokens})
    model = embedder.model
    texts = [f"{d['title']} {d['text']}" for d in corpus]
    start = time.perf_counter()
    doc_vectors, cached = cached_embed(model, texts, max_length=256)
    corpus_seconds = time.perf_counter() - start
    query_vectors = embedder.embed_queries([q["question"] for q in questions])
    top = np.argsort(-(query_vectors @ doc_vectors.T), axis=1)[:, :top_k]
    records, found, matched = [], 0, 0
    start = time.perf_counter()
    for question, hits in zip(questions, top):
        ids = [corpus[i]["_id"] for i in hits]
        answer = generator.answer(question["question"], [texts[i] for i in hits]).text
        hit, match = question["gold"] in ids, question["answer"].lower() in answer.lower()
        found += hit
        matched += match
        records.append({"id": question["_id"], "retrieved": ids, "gold_retrieved": hit, "answer": answer, "match": match})
    n = len(questions)
    result = {"fingerprint": model.fingerprint, "query_instruction": embedder.query_instruction,
              f"recall@{top_k}": found / n, "answer_match": matched / n, "questions": n,
              "corpus_embeddings_from_cache": cached, "corpus_seconds": corpus_seconds,
              "answer_seconds": time.perf_counter() - start, "records": records}
    print(f"{spec}: recall@{top_k} {found}/{n} = {found / n:.3f}, answer match {matched}/{n} = {matched / n:.3f}",
          flush=True)
    embedder.close()
    generator.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="model spec (repeatable)")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "fact_qa.json")
    args = parser.parse_args()
    questions, corpus = load_jsonl(QUESTIONS), load_jsonl(CORPUS)
    report = json.loads(args.output.read_text()) if args.output.exists() else {}
    report.setdefault("models", {})
    report["setup"] = {"questions": str(QUESTIONS.relative_to(ROOT)), "corpus": "corpus-2k.jsonl", "top_k": args.top_k,
                       "new_tokens": args.new_tokens, "passages_cut_to": 256, "rag": "uncached doc-first, greedy"}
    for spec in args.model or ["grit-smollm2-135m", "smollm2-135m-instruct"]:
        report["models"][spec] = run_model(spec, questions, corpus, top_k=args.top_k, new_tokens=args.new_tokens)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=1, ensure_ascii=False))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
