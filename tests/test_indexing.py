"""The index's identity (`IndexManifest`, its checks) and deterministic point names (`chunk_id`, `point_id`)."""

from __future__ import annotations

import pytest

from grit_components.indexing import (
    IndexManifest,
    IndexModelMismatchError,
    check_manifest,
    chunk_id,
    point_id,
    point_payload,
)


def manifest(**changes) -> IndexManifest:
    values = {"model": "smollm2-135m-instruct", "fingerprint": "a" * 32, "dimension": 576, "dtype": "float32"}
    return IndexManifest(**{**values, **changes})


def test_manifest_round_trip_and_key():
    original = manifest(instruction="Represent", meta_fields=["title"], max_length=1024)
    again = IndexManifest.from_dict(original.to_dict())
    assert again == original and again.key == original.key and again.meta_fields == ("title",)
    assert IndexManifest.from_dict({**original.to_dict(), "added_later": 1}) == original  # newer fields ignored


@pytest.mark.parametrize("change", [{"fingerprint": "b" * 32}, {"instruction": "Represent"}, {"max_length": 256},
                                    {"normalize": False}, {"pooling": "last"}, {"meta_fields": ("title",)},
                                    {"meta_separator": " "}, {"attention": "causal"}])
def test_every_vector_setting_changes_the_key(change):
    assert manifest(**change).key != manifest().key


def test_the_spelling_of_the_spec_does_not_change_the_key():
    assert manifest(model="/models/smollm2").key == manifest().key  # the fingerprint identifies the weights


def test_check_write_and_query():
    stored = manifest()
    check_manifest(stored, manifest(), purpose="write", where="c", points=3)
    check_manifest(None, manifest(), purpose="write", where="c", points=0)  # empty and unstamped: fine
    # a query has its own instruction and length; only what makes vectors comparable must match
    check_manifest(stored, manifest(instruction="Given a question", max_length=128), purpose="query", where="c",
                   points=3)
    with pytest.raises(IndexModelMismatchError, match="max_length: 512 -> 128"):
        check_manifest(stored, manifest(max_length=128), purpose="write", where="c", points=3)


def test_mismatch_names_both_models():
    stored, current = manifest(), manifest(model="grit-smollm2-135m", fingerprint="b" * 32)
    with pytest.raises(IndexModelMismatchError) as caught:
        check_manifest(stored, current, purpose="query", where="Qdrant collection 'grit'", points=3)
    message = str(caught.value)
    assert "'smollm2-135m-instruct' (fingerprint aaaaaaaaaaaa" in message
    assert "'grit-smollm2-135m' (fingerprint bbbbbbbbbbbb" in message
    assert caught.value.stored == stored and caught.value.current == current


def test_points_without_a_manifest_cannot_be_checked():
    with pytest.raises(IndexModelMismatchError, match="holds 7 points but no record of the model"):
        check_manifest(None, manifest(), purpose="query", where="c", points=7)
    with pytest.raises(ValueError, match="purpose"):
        check_manifest(None, manifest(), purpose="read", where="c", points=0)


def test_chunk_ids_are_deterministic_and_distinguish_what_matters():
    m = manifest()
    first = chunk_id(m, "/docs/a.txt", 0, "Paris is the capital of France.")
    assert first == chunk_id(m, "/docs/a.txt", 0, "Paris is the capital of France.")
    others = {chunk_id(m, "/docs/b.txt", 0, "Paris is the capital of France."),  # same text, other file
              chunk_id(m, "/docs/a.txt", 1, "Paris is the capital of France."),  # repeated in one file
              chunk_id(m, "/docs/a.txt", 0, "Paris is the capital of Italy."),
              chunk_id(manifest(fingerprint="b" * 32), "/docs/a.txt", 0, "Paris is the capital of France.")}
    assert first not in others and len(others) == 4
    assert chunk_id(m, "s", 0, "lone \ud800 surrogate")  # never a UnicodeEncodeError


def test_point_id_is_a_uuid_of_the_document_id():
    import uuid

    assert uuid.UUID(point_id("abc")).version == 5 and point_id("abc") == point_id("abc") != point_id("abd")


def test_text_to_embed_puts_meta_fields_first():
    m = manifest(meta_fields=("title", "missing"), meta_separator=" | ")
    assert m.text_to_embed("body", {"title": "Paris", "other": 1}) == "Paris | body"
    assert manifest().text_to_embed("body", {"title": "Paris"}) == "body"


def test_payload_layout():
    assert point_payload("id1", "text", {"a": 1}) == {"id": "id1", "content": "text", "blob": None, "meta": {"a": 1},
                                                      "score": None, "sparse_embedding": None}


def test_manifest_for_an_embedder(tiny_model, tiny_llama_dir):
    from grit_components import GritEmbedder

    embedder = GritEmbedder(str(tiny_llama_dir), document_instruction="", max_length=256)
    made = IndexManifest.for_embedder(embedder, meta_fields=["title"])
    assert (made.fingerprint, made.dimension, made.dtype) == (tiny_model.fingerprint, tiny_model.embedding_dim,
                                                              "float32")
    assert (made.max_length, made.meta_fields, made.pooling, made.attention) == (256, ("title",), "mean",
                                                                                 "bidirectional")
