"""Fixtures for the Haystack tests: a small corpus and tiny-model pipelines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest



@pytest.fixture(scope="session")
def tiny(tiny_llama_dir) -> str:
    """Model spec of the tiny random llama (64-dim embeddings)."""
    return str(tiny_llama_dir)


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF showing `text` (Helvetica), written by hand: no PDF library needed."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    """Eight WikiDesc passages from the bundled demo set as .txt, one .md, one .pdf and a .csv to ignore."""
    from importlib.resources import files

    lines = (files("grit_components") / "data" / "wikidesc-demo.jsonl").read_text(encoding="utf-8").splitlines()
    folder = tmp_path_factory.mktemp("corpus")
    for line in lines[:8]:
        passage = json.loads(line)
        (folder / f"{passage['_id']}.txt").write_text(passage["text"], encoding="utf-8")
    (folder / "notes.md").write_text("# Notes\n\nThe Eiffel Tower is in **Paris**.\n", encoding="utf-8")
    (folder / "louvre.pdf").write_bytes(minimal_pdf("The Louvre is a museum in Paris."))
    (folder / "ignored.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    return folder
