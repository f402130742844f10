"""Fixtures for the Haystack tests: a small corpus and tiny-model pipelines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest



@pytest.fixture(scope="session")
def tiny(tiny_llama_dir) -> str:
    """Model spec of the tiny random llama (64-dim embeddings)."""
    return str(tiny_llama_dir)


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    """Eight WikiDesc passages from the bundled demo set as .txt, plus one .md and one .pdf-free note."""
    from importlib.resources import files

    lines = (files("grit_components") / "data" / "wikidesc-demo.jsonl").read_text(encoding="utf-8").splitlines()
    folder = tmp_path_factory.mktemp("corpus")
    for line in lines[:8]:
        passage = json.loads(line)
        (folder / f"{passage['_id']}.txt").write_text(passage["text"], encoding="utf-8")
    (folder / "notes.md").write_text("# Notes\n\nThe Eiffel Tower is in **Paris**.\n", encoding="utf-8")
    (folder / "ignored.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    return folder
