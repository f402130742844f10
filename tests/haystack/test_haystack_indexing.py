"""`grit index` as a careful operator needs it: the index knows its model, re-indexing replaces, every
skipped file has a reason, and a killed run resumes without duplicates or repeated work."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from haystack import Document
from typer.testing import CliRunner

from grit_components.cli import app
from grit_components.indexing import IndexManifest, IndexModelMismatchError, point_id, point_payload
from haystack_integrations.common.grit import pipelines as hp
from tests._models import build_tiny_model

runner = CliRunner()
WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
         "upsilon phi chi psi omega").split()


def words(seed: int, count: int) -> str:
    return " ".join(f"{WORDS[(seed * 7 + i) % len(WORDS)]}{(seed + i) % 97}" for i in range(count))


def make_corpus(folder: Path, files: int, words_per_file: int = 450) -> Path:
    """`files` text files of `words_per_file` words: 450 words are 3 chunks for the YAML's splitter."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (folder / f"doc{i:03d}.txt").write_text(words(i, words_per_file), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def other_tiny(tmp_path_factory) -> str:
    """A tiny llama like `tiny` (same 64 dims) with other weights: a fine-tuned copy, as far as an index can tell."""
    return str(build_tiny_model("llama", tmp_path_factory.mktemp("tiny-other"), seed=1))


def index(data_dir, model, paths, **options) -> hp.IndexReport:
    built = hp.load_pipeline("indexing", data_dir=data_dir, model=model, recreate=options.pop("recreate", False))
    try:
        return hp.index_files(built, hp.select_files(paths), **options)
    finally:
        hp.close_pipeline(built)


def chunks_by_source(data_dir, model) -> dict[str, list[Document]]:
    built = hp.load_pipeline("rag", data_dir=data_dir, model=model)
    try:
        (store,) = hp.document_stores(built)
        found: dict[str, list[Document]] = {}
        for doc in store.filter_documents():
            found.setdefault(doc.meta["source"], []).append(doc)
        return found
    finally:
        hp.close_pipeline(built)


# --- the layout other writers must reproduce ---


def test_point_names_and_payloads_are_qdrant_haystacks():
    from haystack_integrations.document_stores.qdrant.converters import convert_id

    assert point_id("3f2a") == convert_id("3f2a")
    doc = Document(id="3f2a", content="text", meta={"source": "/a.txt", "split_id": 0}, embedding=[0.5])
    payload = doc.to_dict(flatten=False)
    payload.pop("embedding")
    assert point_payload(doc.id, doc.content, doc.meta) == payload


def test_manifest_text_is_the_document_embedders_text():
    from haystack_integrations.components.embedders.grit import GritDocumentEmbedder

    embedder = GritDocumentEmbedder(model="smollm2-135m-instruct", meta_fields_to_embed=["title", "year"],
                                    embedding_separator=" | ")
    manifest = IndexManifest("m", "f", 4, "float32", meta_fields=("title", "year"), meta_separator=" | ")
    for meta in ({"title": "Paris", "year": 2024}, {"title": "Paris"}, {}):
        doc = Document(content="body", meta=meta)
        assert manifest.text_to_embed("body", meta) == embedder._text_to_embed(doc)


# --- re-indexing replaces, prune removes, the report says so ---


def test_reindexing_replaces_and_prunes(tmp_path, tiny):
    corpus = make_corpus(tmp_path / "corpus", 4)
    first = index(tmp_path / "data", tiny, [corpus])
    assert [o.status for o in first.files] == ["added"] * 4 and first.documents_in_store == 12

    (corpus / "doc000.txt").write_text(words(50, 220), encoding="utf-8")  # edited: 2 chunks now
    (corpus / "doc003.txt").unlink()
    (corpus / "doc004.txt").write_text(words(60, 100), encoding="utf-8")
    again = index(tmp_path / "data", tiny, [corpus], prune=True)
    assert {o.path.name: o.status for o in again.files} == {
        "doc000.txt": "replaced", "doc001.txt": "unchanged", "doc002.txt": "unchanged", "doc004.txt": "added"}
    assert again.chunks_embedded == 2 + 1 and again.chunks_removed == 3 and again.pruned_chunks == 3
    assert again.pruned == [hp.source_of(corpus / "doc003.txt")]
    stored = chunks_by_source(tmp_path / "data", tiny)
    assert {Path(s).name: len(docs) for s, docs in stored.items()} == {
        "doc000.txt": 2, "doc001.txt": 3, "doc002.txt": 3, "doc004.txt": 1}
    assert words(50, 220)[:40] in " ".join(d.content for d in stored[hp.source_of(corpus / "doc000.txt")])
    summary = "\n".join(again.summary())
    assert "indexed 4 of 4 files: 1 added, 1 replaced, 2 unchanged; 1 removed" in summary
    assert "3 embedded and written, 6 removed" in summary


