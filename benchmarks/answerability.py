"""Can the model's own relevance signals tell when the passages do not hold the answer?

The shipped adapters were trained to reply "The passages do not say." (v4 on 12 %, v5 on 22 % of their
question records, each refusal beside its answerable twin) and still refuse none of WikiDesc's unanswerable
questions (`unanswerable_3` in rag_quality.py: 0.00). This benchmark measures the alternative: decide from the
retrieval signals before generating. Per passage it computes two signals the components already have:

- query-likelihood PMI: the mean log-probability per query token given the passage (the query-likelihood
  reranker's score, `rerank.query_likelihood_scores`) minus the same given an empty passage, i.e. how much
  the passage raises the query's likelihood (ranks exactly as query likelihood does within one query, but is
  comparable across queries);
- embedding cosine similarity of the query (with the model's query instruction) and the passage.

A passage set's features are the highest PMI and the highest cosine over its passages. A logistic regression
on them (scikit-learn) is fitted on WikiDesc dev queries 101-300, answerable sets (the gold passage alone, or
among two BM25 distractors) against unanswerable ones (the three BM25 passages ranked highest without the gold
one), with the threshold set at 5 % false refusals of the answerable calibration sets. It is then evaluated
on sets it never saw: dev queries 1-100 (rag_quality.py's questions) and the 36 fact questions of
fact_qa_gold.py, whose question forms differ from WikiDesc's. In the same run the generator's own refusals on
the same sets are the baseline.

    python benchmarks/answerability.py --model grit-smollm2-135m --threads 2

Writes benchmarks/results/answerability_<model>.json (every score and answer kept).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.fact_qa import CORPUS, QUESTIONS, load_jsonl  # noqa: E402
from benchmarks.fact_qa_gold import bm25_others  # noqa: E402
from benchmarks.host import host_info  # noqa: E402
from benchmarks.rag_cache import QUESTION, bm25_distractors, load_wikidesc_dev, quality_passages  # noqa: E402
from grit_components import load_model, rag  # noqa: E402
from grit_components.answerability import query_likelihood_gains  # noqa: E402
from grit_components.components import query_instruction_for  # noqa: E402
from grit_components.metadata import AnswerabilityWeights, ModelMetadata  # noqa: E402
from grit_components.rerank import cosine_scores  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "wikidesc"
FALSE_REFUSALS = 0.05
PASSAGE_TOKENS = 160  # the query-likelihood reranker's passage length for this model (`rerank_passage_tokens`)


def signals(model, query: str, passages: list[str], instruction: str) -> dict:
    """Per passage: query-likelihood PMI (gain over an empty passage) and cosine similarity to the query, as
    `GritAnswerabilityGate` computes them."""
    gains = query_likelihood_gains(model, query, passages, max_passage_tokens=PASSAGE_TOKENS)
    cos = cosine_scores(model, query, passages, query_instruction=instruction)
    return {"pmi": gains.tolist(), "cos": cos.tolist()}


def features(sig: dict, indices: list[int]) -> list[float]:
    return [max(sig["pmi"][i] for i in indices), max(sig["cos"][i] for i in indices)]


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that an answerable set scores above an unanswerable one (ties count half)."""
    greater = (positive[:, None] > negative[None, :]).mean()
    ties = (positive[:, None] == negative[None, :]).mean()
    return float(greater + 0.5 * ties)


def wikidesc_sets(items: list[dict]) -> dict[str, list[list[int]]]:
    """Index lists into [gold, *distractors] per item: gold alone, gold among two distractors (at
    rag_quality.py's place), and the three distractors alone."""
    out = {"gold": [], "gold_3": [], "without_gold_3": []}
    for item in items:
        texts = [item["passage"], *item["distractors"]]
        out["gold"].append([0])
        out["gold_3"].append([texts.index(t) for t in quality_passages(item, 3)])
        out["without_gold_3"].append([texts.index(t) for t in quality_passages(item, -3)])
    return out


def generator_answers(model, questions: list[str], passage_sets: list[list[str]], new_tokens: int) -> list[str]:
    """The generator's own uncached doc-first answers (the baseline the gate is compared with)."""
    return [rag.answer(model, q, docs, mode="none", order="doc_first", max_new_tokens=new_tokens).text
            for q, docs in zip(questions, passage_sets)]


def refusal_rate(answers: list[str]) -> float:
    return float(np.mean([rag.says_no_answer(a) for a in answers]))


