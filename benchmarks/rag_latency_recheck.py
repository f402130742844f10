"""Back-to-back re-check of the headline ratios (one time window, so changing CPU load cannot skew them).

    python benchmarks/rag_latency_recheck.py   # SmolLM2, 4096-token document, 2 repetitions, 1 torch thread

Measures no retrieval, uncached doc-first RAG and doc caching (warm store) interleaved, plus the
directory-tier load vs recompute; merges the result under "recheck" into benchmarks/results/rag_latency.json.
"""

import json
import os
import statistics
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from grit_components import load_model, rag
from grit_components.kv_cache import KVStore
from grit_components.rag_benchmark import LATENCY_QUESTION, _summary, disk_tier_latency, make_document

if __name__ == "__main__":
    torch.set_num_threads(1)
    model = load_model("smollm2-135m-instruct")
    doc = [make_document(model, 4096)]
    store = KVStore()
    rag.cache_documents(model, doc, source="causal", store=store)
    runs = {"no_retrieval": [], "uncached_doc_first": [], "doc": []}
    load_before = os.getloadavg()[0]
    for _ in range(2):  # interleaved: each round measures all three under the same load
        for name, docs, mode in (("no_retrieval", [], "none"), ("uncached_doc_first", doc, "none"), ("doc", doc, "doc")):
            r = rag.answer(model, LATENCY_QUESTION, docs, mode=mode, source="causal", max_new_tokens=16, store=store)
            runs[name].append((r.timings["total"], r.timings["time_to_first_token"], r.completion_tokens))
            print(name, f"{r.timings['total']:.2f}s", flush=True)
    result = {name: {"total": _summary([t for t, _, _ in v]), "ttft": _summary([f for _, f, _ in v]),
                     "completion_tokens": [c for _, _, c in v]} for name, v in runs.items()}
    result["disk_tier"] = disk_tier_latency(model, 4096, 2)
    result["load_average_1m"] = [load_before, os.getloadavg()[0]]
    mean = lambda k: result[k]["total"]["mean"]  # noqa: E731
    result["ratios"] = {"doc_vs_uncached_doc_first_total": mean("doc") / mean("uncached_doc_first"),
                        "doc_vs_no_retrieval_total": mean("doc") / mean("no_retrieval"),
                        "disk_load_vs_recompute": result["disk_tier"]["load"]["mean"] / result["disk_tier"]["recompute"]["mean"]}
    print(json.dumps(result["ratios"], indent=2))
    path = Path("benchmarks/results/rag_latency.json")
    report = json.loads(path.read_text())
    report.setdefault("recheck", {})["smollm2-135m-instruct"] = result
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")