def test_same_name_in_two_folders_stays_two_files(tmp_path, tiny):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "notes.txt").write_text(f"notes of folder {name}", encoding="utf-8")
    report = index(tmp_path / "data", tiny, [tmp_path / "a", tmp_path / "b"])
    assert report.count("added") == 2 and report.documents_in_store == 2


# --- honest summaries ---


def test_every_skipped_file_has_its_reason(tmp_path, tiny):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "good.txt").write_text("Paris is the capital of France.", encoding="utf-8")
    latin = "Le café crème est une boisson française très appréciée à Paris. " * 3
    (folder / "latin.txt").write_bytes(latin.encode("latin-1"))
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\nnot really a pdf")
    (folder / "noise.txt").write_bytes(bytes(range(256)) * 8)
    (folder / "empty.md").write_text("", encoding="utf-8")
    report = index(tmp_path / "data", tiny, [folder])
    outcomes = {o.path.name: o for o in report.files}
    assert outcomes["good.txt"].status == outcomes["latin.txt"].status == "added"
    assert "decoded as cp1252" in outcomes["latin.txt"].note
    reasons = {name: o.reason for name, o in outcomes.items() if o.status == "failed"}
    assert set(reasons) == {"broken.pdf", "noise.txt", "empty.md"}
    assert "broken.pdf" in reasons["broken.pdf"] and "no other encoding could be detected" in reasons["noise.txt"]
    assert reasons["empty.md"] == "no text found (empty after conversion)"
    stored = chunks_by_source(tmp_path / "data", tiny)
    assert stored[hp.source_of(folder / "latin.txt")][0].content.startswith("Le café crème")  # not mojibake
    assert "indexed 2 of 5 files" in report.summary()[0]


def test_encoding_can_be_set(tmp_path, tiny):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "greek.txt").write_bytes("Αθήνα είναι η πρωτεύουσα".encode("iso-8859-7"))
    report = index(tmp_path / "data", tiny, [tmp_path / "c"], encoding="iso-8859-7")
    assert report.count("added") == 1 and report.files[0].note is None
    assert chunks_by_source(tmp_path / "data", tiny)[hp.source_of(tmp_path / "c" / "greek.txt")][0].content \
        .startswith("Αθήνα")


def test_cli_exit_status_says_whether_files_failed(tmp_path, tiny, corpus_dir):
    data = ["--data-dir", str(tmp_path / "data"), "--model", tiny]
    (tmp_path / "bad.pdf").write_bytes(b"%PDF-1.4 broken")
    (tmp_path / "table.csv").write_text("a,b\n", encoding="utf-8")
    result = runner.invoke(app, ["index", str(corpus_dir / "notes.md"), str(tmp_path / "bad.pdf"), *data])
    assert result.exit_code == 2, result.output
    assert "indexed 1 of 2 files" in result.output and "bad.pdf could not be indexed" in result.output
    assert "bad.pdf:" in result.output  # the reason, listed
    result = runner.invoke(app, ["index", str(corpus_dir / "notes.md"), str(tmp_path / "bad.pdf"), "--skip-errors",
                                 *data])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["index", str(tmp_path / "table.csv"), *data])
    assert result.exit_code == 2 and "unsupported file type '.csv'" in result.output
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.pdf").write_bytes(b"%PDF-1.4 broken")
    result = runner.invoke(app, ["index", str(broken), "--skip-errors", *data])
    assert result.exit_code == 2 and "none of the 1 files could be indexed" in result.output
    result = runner.invoke(app, ["index", str(corpus_dir), "--encoding", "klingon", *data])
    assert result.exit_code == 2 and "--encoding 'klingon'" in result.output
    result = runner.invoke(app, ["index", str(corpus_dir), *data])
    assert result.exit_code == 0 and "ignoring 1 files of other types" in result.output  # the .csv


# --- the index knows its model ---


def test_another_model_is_a_clear_error_on_query_and_write(tmp_path, tiny, other_tiny, corpus_dir):
    index(tmp_path, tiny, [corpus_dir])
    with pytest.raises(IndexModelMismatchError) as caught:
        hp.load_pipeline("rag", data_dir=tmp_path, model=other_tiny)
    message = str(caught.value)
    assert repr(tiny) in message and repr(other_tiny) in message and "--allow-model-mismatch" in message
    with pytest.raises(IndexModelMismatchError, match="--recreate"):
        hp.load_pipeline("indexing", data_dir=tmp_path, model=other_tiny)
    hp.close_pipeline(hp.load_pipeline("rag", data_dir=tmp_path, model=other_tiny, allow_model_mismatch=True))

    redone = index(tmp_path, other_tiny, [corpus_dir], recreate=True)
    assert redone.count("added") == 10 and redone.documents_in_store == redone.chunks_embedded
    hp.close_pipeline(hp.load_pipeline("rag", data_dir=tmp_path, model=other_tiny))  # now it is this model's
    result = runner.invoke(app, ["ask", "Who?", "--data-dir", str(tmp_path), "--model", tiny])
    assert result.exit_code == 2 and "error:" in result.output and "fingerprint" in result.output


