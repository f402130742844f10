"""Decode backends side by side (issue 28): the exact path ("torch") and each other `decode_backend`, in one run.

Run by `rag_latency.py --decode-backends torch,compile`. For each torch thread count, every configuration
runs once per round and the rounds are interleaved, so a change of load hits every backend alike; medians
of the rounds are reported. Configurations per backend: no retrieval, and `doc` caching of one long
document from a warm store of each cache dtype; plus uncached doc-first RAG on the exact path (the
reference for the time to first token). Compilation (the first call of a compiled backend) is timed apart
and never counted in the rounds. Optionally llama.cpp (`[llama-cpp]` extra) answers the same no-retrieval
prompt and the same cached document (its state saved once, restored per answer) at the same thread count,
from the packaged GGUF file or the loaded model written as GGUF (`llama_cpp_variants`).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from benchmarks.host import cpu_flags, cpu_name
from benchmarks.rag_cache import (LATENCY_QUESTION, MODEL_DTYPE, RANDOM_LLAMA, _fill_from, _store, make_document,
                                  random_llama, summarize_runs)
from grit_components import rag
from grit_components.grit_model import GritModel
from grit_components.llama_engine import import_llama_cpp, last_logits, load_sequence, save_sequence
from grit_components.options import DECODE_BACKENDS

NEW_TOKENS = 16


def _median_summary(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "mean": statistics.fmean(values), "min": min(values),
            "max": max(values), "n": len(values), "values": list(values)}


def name_of(config: str, backend: str) -> str:
    """`doc@bfloat16` on the exact path, `doc@bfloat16#compile` on another backend."""
    return config if backend == "torch" else f"{config}#{backend}"


def _dtypes_of(backend: str, kv_dtypes: Sequence[str]) -> list[str]:
    """Cache dtypes a backend is timed with: llama.cpp keeps its own saved states (one layout), the others read
    our store in each dtype."""
    return [MODEL_DTYPE] if backend == "llama_cpp" else list(kv_dtypes)


def backend_ratios(rows: dict, backends: Sequence[str], kv_dtypes: Sequence[str]) -> dict:
    """The issue's measures per backend and cache dtype, as ratios of medians of the same run."""
    def med(name, what="total"):
        entry = rows[name][what]
        return entry["median"] if entry else float("nan")

    out: dict = {}
    for backend in backends:
        no_retrieval = name_of("no_retrieval", backend)
        per: dict = {}
        for dtype in _dtypes_of(backend, kv_dtypes):
            doc = name_of("doc" if dtype == MODEL_DTYPE else f"doc@{dtype}", backend)
            per[dtype] = {
                "doc_vs_no_retrieval_total": med(doc) / med(no_retrieval),
                "doc_vs_no_retrieval_decode_per_token": med(doc, "decode_seconds_per_token")
                / med(no_retrieval, "decode_seconds_per_token"),
                "doc_ttft_vs_uncached_doc_first_ttft": med(doc, "ttft") / med("uncached_doc_first", "ttft"),
                # against the exact path's own no retrieval: what a user of the exact path gains
                "doc_vs_torch_no_retrieval_total": med(doc) / med("no_retrieval"),
                "doc_vs_torch_doc_total": med(doc) / med(name_of(doc.split("#")[0], "torch")),
                "same_text_as_torch": rows[doc]["texts"][-1] == rows[doc.split("#")[0]]["texts"][-1],
            }
        out[backend] = {"no_retrieval_decode_tokens_per_second": 1 / med(no_retrieval, "decode_seconds_per_token"),
                        "kv_dtypes": per}
    return out


def _llama(gguf: Path, tokens: int, threads: int, flash_attn: bool = False):
    return import_llama_cpp().Llama(model_path=str(gguf), n_ctx=max(512, tokens + 8), n_threads=threads, n_threads_batch=threads,
                 n_batch=512, verbose=False, logits_all=False, flash_attn=flash_attn)


def _llama_answer(llm, ids: Sequence[int], new_tokens: int) -> tuple[list[int], float, float]:
    """Evaluate `ids` after the context's current tokens, then decode greedily: (tokens, time of the first token,
    seconds per new token after the first)."""
    llm.eval(list(ids))
    tokens = [int(last_logits(llm).argmax())]
    t1 = time.perf_counter()
    for _ in range(new_tokens - 1):
        llm.eval([tokens[-1]])
        tokens.append(int(last_logits(llm).argmax()))
    return tokens, t1, (time.perf_counter() - t1) / (new_tokens - 1)


