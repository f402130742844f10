"""Fact questions answered from their gold passage alone, and refusals from the top BM25 passages without it,
for several models in one run (the `gold` and `without_gold` settings of fact_qa.py without the corpus
embedding it needs for retrieval, so a model is measured in about a minute).

    python benchmarks/fact_qa_gold.py --model grit-smollm2-135m --model smollm2-135m-instruct

Writes benchmarks/results/fact_qa_gold.json (every answer kept).
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

from benchmarks.fact_qa import CORPUS, QUESTIONS, load_jsonl  # noqa: E402
from grit_components import GritGenerator  # noqa: E402
from grit_components.rag import says_no_answer  # noqa: E402


def bm25_others(questions: list[dict], corpus: list[dict], count: int) -> list[list[str]]:
    """Per question, the `count` passages BM25 ranks highest for it, its gold passage excluded."""
    import bm25s

    texts = [f"{d['title']} {d['text']}" for d in corpus]
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    hits, _ = retriever.retrieve(bm25s.tokenize([q["question"] for q in questions], stopwords="en",
                                                show_progress=False), k=count + 1, show_progress=False)
    return [[texts[int(j)] for j in row if corpus[int(j)]["_id"] != q["gold"]][:count] for q, row in zip(questions, hits)]


def run_model(spec: str, questions: list[dict], corpus: list[dict], others: list[list[str]], new_tokens: int) -> dict:
    generator = GritGenerator(spec, generation_kwargs={"max_new_tokens": new_tokens})
    text = {d["_id"]: f"{d['title']} {d['text']}" for d in corpus}
    records, matched, false_refusals, refused = [], 0, 0, 0
    start = time.perf_counter()
    for question, distractors in zip(questions, others):
        gold = generator.answer(question["question"], [text[question["gold"]]]).text
        without = generator.answer(question["question"], distractors).text
        match = question["answer"].lower() in gold.lower()
        matched += match
        false_refusals += says_no_answer(gold)
        refused += says_no_answer(without)
        records.append({"id": question["_id"], "gold_answer": gold, "match": match, "without_gold_answer": without,
                        "refused": says_no_answer(without)})
    n = len(questions)
    print(f"{spec}: with the gold passage {matched}/{n} = {matched / n:.3f} (false refusals {false_refusals}), "
          f"without it refused {refused}/{n} = {refused / n:.3f}", flush=True)
    generator.close()
    return {"gold_answer_match": matched / n, "gold_false_refusals": false_refusals / n,
            "without_gold_refusals": refused / n, "questions": n, "seconds": time.perf_counter() - start,
            "records": records}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="model spec (repeatable)")
    parser.add_argument("--distractors", type=int, default=3, help="passages given without the gold one")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "fact_qa_gold.json")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    questions, corpus = load_jsonl(QUESTIONS), load_jsonl(CORPUS)
    others = bm25_others(questions, corpus, args.distractors)
    report = {"setup": {"questions": str(QUESTIONS.relative_to(ROOT)), "corpus": "corpus-2k.jsonl",
                        "distractors": args.distractors, "new_tokens": args.new_tokens,
                        "rag": "uncached doc-first, greedy"}, "models": {}}
    for spec in args.model or ["grit-smollm2-135m", "smollm2-135m-instruct"]:
        report["models"][spec] = run_model(spec, questions, corpus, others, args.new_tokens)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=1, ensure_ascii=False))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
