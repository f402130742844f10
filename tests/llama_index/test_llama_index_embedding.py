"""GritEmbedding: LlamaIndex base-class checks, equality with the core, async parity, model sharing."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.embeddings.grit import GritEmbedding

from grit_components import GritEmbedder, ModelRegistry

TEXTS = ["Paris is the capital of France.", "The Parthenon is a former temple on the Athenian Acropolis.", "Cats purr."]


def test_class():
    assert BaseEmbedding.__name__ in [cls.__name__ for cls in GritEmbedding.__mro__]
    assert GritEmbedding.class_name() == "GritEmbedding"


def test_init_is_lazy_and_serialises(tiny_grit_dir):
    registry = ModelRegistry()
    embedding = GritEmbedding(tiny_grit_dir, query_instruction="Find it", text_instruction="Doc", embed_batch_size=4,
                              max_length=128, normalize=False, device="cpu", model_kwargs={"attn_implementation": "eager"},
                              registry=registry)
    assert registry.loads == 0  # nothing loaded before first use
    data = embedding.to_dict()
    assert data["class_name"] == "GritEmbedding"
    assert {k: data[k] for k in ("model_name", "query_instruction", "text_instruction", "embed_batch_size",
                                 "max_length", "normalize", "device", "model_kwargs")} == {
        "model_name": tiny_grit_dir, "query_instruction": "Find it", "text_instruction": "Doc", "embed_batch_size": 4,
        "max_length": 128, "normalize": False, "device": "cpu", "model_kwargs": {"attn_implementation": "eager"}}
    assert embedding.embedder.loading.model_kwargs == {"attn_implementation": "eager"}
    again = GritEmbedding.from_dict(data)
    assert again.to_dict() == data
    assert GritEmbedding.from_json(embedding.to_json()).to_dict() == data


def test_bad_settings():
    with pytest.raises(ValueError):
        GritEmbedding(embed_batch_size=0)
    with pytest.raises(ValueError):
        GritEmbedding("no-such-alias")


def test_equals_core(tiny_grit_dir):
    instruction = "Given a short description, retrieve the Wikipedia passage"
    embedding = GritEmbedding(tiny_grit_dir, query_instruction=instruction, embed_batch_size=2)
    core = GritEmbedder(tiny_grit_dir, query_instruction=instruction, batch_size=2)
    np.testing.assert_allclose(embedding.get_text_embedding_batch(TEXTS), core.embed_documents(TEXTS), atol=1e-5)
    np.testing.assert_allclose(embedding.get_query_embedding("a temple"), core.embed_query("a temple"), atol=1e-5)
    np.testing.assert_allclose(embedding.get_text_embedding(TEXTS[1]), core.embed_documents(TEXTS[1:2])[0], atol=1e-5)
    # The instruction matters: a query is not embedded like the same text as a document.
    assert not np.allclose(embedding.get_query_embedding(TEXTS[0]), embedding.get_text_embedding(TEXTS[0]))
    assert embedding.embedder.model is core.model  # one shared model


def test_async_parity(tiny_grit_dir):
    embedding = GritEmbedding(tiny_grit_dir)

    async def run():
        return (await embedding.aget_query_embedding("a temple"), await embedding.aget_text_embedding(TEXTS[0]),
                await embedding.aget_text_embedding_batch(TEXTS))

    query, text, batch = asyncio.run(run())
    np.testing.assert_allclose(query, embedding.get_query_embedding("a temple"), atol=1e-6)
    np.testing.assert_allclose(text, embedding.get_text_embedding(TEXTS[0]), atol=1e-6)
    np.testing.assert_allclose(batch, embedding.get_text_embedding_batch(TEXTS), atol=1e-6)


def test_an_empty_node_is_embedded_and_never_stops_the_batch(tiny_grit_dir):
    from llama_index.core.ingestion import IngestionPipeline
    from llama_index.core.schema import TextNode

    from grit_components.embedding import EmptyTextWarning

    embedding = GritEmbedding(tiny_grit_dir)
    nodes = [TextNode(text=TEXTS[0]), TextNode(text=""), TextNode(text=TEXTS[1])]
    with pytest.warns(EmptyTextWarning):  # an ingestion pipeline embeds every node, empty ones too
        embedded = IngestionPipeline(transformations=[embedding]).run(nodes=nodes)
    assert [node.text for node in embedded] == [TEXTS[0], "", TEXTS[1]]
    assert all(node.embedding is not None and np.isfinite(node.embedding).all() for node in embedded)
    np.testing.assert_allclose([embedded[0].embedding, embedded[2].embedding],
                               embedding.get_text_embedding_batch([TEXTS[0], TEXTS[1]]), atol=1e-5)


def test_empty_query_is_a_value_error(tiny_grit_dir):
    with pytest.raises(ValueError):
        GritEmbedding(tiny_grit_dir).get_query_embedding("")


def test_store_kv_cache_fills_the_model_store(tiny_grit_dir):
    embedding = GritEmbedding(tiny_grit_dir, store_kv_cache=True)
    store = embedding.embedder.model.kv_store
    before = len(store)
    vectors = embedding.get_text_embedding_batch(["A unique passage about kv caching.", "Another one."])
    assert len(store) == before + 2
    np.testing.assert_allclose(vectors, GritEmbedding(tiny_grit_dir).get_text_embedding_batch(
        ["A unique passage about kv caching.", "Another one."]), atol=1e-5)


def test_one_model_for_embedding_rerank_and_llm(tiny_grit_dir):
    from llama_index.llms.grit import GritLLM

    registry = ModelRegistry()
    embedding = GritEmbedding(tiny_grit_dir, registry=registry)
    llm = GritLLM(tiny_grit_dir, registry=registry)
    embedding.get_query_embedding("load it")
    llm.warm_up()
    models = [embedding.embedder.model, llm.generator.model]
    try:
        from llama_index.postprocessor.grit_rerank import GritRerank
    except ImportError:  # reranking core not there yet
        pass
    else:
        rerank = GritRerank(model=tiny_grit_dir, registry=registry)
        rerank.warm_up()
        models.append(rerank.reranker.model)
    assert registry.loads == 1
    assert all(model is models[0] for model in models)
