"""RAG latency per cache mode against document length (same as `grit bench rag-latency`).

    python benchmarks/rag_latency.py                      # SmolLM2-135M and a random ~200M Llama
    python benchmarks/rag_latency.py --model random-llama-200m --repeats 2 --lengths 256,1024

Writes benchmarks/results/rag_latency.json and docs/img/rag_latency.png; see docs/kv-caching.md.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import typer

from grit_components.rag_benchmark import rag_latency_command

if __name__ == "__main__":
    typer.run(rag_latency_command)
