"""The demo's questions through the bundled RAG pipelines: where the relevant passage lands, and the answers.

`grit demo` answers the first 3 of 120 bundled WikiDesc questions; this runs all of them (or `--questions
N`) for each model, through the same pipelines a user runs. For each model it indexes the bundled demo
corpus (300 passages) with `grit demo --questions 0` into its own data directory (embedded Qdrant), then
asks every question with each pipeline (`rag`, `rag_rerank`) exactly as `grit demo` does: the entity
description is the retrieval text (with the demo's WikiDesc instruction), "<question> Answer with the name
only." the question. Per pipeline and model:
- first: the relevant passage is the first source;
- sources: it is among the answer's sources (3 in both pipelines);
- answer match: the answer names the expected title as a whole phrase (case-insensitive; `names_answer`).

    python benchmarks/demo_questions.py                       # grit-smollm2-135m against smollm2-135m-instruct
    python benchmarks/demo_questions.py --model runs/my-model --questions 30 --pipeline rag

Writes benchmarks/results/demo_questions.json (every answer and its sources kept as evidence).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from grit_components.cli.pipelines import WIKIDESC_INSTRUCTION, _demo_questions, demo_question, names_answer  # noqa: E402


def index_demo_corpus(model: str, data_dir: Path) -> float:
    """`grit demo --questions 0`: the bundled corpus indexed into embedded Qdrant under `data_dir`."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "grit_components.cli", "demo", "--questions", "0",
                    "--data-dir", str(data_dir), "--model", model], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def run_pipeline(hp, name: str, model: str, data_dir: Path, items: list[dict]) -> dict:
    built = hp.load_pipeline(name, data_dir=data_dir, model=model, instruction=WIKIDESC_INSTRUCTION)
    records, first, among, matched = [], 0, 0, 0
    start = time.perf_counter()
    try:
        for item in items:
            answer = hp.ask(built, demo_question(item), retrieval_text=item["description"])
            ids = [d.meta.get("passage_id") for d in answer.sources]
            match = names_answer(answer.text, item["answer"])
            first += ids[:1] == [item["gold"]]
            among += item["gold"] in ids
            matched += match
            records.append({"gold": item["gold"], "sources": ids, "answer": answer.text, "expected": item["answer"],
                            "match": match})
    finally:
        hp.close_pipeline(built)
    n = len(items)
    result = {"first": first / n, "among_sources": among / n, "answer_match": matched / n, "questions": n,
              "seconds": time.perf_counter() - start, "records": records}
    print(f"  {name}: relevant passage first {first}/{n} = {first / n:.3f}, among the sources {among}/{n} = "
          f"{among / n:.3f}, answer match {matched}/{n} = {matched / n:.3f} ({result['seconds']:.0f} s)", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", "-m", action="append", help="model spec (repeatable; default: "
                        "grit-smollm2-135m and the base smollm2-135m-instruct)")
    parser.add_argument("--pipeline", "-p", action="append", help="bundled pipeline (repeatable; default: rag, rag_rerank)")
    parser.add_argument("--questions", type=int, default=120, help="the first N of the 120 demo questions")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "demo_questions.json")
    args = parser.parse_args()
    if args.questions < 1:
        parser.error("--questions must be at least 1")
    from haystack_integrations.common.grit import pipelines as hp

    items = _demo_questions(args.questions)
    report = json.loads(args.output.read_text()) if args.output.exists() else {}
    report.setdefault("models", {})
    report["setup"] = {"questions": len(items), "instruction": WIKIDESC_INSTRUCTION,
                       "question": demo_question({"question": "<question>"}), "retrieval_text": "the description"}
    with tempfile.TemporaryDirectory(prefix="grit-demo-questions-") as tmp:
        for number, model in enumerate(args.model or ["grit-smollm2-135m", "smollm2-135m-instruct"]):
            data_dir = Path(tmp) / str(number)
            seconds = index_demo_corpus(model, data_dir)
            print(f"{model}: demo corpus indexed in {seconds:.0f} s", flush=True)
            report["models"][model] = {"index_seconds": seconds, "pipelines": {
                name: run_pipeline(hp, name, model, data_dir, items) for name in args.pipeline or ["rag", "rag_rerank"]}}
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(report, indent=1, ensure_ascii=False))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
