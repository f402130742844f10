"""GritDocumentEmbedder: init, serialization, input checks, meta fields, KV cache storage."""

from __future__ import annotations

import asyncio
import copy

import numpy as np
import pytest
from haystack import Document
from haystack.utils import ComponentDevice, Secret

from grit_components import DEFAULT_MODEL
from haystack_integrations.components.embedders.grit import GritDocumentEmbedder, GritTextEmbedder

TOKEN_DICT = {"type": "env_var", "env_vars": ["HF_API_TOKEN", "HF_TOKEN"], "strict": False}

TYPE = "haystack_integrations.components.embedders.grit.document_embedder.GritDocumentEmbedder"


def test_init_defaults():
    embedder = GritDocumentEmbedder()
    assert embedder.model == DEFAULT_MODEL
    assert embedder.instruction == "" and embedder.batch_size == 32 and embedder.progress_bar is True
    assert embedder.meta_fields_to_embed == [] and embedder.embedding_separator == "\n"
    assert embedder.store_kv_cache is False and embedder.kv_cache_directory is None
    assert embedder._core is None


def test_to_dict_defaults():
    assert GritDocumentEmbedder().to_dict() == {
        "type": TYPE,
        "init_parameters": {
            "model": DEFAULT_MODEL,
            "instruction": "",
            "batch_size": 32,
            "progress_bar": True,
            "meta_fields_to_embed": [],
            "embedding_separator": "\n",
            "max_length": 512,
            "normalize_embeddings": True,
            "truncation": "warn",
            "store_kv_cache": False,
            "kv_cache_directory": None,
            "kv_cache_max_bytes": None,
            "kv_cache_dtype": None,
            "device": None,
            "token": TOKEN_DICT,
            "model_kwargs": None,
            "tokenizer_kwargs": None,
        },
    }


def test_from_dict_round_trip(tiny, tmp_path):
    embedder = GritDocumentEmbedder(tiny, batch_size=4, progress_bar=False, meta_fields_to_embed=["title"],
                                    embedding_separator=" | ", max_length=128, normalize_embeddings=False,
                                    truncation="error", store_kv_cache=True, kv_cache_directory=str(tmp_path),
                                    kv_cache_max_bytes=2**20, kv_cache_dtype="bfloat16",
                                    device=ComponentDevice.from_str("cpu"),
                                    token=Secret.from_env_var("MY_TOKEN", strict=False),
                                    model_kwargs={"attn_implementation": "eager", "revision": "v1"},
                                    tokenizer_kwargs={"use_fast": True})
    data = embedder.to_dict()
    restored = GritDocumentEmbedder.from_dict(copy.deepcopy(data))
    assert restored.to_dict() == data
    assert restored.meta_fields_to_embed == ["title"] and restored.store_kv_cache is True
    assert restored.device == ComponentDevice.from_str("cpu")
    assert restored.loading_options().kv_cache_max_bytes == 2**20
    assert restored.loading_options().kv_cache_dtype == "bfloat16"
    assert restored.loading_options().revision == "v1"


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"batch_size": 0}, ValueError), ({"batch_size": 2.0}, TypeError), ({"progress_bar": 1}, TypeError),
    ({"meta_fields_to_embed": "title"}, TypeError), ({"store_kv_cache": "yes"}, TypeError),
    ({"store_kv_cache": True, "instruction": "Represent the document"}, ValueError),
    ({"kv_cache_directory": ""}, ValueError), ({"kv_cache_dtype": "fp8"}, ValueError),
])
def test_init_rejects_bad_values(kwargs, error):
    with pytest.raises(error):
        GritDocumentEmbedder(**kwargs)


def test_run(tiny):
    embedder = GritDocumentEmbedder(tiny, progress_bar=False)
    docs = [Document(content="Paris is the capital of France.", meta={"title": "Paris"}),
            Document(content="Bananas are yellow.")]
    out = embedder.run(docs)["documents"]
    assert [d.id for d in out] == [d.id for d in docs] and [d.content for d in out] == [d.content for d in docs]
    assert all(len(d.embedding) == 64 for d in out)
    assert docs[0].embedding is None  # inputs are not mutated
    # Same model + no instruction: the document vector equals the text embedder's with instruction "".
    query = GritTextEmbedder(tiny, instruction="").run("Bananas are yellow.")["embedding"]
    assert np.allclose(out[1].embedding, query, atol=1e-5)
    again = asyncio.run(embedder.run_async(docs))["documents"]
    assert np.allclose(again[0].embedding, out[0].embedding, atol=1e-5)


def test_meta_fields_change_the_embedding(tiny):
    doc = Document(content="A city.", meta={"title": "Paris"})
    plain = GritDocumentEmbedder(tiny, progress_bar=False).run([doc])["documents"][0].embedding
    with_meta = GritDocumentEmbedder(tiny, progress_bar=False, meta_fields_to_embed=["title"]).run([doc])["documents"][0]
    assert not np.allclose(plain, with_meta.embedding)
    assert with_meta.content == "A city."


def test_run_empty_and_wrong_inputs(tiny):
    embedder = GritDocumentEmbedder(tiny, progress_bar=False)
    assert embedder.run([]) == {"documents": []}
    with pytest.raises(TypeError, match="GritTextEmbedder"):
        embedder.run("a string")
    with pytest.raises(TypeError):
        embedder.run([Document(content="ok"), "not a document"])


def test_documents_without_content_pass_without_embedding_and_never_stop_the_batch(tiny, caplog):
    embedder = GritDocumentEmbedder(tiny, progress_bar=False)
    docs = [Document(content="Paris is in France."), Document(content=""), Document(content=None),
            Document(content="   "), Document(content="Bananas are yellow.")]
    with caplog.at_level("WARNING"):
        out = embedder.run(docs)["documents"]
    assert [d.id for d in out] == [d.id for d in docs]
    assert [d.embedding is None for d in out] == [False, True, True, True, False]
    alone = embedder.run([docs[4]])["documents"][0].embedding
    assert np.allclose(out[4].embedding, alone, atol=1e-5)  # the others did not change its embedding
    assert "3 Documents have no content to embed" in caplog.text and docs[1].id in caplog.text
    assert embedder.run([Document(content="")])["documents"][0].embedding is None


def test_store_kv_cache_writes_to_the_model_store(tiny, tmp_path):
    embedder = GritDocumentEmbedder(tiny, progress_bar=False, store_kv_cache=True, kv_cache_directory=str(tmp_path))
    store = GritDocumentEmbedder(tiny).embedder.model.kv_store
    previous = store.directory
    try:
        embedder.warm_up()
        assert store.directory == tmp_path
        embedder.run([Document(content="A passage whose cache is kept.")])
        assert any(tmp_path.iterdir())  # the directory tier got a safetensors file
    finally:
        store.directory = previous  # the tiny model is shared by the whole session
