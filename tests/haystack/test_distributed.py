"""The Ray index job: its inputs, reconciliation, writes and errors (fast, no Ray), and whole jobs on a local
Ray instance (marker `ray`) compared with what `grit index` writes."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from grit_components.distributed import (
    Chunk,
    ChunkedSource,
    Corpus,
    EmbedderSettings,
    JobReport,
    QdrantTarget,
    QdrantUnavailableError,
    RayOptions,
    RayUnavailableError,
    SourceDocument,
    run_index_job,
)
from grit_components.distributed.stages import _records, chunk_stage, write_batch
from grit_components.indexing import IndexManifest, IndexModelMismatchError, chunk_id, point_id
from haystack_integrations.common.grit import pipelines as hp

MANIFEST = IndexManifest("m", "f" * 32, 4, "float32")


# --- fast: no Ray ---


def test_corpus_detection_and_errors(tmp_path):
    (tmp_path / "beir").mkdir()
    (tmp_path / "beir" / "corpus.jsonl").write_text("{}\n")
    (tmp_path / "a.jsonl").write_text("{}\n")
    (tmp_path / "t.parquet").write_bytes(b"")
    (tmp_path / "docs").mkdir()
    assert Corpus.detect([tmp_path / "beir"]).kind == "beir"
    assert Corpus.detect([tmp_path / "a.jsonl"]).kind == "jsonl"
    assert Corpus.detect([tmp_path / "t.parquet"]).kind == "parquet"
    assert Corpus.detect([tmp_path / "docs"]) is None  # files: the chunker converts them
    with pytest.raises(ValueError, match="does not exist"):
        Corpus("jsonl", (str(tmp_path / "missing.jsonl"),))
    with pytest.raises(ValueError, match="no corpus.jsonl"):
        Corpus("beir", (str(tmp_path / "docs"),))
    with pytest.raises(ValueError, match="kind must be one of"):
        Corpus("csv", (str(tmp_path / "a.jsonl"),))


def test_options_are_checked_by_name():
    with pytest.raises(ValueError, match="actors must be >= 1"):
        RayOptions(actors=0)
    with pytest.raises(TypeError, match="num_cpus must be a number"):
        RayOptions(num_cpus="2")
    with pytest.raises(ValueError, match="num_cpus must be > 0"):
        RayOptions(num_cpus=0)
    with pytest.raises(ValueError, match="exactly one of url"):
        QdrantTarget(url="http://q:6333", path="/tmp/q")
    with pytest.raises(ValueError, match="similarity must be one of"):
        QdrantTarget(path="/tmp/q", similarity="jaccard")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        EmbedderSettings("m", batch_size=0)


def test_records_become_documents_or_reasons():
    lines = [json.dumps({"_id": "d1", "title": "Paris", "text": "Paris is in France."}), "{not json",
             json.dumps({"title": "no id", "text": "x"}), json.dumps({"_id": "d4", "text": ""}), json.dumps([1])]
    documents, bad = _records({"text": np.array(lines, dtype=object)}, Corpus("jsonl", (__file__,)))
    assert documents == [SourceDocument("d1", "Paris is in France.", {"title": "Paris"})]
    assert [b.error.split(" (")[0] for b in bad] == ["not valid JSON", "no '_id' or 'id' field", "no text in field 'text'",
                                                      "a JSON list, not an object"]


class FakeChunker:
    """One chunk per sentence: enough to see the reconciliation."""

    def chunk_documents(self, documents, manifest):
        return [ChunkedSource(d.source, [Chunk(chunk_id(manifest, d.source, i, s), s, {"source": d.source})
                                         for i, s in enumerate(d.content.split(". "))]) for d in documents]

    def chunk_files(self, paths, manifest):
        return [ChunkedSource(p, error="cannot read") for p in paths]


def test_chunk_stage_reconciles_each_source_with_the_collection():
    def rows(*docs):
        return {"text": np.array([json.dumps({"_id": s, "text": t}) for s, t in docs], dtype=object)}

    first = chunk_stage(rows(("a", "one. two"), ("b", "three")), corpus=Corpus("jsonl", (__file__,)),
                        chunker=FakeChunker(), manifest=MANIFEST.to_dict(), lookup=lambda s: {x: set() for x in s})
    upserts = [i for i, op in enumerate(first["op"]) if op == "upsert"]
    assert list(first["op"]).count("source") == 2 and len(upserts) == 3
    held = {"a": {first["point_id"][upserts[0]], "stale"}, "b": {first["point_id"][upserts[2]]}}
    again = chunk_stage(rows(("a", "one. two"), ("b", "three")), corpus=Corpus("jsonl", (__file__,)),
                        chunker=FakeChunker(), manifest=MANIFEST.to_dict(), lookup=lambda s: {x: held[x] for x in s})
    statuses = {again["source"][i]: again["status"][i] for i, op in enumerate(again["op"]) if op == "source"}
    assert statuses == {"a": "replaced", "b": "unchanged"}
    assert [(op, again["point_id"][i]) for i, op in enumerate(again["op"]) if op == "delete"] == [("delete", "stale")]
    assert [again["content"][i] for i, op in enumerate(again["op"]) if op == "upsert"] == ["two"]


def test_failed_files_become_report_entries():
    out = chunk_stage({"path": np.array(["/x.pdf"], dtype=object)}, corpus=Corpus("files", (__file__,)),
                      chunker=FakeChunker(), manifest=MANIFEST.to_dict(), lookup=lambda s: {})
    assert list(out["op"]) == ["source"] and out["status"][0] == "failed" and out["detail"][0] == "cannot read"


def test_write_batch_writes_haystack_points_and_reports():
    from qdrant_client import QdrantClient, models

    client = QdrantClient(":memory:")
    client.create_collection("c", vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE))
    doc_id = chunk_id(MANIFEST, "a", 0, "one")
    batch = {"op": np.array(["source", "upsert"], dtype=object), "source": np.array(["a", "a"], dtype=object),
             "doc_id": np.array(["", doc_id], dtype=object), "point_id": np.array(["", point_id(doc_id)], dtype=object),
             "content": np.array(["", "one"], dtype=object),
             "meta": np.array(["", json.dumps({"source": "a"})], dtype=object),
             "status": np.array(["added", ""], dtype=object), "detail": np.array(["", ""], dtype=object),
             "chunks": np.array([1, 0]), "vector": np.array([[0, 0, 0, 0], [1, 0, 0, 0]], dtype=np.float32),
             "actor": np.array(["n:1", "n:1"], dtype=object), "embed_seconds": np.array([0.0, 0.5]),
             "threads": np.array([2, 2])}
    report = JobReport()
    report.add(write_batch(client, "c", batch))
    (point,) = client.retrieve("c", [point_id(doc_id)], with_payload=True)
    assert point.payload == {"id": doc_id, "content": "one", "blob": None, "meta": {"source": "a"}, "score": None,
                             "sparse_embedding": None}
    assert (report.written, report.chunks, report.statuses["added"]) == (1, 1, 1)
    assert report.actors["n:1"].throughput == 2.0 and "actor n:1: 1 chunks in 0.5s" in "\n".join(report.summary())


def test_ray_chunker_cuts_files_and_records_as_grit_index_does(tmp_path, corpus_dir):
    from haystack_integrations.common.grit.indexing import name_chunks

    chunker = hp.RayChunker(hp.pipeline_data("indexing", data_dir=tmp_path))
    long_text = " ".join(f"word{i}" for i in range(450))  # three chunks of the YAML's 200-word splitter
    (tmp_path / "long.txt").write_text(long_text, encoding="utf-8")
    files = [str(tmp_path / "long.txt"), str(corpus_dir / "louvre.pdf"), str(tmp_path / "missing.pdf")]
    by_file = chunker.chunk_files(files, MANIFEST)
    chunks, _ = chunker.preprocessor.convert_file(tmp_path / "long.txt")
    expected = name_chunks(chunks, MANIFEST, hp.source_of(tmp_path / "long.txt"))
    assert [(c.id, c.content, c.meta) for c in by_file[0].chunks] == [(d.id, d.content, d.meta) for d in expected]
    assert len(by_file[0].chunks) == 3 and "Louvre" in by_file[1].chunks[0].content
    assert by_file[2].error and not by_file[2].chunks
    (record,) = chunker.chunk_documents([SourceDocument("doc-7", long_text, {"title": "Words"})], MANIFEST)
    assert [c.content for c in record.chunks] == [c.content for c in by_file[0].chunks]  # the same cuts
    assert all(c.meta["source"] == "doc-7" and c.meta["title"] == "Words" for c in record.chunks)
    assert [c.id for c in record.chunks] == [chunk_id(MANIFEST, "doc-7", i, c.content)
                                             for i, c in enumerate(record.chunks)]
    settings = chunker.embedder_settings("my-model")
    assert (settings.model, settings.batch_size, settings.max_length, settings.instruction) == ("my-model", 16, 512, "")


def test_ray_job_embeds_in_the_dtype_the_yaml_gives_the_document_embedder(tmp_path):
    """The components take the dtype in `model_kwargs` (saved as "torch.bfloat16"); the Ray actors load in it too."""
    import torch
    from haystack_integrations.components.embedders.grit import GritDocumentEmbedder

    data = hp.pipeline_data("indexing", data_dir=tmp_path)
    assert hp.RayChunker(data).embedder_settings("m").dtype is None
    for key in ("torch_dtype", "dtype"):
        embedder = GritDocumentEmbedder("GritLM/GritLM-7B", model_kwargs={key: torch.bfloat16})  # nothing is loaded
        data["components"]["embedder"] = embedder.to_dict()
        assert hp.RayChunker(data).embedder_settings("m").dtype == "bfloat16"


def test_unreachable_qdrant_fails_before_anything_starts(tmp_path):
    target = QdrantTarget(url="http://127.0.0.1:9", timeout=2)
    with pytest.raises(QdrantUnavailableError, match="cannot reach Qdrant at http://127.0.0.1:9"):
        run_index_job(Corpus("jsonl", (__file__,)), FakeChunker(), EmbedderSettings("m"), target)


def test_wrong_ray_address_is_a_clear_error(tmp_path, tiny):
    if pytest.importorskip("ray").is_initialized():
        pytest.skip("this process already joined a Ray instance")
    with pytest.raises(RayUnavailableError, match="cannot reach the Ray cluster at '127.0.0.1:9'"):
        run_index_job(Corpus("jsonl", (__file__,)), FakeChunker(), EmbedderSettings(tiny),
                      QdrantTarget(path=str(tmp_path / "q")), RayOptions(address="127.0.0.1:9"))


# --- whole jobs on a local Ray instance ---


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, object_store_memory=256 * 1024**2, include_dashboard=False, logging_level="warning",
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1",
                                           "HAYSTACK_TELEMETRY_ENABLED": "False"}})
    yield ray
    if started:
        ray.shutdown()


def _job(tmp_path, tiny, corpus, *, kv=None, model=None, **options):
    data = hp.pipeline_data("indexing", data_dir=tmp_path)
    chunker = hp.RayChunker(data)
    target = hp.qdrant_target("indexing", data_dir=tmp_path)
    return run_index_job(corpus, chunker, chunker.embedder_settings(model or tiny), target,
                         RayOptions(actors=1, num_cpus=1, batch_size=8, write_batch_size=8), kv_cache_directory=kv,
                         **options)


def _stored(data_dir, model) -> dict[str, tuple]:
    built = hp.load_pipeline("rag", data_dir=data_dir, model=model)
    try:
        (store,) = hp.document_stores(built)
        store.return_embedding = True
        return {d.id: (d.content, d.meta, np.array(d.embedding)) for d in store.filter_documents()}
    finally:
        hp.close_pipeline(built)


@pytest.mark.ray
def test_ray_job_writes_what_grit_index_writes(local_ray, tmp_path, tiny, corpus_dir):
    built = hp.load_pipeline("indexing", data_dir=tmp_path / "cli", model=tiny)
    try:
        hp.index_files(built, hp.select_files([corpus_dir]))
    finally:
        hp.close_pipeline(built)
    files = hp.select_files([corpus_dir]).files
    report = _job(tmp_path / "ray", tiny, Corpus("files", tuple(map(str, files))))
    assert report.statuses["added"] == 10 and report.written == report.chunks == report.points_in_collection
    expected, got = _stored(tmp_path / "cli", tiny), _stored(tmp_path / "ray", tiny)
    assert set(got) == set(expected)  # the same deterministic ids
    for doc_id, (content, meta, vector) in expected.items():
        assert got[doc_id][0] == content and got[doc_id][1] == meta
        np.testing.assert_allclose(got[doc_id][2], vector, atol=1e-5)
    answer_pipeline = hp.load_pipeline("rag", data_dir=tmp_path / "ray", model=tiny)  # rag.yaml reads the points
    try:
        assert len(hp.ask(answer_pipeline, "Who was Diogenes?").sources) == 3
    finally:
        hp.close_pipeline(answer_pipeline)


@pytest.mark.ray
def test_ray_job_resumes_updates_and_stores_kv_caches(local_ray, tmp_path, tiny, other_tiny_dir):
    from grit_components import KVStore, load_model
    from grit_components.embedding import build_inputs

    passages = [{"_id": f"p{i}", "title": f"T{i}", "text": f"Passage number {i} is about topic {i % 3}."}
                for i in range(12)]
    half, full = tmp_path / "half.jsonl", tmp_path / "full.jsonl"
    half.write_text("".join(json.dumps(p) + "\n" for p in passages[:5]))
    full.write_text("".join(json.dumps(p) + "\n" for p in passages) + "{broken\n")
    kv = tmp_path / "kv"
    first = _job(tmp_path, tiny, Corpus("jsonl", (str(half),)), kv=kv)
    assert first.written == 5 and len(list(kv.glob("*.safetensors"))) == 5
    resumed = _job(tmp_path, tiny, Corpus("jsonl", (str(full),)), kv=kv)
    assert resumed.written == 7 and resumed.statuses["unchanged"] == 5 and resumed.statuses["added"] == 7
    assert resumed.failed and "not valid JSON" in resumed.failed[0][1] and resumed.points_in_collection == 12
    passages[0]["text"] = "Passage zero was rewritten."
    full.write_text("".join(json.dumps(p) + "\n" for p in passages))
    updated = _job(tmp_path, tiny, Corpus("jsonl", (str(full),)), kv=kv)
    assert (updated.statuses["replaced"], updated.written, updated.deleted) == (1, 1, 1)
    assert updated.points_in_collection == 12

    model = load_model(tiny)
    (item,) = build_inputs(model, ["Passage zero was rewritten."], instruction="", max_length=512)
    cached = KVStore(directory=kv).get(model.fingerprint, "embedding", item.ids)  # what a replica would read
    assert cached is not None and len(cached.keys) == model.model.config.num_hidden_layers
    stored = _stored(tmp_path, tiny)
    assert {meta["source"] for _, meta, _ in stored.values()} == {p["_id"] for p in passages}
    assert all(meta["title"].startswith("T") for _, meta, _ in stored.values())

    with pytest.raises(IndexModelMismatchError, match="fingerprint"):
        _job(tmp_path, tiny, Corpus("jsonl", (str(full),)), model=other_tiny_dir)


@pytest.mark.ray
def test_cli_ray_then_grit_index_finds_everything_indexed(local_ray, tmp_path, tiny, corpus_dir):
    from typer.testing import CliRunner

    from grit_components.cli import app

    runner = CliRunner()
    data = ["--data-dir", str(tmp_path), "--model", tiny]
    result = runner.invoke(app, ["index", str(corpus_dir), "--ray", "local", "--batch-size", "4", *data])
    assert result.exit_code == 0, result.output
    assert "documents: 10 of 10 indexed (10 added)" in result.output and "actor " in result.output
    again = runner.invoke(app, ["index", str(corpus_dir), *data])  # without Ray: the same points
    assert again.exit_code == 0 and "10 unchanged" in again.output and "0 embedded" in again.output


@pytest.mark.ray
def test_ray_job_reads_parquet(local_ray, tmp_path, tiny):
    import pandas as pd

    pd.DataFrame({"id": ["a", "b"], "text": ["First document.", "Second document."], "year": [2020, 2021]}) \
        .to_parquet(tmp_path / "corpus.parquet")
    report = _job(tmp_path, tiny, Corpus("parquet", (str(tmp_path / "corpus.parquet"),)))
    assert report.written == 2
    assert sorted(meta["year"] for _, meta, _ in _stored(tmp_path, tiny).values()) == [2020, 2021]


@pytest.fixture(scope="module")
def other_tiny_dir(tmp_path_factory) -> str:
    from tests._models import build_tiny_model

    return str(build_tiny_model("llama", tmp_path_factory.mktemp("tiny-other"), seed=1))


def test_cli_ray_errors_before_work(tmp_path, tiny, corpus_dir):
    from typer.testing import CliRunner

    from grit_components.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["index", str(corpus_dir), "--ray", "local", "--prune", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "--prune is not supported with --ray" in result.output
    result = runner.invoke(app, ["index", str(corpus_dir), "--ray", "local", "--data-dir", str(tmp_path),
                                 "--qdrant-url", "http://127.0.0.1:9", "--model", tiny])
    assert result.exit_code == 2 and "cannot reach Qdrant at http://127.0.0.1:9" in result.output