def run_model(spec: str, args) -> dict:
    from sklearn.linear_model import LogisticRegression

    model = load_model(spec)
    instruction = query_instruction_for(model)  # what GritAnswerabilityGate embeds queries with
    start = time.perf_counter()
    items = load_wikidesc_dev(args.data, args.calibration_end)
    for item, distractors in zip(items, bm25_distractors(args.data, items, 4)):
        item["distractors"] = distractors
    evaluation, calibration = items[: args.evaluation], items[args.evaluation:]
    print(f"{spec}: signals for {len(items)} WikiDesc dev queries", flush=True)
    sigs = {item["id"]: signals(model, item["query"], [item["passage"], *item["distractors"]], instruction)
            for item in items}

    def matrices(part: list[dict]) -> dict[str, np.ndarray]:
        """Per kind of passage set: one row of features per query of `part`."""
        return {kind: np.array([features(sigs[item["id"]], idx) for item, idx in zip(part, sets)])
                for kind, sets in wikidesc_sets(part).items()}

    cal, ev = matrices(calibration), matrices(evaluation)
    cal_pos = np.vstack([cal["gold"], cal["gold_3"]])
    cal_neg = cal["without_gold_3"]
    gate = LogisticRegression().fit(np.vstack([cal_pos, cal_neg]), np.r_[np.ones(len(cal_pos)), np.zeros(len(cal_neg))])
    threshold = float(np.quantile(gate.decision_function(cal_pos), FALSE_REFUSALS))

    def score(x: np.ndarray) -> np.ndarray:
        return gate.decision_function(x) - threshold  # below 0: refuse

    report: dict = {"gate": {"features": ["max query-likelihood PMI", "max cosine"],
                             "weights": gate.coef_[0].tolist(), "bias": float(gate.intercept_[0]) - threshold,
                             "calibration_queries": len(calibration),
                             "calibration_false_refusals": FALSE_REFUSALS}}
    wiki = {kind: score(x) for kind, x in ev.items()}
    report["gate"]["scores"] = {"wikidesc_dev": {kind: values.tolist() for kind, values in wiki.items()}}
    report["wikidesc_dev"] = {
        "queries": len(evaluation),
        "gate_refusals_without_gold_3": float(np.mean(wiki["without_gold_3"] < 0)),
        "gate_false_refusals_gold": float(np.mean(wiki["gold"] < 0)),
        "gate_false_refusals_gold_3": float(np.mean(wiki["gold_3"] < 0)),
        "auc_gold_3_vs_without": auc(wiki["gold_3"], wiki["without_gold_3"]),
        "auc_pmi_only": auc(ev["gold_3"][:, 0], ev["without_gold_3"][:, 0]),
        "auc_cosine_only": auc(ev["gold_3"][:, 1], ev["without_gold_3"][:, 1]),
    }

    questions, corpus = load_jsonl(args.fact_questions), load_jsonl(args.fact_corpus)
    text = {d["_id"]: f"{d['title']} {d['text']}" for d in corpus}
    others = bm25_others(questions, corpus, 3)
    fact_sigs = [signals(model, q["question"], [text[q["gold"]], *o], instruction) for q, o in zip(questions, others)]
    fact_gold = score(np.array([features(s, [0]) for s in fact_sigs]))
    fact_without = score(np.array([features(s, list(range(1, len(s["pmi"])))) for s in fact_sigs]))
    report["gate"]["scores"]["fact_questions"] = {"gold": fact_gold.tolist(), "without_gold_3": fact_without.tolist()}
    report["fact_questions"] = {"questions": len(questions),
                                "gate_refusals_without_gold_3": float(np.mean(fact_without < 0)),
                                "gate_false_refusals_gold": float(np.mean(fact_gold < 0)),
                                "auc_gold_vs_without": auc(fact_gold, fact_without)}

    print(f"{spec}: the generator's own answers (baseline)", flush=True)
    asked = [QUESTION.format(query=item["query"]) for item in evaluation]
    answers = {
        "wikidesc_gold": generator_answers(model, asked, [[i["passage"]] for i in evaluation], args.new_tokens),
        "wikidesc_without_gold_3": generator_answers(model, asked, [quality_passages(i, -3) for i in evaluation],
                                                     args.new_tokens),
        "fact_without_gold_3": generator_answers(model, [q["question"] for q in questions], others, args.new_tokens),
    }
    report["wikidesc_dev"]["generator_refusals_without_gold_3"] = refusal_rate(answers["wikidesc_without_gold_3"])
    report["wikidesc_dev"]["generator_false_refusals_gold"] = refusal_rate(answers["wikidesc_gold"])
    report["fact_questions"]["generator_refusals_without_gold_3"] = refusal_rate(answers["fact_without_gold_3"])
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["records"] = {"wikidesc_signals": sigs, "fact_signals": dict(zip((q["_id"] for q in questions), fact_sigs)),
                         "answers": answers}
    w, f = report["wikidesc_dev"], report["fact_questions"]
    print(f"{spec}: WikiDesc dev, 3 passages without the gold one: gate refuses "
          f"{w['gate_refusals_without_gold_3']:.2f}, generator {w['generator_refusals_without_gold_3']:.2f}; "
          f"false refusals gold {w['gate_false_refusals_gold']:.2f}, "
          f"gold among 3 {w['gate_false_refusals_gold_3']:.2f}; AUC {w['auc_gold_3_vs_without']:.3f} "
          f"(PMI {w['auc_pmi_only']:.3f}, cosine {w['auc_cosine_only']:.3f})", flush=True)
    print(f"{spec}: fact questions: gate refuses {f['gate_refusals_without_gold_3']:.2f}, generator "
          f"{f['generator_refusals_without_gold_3']:.2f}; false refusals gold {f['gate_false_refusals_gold']:.2f}; "
          f"AUC {f['auc_gold_vs_without']:.3f}", flush=True)
    return report


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="model spec (repeatable; default grit-smollm2-135m)")
    parser.add_argument("--data", type=Path, default=DATA, help="WikiDesc folder (BEIR layout)")
    parser.add_argument("--evaluation", type=int, default=100, help="first N dev queries evaluate the gate")
    parser.add_argument("--calibration-end", type=int, default=300,
                        help="dev queries after the evaluation ones, up to this one, calibrate it")
    parser.add_argument("--fact-questions", type=Path, default=QUESTIONS, help="fact questions (JSONL)")
    parser.add_argument("--fact-corpus", type=Path, default=CORPUS, help="the corpus their gold ids point into")
    parser.add_argument("--new-tokens", type=int, default=16, help="new tokens per generator answer")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file (default: benchmarks/results/answerability_<first model>.json)")
    parser.add_argument("--save-weights", type=Path, default=None, metavar="DIR",
                        help="write the fitted gate into DIR/grit_model.json (the model's folder, or a packaged "
                             "adapter's), where GritAnswerabilityGate finds it; one --model only")
    args = parser.parse_args(argv)
    if args.save_weights is not None and len(args.model or [None]) != 1:
        parser.error("--save-weights takes one --model")
    if args.save_weights is not None and not args.save_weights.is_dir():
        parser.error(f"--save-weights: {args.save_weights} is not a folder")
    if args.evaluation < 1 or args.calibration_end <= args.evaluation:
        parser.error("--evaluation must be at least 1 and below --calibration-end")
    if args.threads:
        torch.set_num_threads(args.threads)
    specs = args.model or ["grit-smollm2-135m"]
    results = {"setup": {"host": host_info(), "question": QUESTION, "passage_tokens": PASSAGE_TOKENS,
                         "fact_questions": str(args.fact_questions.name),
                         "new_tokens": args.new_tokens, "evaluation_queries": args.evaluation,
                         "calibration_queries": f"dev {args.evaluation + 1}-{args.calibration_end}"},
               "models": {}}
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(specs[0]).name).strip("_")
    output = args.output or ROOT / "benchmarks" / "results" / f"answerability_{safe}.json"
    for spec in specs:  # written after every model, so a failure later keeps the models measured
        results["models"][spec] = run_model(spec, args)
        output.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {output}", flush=True)
    if args.save_weights is not None:
        print(f"wrote the gate into {save_weights(results['models'][specs[0]], args.save_weights)}", flush=True)
    return results


def save_weights(report: dict, directory: Path) -> Path:
    """Put the gate `run_model` fitted into `directory`'s grit_model.json, keeping everything else in it."""
    gate, first = report["gate"], report["wikidesc_dev"]["queries"] + 1
    fitted_on = (f"WikiDesc dev queries {first}-{first + gate['calibration_queries'] - 1}, refusing "
                 f"{FALSE_REFUSALS:.0%} of answerable sets (benchmarks/answerability.py)")
    weights = AnswerabilityWeights(gate["weights"][0], gate["weights"][1], gate["bias"], PASSAGE_TOKENS, fitted_on)
    metadata = ModelMetadata.read(directory)
    return replace(metadata, answerability=weights).write(directory)


if __name__ == "__main__":
    main()
