"""RAG latency per cache mode against document length.

    python benchmarks/rag_latency.py                      # SmolLM2-135M and a random ~200M Llama
    python benchmarks/rag_latency.py --model random-llama-200m --repeats 2 --lengths 256,1024
    python benchmarks/rag_latency.py --model smollm2-135m-instruct --kv-dtypes model,bfloat16,int8
    python benchmarks/rag_latency.py -m smollm2-135m-instruct --lengths 4096 --modes doc   # dtypes only: minutes
    python benchmarks/rag_latency.py -m smollm2-135m-instruct --lengths 4096 --kv-dtypes model,bfloat16,int8 \
        --decode-backends torch,compile --threads 1,2 --llama-cpp packaged,f32,f16+fa --output benchmarks/results/rag_latency_decode.json

Writes benchmarks/results/rag_latency.json and docs/img/rag_latency.png; see docs/kv-caching.md. With
`--decode-backends` it compares decode backends instead (`benchmarks/decode_backends.py`): every backend in the
same run, interleaved rounds, medians, at each of `--threads`, on the longest of `--lengths`.
"""

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` as a package, from any directory

import torch  # noqa: E402
import typer  # noqa: E402

from benchmarks.rag_cache import (  # noqa: E402
    DEFAULT_KV_DTYPES,
    KV_DTYPE_CHOICES,
    LATENCY_MODES,
    LENGTHS,
    RANDOM_LLAMA,
    check_latency_modes,
    run_latency,
)
from benchmarks.decode_backends import check_llama_cpp_variants, run_decode_backends  # noqa: E402
from grit_components.models import DEFAULT_MODEL  # noqa: E402
from grit_components.options import DECODE_BACKENDS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "rag_latency.json"


def rag_latency_command(
    model: Annotated[Optional[list[str]], typer.Option("--model", "-m", help=f"Model spec or '{RANDOM_LLAMA}'; repeatable.")] = None,
    repeats: Annotated[int, typer.Option(min=1)] = 3,
    lengths: Annotated[str, typer.Option(help="Comma-separated document lengths in tokens.")] = ",".join(map(str, LENGTHS)),
    output: Annotated[Path, typer.Option(help="JSON results.")] = DEFAULT_OUTPUT,
    plot_path: Annotated[Optional[Path], typer.Option("--plot", help="PNG plot.")] = ROOT / "docs" / "img" / "rag_latency.png",
    threads: Annotated[Optional[str], typer.Option(
        help="torch threads (default: torch's choice); with --decode-backends a comma-separated list, e.g. 1,2.")] = None,
    kv_dtypes: Annotated[str, typer.Option(
        help=f"Comma-separated cache dtypes for doc/multi_doc caching, from {', '.join(KV_DTYPE_CHOICES)} "
             "('model': the model's own dtype, always run).")] = ",".join(DEFAULT_KV_DTYPES),
    modes: Annotated[Optional[str], typer.Option(
        help=f"Comma-separated modes to run (default all): {', '.join(LATENCY_MODES)}; no_retrieval and doc "
             "always run, multi_doc is the several-documents section.")] = None,
    decode_backends: Annotated[Optional[str], typer.Option(
        help=f"Compare decode backends ({', '.join(DECODE_BACKENDS)}) instead of the cache modes: no retrieval, "
             "doc caching per --kv-dtypes and uncached doc-first at the longest length, at each --threads.")] = None,
    llama_cpp: Annotated[Optional[str], typer.Option(
        "--llama-cpp", help="With --decode-backends: also time llama.cpp (the [llama-cpp] extra) on these GGUF "
                            "variants, comma-separated: packaged (the packaged base's file), f32, f16, q8_0 (the "
                            "loaded model written as GGUF; f32 is the torch path's weights), each optionally +fa "
                            "(flash attention), e.g. packaged,f32,f16+fa.")] = None,
) -> None:
    """Latency of every RAG cache mode against document length (16 new tokens, batch 1)."""
    if plot_path is not None and str(plot_path).lower() in ("", ".", "none"):
        plot_path = None
    chosen = [d.strip() for d in kv_dtypes.split(",") if d.strip()]
    unknown = [d for d in chosen if d not in KV_DTYPE_CHOICES]
    if unknown:
        raise typer.BadParameter(f"unknown cache dtypes {unknown}; choose from {', '.join(KV_DTYPE_CHOICES)}",
                                 param_hint="--kv-dtypes")
    counts = [int(x) for x in threads.split(",") if x.strip()] if threads else []
    if decode_backends is not None:
        backends = [b.strip() for b in decode_backends.split(",") if b.strip()]
        bad = [b for b in backends if b not in DECODE_BACKENDS]
        if bad:
            raise typer.BadParameter(f"unknown decode backends {bad}; choose from {', '.join(DECODE_BACKENDS)}",
                                     param_hint="--decode-backends")
        specs = model or [DEFAULT_MODEL]
        variants = [v.strip() for v in llama_cpp.split(",") if v.strip()] if llama_cpp else []
        try:
            check_llama_cpp_variants(variants)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="--llama-cpp") from error
        if output == DEFAULT_OUTPUT:
            output = output.with_name("rag_latency_decode.json")
        run_decode_backends(specs, length=max(int(x) for x in lengths.split(",")), backends=backends,
                            kv_dtypes=chosen, threads=counts or [torch.get_num_threads()], repeats=repeats,
                            output=output, llama_cpp=variants)
        return
    picked = [m.strip() for m in modes.split(",") if m.strip()] if modes else None
    try:
        check_latency_modes(picked)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--modes") from error
    run_latency(model or [DEFAULT_MODEL, RANDOM_LLAMA], repeats=repeats, kv_dtypes=chosen, modes=picked,
                lengths=[int(x) for x in lengths.split(",")], output=output, plot_path=plot_path,
                threads=counts[0] if counts else None)


if __name__ == "__main__":
    typer.run(rag_latency_command)
