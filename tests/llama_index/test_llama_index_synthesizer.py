"""GritCacheSynthesizer in the stock RetrieverQueryEngine: cache modes against the uncached prompt, cache
hits, streaming, events, token counting, prompt mixins, bad inputs, and a persisted Qdrant index reopened
in a new process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from importlib import resources
from typing import List

import pytest
from llama_index.core import Document, PromptTemplate, StorageContext, VectorStoreIndex
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager, TokenCountingHandler
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.response_synthesizers import BaseSynthesizer
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode
from llama_index.embeddings.grit import GritEmbedding
from llama_index.llms.grit import GritCacheSynthesizer, GritLLM
from llama_index.postprocessor.grit_rerank import GritRerank

from grit_components import ModelRegistry
from grit_components.generation import generate_ids
from grit_components.rag import build_prompt

TEXTS = ["Paris is the capital and largest city of France.", "Berlin is the capital of Germany.",
         "The Parthenon is a former temple on the Athenian Acropolis.", "Cats purr when they are content."]
QUERY = "What is the capital of France?"
WIKIDESC_QUERY_INSTRUCTION = "Given a short description, retrieve the Wikipedia passage about the entity it describes"


@pytest.fixture(scope="module")
def index(tiny_grit_dir):
    return VectorStoreIndex.from_documents([Document(text=t) for t in TEXTS], embed_model=GritEmbedding(tiny_grit_dir))


@pytest.fixture()
def llm(tiny_grit_dir):
    llm = GritLLM(tiny_grit_dir, max_new_tokens=12)
    llm.generator.model.kv_store.clear()  # hits below must come from this test
    return llm


def engine_over(index, llm, top_k: int = 2, node_postprocessors=None, streaming: bool = False, **synthesizer):
    """The stock query engine with the cache-aware synthesizer."""
    return index.as_query_engine(llm=llm, similarity_top_k=top_k, node_postprocessors=node_postprocessors or [],
                                 response_synthesizer=GritCacheSynthesizer(llm, streaming=streaming, **synthesizer))


class FixedRetriever(BaseRetriever):
    def __init__(self, nodes: List[NodeWithScore]) -> None:
        super().__init__()
        self.nodes = nodes
        self.bundles: List[QueryBundle] = []

    def _retrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        self.bundles.append(query_bundle)
        return list(self.nodes)


def test_class_and_bad_settings(index, llm, tiny_grit_dir):
    assert issubclass(GritCacheSynthesizer, BaseSynthesizer)
    assert isinstance(engine_over(index, llm), RetrieverQueryEngine)
    with pytest.raises(ValueError, match="mode"):
        GritCacheSynthesizer(llm, cache_mode="docs")
    with pytest.raises(ValueError, match="cache_source"):
        GritCacheSynthesizer(llm, cache_source="disk")
    with pytest.raises(ValueError, match="unknown generate_kwargs"):
        GritCacheSynthesizer(llm, beams=2)
    with pytest.raises(TypeError, match="needs a GritLLM"):
        GritCacheSynthesizer(object())
    fresh = GritLLM(tiny_grit_dir, registry=ModelRegistry())
    GritCacheSynthesizer(fresh)
    assert not fresh.generator.handle.loaded  # building it reads no model metadata, so nothing is loaded


# Several multi_doc caches are composed by a RoPE shift, exact only up to float rounding: the core promises
# token-identical answers for "doc" and one-document "multi_doc".
@pytest.mark.parametrize(("mode", "top_k"), [("doc", 2), ("multi_doc", 1)])
def test_causal_cache_equals_uncached_and_hits_on_repeat(index, llm, mode, top_k):
    engine = engine_over(index, llm, top_k, cache_mode=mode, cache_source="causal")
    first = engine.query(QUERY)
    docs = [n.node.get_content(metadata_mode=MetadataMode.LLM) for n in first.source_nodes]
    assert len(docs) == top_k
    model = llm.generator.model
    uncached = generate_ids(model, build_prompt(model, QUERY, docs, mode).prompt_ids(), max_new_tokens=12)
    assert first.response == uncached.text and first.response.strip()
    grit = first.metadata["grit"]
    assert grit["cache"]["cache_misses"] >= 1 and grit["cache"]["cache_hits"] == 0
    second = engine.query(QUERY).metadata["grit"]
    assert engine.query(QUERY).response == first.response
    assert second["cache"]["cache_hits"] >= 1 and second["cache"]["cache_misses"] == 0
    assert second["cache"]["prefill_tokens"] < grit["cache"]["prefill_tokens"]
    assert set(second["timings"]) >= {"generate", "total"} and second["cache_mode"] == mode
    assert second["usage"]["completion_tokens"] > 0
    assert all(n.node.node_id in first.metadata for n in first.source_nodes)  # the stock node metadata stays


def test_indexing_time_caches_are_hit(tiny_grit_dir, llm):
    """GritEmbedding(store_kv_cache=True) stores the embedding-pass states the synthesizer then reuses."""
    texts = ["Rome is the capital of Italy.", "Madrid is the capital of Spain."]
    index = VectorStoreIndex.from_documents([Document(text=t) for t in texts],
                                            embed_model=GritEmbedding(tiny_grit_dir, store_kv_cache=True))
    response = engine_over(index, llm, 2, cache_mode="multi_doc", cache_source="embedding").query(
        "What is the capital of Italy?")
    assert response.metadata["grit"]["cache"]["cache_hits"] == 2
    assert response.metadata["grit"]["cache"]["cache_misses"] == 0


def test_streaming_and_async_equal_plain(index, llm):
    plain = engine_over(index, llm, cache_mode="none").query(QUERY)
    streaming = engine_over(index, llm, cache_mode="none", streaming=True).query(QUERY)
    assert "".join(streaming.response_gen) == plain.response
    assert streaming.metadata["grit"]["usage"] == plain.metadata["grit"]["usage"]  # filled when the stream ended
    assert [n.node.node_id for n in streaming.source_nodes] == [n.node.node_id for n in plain.source_nodes]
    engine = engine_over(index, llm, cache_mode="none")
    assert asyncio.run(engine.aquery(QUERY)).response == plain.response

    async def stream_async():
        response = await engine_over(index, llm, cache_mode="none", streaming=True).aquery(QUERY)
        return "".join([piece async for piece in response.async_response_gen()])

    assert asyncio.run(stream_async()) == plain.response


def test_blank_query_is_a_value_error(index, llm):
    with pytest.raises(ValueError, match="query"):
        engine_over(index, llm).query("   ")


def test_nodes_without_text_are_not_read(llm):
    nodes = [NodeWithScore(node=TextNode(text=""), score=0.9), NodeWithScore(node=TextNode(text=TEXTS[0]), score=0.8)]
    synthesizer = GritCacheSynthesizer(llm, cache_mode="doc", cache_source="causal")
    response = RetrieverQueryEngine(retriever=FixedRetriever(nodes), response_synthesizer=synthesizer).query(QUERY)
    alone = RetrieverQueryEngine(retriever=FixedRetriever(nodes[1:]), response_synthesizer=synthesizer).query(QUERY)
    assert response.response == alone.response
    only_empty = RetrieverQueryEngine(retriever=FixedRetriever(nodes[:1]), response_synthesizer=synthesizer).query(QUERY)
    assert only_empty.metadata["grit"]["cache"]["mode"] == "none"  # answered without retrieval


def test_query_bundle_retrieves_by_embedding_strs_and_answers_the_question(index, llm):
    nodes = [NodeWithScore(node=TextNode(text=TEXTS[0]), score=0.8)]
    retriever = FixedRetriever(nodes)
    engine = RetrieverQueryEngine(retriever=retriever, response_synthesizer=GritCacheSynthesizer(
        llm, cache_mode="doc", cache_source="causal"))
    response = engine.query(QueryBundle(QUERY, custom_embedding_strs=["capital city of France"]))
    assert retriever.bundles[0].embedding_strs == ["capital city of France"]
    assert response.response == engine.query(QUERY).response  # the LLM answered query_str either way
    # with a real index, the description drives retrieval
    engine = engine_over(index, llm, 1, cache_mode="doc", cache_source="causal")
    expected = index.as_retriever(similarity_top_k=1).retrieve(QueryBundle(QUERY, custom_embedding_strs=[TEXTS[2]]))
    got = engine.query(QueryBundle(QUERY, custom_embedding_strs=[TEXTS[2]])).source_nodes
    assert [n.node.node_id for n in got] == [n.node.node_id for n in expected]


def test_with_grit_rerank(index, llm, tiny_grit_dir):
    rerank = GritRerank(tiny_grit_dir, top_n=1)
    engine = engine_over(index, llm, 3, node_postprocessors=[rerank], cache_mode="doc", cache_source="causal")
    response = engine.query(QUERY)
    assert len(response.source_nodes) == 1
    retrieved = index.as_retriever(similarity_top_k=3).retrieve(QUERY)
    expected = rerank.postprocess_nodes(retrieved, query_str=QUERY)
    assert response.source_nodes[0].node.node_id == expected[0].node.node_id


class Recorder(BaseEventHandler):
    events: list = []

    @classmethod
    def class_name(cls) -> str:
        return "Recorder"

    def handle(self, event, **kwargs) -> None:
        self.events.append(event)


def test_query_and_llm_events_token_counts_and_prompt_mixins(index, llm):
    recorder = Recorder(events=[])
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(recorder)
    counter = TokenCountingHandler(tokenizer=lambda text: text.split())
    try:
        # (index.as_query_engine(llm=...) would hand the LLM the index's callback manager instead)
        synthesizer = GritCacheSynthesizer(llm, cache_mode="doc", cache_source="causal",
                                           callback_manager=CallbackManager([counter]))
        engine = RetrieverQueryEngine(index.as_retriever(similarity_top_k=1), response_synthesizer=synthesizer)
        response = engine.query(QUERY)
    finally:
        dispatcher.event_handlers.remove(recorder)
    names = [type(event).__name__ for event in recorder.events]
    for expected in ("QueryStartEvent", "RetrievalEndEvent", "SynthesizeStartEvent", "LLMCompletionStartEvent",
                     "LLMCompletionEndEvent", "SynthesizeEndEvent", "QueryEndEvent"):
        assert expected in names
    start = next(e for e in recorder.events if type(e).__name__ == "LLMCompletionStartEvent")
    assert start.prompt == f"{QUERY}\n\nAnswer the prior query while optionally using the context prior to it"
    usage = response.metadata["grit"]["usage"]
    assert counter.prompt_llm_token_count == usage["prompt_tokens"]  # the model's count, not a re-tokenisation
    assert counter.completion_llm_token_count == usage["completion_tokens"] > 0

    prompts = engine.get_prompts()
    assert prompts["response_synthesizer:text_qa_template"].get_template() == start.prompt.replace(
        QUERY, "{query_str}")
    engine.update_prompts({"response_synthesizer:text_qa_template": PromptTemplate("Q: {query_str}\nA:")})
    recorder.events.clear()
    dispatcher.add_event_handler(recorder)
    try:
        changed = engine.query(QUERY)
    finally:
        dispatcher.event_handlers.remove(recorder)
    start = next(e for e in recorder.events if type(e).__name__ == "LLMCompletionStartEvent")
    assert start.prompt == f"Q: {QUERY}\nA:"
    assert changed.metadata["grit"]["cache"]["cache_hits"] == 1  # the document part still came from the cache


# -- a persisted Qdrant index, reopened in a new process -------------------------------------------------

QDRANT_SCRIPT = r"""
import json, sys
from qdrant_client import QdrantClient
from llama_index.core import VectorStoreIndex
from llama_index.vector_stores.qdrant import QdrantVectorStore
from llama_index.embeddings.grit import GritEmbedding
from llama_index.llms.grit import GritCacheSynthesizer, GritLLM