def test_an_index_from_before_manifests_is_not_trusted(tmp_path, tiny):
    from haystack_integrations.document_stores.qdrant import QdrantDocumentStore

    store = QdrantDocumentStore(path=str(tmp_path / "qdrant"), index="grit", embedding_dim=64)
    store.write_documents([Document(content="old", embedding=[0.1] * 64)])  # what earlier versions wrote
    store.close()
    with pytest.raises(IndexModelMismatchError, match="holds 1 points but no record of the model"):
        hp.load_pipeline("rag", data_dir=tmp_path, model=tiny)


def test_demo_indexes_again_when_the_model_changes(tmp_path, tiny, other_tiny, corpus_dir):
    data = ["--data-dir", str(tmp_path / "data")]
    first = runner.invoke(app, ["demo", str(corpus_dir), *data, "--model", tiny])
    assert first.exit_code == 0 and "10 added" in first.output, first.output
    changed = runner.invoke(app, ["demo", str(corpus_dir), *data, "--model", other_tiny])
    assert changed.exit_code == 0, changed.output
    assert "made with another model or settings: indexing it again" in changed.output and "10 added" in changed.output
    other = tmp_path / "mine"
    other.mkdir()
    (other / "mine.txt").write_text("my own notes", encoding="utf-8")
    assert runner.invoke(app, ["index", str(other), *data, "--model", other_tiny]).exit_code == 0
    refused = runner.invoke(app, ["demo", str(corpus_dir), *data, "--model", tiny])
    assert refused.exit_code == 2 and "also holds other files" in refused.output  # the user's index survives


# --- resumable: a crash keeps what was written, a re-run embeds only what is missing ---


@pytest.mark.parametrize("crash_after", [1, 4])
def test_a_crashed_run_resumes_without_duplicates_or_repeated_work(tmp_path, tiny, monkeypatch, crash_after):
    from haystack_integrations.document_stores.qdrant import QdrantDocumentStore

    corpus = make_corpus(tmp_path / "corpus", 12)  # 36 chunks, 5 batches of 8
    real_write = QdrantDocumentStore.write_documents
    calls = []

    def dying_write(self, documents, policy=None):
        if len(calls) == crash_after:
            raise KeyboardInterrupt  # the process dies here: nothing after this batch is written
        calls.append(len(documents))
        return real_write(self, documents, policy)

    monkeypatch.setattr(QdrantDocumentStore, "write_documents", dying_write)
    with pytest.raises(KeyboardInterrupt):
        index(tmp_path / "data", tiny, [corpus], batch_size=8)
    monkeypatch.setattr(QdrantDocumentStore, "write_documents", real_write)
    kept = sum(calls)
    assert kept == 8 * crash_after
    report = index(tmp_path / "data", tiny, [corpus], batch_size=8)
    assert report.chunks_embedded == 36 - kept  # nothing written before is embedded again
    assert report.documents_in_store == 36
    stored = chunks_by_source(tmp_path / "data", tiny)
    assert len(stored) == 12 and all(sorted(d.meta["split_id"] for d in docs) == [0, 1, 2] for docs in stored.values())


def _points(database: Path) -> int:
    for _ in range(50):
        try:
            with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=0.2) as connection:
                return connection.execute("SELECT count(*) FROM points").fetchone()[0]
        except sqlite3.OperationalError:  # not created yet, or locked by the writer for a moment
            time.sleep(0.02)
    return 0


def test_kill_9_during_grit_index_then_a_rerun(tmp_path, tiny):
    """The issue's goal: kill -9 at any point of `grit index` on 200 files, then a re-run: exactly 200 files'
    chunks, no duplicates, and the re-run embeds only what the killed run had not written."""
    corpus = make_corpus(tmp_path / "corpus", 200)  # 600 chunks
    data_dir = tmp_path / "data"
    database = data_dir / "qdrant" / "collection" / "grit" / "storage.sqlite"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HAYSTACK_TELEMETRY_ENABLED": "False"}
    process = subprocess.Popen([sys.executable, "-m", "grit_components.cli", "index", str(corpus), "--data-dir",
                                str(data_dir), "--model", tiny, "--batch-size", "16"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while _points(database) < 150 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    kept = _points(database)
    assert 0 < kept < 600, "the run must be killed half-way"
    result = runner.invoke(app, ["index", str(corpus), "--data-dir", str(data_dir), "--model", tiny,
                                 "--batch-size", "16"])
    assert result.exit_code == 0, result.output
    embedded = int(re.search(r"chunks: (\d+) embedded", result.output).group(1))
    assert embedded == 600 - kept
    stored = chunks_by_source(data_dir, tiny)
    assert len(stored) == 200
    assert all(sorted(d.meta["split_id"] for d in docs) == [0, 1, 2] for docs in stored.values())
    assert sum(len(docs) for docs in stored.values()) == 600
