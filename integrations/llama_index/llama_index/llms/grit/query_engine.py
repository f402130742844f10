"""GritQueryEngine: retrieve, optionally rerank, then answer with GRIT KV-cache reuse.

The stock `RetrieverQueryEngine` packs node texts into a prompt string for the LLM, so the LLM cannot
reuse key/value states computed for those texts. This engine hands the retrieved texts to
`GritLLM.answer`, which runs the core's cache modes (`grit_components.rag`): cached document states are
looked up in the model's KV store, composed, and only the query part of the prompt is computed.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Literal, Optional

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.response.schema import Response, StreamingResponse
from llama_index.core.bridge.pydantic import Field
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.query_engine import CustomQueryEngine
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from grit_components.rag import CacheMode, check_mode
from llama_index.llms.grit.base import GritLLM, stream_in_thread


def node_texts(nodes: List[NodeWithScore], metadata_mode: MetadataMode) -> tuple[List[NodeWithScore], List[str]]:
    """Nodes that have text, and their texts; nodes without text (images, empty chunks) are skipped."""
    kept, texts = [], []
    for node in nodes:
        text = node.node.get_content(metadata_mode=metadata_mode)
        if text and text.strip():
            kept.append(node)
            texts.append(text)
    return kept, texts


class GritQueryEngine(CustomQueryEngine):
    """RAG over any LlamaIndex retriever, answered by a `GritLLM` with a GRIT cache mode.

    Cache modes (`grit_components.rag.CacheMode`): "none" (plain RAG prompt), "doc" (the retrieved
    documents, joined, come from the KV store), "query", "query_doc", "doc_query", "multi_doc" (each
    document cached on its own and composed, so any combination of already-seen documents hits).
    `cache_source="causal"` gives answers identical to the uncached prompt (greedy decoding);
    `"embedding"` reuses the bidirectional embedding pass as in the GRIT paper (approximate, and free at
    indexing time with `GritEmbedding(store_kv_cache=True)`).

    The `Response` carries the source nodes and, in `metadata`: `cache_mode`, `cache_source`, `cache`
    (hits, misses, cached and prefilled tokens), `usage`, `finish_reason` and `timings` (seconds:
    `retrieve`, `rerank`, the core's generation timings, `total`).

    Examples:
        ```python
        from llama_index.core import VectorStoreIndex
        from llama_index.embeddings.grit import GritEmbedding
        from llama_index.llms.grit import GritLLM, GritQueryEngine

        index = VectorStoreIndex.from_documents(documents, embed_model=GritEmbedding())
        engine = GritQueryEngine.from_index(index, llm=GritLLM(max_new_tokens=32), similarity_top_k=1,
                                            cache_mode="doc", cache_source="causal")
        response = engine.query("Which temple stands on the Athenian Acropolis?")
        print(response, response.metadata["cache"])
        ```

    :param retriever: any LlamaIndex retriever (e.g. `index.as_retriever(similarity_top_k=3)`).
    :param llm: the `GritLLM` that answers.
    :param node_postprocessors: applied in order after retrieval (e.g. a `GritRerank`).
    :param cache_mode: one of "none", "query", "doc", "query_doc", "doc_query", "multi_doc".
    :param cache_source: "embedding" or "causal".
    :param order: prompt order of cache mode "none": "doc_first" or "query_first".
    :param metadata_mode: which node content the LLM reads; `MetadataMode.EMBED` (default) is what
        `GritEmbedding` embedded, so caches stored while indexing are found again.
    :param streaming: return a `StreamingResponse` (`response_gen` yields text pieces).
    """

    retriever: BaseRetriever = Field(description="Retriever that finds the context nodes.")
    llm: GritLLM = Field(description="GritLLM that answers from the retrieved nodes.")
    node_postprocessors: List[BaseNodePostprocessor] = Field(default_factory=list,
                                                             description="Postprocessors applied after retrieval.")
    cache_mode: Literal["none", "query", "doc", "query_doc", "doc_query", "multi_doc"] = Field(
        default="doc", description="Which prompt parts come from cached key/value states.")
    cache_source: Literal["embedding", "causal"] = Field(
        default="embedding", description="Cached states from the embedding pass or a causal prefill.")
    order: Literal["doc_first", "query_first"] = Field(
        default="doc_first", description="Prompt order of cache mode 'none'.")
    metadata_mode: MetadataMode = Field(default=MetadataMode.EMBED, description="Node content the LLM reads.")
    streaming: bool = Field(default=False, description="Return a StreamingResponse.")

    def __init__(self, **data: Any) -> None:
        if isinstance(data.get("cache_mode"), CacheMode):
            data["cache_mode"] = data["cache_mode"].value
        super().__init__(**data)
        check_mode(self.cache_mode)

    @classmethod
    def from_index(cls, index: Any, llm: GritLLM, *, similarity_top_k: int = 3,
                   node_postprocessors: Optional[List[BaseNodePostprocessor]] = None, **kwargs: Any) -> "GritQueryEngine":
        """Engine over `index.as_retriever(similarity_top_k=...)`; other kwargs are fields of this class."""
        if similarity_top_k <= 0:
            raise ValueError(f"similarity_top_k must be > 0, got {similarity_top_k}")
        return cls(retriever=index.as_retriever(similarity_top_k=similarity_top_k), llm=llm,
                   node_postprocessors=list(node_postprocessors or []), **kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "GritQueryEngine"

    def _get_prompt_modules(self) -> Dict[str, Any]:
        return {}

    def retrieve(self, query: str | QueryBundle) -> tuple[List[NodeWithScore], Dict[str, float]]:
        """Retrieved and postprocessed nodes, plus `retrieve` / `rerank` timings in seconds."""
        bundle = _bundle(query)
        start = time.perf_counter()
        nodes = self.retriever.retrieve(bundle)
        retrieved = time.perf_counter()
        for postprocessor in self.node_postprocessors:
            nodes = postprocessor.postprocess_nodes(nodes, query_bundle=bundle)
        return nodes, {"retrieve": retrieved - start, "rerank": time.perf_counter() - retrieved}

    def _metadata(self, result: Any, timings: Dict[str, float], start: float) -> Dict[str, Any]:
        return {"cache_mode": self.cache_mode, "cache_source": self.cache_source,
                "cache": dict(getattr(result, "stats", {})), "usage": result.usage,
                "finish_reason": result.finish_reason,
                "timings": {**timings, **result.timings, "total": time.perf_counter() - start}}

    def query(self, str_or_query_bundle: str | QueryBundle) -> Response | StreamingResponse:
        """Answer a question. A `QueryBundle` may carry `custom_embedding_strs`: retrieval then embeds those
        (e.g. a short description) while the LLM answers `query_str`."""
        with self.callback_manager.as_trace("query"):
            return self._answer(_bundle(str_or_query_bundle))

    async def aquery(self, str_or_query_bundle: str | QueryBundle) -> Response | StreamingResponse:
        import asyncio

        return await asyncio.to_thread(self.query, str_or_query_bundle)

    def custom_query(self, query_str: str) -> Response | StreamingResponse:
        return self._answer(_bundle(query_str))

    def _answer(self, bundle: QueryBundle) -> Response | StreamingResponse:
        start = time.perf_counter()
        query_str = bundle.query_str
        nodes, timings = self.retrieve(bundle)
        nodes, texts = node_texts(nodes, self.metadata_mode)
        mode = self.cache_mode if texts else "none"  # nothing retrieved: answer without retrieval
        if not self.streaming:
            result = self.llm.answer(query_str, texts, mode=mode, source=self.cache_source, order=self.order)
            return Response(response=result.text, source_nodes=nodes, metadata=self._metadata(result, timings, start))

        metadata: Dict[str, Any] = {"cache_mode": self.cache_mode, "cache_source": self.cache_source}
        events = stream_in_thread(lambda callback: self.llm.answer(query_str, texts, mode=mode, source=self.cache_source,
                                                                   order=self.order, streaming_callback=callback))

        def gen():
            for kind, value in events:
                if kind == "delta":
                    yield value
                else:  # the final result: fill in the metadata the caller already holds
                    metadata.update(self._metadata(value, timings, start))

        return StreamingResponse(response_gen=gen(), source_nodes=nodes, metadata=metadata)

    async def acustom_query(self, query_str: str) -> Response | StreamingResponse:
        import asyncio

        return await asyncio.to_thread(self.custom_query, query_str)


def _bundle(query: str | QueryBundle) -> QueryBundle:
    bundle = query if isinstance(query, QueryBundle) else QueryBundle(query)
    if not isinstance(bundle.query_str, str) or not bundle.query_str.strip():
        raise ValueError("query must be a non-empty str")
    return bundle