def llama_cpp_doc_cache(gguf: Path, prompt: rag.RagPrompt, no_retrieval_ids: Sequence[int], threads: int,
                        new_tokens: int, repeats: int, flash_attn: bool = False) -> dict:
    """llama.cpp answering from a cached document: the document's state (its KV cache) is saved once, and each
    answer restores it, evaluates the suffix and decodes, against llama.cpp's own no-retrieval answer in
    interleaved rounds (the same ratios as the torch backends), and its uncached doc-first answer (run in the
    warm-up round and the last round only: its prompt is the whole document). The state is held in memory
    (`llama_engine.save_sequence`), as the llama_cpp backend's store holds it."""
    if len(prompt.segments) != 1:
        raise ValueError(f"llama_cpp_doc_cache: one cached segment (mode 'doc'), got {len(prompt.segments)}")
    document, suffix = prompt.segments[0], prompt.suffix_ids
    llm = _llama(gguf, len(document) + len(suffix) + new_tokens, threads, flash_attn)
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(list(document))
    state = save_sequence(llm)
    fill = time.perf_counter() - t0
    rows: dict = {name: {"total": [], "ttft": [], "decode": [], "texts": []}
                  for name in ("no_retrieval", "doc", "uncached_doc_first")}
    for round_ in range(repeats + 1):  # the first round warms up and is dropped
        for name in rows:
            if name == "uncached_doc_first" and 0 < round_ < repeats:
                continue
            t0 = time.perf_counter()
            if name == "doc":
                load_sequence(llm, state)
                tokens, t1, per = _llama_answer(llm, suffix, new_tokens)
            else:
                llm.reset()
                tokens, t1, per = _llama_answer(llm, no_retrieval_ids if name == "no_retrieval"
                                                else [*document, *suffix], new_tokens)
            row = rows[name]
            row["total"].append(time.perf_counter() - t0)
            row["ttft"].append(t1 - t0)
            row["decode"].append(per)
            row["texts"].append(llm.detokenize(tokens).decode("utf-8", "replace"))
    summary = {name: {"total": _median_summary(row["total"][1:]), "ttft": _median_summary(row["ttft"][1:]),
                      "decode_seconds_per_token": _median_summary(row["decode"][1:]), "text": row["texts"][-1]}
               for name, row in rows.items()}

    def med(name, what):
        return summary[name][what]["median"]

    return {"gguf": str(gguf), "flash_attn": flash_attn, "document_tokens": len(document),
            "state_bytes": state.nbytes, "fill_seconds": fill, "rows": summary,
            "no_retrieval_decode_tokens_per_second": 1 / med("no_retrieval", "decode_seconds_per_token"),
            "ratios": {"doc_vs_no_retrieval_total": med("doc", "total") / med("no_retrieval", "total"),
                       "doc_vs_no_retrieval_decode_per_token": med("doc", "decode_seconds_per_token")
                       / med("no_retrieval", "decode_seconds_per_token"),
                       "doc_ttft_vs_uncached_doc_first_ttft": med("doc", "ttft") / med("uncached_doc_first", "ttft"),
                       "same_text_doc_and_uncached": summary["doc"]["text"] == summary["uncached_doc_first"]["text"]}}


LLAMA_CPP_WEIGHTS = ("packaged", "f32", "f16", "q8_0")


def check_llama_cpp_variants(names: Sequence[str]) -> None:
    """ValueError naming the first variant that is not `<weights>` or `<weights>+fa`."""
    for name in names:
        weights, _, flag = name.partition("+")
        if weights not in LLAMA_CPP_WEIGHTS or flag not in ("", "fa"):
            raise ValueError(f"llama_cpp: unknown variant {name!r}; use one of {list(LLAMA_CPP_WEIGHTS)}, "
                             "optionally with +fa (flash attention)")


def llama_cpp_variants(model: GritModel, names: Sequence[str], directory: Path) -> dict[str, tuple[Path, bool]]:
    """{name: (GGUF file, flash attention)} for llama.cpp variants named `<weights>` or `<weights>+fa` (flash
    attention on): "packaged" is the packaged base's own GGUF file (4.5-bit Q4_1 for SmolLM2: other weights
    than the torch path's); "f32", "f16" and "q8_0" are the loaded model (adapter merged) written by
    `grit_components.export.export_gguf` into `directory`: f32 is the torch path's weights exactly."""
    from grit_components.export import base_gguf_of, export_gguf

    check_llama_cpp_variants(names)
    out: dict[str, tuple[Path, bool]] = {}
    for name in names:
        weights, _, flag = name.partition("+")
        if weights == "packaged":
            if "amx_int8" in cpu_flags():
                raise ValueError("llama_cpp: the packaged variant (a Q4_1 file) crashed llama.cpp's AMX kernels on an "
                                 "AMX CPU like this one (segmentation fault in llama_decode, ggml-org/llama.cpp#20824; "
                                 "docs/kv-caching.md); use f32 or f16")
            path = base_gguf_of(model.name)
        else:
            path = directory / f"model.{weights}.gguf"
            if not path.exists():
                export_gguf(model, path, dtype=weights)
        out[name] = (path, flag == "fa")
    return out


