"""RAG latency and quality measurements of the cache modes (run by `rag_latency.py` and `rag_quality.py`).

Latency: batch 1, greedy, 16 new tokens, one document of 256..4096 tokens (and 5 x 512 for
multi_doc), every mode plus no retrieval and uncached RAG, cached modes with a warm store (the
indexing-time case); and loading a cache from the directory tier against recomputing it. Quality: the
WikiDesc dev questions with their gold passage; an answer matches when it contains the title.
Both print a table and write JSON; the latency run also draws a plot. All ratios compare numbers
measured in the same run.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib.resources import files
from pathlib import Path

import torch

from benchmarks.host import cpu_name
from grit_components import rag, templates
from grit_components.grit_model import GritModel
from grit_components.kv_cache import KV_DTYPES, CacheLayout, KVStore, compute_cache, decode_dtype, dtype_name

LENGTHS = (256, 1024, 2048, 4096)
LATENCY_QUESTION = "What is described as 'Temple on the Athenian Acropolis, Greece'?"
RANDOM_LLAMA = "random-llama-200m"


def random_llama(tokenizer_source: str | Path | None = None, *, seed: int = 0) -> GritModel:
    """A ~200M-parameter Llama with random weights and the SmolLM2 tokenizer (built in memory, no download)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if tokenizer_source is None:
        from grit_components.models import packaged_model_dir

        tokenizer_source = packaged_model_dir("smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_source))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=1024, intermediate_size=2816, num_hidden_layers=14,
                         num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=8192,
                         rope_theta=100000.0, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return GritModel(model, tokenizer, name=RANDOM_LLAMA, key=f"random:{seed}")


def _passages() -> list[str]:
    data = files("grit_components") / "data" / "wikidesc-demo.jsonl"
    return [json.loads(line)["text"] for line in data.read_text(encoding="utf-8").splitlines() if line.strip()]


def make_document(model: GritModel, tokens: int, *, start: int = 0) -> str:
    """A natural-text document of about `tokens` tokens (bundled WikiDesc passages, from passage `start`)."""
    passages = _passages()
    ids: list[int] = []
    i = start
    while len(ids) < tokens:
        ids.extend(model.tokenize(passages[i % len(passages)] + "\n\n"))
        i += 1
    return model.tokenizer.decode(ids[:tokens])


def _summary(values: Sequence[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def summarize_runs(runs: Sequence[rag.RagResult], summary: Callable[[Sequence[float]], dict] = _summary) -> dict:
    """Repeated runs of one configuration: each timing through `summary` (mean and spread by default), the
    per-token decode time, token counts and the answers' texts (to compare paths that should agree)."""
    decode = [(r.timings["total"] - r.timings["time_to_first_token"]) / (r.completion_tokens - 1)
              for r in runs if r.completion_tokens > 1]
    compose = [r.timings["compose"] for r in runs if "compose" in r.timings]  # copying cached states for generation
    return {"total": summary([r.timings["total"] for r in runs]),
            "ttft": summary([r.timings["time_to_first_token"] for r in runs]),
            "compose": summary(compose) if compose else None,
            "decode_seconds_per_token": summary(decode) if decode else None,
            "completion_tokens": [r.completion_tokens for r in runs], "texts": [r.text for r in runs],
            "prompt_tokens": runs[-1].prompt_tokens, "prefill_tokens": runs[-1].stats.get("prefill_tokens"),
            "cached_tokens": runs[-1].stats["cached_tokens"]}


def _interleaved(calls: dict[str, Callable[[], rag.RagResult]], repeats: int, log: Callable[[str], None],
                 label: str) -> dict[str, dict]:
    """Each round runs every call once, so a change of CPU load during the run hits every mode alike."""
    runs: dict[str, list[rag.RagResult]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            runs[name].append(call())
    summaries = {name: summarize_runs(results) for name, results in runs.items()}
    for name, summary in summaries.items():
        log(f"  {label} {name:22s} total {summary['total']['mean']:.2f}s ttft {summary['ttft']['mean']:.2f}s")
    return summaries


MODEL_DTYPE = "model"  # the store keeps caches in the model's own dtype (the exact path)
LATENCY_MODES = ("no_retrieval", "uncached_doc_first", "uncached_query_first", "query", "doc", "query_doc", "doc_query",
                 "multi_doc")
REQUIRED_MODES = ("no_retrieval", "doc")  # every ratio is measured against these two
KV_DTYPE_CHOICES = (MODEL_DTYPE, *KV_DTYPES)
DEFAULT_KV_DTYPES = (MODEL_DTYPE, "bfloat16", "float16", "int8")


def _store(dtype: str, **options) -> KVStore:
    return KVStore(dtype=None if dtype == MODEL_DTYPE else dtype, **options)


def latency_for_model(model: GritModel, *, lengths: Sequence[int] = LENGTHS, repeats: int = 3, new_tokens: int = 16,
                      multi_docs: int = 5, multi_tokens: int = 512, kv_dtypes: Sequence[str] = (MODEL_DTYPE,),
                      modes: Sequence[str] | None = None, log: Callable[[str], None] = print) -> dict:
    """Every mode at every document length on one model, interleaved with no retrieval at each length.

    Cached modes are timed with a warm store (the indexing-time case); filling it is timed separately.
    `doc` and `multi_doc` also run from a store of each dtype in `kv_dtypes` other than the model's own
    (named `doc@bfloat16`, ...); the other modes use the model's dtype. `modes` (default all of
    `LATENCY_MODES`) picks what runs; `no_retrieval` and `doc` always do, and "multi_doc" stands for the
    section of several documents.
    """
    modes = check_latency_modes(modes)
    kv_dtypes = [MODEL_DTYPE, *(d for d in kv_dtypes if d != MODEL_DTYPE)]
    stores = {dtype: _store(dtype, max_bytes=8 * 1024**3) for dtype in kv_dtypes}
    store = stores[MODEL_DTYPE]
    query = LATENCY_QUESTION

    def ask(docs, mode, order="doc_first", dtype=MODEL_DTYPE):
        return lambda: rag.answer(model, query, docs, mode=mode, source="causal", order=order,
                                  max_new_tokens=new_tokens, store=stores[dtype])

    def with_dtypes(docs, mode) -> dict:
        return {f"{mode}@{dtype}": ask(docs, mode, dtype=dtype) for dtype in kv_dtypes if dtype != MODEL_DTYPE}

    ask([], "none")()  # warm-up (allocator, kernels)
    weights = sum(p.numel() * p.element_size() for p in model.model.parameters())
    out: dict = {"weight_bytes": weights, "lengths": {}}
    for length in lengths:
        doc = [make_document(model, length)]
        row: dict = {"document_tokens": len(model.tokenize(doc[0]))}
        t0 = time.perf_counter()
        rag.cache_documents(model, doc + [query], source="causal", store=store)  # indexing-time work, not in the runs
        row["fill_seconds"] = time.perf_counter() - t0
        _fill_from(model, store, [stores[other] for other in kv_dtypes[1:]], doc)
        calls = {"no_retrieval": ask([], "none"), "uncached_doc_first": ask(doc, "none", "doc_first"),
                 "uncached_query_first": ask(doc, "none", "query_first"), "query": ask(doc, "query"),
                 "doc": ask(doc, "doc"), "query_doc": ask(doc, "query_doc"), "doc_query": ask(doc, "doc_query")}
        row |= _interleaved({name: call for name, call in calls.items() if name in modes} | with_dtypes(doc, "doc"),
                            repeats, log, f"{length:5d} tokens")
        out["lengths"][str(length)] = row
        for each in stores.values():
            each.clear()

    if "multi_doc" in modes:
        docs = [make_document(model, multi_tokens, start=37 * i) for i in range(multi_docs)]
        multi: dict = {"documents": multi_docs, "document_tokens": [len(model.tokenize(d)) for d in docs]}
        texts = [templates.RAG_DOCUMENT_SEPARATOR.join(docs), *docs]
        rag.cache_documents(model, texts, source="causal", store=store)
        _fill_from(model, store, [stores[other] for other in kv_dtypes[1:]], texts)
        multi |= _interleaved({"no_retrieval": ask([], "none"), "uncached_doc_first": ask(docs, "none"),
                               "doc": ask(docs, "doc"), "multi_doc": ask(docs, "multi_doc"), **with_dtypes(docs, "multi_doc")},
                              repeats, log, f"multi {multi_docs}x{multi_tokens}")
        out["multi_doc"] = multi
        for each in stores.values():
            each.clear()

    out["disk_tier"] = disk_tier_latency(model, max(lengths), repeats, log, kv_dtypes=kv_dtypes)
    main = out["disk_tier"]["dtypes"][MODEL_DTYPE]
    out["kv_bytes_per_token"] = main["bytes"] // out["disk_tier"]["tokens"]  # measured on a real entry
    out["kv_dtypes"] = {dtype: _bytes_read(model, dtype, out["disk_tier"]) for dtype in kv_dtypes}
    return out


def _fill_from(model: GritModel, source: KVStore, targets: Sequence[KVStore], texts: Sequence[str]) -> None:
    """Put the causal caches of `texts` held by `source` into `targets`, each converting them to its dtype (the
    same states a miss would compute and store, without computing them again)."""
    for text in texts:
        entry = source.get(model.fingerprint, "causal", rag.cached_text_ids(model, text))
        assert entry is not None, "the source store must hold every text"
        for target in targets:
            target.put(entry)


def check_latency_modes(modes: Sequence[str] | None) -> tuple[str, ...]:
    """The modes to run: all of `LATENCY_MODES` for None, else `modes` plus the required ones."""
    if modes is None:
        return LATENCY_MODES
    unknown = [mode for mode in modes if mode not in LATENCY_MODES]
    if unknown:
        raise ValueError(f"modes: unknown {unknown}; choose from {', '.join(LATENCY_MODES)}")
    return tuple(mode for mode in LATENCY_MODES if mode in modes or mode in REQUIRED_MODES)


def _bytes_read(model: GritModel, dtype: str, disk: dict) -> dict:
    """Bytes a stored cache of `dtype` takes per token, and bytes generation reads per cached token."""
    stored = disk["dtypes"][dtype]["bytes"] / disk["tokens"]
    form = dtype_name(model.dtype) if dtype == MODEL_DTYPE else dtype
    layout = CacheLayout.of(model, form)
    element = torch.empty((), dtype=decode_dtype(model, form)).element_size()
    return {"stored_bytes_per_token": stored, "decode_dtype": dtype_name(decode_dtype(model, form)),
            "decode_bytes_per_token": 2 * layout.layers * layout.kv_heads * layout.head_dim * element,
            "file_bytes": disk["dtypes"][dtype]["file_bytes"]}


def disk_tier_latency(model: GritModel, tokens: int, repeats: int, log: Callable[[str], None] = print, *,
                      kv_dtypes: Sequence[str] = (MODEL_DTYPE,)) -> dict:
    """Load a cache of a `tokens`-token document from the directory tier (fresh store, verified against the
    model's layout) vs recomputing it; once per dtype in `kv_dtypes`, files written by a store of that dtype."""
    doc = make_document(model, tokens)
    ids = rag.cached_text_ids(model, doc)
    result: dict = {"tokens": len(ids), "dtypes": {}}
    with tempfile.TemporaryDirectory(prefix="grit-kv-bench-") as root:
        computed = compute_cache(model, ids, "causal")
        for dtype in kv_dtypes:
            directory = Path(root) / dtype
            entry = _store(dtype, directory=directory).put(computed)
            result["dtypes"][dtype] = {"bytes": entry.nbytes, "loads": [],
                                       "file_bytes": sum(f.stat().st_size for f in directory.glob("*.safetensors"))}
        computes = []
        for _ in range(repeats):
            for dtype in kv_dtypes:
                fresh = _store(dtype, directory=Path(root) / dtype)  # empty memory tier: the entry comes from the file
                layout = CacheLayout.of(model, fresh.dtype)
                t0 = time.perf_counter()
                entry = fresh.get(model.fingerprint, "causal", ids, layout=layout)
                result["dtypes"][dtype]["loads"].append(time.perf_counter() - t0)
                assert entry is not None and fresh.stats.disk_hits == 1
            t0 = time.perf_counter()
            compute_cache(model, ids, "causal")
            computes.append(time.perf_counter() - t0)
    for dtype, row in result["dtypes"].items():
        row["load"] = _summary(row.pop("loads"))
        log(f"  disk tier {len(ids)} tokens, {dtype}: {row['file_bytes'] / 2**20:.0f} MiB, load "
            f"{row['load']['mean']:.3f}s, recompute {statistics.fmean(computes):.2f}s")
    main = result["dtypes"][kv_dtypes[0]]
    return result | {"bytes": main["bytes"], "load": main["load"], "recompute": _summary(computes)}


def ratios(result: dict) -> dict[str, float]:
    """The goals of the issue, as ratios of means measured in the same run (those whose modes ran)."""
    longest = result["lengths"][max(result["lengths"], key=int)]
    multi = result.get("multi_doc")
    out = {}
    if "uncached_doc_first" in longest:
        out["doc_vs_uncached_doc_first_total"] = (longest["doc"]["total"]["mean"]
                                                  / longest["uncached_doc_first"]["total"]["mean"])
    out["doc_vs_no_retrieval_total"] = longest["doc"]["total"]["mean"] / longest["no_retrieval"]["total"]["mean"]
    if multi is not None:
        out["multi_doc_vs_uncached_ttft"] = multi["multi_doc"]["ttft"]["mean"] / multi["uncached_doc_first"]["ttft"]["mean"]
    return out | {
        "disk_load_vs_recompute": result["disk_tier"]["load"]["mean"] / result["disk_tier"]["recompute"]["mean"],
        # why doc caching cannot match no retrieval on a small model: each new token reads the weights and the
        # whole cache, and this is the cache's share of those bytes (GritLM-7B at 4k tokens: about 0.04)
        "longest_cache_vs_weight_bytes": longest["doc"]["cached_tokens"] * result["kv_bytes_per_token"]
        / result["weight_bytes"],
        "doc_vs_no_retrieval_decode_per_token": _mean_ratio(longest["doc"]["decode_seconds_per_token"],
                                                            longest["no_retrieval"]["decode_seconds_per_token"]),
        "kv_dtypes": dtype_ratios(result),
    }


def dtype_ratios(result: dict) -> dict[str, dict[str, float]]:
    """Per cache dtype, at the longest document: doc caching against no retrieval (end to end and per new
    token), the bytes each new token reads (weights + the cache up to it), and the floor those bytes set:
    decode cannot be faster, relative to no retrieval, than the ratio of bytes it reads."""
    longest = result["lengths"][max(result["lengths"], key=int)]
    dtypes = result.get("kv_dtypes", {})
    if MODEL_DTYPE not in dtypes:
        return {}
    weights, no_retrieval = result["weight_bytes"], longest["no_retrieval"]
    base_read = weights + no_retrieval["prompt_tokens"] * dtypes[MODEL_DTYPE]["decode_bytes_per_token"]
    disk = result["disk_tier"]
    out = {}
    for dtype, info in dtypes.items():
        doc = longest["doc" if dtype == MODEL_DTYPE else f"doc@{dtype}"]
        multi = result.get("multi_doc")
        read = weights + doc["prompt_tokens"] * info["decode_bytes_per_token"]
        out[dtype] = {
            "doc_vs_no_retrieval_total": doc["total"]["mean"] / no_retrieval["total"]["mean"],
            "doc_vs_no_retrieval_decode_per_token": _mean_ratio(doc["decode_seconds_per_token"],
                                                                no_retrieval["decode_seconds_per_token"]),
            "doc_ttft_vs_no_retrieval_ttft": doc["ttft"]["mean"] / no_retrieval["ttft"]["mean"],
            "bytes_read_per_new_token": read, "no_retrieval_bytes_read_per_new_token": base_read,
            "decode_floor": read / base_read,
            "stored_bytes_per_token_vs_model_dtype": info["stored_bytes_per_token"]
            / dtypes[MODEL_DTYPE]["stored_bytes_per_token"],
            "disk_load_vs_recompute": disk["dtypes"][dtype]["load"]["mean"] / disk["recompute"]["mean"],
        }
        if multi is not None:
            composed = multi["multi_doc" if dtype == MODEL_DTYPE else f"multi_doc@{dtype}"]
            out[dtype]["multi_doc_vs_uncached_ttft"] = composed["ttft"]["mean"] / multi["uncached_doc_first"]["ttft"]["mean"]
    return out


def _mean_ratio(a: dict | None, b: dict | None) -> float:
    return a["mean"] / b["mean"] if a and b else float("nan")  # nan: a run stopped after its first token


PLOT_MODES = (("uncached_doc_first", "uncached RAG (doc first)"), ("uncached_query_first", "uncached RAG (query first)"),
              ("query", "query caching"), ("doc", "doc caching"), ("query_doc", "query-doc caching"),
              ("doc_query", "doc-query caching"))


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for ax, (name, result) in zip(axes[0], results.items()):
        lengths = sorted(result["lengths"], key=int)
        xs = [int(n) for n in lengths]
        for key, label in PLOT_MODES:
            if key not in result["lengths"][lengths[0]]:
                continue
            means = [result["lengths"][n][key]["total"]["mean"] for n in lengths]
            stds = [result["lengths"][n][key]["total"]["std"] for n in lengths]
            ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=label)
        ax.plot(xs, [result["lengths"][n]["no_retrieval"]["total"]["mean"] for n in lengths], color="grey",
                linestyle="--", label="no retrieval")
        ax.set_title(f"{name}: 16 new tokens, batch 1")
        ax.set_xlabel("document tokens")
        ax.set_ylabel("end-to-end latency (s)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def run_latency(models: Sequence[str], *, repeats: int, lengths: Sequence[int], output: Path, plot_path: Path | None,
                threads: int | None = None, kv_dtypes: Sequence[str] = (MODEL_DTYPE,),
                modes: Sequence[str] | None = None) -> dict:
    from grit_components import load_model

    if threads:
        torch.set_num_threads(threads)
    results, summary = {}, {}
    if output.exists():  # runs of other models (e.g. started separately) are kept and merged
        previous = json.loads(output.read_text())
        results, summary = previous.get("models", {}), previous.get("ratios", {})
    for spec in models:
        print(f"{spec}: load average {os.getloadavg()[0]:.1f}", flush=True)
        model = random_llama() if spec == RANDOM_LLAMA else load_model(spec)
        results[spec] = latency_for_model(model, lengths=lengths, repeats=repeats, kv_dtypes=kv_dtypes, modes=modes,
                                          log=lambda s: print(s, flush=True))
        results[spec]["parameters"] = sum(p.numel() for p in model.model.parameters())
        results[spec]["load_average_1m_at_end"] = os.getloadavg()[0]
        results[spec]["command"] = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
        summary[spec] = ratios(results[spec])
        print(json.dumps(summary[spec], indent=2), flush=True)
        _write_latency(output, plot_path, results, summary, repeats)
    return {"models": results, "ratios": summary}


def _cell(entry: dict) -> str:
    return f"{entry['total']['mean']:.2f} ± {entry['total']['std']:.2f} ({entry['ttft']['mean']:.2f})"


def latency_markdown(report: dict) -> str:
    """The docs' tables for a `rag_latency.json` report: seconds end to end, time to first token in brackets."""
    lines = []
    for spec, result in report["models"].items():
        first = next(iter(result["lengths"].values()))
        names = [name for name in LATENCY_MODES if name in first]
        lines += [f"#### {spec} ({result['parameters'] / 1e6:.0f}M parameters)", "",
                  "| document tokens | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for row in result["lengths"].values():
            lines.append(f"| {row['document_tokens']} | " + " | ".join(_cell(row[n]) for n in names) + " |")
        multi, disk = result.get("multi_doc"), result["disk_tier"]
        lines.append("")
        if multi is not None:
            lines.append(f"{multi['documents']} documents of {min(multi['document_tokens'])}-"
                         f"{max(multi['document_tokens'])} tokens: " + "; ".join(
                             f"{n} {_cell(multi[n])}" for n in ("no_retrieval", "uncached_doc_first", "doc",
                                                                "multi_doc")) + ".")
        lines += [f"Directory tier, {disk['tokens']} tokens ({disk['bytes'] / 2**20:.0f} MiB): load "
                  f"{disk['load']['mean'] * 1000:.0f} ms, recompute {disk['recompute']['mean']:.2f} s.", ""]
        ratio = report["ratios"][spec]
        rows = [("doc_vs_uncached_doc_first_total", "doc caching / uncached doc-first, end to end, longest document",
                 "<= 0.30", ".2f"),
                ("doc_vs_no_retrieval_total", "doc caching / no retrieval, end to end, longest document", "<= 1.2", ".2f"),
                ("doc_vs_no_retrieval_decode_per_token", "doc caching / no retrieval, decode time per new token", "-",
                 ".2f"),
                ("multi_doc_vs_uncached_ttft", f"multi_doc / uncached, time to first token, "
                 f"{multi['documents'] if multi else 0} documents", "<= 0.2", ".2f"),
                ("disk_load_vs_recompute", "directory-tier load / recompute", "<= 0.1", ".4f"),
                ("longest_cache_vs_weight_bytes", "cache bytes / weight bytes, longest document", "-", ".2f")]
        lines += ["| ratio of means, same run | goal | measured |", "|---|---|---|",
                  *(f"| {label} | {goal} | {ratio[key]:{spec_}} |" for key, label, goal, spec_ in rows if key in ratio), ""]
        lines += dtype_markdown(result, ratio.get("kv_dtypes", {}))
    return "\n".join(lines)


def dtype_markdown(result: dict, per_dtype: dict) -> list[str]:
    """One row per cache dtype: what a cached token costs to keep and to read, and what that buys at decode."""
    if len(per_dtype) < 2:
        return []
    longest = result["lengths"][max(result["lengths"], key=int)]
    lines = [f"Cache dtypes, {longest['document_tokens']}-token document (`doc` caching against no retrieval; "
             "floor = bytes each new token reads / bytes it reads without retrieval):", "",
             "| cache dtype | stored bytes / token | decode reads | MB read / new token | floor | decode / token | "
             "end to end | time to first token | disk load / recompute |", "|---" * 9 + "|"]
    for dtype, ratio in per_dtype.items():
        info = result["kv_dtypes"][dtype]
        name = "doc" if dtype == MODEL_DTYPE else f"doc@{dtype}"
        lines.append(f"| {dtype if dtype != MODEL_DTYPE else 'model (' + dtype_name_of(result) + ')'} | "
                     f"{info['stored_bytes_per_token']:,.0f} ({ratio['stored_bytes_per_token_vs_model_dtype']:.2f}x) | "
                     f"{info['decode_dtype']} | {ratio['bytes_read_per_new_token'] / 1e6:.0f} | "
                     f"{ratio['decode_floor']:.2f}x | {ratio['doc_vs_no_retrieval_decode_per_token']:.2f}x | "
                     f"{ratio['doc_vs_no_retrieval_total']:.2f}x ({longest[name]['total']['mean']:.2f} s) | "
                     f"{ratio['doc_ttft_vs_no_retrieval_ttft']:.2f}x | {ratio['disk_load_vs_recompute']:.4f} |")
    return lines + [""]


def dtype_name_of(result: dict) -> str:
    return result["kv_dtypes"][MODEL_DTYPE]["decode_dtype"]


def _write_latency(output: Path, plot_path: Path | None, results: dict, summary: dict, repeats: int) -> None:
    report = json.loads(output.read_text()) if output.exists() else {}
    report |= {"setup": {"new_tokens": 16, "batch": 1, "repeats": repeats, "torch_threads": torch.get_num_threads(),
                        "cpu": cpu_name(), "torch": torch.__version__,
                        "source": "causal (cached modes timed with a warm store)"},
              "ratios": summary, "models": results}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2))
    print(f"wrote {output}")
    if plot_path is not None:
        plot(results, plot_path)
        print(f"wrote {plot_path}")


# --- quality --------------------------------------------------------------------------------------

QUESTION = "What is described as '{query}'?"
# (name, cache mode, cache source, prompt order, passages: 1 = the gold one, 3 = gold + 2 distractors)
QUALITY_CONFIGS = (("uncached_doc_first", "none", None, "doc_first", 1),
                   *((f"{mode}/{source}", mode, source, "doc_first", 1)
                     for mode in ("doc", "query", "query_doc", "doc_query") for source in ("embedding", "causal")),
                   ("no_retrieval", "none", None, "doc_first", 0), ("uncached_query_first", "none", None, "query_first", 1),
                   *((f"multi_doc_3/{source}", "multi_doc", source, "doc_first", 3) for source in ("embedding", "causal")),
                   ("uncached_doc_first_3", "none", None, "doc_first", 3),
                   *((f"multi_doc_5/{source}", "multi_doc", source, "doc_first", 5) for source in ("embedding", "causal")),
                   ("uncached_doc_first_5", "none", None, "doc_first", 5),
                   ("unanswerable_3", "none", None, "doc_first", -3),
                   ("unanswerable_multi_doc_3/causal", "multi_doc", "causal", "doc_first", -3))
# multi_doc_3: the gold passage and the two passages BM25 ranks highest among the others of corpus-2k
# (retrieved distractors), the gold one at a fixed pseudo-random place per query; uncached_doc_first_3: the
# same three passages in one uncached doc-first prompt (the control for multi_doc's separately cached passages);
# _5: the gold passage and four distractors. unanswerable_3 (a negative count): the three highest distractors
# without the gold passage; there the metric is the share of answers saying the passages do not say
# (`rag.says_no_answer`), and every other configuration reports that share as its false refusals.
DISTRACTORS = 4


def bm25_distractors(directory: Path, items: list[dict], count: int = 2) -> list[list[str]]:
    """Per item, the texts of the `count` corpus-2k passages BM25 ranks highest for its query, gold excluded."""
    import bm25s

    corpus = [json.loads(line) for line in (directory / "corpus-2k.jsonl").read_text(encoding="utf-8").splitlines()
              if line.strip()]
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([f"{d['title']} {d['text']}" for d in corpus], stopwords="en", show_progress=False),
                    show_progress=False)
    hits, _ = retriever.retrieve(bm25s.tokenize([i["query"] for i in items], stopwords="en", show_progress=False),
                                 k=count + 1, show_progress=False)
    return [[corpus[int(j)]["text"] for j in row if corpus[int(j)]["text"] != item["passage"]][:count]
            for item, row in zip(items, hits)]


def quality_passages(item: dict, passages: int) -> list[str]:
    """The passages of a quality configuration: none (0), the gold one (1), the gold one among `passages - 1`
    distractors at a fixed pseudo-random place per query (> 1), or `-passages` distractors alone (< 0)."""
    if passages < 0:
        return item["distractors"][:-passages]
    if passages <= 1:
        return [item["passage"]][:passages]
    docs = list(item["distractors"][:passages - 1])
    docs.insert(sum(map(ord, item["id"])) % (len(docs) + 1), item["passage"])
    return docs


def load_wikidesc_dev(directory: Path, limit: int | None) -> list[dict]:
    """The first `limit` dev queries with their gold passage: {"id", "query", "answer", "passage"}."""
    corpus = {}
    for line in (directory / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        corpus[record["_id"]] = record
    gold = {}
    for line in (directory / "dev" / "qrels.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        qid, cid, score = line.split("\t")
        if int(score) > 0:
            gold[qid] = cid
    items = []
    for line in (directory / "dev" / "queries.jsonl").read_text(encoding="utf-8").splitlines():
        query = json.loads(line)
        passage = corpus[gold[query["_id"]]]
        items.append({"id": query["_id"], "query": query["text"], "answer": query["metadata"]["answer"],
                      "passage": passage["text"]})
        if limit is not None and len(items) >= limit:
            break
    return items


def check_quality_configs(configs: Sequence[str] | None) -> None:
    known = [name for name, *_ in QUALITY_CONFIGS]
    for name in configs or ():
        if name not in known:
            raise ValueError(f"configs: unknown configuration {name!r}; choose from {', '.join(known)}")


def token_agreement(model: GritModel, outputs: Sequence[str], reference: Sequence[str]) -> dict[str, float]:
    """Greedy agreement of answers with reference answers (the same queries): the share of identical answers,
    and the mean share of token positions (over the longer answer) where both chose the same token."""
    shares = []
    for text, ref in zip(outputs, reference):
        a, b = model.tokenize(text), model.tokenize(ref)
        longest = max(len(a), len(b))
        shares.append(sum(x == y for x, y in zip(a, b)) / longest if longest else 1.0)
    return {"identical": sum(a == b for a, b in zip(outputs, reference)) / len(outputs),
            "tokens": statistics.fmean(shares)}


def run_quality(model_spec: str, data_dir: Path, *, limit: int | None, output: Path, new_tokens: int = 16,
                configs: Sequence[str] | None = None, kv_dtypes: Sequence[str] = (MODEL_DTYPE,),
                decode_backends: Sequence[str] = ("torch",)) -> dict:
    """Match rate per configuration (`QUALITY_CONFIGS` names; default all) on the first `limit` dev queries.

    Cached configurations also run from a store of each dtype in `kv_dtypes` other than the model's own
    (named `doc/causal@bfloat16`, ...), with their greedy agreement with the model-dtype answers. Every
    configuration also runs with each `decode_backends` other than "torch" (named `doc/causal@bfloat16#compile`),
    with its greedy agreement with the exact path's answers of the same configuration.
    """
    from grit_components import load_model

    check_quality_configs(configs)
    model = load_model(model_spec)
    items = load_wikidesc_dev(data_dir, limit)
    kv_dtypes = [MODEL_DTYPE, *(d for d in kv_dtypes if d != MODEL_DTYPE)]
    results: dict = {}
    for name, mode, source, order, passages in QUALITY_CONFIGS:
        if configs and name not in configs:
            continue
        if abs(passages) > 1 and "distractors" not in items[0]:
            for item, distractors in zip(items, bm25_distractors(data_dir, items, DISTRACTORS)):
                item["distractors"] = distractors
        for dtype, backend in [(d, b) for d in (kv_dtypes if mode != "none" else kv_dtypes[:1])
                               for b in ["torch", *(b for b in decode_backends if b != "torch")]]:
            exact_key = name if dtype == MODEL_DTYPE else f"{name}@{dtype}"
            key = exact_key if backend == "torch" else f"{exact_key}#{backend}"
            store = model.kv_store if dtype == MODEL_DTYPE else _store(dtype)
            matches, refusals, outputs, start = 0, 0, [], time.perf_counter()
            for item in items:
                docs = quality_passages(item, passages)
                r = rag.answer(model, QUESTION.format(query=item["query"]), docs, mode=mode, source=source or "causal",
                               order=order, max_new_tokens=new_tokens, store=store, decode_backend=backend)
                refused = rag.says_no_answer(r.text)
                hit = refused if passages < 0 else item["answer"].lower() in r.text.lower()
                matches += hit
                refusals += refused
                outputs.append({"id": item["id"], "output": r.text, "match": hit, "passages": len(docs)})
            results[key] = {"match": matches / len(items), "n": len(items), "seconds": time.perf_counter() - start,
                            "refusals": refusals / len(items), "outputs": outputs}
            line = f"{key:32s} {'refused' if passages < 0 else 'match'} {results[key]['match']:.3f}"
            if passages >= 0:
                line += f"  false refusals {results[key]['refusals']:.2f}"
            if backend != "torch" and exact_key in results:
                agreement = token_agreement(model, [o["output"] for o in outputs],
                                            [o["output"] for o in results[exact_key]["outputs"]])
                results[key]["agreement_with_torch_backend"] = agreement
                line += f"  same as torch: identical {agreement['identical']:.2f} tokens {agreement['tokens']:.3f}"
            elif dtype != MODEL_DTYPE and name in results:
                agreement = token_agreement(model, [o["output"] for o in outputs],
                                            [o["output"] for o in results[name]["outputs"]])
                results[key]["agreement_with_model_dtype"] = agreement
                line += f"  identical {agreement['identical']:.2f} tokens {agreement['tokens']:.3f}"
            print(f"{line}  ({time.perf_counter() - start:.0f}s)", flush=True)
            store.clear()
            report = {"setup": {"model": model_spec, "queries": len(items),
                                "first_query_ids": [i["id"] for i in items[:3]], "new_tokens": new_tokens,
                                "split": "dev", "question": QUESTION,
                                "metric": "answer title in output (case-insensitive); unanswerable_*: the answer says "
                                          "the passages do not say",
                                "torch_threads": torch.get_num_threads(), "kv_dtypes": kv_dtypes,
                                "decode_backends": list(decode_backends)},
                      "results": results}
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(json.dumps(report, indent=2, ensure_ascii=False))  # after every run: partial runs count
    print(f"wrote {output}")
    return report
