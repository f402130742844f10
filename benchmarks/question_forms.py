"""Questions of every form, per form: does the model answer who / when / where / why / how / number / yes-no
questions about passages it never trained on?

The questions are made by the training's own generators (`grit_components.training.questions`, the `qa_forms`
task) from WikiDesc's evaluation corpus `corpus-2k.jsonl`, which every recipe leaves out of its training data
(`exclude_corpus_file`), so the forms are known to the trained models but the passages and facts are not. Up
to `--per-kind` questions of each kind (seeded), each answered twice by `GritGenerator.answer` (uncached
doc-first, greedy): from its passage alone (`gold`), and from its passage among `--distractors` BM25 hard
distractors at a seeded random place (`mixed`). A reply is right when
- yes/no: its first word is the expected "Yes" or "No";
- who / when / number / superlative: it contains the expected name, date or number (case-insensitive, thousands
  separators ignored: "1500" is named by "1,500");
- definition / where / why / how, whose answers are phrases of up to 16 words: it contains the phrase's first
  three words after a leading article ("a Latin epic poem" is named by "The Aeneid is a Latin epic poem").

    python benchmarks/question_forms.py --model smollm2-135m-instruct --model grit-smollm2-135m --threads 2

Writes benchmarks/results/question_forms.json (every question and answer kept).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.fact_qa import CORPUS, load_jsonl  # noqa: E402
from benchmarks.fact_qa_gold import bm25_others  # noqa: E402
from grit_components import GritGenerator  # noqa: E402
from grit_components.cli.pipelines import THOUSANDS_SEPARATOR  # noqa: E402
from grit_components.training.questions import QUESTION_KINDS, passage_questions  # noqa: E402

KINDS = tuple(k for k in QUESTION_KINDS if k != "cloze")  # cloze questions are fill-in-the-blank, not a form users ask
_ARTICLE = re.compile(r"^(?:a|an|the)\s+", re.IGNORECASE)
PHRASE_KINDS = ("definition", "where", "why", "how")  # answers are phrases: their first three words must be named


def is_right(reply: str, answer: str, kind: str) -> bool:
    """Whether `reply` gives `answer` (the rule in the module docstring)."""
    if kind == "yes_no":
        first = re.match(r"\W*(\w+)", reply)
        return bool(first) and first.group(1).lower() == answer.lower()
    wanted = THOUSANDS_SEPARATOR.sub("", _ARTICLE.sub("", answer.strip().rstrip(".")))
    if kind in PHRASE_KINDS:
        wanted = " ".join(wanted.split()[:3])
    return wanted.lower() in THOUSANDS_SEPARATOR.sub("", reply).lower()


def make_questions(corpus: list[dict], per_kind: int, seed: int = 0, max_words: int = 70) -> list[dict]:
    """Up to `per_kind` questions of each kind over `corpus` (passages in a seeded order, at most two questions
    per passage, as in training), each with its passage."""
    documents = [(f"{d['title']} {d['text']}", d["text"], d["title"]) for d in corpus]
    order = list(range(len(documents)))
    random.Random(seed).shuffle(order)
    questions = passage_questions([documents[i] for i in order], max_words=max_words, kinds=KINDS, seed=seed)
    by_kind: dict[str, list[dict]] = {}
    ids = {documents[i][0]: corpus[i]["_id"] for i in order}
    for q in questions:
        if len(by_kind.setdefault(q.kind, [])) < per_kind:
            by_kind[q.kind].append({"kind": q.kind, "question": q.question, "answer": q.answer, "gold": ids[q.document]})
    return [q for kind in KINDS for q in by_kind.get(kind, [])]


def mixed_passages(questions: list[dict], corpus: list[dict], distractors: int, seed: int = 0) -> list[list[str]]:
    """Per question, its passage among the `distractors` passages BM25 ranks highest for it, at a random place."""
    texts = {d["_id"]: f"{d['title']} {d['text']}" for d in corpus}
    rng = random.Random(seed)
    out = []
    for question, others in zip(questions, bm25_others(questions, corpus, distractors)):
        others.insert(rng.randint(0, len(others)), texts[question["gold"]])
        out.append(others)
    return out


def run_model(spec: str, questions: list[dict], corpus: list[dict], mixed: list[list[str]] | None,
              new_tokens: int) -> dict:
    generator = GritGenerator(spec, generation_kwargs={"max_new_tokens": new_tokens})
    text = {d["_id"]: f"{d['title']} {d['text']}" for d in corpus}
    records = []
    start = time.perf_counter()
    for i, question in enumerate(questions):
        record = dict(question)
        record["gold_reply"] = generator.answer(question["question"], [text[question["gold"]]]).text
        record["gold_right"] = is_right(record["gold_reply"], question["answer"], question["kind"])
        if mixed is not None:
            record["mixed_reply"] = generator.answer(question["question"], mixed[i]).text
            record["mixed_right"] = is_right(record["mixed_reply"], question["answer"], question["kind"])
        records.append(record)
    generator.close()
    summary: dict[str, dict[str, float]] = {}
    for setting in ("gold", "mixed") if mixed is not None else ("gold",):
        per_kind = {kind: [r[f"{setting}_right"] for r in records if r["kind"] == kind] for kind in KINDS}
        summary[setting] = {kind: sum(v) / len(v) for kind, v in per_kind.items() if v}
        summary[setting]["all"] = sum(r[f"{setting}_right"] for r in records) / len(records)
    line = ", ".join(f"{setting} {values['all']:.3f}" for setting, values in summary.items())
    print(f"{spec}: {line}; " + " ".join(f"{k} {v:.2f}" for k, v in summary["gold"].items() if k != "all"), flush=True)
    return {"summary": summary, "questions": len(records), "seconds": time.perf_counter() - start, "records": records}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="model spec (repeatable)")
    parser.add_argument("--per-kind", type=int, default=20, help="questions of each kind (at most)")
    parser.add_argument("--distractors", type=int, default=2, help="BM25 distractors beside the passage (0: none)")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "question_forms.json")
    args = parser.parse_args()
    if args.per_kind < 1:
        parser.error("--per-kind must be at least 1")
    if args.distractors < 0:
        parser.error("--distractors must be 0 or more")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    corpus = load_jsonl(CORPUS)
    questions = make_questions(corpus, args.per_kind)
    mixed = mixed_passages(questions, corpus, args.distractors) if args.distractors else None
    counts = {kind: sum(q["kind"] == kind for q in questions) for kind in KINDS}
    print(f"{len(questions)} questions from corpus-2k: {counts}", flush=True)
    report = {"setup": {"corpus": "corpus-2k.jsonl (left out of every recipe's training data)",
                        "per_kind": args.per_kind, "questions_by_kind": counts, "distractors": args.distractors,
                        "new_tokens": args.new_tokens, "rag": "uncached doc-first, greedy"}, "models": {}}
    from benchmarks.host import host_info

    report["host"] = host_info()
    for spec in args.model or ["smollm2-135m-instruct", "grit-smollm2-135m"]:
        report["models"][spec] = run_model(spec, questions, corpus, mixed, args.new_tokens)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=1, ensure_ascii=False))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
