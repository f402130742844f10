"""What the index job reads and how it is chunked: the corpus, its documents and the caller's `Chunker`.

A corpus is files (converted by the chunker), JSON lines, a BEIR folder or Parquet (`Corpus`). Each
document becomes the chunks the index stores (`ChunkedSource`), named with `grit_components.indexing`'s
ids; the `Chunker` that does it comes from the caller (the Haystack integration builds one from the
indexing YAML), so the job itself stays framework-free.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from grit_components._checks import check_choice
from grit_components.indexing import IndexManifest

CORPUS_KINDS = ("files", "jsonl", "beir", "parquet")


@dataclass(frozen=True)
class SourceDocument:
    """One corpus document before chunking: where it comes from (its id), its text and its meta."""

    source: str
    content: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Chunk:
    """One chunk as the index stores it: deterministic document id, text, meta (with `source`)."""

    id: str
    content: str
    meta: dict[str, Any]


@dataclass
class ChunkedSource:
    """The chunks of one source document or file, or why it has none (`error`)."""

    source: str
    chunks: list[Chunk] = field(default_factory=list)
    error: str | None = None
    note: str | None = None


class Chunker(Protocol):
    """Turns files or corpus documents into named chunks, exactly as `grit index` does. Must pickle (it runs
    in Ray tasks). The Haystack integration provides one built from the indexing YAML."""

    def chunk_files(self, paths: Sequence[str], manifest: IndexManifest) -> list[ChunkedSource]: ...

    def chunk_documents(self, documents: Sequence[SourceDocument], manifest: IndexManifest) -> list[ChunkedSource]: ...


@dataclass(frozen=True)
class Corpus:
    """What to index.

    :param kind: "files" (converted by the chunker), "jsonl" (one JSON object per line), "beir" (a folder
        with corpus.jsonl) or "parquet".
    :param paths: the files (for "beir": the folder).
    :param text_field: field holding a document's text (JSONL, BEIR, Parquet).
    :param id_field: field holding its id: the chunks' `source`; "_id" (BEIR), else "id" if present.
    """

    kind: str
    paths: tuple[str, ...]
    text_field: str = "text"
    id_field: str | None = None

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, CORPUS_KINDS)
        # absolute: workers run in other folders (or on other machines, where the corpus must be mounted
        # at the same path), and a file's absolute path is its chunks' source
        object.__setattr__(self, "paths", tuple(str(Path(p).expanduser().resolve()) for p in self.paths))
        if not self.paths:
            raise ValueError("paths must name at least one file or folder")
        for path in self.paths:
            if not Path(path).exists():
                raise ValueError(f"{path} does not exist")
        if self.kind == "beir" and not (Path(self.paths[0]) / "corpus.jsonl").is_file():
            raise ValueError(f"{self.paths[0]} is not a BEIR folder: it has no corpus.jsonl")

    @classmethod
    def detect(cls, paths: Sequence[str | os.PathLike]) -> Corpus | None:
        """A JSONL, BEIR or Parquet corpus if `paths` are one, else None (files for the chunker to convert)."""
        paths = [Path(p) for p in paths]
        if len(paths) == 1 and paths[0].is_dir() and (paths[0] / "corpus.jsonl").is_file():
            return cls("beir", (str(paths[0]),))
        if paths and all(p.is_file() and p.suffix.lower() == ".jsonl" for p in paths):
            return cls("jsonl", tuple(str(p) for p in paths))
        if paths and all(p.suffix.lower() == ".parquet" or (p.is_dir() and any(p.glob("*.parquet"))) for p in paths):
            return cls("parquet", tuple(str(p) for p in paths))
        return None

    def read_paths(self) -> list[str]:
        return [str(Path(self.paths[0]) / "corpus.jsonl")] if self.kind == "beir" else list(self.paths)
