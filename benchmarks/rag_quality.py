"""Match rate of each RAG cache mode and source on WikiDesc dev questions.

    python benchmarks/rag_quality.py --limit 50
    python benchmarks/rag_quality.py --limit 100 --configs doc/causal --kv-dtypes model,bfloat16,float16,int8
    python benchmarks/rag_quality.py --limit 100 --configs doc/causal --kv-dtypes bfloat16 --decode-backends torch,compile

The gold passage is given; question "What is described as '<query>'?"; match = the article title
appears in the 16-token answer. Writes benchmarks/results/rag_quality.json; see docs/kv-caching.md.
"""

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` as a package, from any directory

import torch  # noqa: E402
import typer  # noqa: E402

from benchmarks.rag_cache import KV_DTYPE_CHOICES, MODEL_DTYPE, check_quality_configs, run_quality  # noqa: E402
from grit_components.models import DEFAULT_MODEL  # noqa: E402
from grit_components.options import DECODE_BACKENDS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def rag_quality_command(
    data: Annotated[Path, typer.Option(help="WikiDesc folder (BEIR layout).")] = ROOT.parent / "shared" / "data" / "wikidesc",
    model: Annotated[str, typer.Option("--model", "-m")] = DEFAULT_MODEL,
    limit: Annotated[Optional[int], typer.Option(min=1, help="First N dev queries.")] = 50,
    output: Annotated[Path, typer.Option(help="JSON results.")] = ROOT / "benchmarks" / "results" / "rag_quality.json",
    threads: Annotated[Optional[int], typer.Option(help="torch threads (default: torch's choice).")] = None,
    configs: Annotated[Optional[str], typer.Option(
        help="Comma-separated configurations to run (default all), e.g. uncached_doc_first,no_retrieval.")] = None,
    kv_dtypes: Annotated[str, typer.Option(
        help=f"Comma-separated cache dtypes for the cached configurations, from {', '.join(KV_DTYPE_CHOICES)}; "
             "each other than 'model' is compared with the model's own dtype (greedy agreement).")] = MODEL_DTYPE,
    decode_backends: Annotated[str, typer.Option(
        help=f"Comma-separated decode backends ({', '.join(DECODE_BACKENDS)}); each other than 'torch' runs every "
             "configuration again and is compared with the exact path's answers (greedy agreement).")] = "torch",
) -> None:
    """Match rate of every RAG cache mode and source on WikiDesc dev questions (gold passage given)."""
    if threads:
        torch.set_num_threads(threads)
    chosen = [c.strip() for c in configs.split(",") if c.strip()] if configs else None
    try:
        check_quality_configs(chosen)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--configs") from error
    dtypes = [d.strip() for d in kv_dtypes.split(",") if d.strip()]
    unknown = [d for d in dtypes if d not in KV_DTYPE_CHOICES]
    if unknown:
        raise typer.BadParameter(f"unknown cache dtypes {unknown}; choose from {', '.join(KV_DTYPE_CHOICES)}",
                                 param_hint="--kv-dtypes")
    backends = [b.strip() for b in decode_backends.split(",") if b.strip()]
    bad = [b for b in backends if b not in DECODE_BACKENDS]
    if bad:
        raise typer.BadParameter(f"unknown decode backends {bad}; choose from {', '.join(DECODE_BACKENDS)}",
                                 param_hint="--decode-backends")
    run_quality(model, data, limit=limit, output=output, configs=chosen, kv_dtypes=dtypes, decode_backends=backends)


if __name__ == "__main__":
    typer.run(rag_quality_command)
