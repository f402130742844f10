"""Match rate of each RAG cache mode and source on WikiDesc dev questions (same as `grit bench rag-quality`).

    python benchmarks/rag_quality.py --limit 50

The gold passage is given; question "What is described as '<query>'?"; match = the article title
appears in the 16-token answer. Writes benchmarks/results/rag_quality.json; see docs/kv-caching.md.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import typer

from grit_components.rag_benchmark import rag_quality_command

if __name__ == "__main__":
    typer.run(rag_quality_command)