model, path, query = sys.argv[1:4]
client = QdrantClient(path=path)
index = VectorStoreIndex.from_vector_store(QdrantVectorStore("wikidesc", client=client),
                                           embed_model=GritEmbedding(model, query_instruction=INSTRUCTION))
llm = GritLLM(model, max_new_tokens=10)
engine = index.as_query_engine(llm=llm, similarity_top_k=2, response_synthesizer=GritCacheSynthesizer(
    llm, cache_mode="doc", cache_source="causal"))
response = engine.query(query)
print(json.dumps({"answer": response.response, "sources": [n.node.ref_doc_id for n in response.source_nodes],
                  "scores": [n.score for n in response.source_nodes]}))
client.close()
"""


def demo_documents(limit: int) -> List[Document]:
    lines = resources.files("grit_components").joinpath("data/wikidesc-demo.jsonl").read_text().splitlines()
    documents = []
    for line in lines[:limit]:
        row = json.loads(line)
        documents.append(Document(text=row["text"], id_=str(uuid.uuid5(uuid.NAMESPACE_URL, row["_id"])),
                                  metadata={"title": row["title"], "corpus_id": row["_id"]},
                                  excluded_embed_metadata_keys=["corpus_id"], excluded_llm_metadata_keys=["corpus_id"]))
    return documents


@pytest.mark.filterwarnings("ignore:Payload indexes have no effect in the local Qdrant")
def test_persisted_qdrant_index_answers_the_same_in_a_new_process(tiny_grit_dir, tmp_path):
    from qdrant_client import QdrantClient
    from llama_index.vector_stores.qdrant import QdrantVectorStore

    path = str(tmp_path / "qdrant")
    query = "Ancient Greek philosopher, founder of Cynicism"
    client = QdrantClient(path=path)
    try:
        storage = StorageContext.from_defaults(vector_store=QdrantVectorStore("wikidesc", client=client))
        embed_model = GritEmbedding(tiny_grit_dir, query_instruction=WIKIDESC_QUERY_INSTRUCTION)
        index = VectorStoreIndex.from_documents(demo_documents(24), storage_context=storage, embed_model=embed_model)
        engine = engine_over(index, GritLLM(tiny_grit_dir, max_new_tokens=10), 2, cache_mode="doc",
                             cache_source="causal")
        response = engine.query(query)
        here = {"answer": response.response, "sources": [n.node.ref_doc_id for n in response.source_nodes],
                "scores": [n.score for n in response.source_nodes]}
    finally:
        client.close()  # a path= folder admits one client at a time

    script = f"INSTRUCTION = {WIKIDESC_QUERY_INSTRUCTION!r}\n" + QDRANT_SCRIPT
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "-c", script, tiny_grit_dir, path, query], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    there = json.loads(done.stdout.strip().splitlines()[-1])
    assert there["sources"] == here["sources"] and len(here["sources"]) == 2
    assert there["answer"] == here["answer"]
    assert there["scores"] == pytest.approx(here["scores"], abs=1e-5)


@pytest.mark.integration
def test_smollm2_doc_cache_answers_like_uncached_rag(smol):
    index = VectorStoreIndex.from_documents(
        demo_documents(6), embed_model=GritEmbedding("smollm2-135m-instruct", query_instruction=WIKIDESC_QUERY_INSTRUCTION))
    llm = GritLLM("smollm2-135m-instruct", max_new_tokens=16)
    assert llm.generator.model is smol  # the session's shared copy, not a second load
    engine = engine_over(index, llm, 1, cache_mode="doc", cache_source="causal")
    question = "What is described as 'Ancient Greek philosopher, one of the founders of Cynicism'?"
    first = engine.query(question)
    assert first.source_nodes[0].node.metadata["title"] == "Diogenes"
    docs = [first.source_nodes[0].node.get_content(metadata_mode=MetadataMode.LLM)]
    uncached = generate_ids(smol, build_prompt(smol, question, docs, "doc").prompt_ids(), max_new_tokens=16)
    assert first.response == uncached.text and first.response.strip()
    second = engine.query(question)
    assert second.response == first.response and second.metadata["grit"]["cache"]["cache_hits"] == 1


def test_classes_work_in_the_stock_query_engine(index, llm, tiny_grit_dir):
    """GritLLM and GritRerank as drop-ins for LlamaIndex's own RetrieverQueryEngine (no cache reuse there)."""
    rerank = GritRerank(tiny_grit_dir, top_n=1)
    engine = index.as_query_engine(llm=llm, similarity_top_k=3, node_postprocessors=[rerank])
    response = engine.query(QUERY)
    assert response.response.strip() and len(response.source_nodes) == 1
    streaming = index.as_query_engine(llm=llm, similarity_top_k=3, node_postprocessors=[rerank], streaming=True)
    assert "".join(streaming.query(QUERY).response_gen) == response.response