def decode_backend_latency(model: GritModel, *, length: int, backends: Sequence[str], kv_dtypes: Sequence[str],
                           threads: Sequence[int], repeats: int, llama_cpp: Mapping[str, tuple[Path, bool]] | None = None,
                           log: Callable[[str], None] = print) -> dict:
    """Every backend at every thread count on one model, one `length`-token document (see the module doc)."""
    unknown = [b for b in backends if b not in DECODE_BACKENDS]
    if unknown:
        raise ValueError(f"decode_backend: unknown {unknown}; choose from {list(DECODE_BACKENDS)}")
    backends = ["torch", *(b for b in backends if b != "torch")]
    kv_dtypes = [MODEL_DTYPE, *(d for d in kv_dtypes if d != MODEL_DTYPE)]
    stores = {dtype: _store(dtype, max_bytes=8 * 1024**3) for dtype in kv_dtypes}
    query = LATENCY_QUESTION
    doc = [make_document(model, length)]
    rag.cache_documents(model, doc, source="causal", store=stores[MODEL_DTYPE])
    _fill_from(model, stores[MODEL_DTYPE], [stores[d] for d in kv_dtypes[1:]], doc)

    def ask(docs, mode, dtype, backend):
        return lambda: rag.answer(model, query, docs, mode=mode, source="causal", max_new_tokens=NEW_TOKENS,
                                  store=stores[dtype], decode_backend=backend)

    calls = {"uncached_doc_first": ask(doc, "none", MODEL_DTYPE, "torch")}
    for backend in backends:
        calls[name_of("no_retrieval", backend)] = ask([], "none", MODEL_DTYPE, backend)
        for dtype in _dtypes_of(backend, kv_dtypes):
            calls[name_of("doc" if dtype == MODEL_DTYPE else f"doc@{dtype}", backend)] = ask(doc, "doc", dtype, backend)

    out: dict = {"document_tokens": len(model.tokenize(doc[0])), "backends": backends, "kv_dtypes": kv_dtypes,
                 "threads": {}}
    for count in threads:
        torch.set_num_threads(count)
        warm: dict = {}
        for name, call in calls.items():  # warm-up; the first call of a compiled backend compiles
            t0 = time.perf_counter()
            call()
            warm[name] = time.perf_counter() - t0
        runs: dict = {name: [] for name in calls}
        for _ in range(repeats):
            for name, call in calls.items():
                runs[name].append(call())
        rows = {name: summarize_runs(results, _median_summary) for name, results in runs.items()}
        for name, row in rows.items():
            per_token = row["decode_seconds_per_token"]
            log(f"  {count} thread(s) {name:28s} total {row['total']['median']:.2f}s ttft {row['ttft']['median']:.2f}s "
                f"decode {per_token['median'] * 1000 if per_token else float('nan'):.1f} ms/token")
        entry = {"rows": rows, "warm_up_seconds": warm, "ratios": backend_ratios(rows, backends, kv_dtypes)}
        if llama_cpp:
            prompt = rag.build_prompt(model, query, [], "none").prompt_ids()
            entry["llama_cpp"] = {}
            for name, (gguf, flash) in llama_cpp.items():
                result = llama_cpp_doc_cache(gguf, rag.build_prompt(model, query, doc, "doc"), prompt, count,
                                             NEW_TOKENS, repeats, flash_attn=flash)
                entry["llama_cpp"][name] = result
                for backend in backends:
                    entry["ratios"][backend].setdefault("no_retrieval_tokens_per_second_vs_llama_cpp", {})[name] = (
                        entry["ratios"][backend]["no_retrieval_decode_tokens_per_second"]
                        / result["no_retrieval_decode_tokens_per_second"])
                log(f"  {count} thread(s) llama.cpp {name}: no retrieval "
                    f"{result['no_retrieval_decode_tokens_per_second']:.1f} tokens/s; {json.dumps(result['ratios'])}")
        log(json.dumps(entry["ratios"], indent=2))
        out["threads"][str(count)] = entry
    return out


def run_decode_backends(models: Sequence[str], *, length: int, backends: Sequence[str], kv_dtypes: Sequence[str],
                        threads: Sequence[int], repeats: int, output: Path,
                        llama_cpp: Sequence[str] = ()) -> dict:
    """`llama_cpp`: llama.cpp variants to time beside the torch backends (see `llama_cpp_variants`)."""
    from grit_components import load_model

    report: dict = {"setup": {"new_tokens": NEW_TOKENS, "batch": 1, "repeats": repeats, "statistic": "median",
                              "cpu": cpu_name(), "torch": torch.__version__, "threads": list(threads),
                              "load_average_1m_at_start": os.getloadavg()[0],
                              "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                              "source": "causal (cached modes timed with a warm store)"},
                    "models": {}}
    for spec in models:
        model = random_llama() if spec == RANDOM_LLAMA else load_model(spec)
        print(f"{spec}: load average {os.getloadavg()[0]:.1f}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            variants = llama_cpp_variants(model, llama_cpp, Path(tmp))
            report["models"][spec] = decode_backend_latency(
                model, length=length, backends=backends, kv_dtypes=kv_dtypes, threads=threads, repeats=repeats,
                llama_cpp=variants, log=lambda s: print(s, flush=True))
        report["models"][spec]["load_average_1m_at_end"] = os.getloadavg()[0]
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"wrote {output}")
    return report
