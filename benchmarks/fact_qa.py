"""Full-pipeline RAG on questions the WikiDesc training never saw: recall@3 and answer match per model.

The 36 questions of `benchmarks/data/fact-questions.jsonl` ask for a fact stated in one passage of
WikiDesc's corpus-2k ("Which bacterium caused the Black Death?"), unlike the training's "What is
described as '<description>'?". For each model: the 2,000 passages are embedded (no instruction,
passages cut to 256 tokens, cached on disk like `grit eval retrieval`), each question is embedded
with the model's own query instruction (what `GritEmbedder` uses by default), the top 3 passages are
retrieved by cosine similarity and `GritGenerator.answer` writes the answer from them (uncached
doc-first RAG, greedy, 32 new tokens). recall@3: the gold passage is among the three; match: the
answer contains the expected string (case-insensitive). `--passages` adds two more answers per question:
`gold`, from the gold passage alone (reading the fact off its passage, retrieval aside), and
`without_gold`, from the top three passages other than the gold one, where the right reply says the
passages do not say (`rag.says_no_answer`; its share is the refusal rate, and refusals with the gold
passage are false refusals).

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
from grit_components.rag import says_no_answer  # noqa: E402

QUESTIONS = ROOT / "benchmarks" / "data" / "fact-questions.jsonl"
CORPUS = ROOT.parent / "shared" / "data" / "wikidesc" / "corpus-2k.jsonl"


def load_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_model(spec: str, questions: list[dict], corpus: list[dict], *, top_k: int, new_tokens: int,
              passages: tuple[str, ...] = ("retrieved",)) -> dict:
    embedder = GritEmbedder(spec)
    generator = GritGenerator(spec, generation_kwargs={"max_new_tokens": new_tokens})
    model = embedder.model
    texts = [f"{d['title']} {d['text']}" for d in corpus]
    start = time.perf_counter()
    doc_vectors, cached = cached_embed(model, texts, max_length=256)
    corpus_seconds = time.perf_counter() - start
    query_vectors = embedder.embed_queries([q["question"] for q in questions])
    ranked = np.argsort(-(query_vectors @ doc_vectors.T), axis=1)[:, :top_k + 1]
    position = {d["_id"]: i for i, d in enumerate(corpus)}
    records, found, matched, gold_matched, refused, false_refusals = [], 0, 0, 0, 0, 0
    start = time.perf_counter()
    for question, row in zip(questions, ranked):
        hits = row[:top_k]
        ids = [corpus[i]["_id"] for i in hits]
        expected = question["answer"].lower()
        answer = generator.answer(question["question"], [texts[i] for i in hits]).text
        hit, match = question["gold"] in ids, expected in answer.lower()
        record = {"id": question["_id"], "retrieved": ids, "gold_retrieved": hit, "answer": answer, "match": match}
        if "gold" in passages:  # the gold passage alone: can the model read the fact off it?
            record["gold_answer"] = generator.answer(question["question"], [texts[position[question["gold"]]]]).text
            record["gold_match"] = expected in record["gold_answer"].lower()
            gold_matched += record["gold_match"]
            false_refusals += says_no_answer(record["gold_answer"])
        if "without_gold" in passages:  # the top passages other than the gold one: should say they do not say
            others = [i for i in row if corpus[i]["_id"] != question["gold"]][:top_k]
            record["without_gold_answer"] = generator.answer(question["question"], [texts[i] for i in others]).text
            record["refused"] = says_no_answer(record["without_gold_answer"])
            refused += record["refused"]
        found += hit
        matched += match
        records.append(record)
    n = len(questions)
    result = {"fingerprint": model.fingerprint, "query_instruction": embedder.query_instruction,
              f"recall@{top_k}": found / n, "answer_match": matched / n, "questions": n,
              "corpus_embeddings_from_cache": cached, "corpus_seconds": corpus_seconds,
              "answer_seconds": time.perf_counter() - start, "records": records}
    line = f"{spec}: recall@{top_k} {found}/{n} = {found / n:.3f}, answer match {matched}/{n} = {matched / n:.3f}"
    if "gold" in passages:
        result.update(gold_answer_match=gold_matched / n, gold_false_refusals=false_refusals / n)
        line += f", with the gold passage {gold_matched}/{n} = {gold_matched / n:.3f} (refused {false_refusals})"
    if "without_gold" in passages:
        result["without_gold_refusals"] = refused / n
        line += f", without it refused {refused}/{n} = {refused / n:.3f}"
    print(line, flush=True)
    embedder.close()
    generator.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="model spec (repeatable)")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--passages", default="retrieved,gold,without_gold",
                        help="comma-separated: retrieved (the top k, always), gold (the gold passage alone), "
                             "without_gold (the top k other than the gold passage: refusals)")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "fact_qa.json")
    args = parser.parse_args()
    passages = tuple(p.strip() for p in args.passages.split(",") if p.strip())
    unknown = set(passages) - {"retrieved", "gold", "without_gold"}
    if unknown:
        parser.error(f"--passages: unknown {sorted(unknown)}; choose from retrieved, gold, without_gold")
    questions, corpus = load_jsonl(QUESTIONS), load_jsonl(CORPUS)
    report = json.loads(args.output.read_text()) if args.output.exists() else {}
    report.setdefault("models", {})
    report["setup"] = {"questions": str(QUESTIONS.relative_to(ROOT)), "corpus": "corpus-2k.jsonl", "top_k": args.top_k,
                       "new_tokens": args.new_tokens, "passages_cut_to": 256, "rag": "uncached doc-first, greedy",
                       "passages": list(passages)}
    for spec in args.model or ["grit-smollm2-135m", "smollm2-135m-instruct"]:
        report["models"][spec] = run_model(spec, questions, corpus, top_k=args.top_k, new_tokens=args.new_tokens,
                                           passages=passages)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=1, ensure_ascii=False))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
