"""GritCacheSynthesizer: a LlamaIndex response synthesizer that answers with GRIT KV-cache reuse.

The stock synthesizers pack node texts into one prompt string, so the LLM computes their key/value
states again. This one hands the retrieved texts to `GritLLM.answer`, which serves them from the shared
model's KV store (`grit_components.rag` cache modes) and computes only the rest of the prompt. As a
`BaseSynthesizer` it fits the stock `RetrieverQueryEngine` (`index.as_query_engine(response_synthesizer=...)`),
so query, retrieval, synthesis and LLM events, token counting and prompt mixins work as usual.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, AsyncGenerator, Dict, Generator, List, Optional, Sequence

from llama_index.core.base.response.schema import RESPONSE_TYPE
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.indices.prompt_helper import ChatPromptHelper, PromptHelper
from llama_index.core.prompts import BasePromptTemplate, PromptTemplate
from llama_index.core.response_synthesizers.base import BaseSynthesizer
from llama_index.core.schema import NodeWithScore
from llama_index.core.settings import Settings
from llama_index.core.types import RESPONSE_TEXT_TYPE

from grit_components import templates
from grit_components._checks import check_choice
from grit_components.kv_cache import SOURCES
from grit_components.rag import ORDERS, check_mode
from llama_index.llms.grit.base import GritLLM, _to_async

# What the current call answered with (cache statistics, usage, timings), for `Response.metadata["grit"]`:
# `synthesize` calls `get_response` and then `_prepare_response_output` in one context.
_ANSWER: ContextVar[Optional[Dict[str, Any]]] = ContextVar("grit_answer", default=None)


class GritCacheSynthesizer(BaseSynthesizer):
    """Answers from retrieved nodes with a `GritLLM`, reusing the nodes' cached key/value states.

    Cache modes (`grit_components.rag.CacheMode`): "doc" (the retrieved texts, joined, come from the KV
    store), "multi_doc" (each text cached on its own and composed, so any combination of already-seen
    texts hits), "query", "query_doc", "doc_query", and "none" (a plain RAG prompt). `cache_source="causal"`
    gives answers identical to the uncached prompt (greedy decoding); `"embedding"` reuses the bidirectional
    embedding pass as in the GRIT paper (approximate, and free at indexing time with
    `GritEmbedding(store_kv_cache=True)`).

    The prompt (`text_qa_template`, changeable with `update_prompts`) is the user turn after the cached
    texts, with `{query_str}` and `{context_str}` for whatever the mode does not cache; its default is the
    mode's own GRIT wording. Node texts are read as LlamaIndex gives them to any synthesizer
    (`MetadataMode.LLM`): caches stored while embedding (`MetadataMode.EMBED`) are found as long as your
    nodes show the LLM and the embedder the same metadata.

    `Response.metadata` holds the nodes' metadata, as from any synthesizer, and under `"grit"`: `cache_mode`,
    `cache_source`, `cache` (hits, misses, cached and prefilled tokens), `usage`, `finish_reason` and `timings`
    (seconds; with streaming, filled in when the stream ends).

    Examples:
        ```python
        from llama_index.core import VectorStoreIndex
        from llama_index.embeddings.grit import GritEmbedding
        from llama_index.llms.grit import GritCacheSynthesizer, GritLLM

        llm = GritLLM(max_new_tokens=32)
        index = VectorStoreIndex.from_documents(documents, embed_model=GritEmbedding())
        engine = index.as_query_engine(llm=llm, similarity_top_k=1, response_synthesizer=GritCacheSynthesizer(
            llm, cache_mode="doc", cache_source="causal"))
        response = engine.query("Which temple stands on the Athenian Acropolis?")
        print(response, response.metadata["grit"]["cache"])
        ```

    :param llm: the `GritLLM` that answers (default: `Settings.llm`, which must then be a `GritLLM`).
    :param cache_mode: "doc" (default), "multi_doc", "query", "query_doc", "doc_query" or "none".
    :param cache_source: "embedding" (default) or "causal".
    :param order: prompt order of cache mode "none": "doc_first" or "query_first".
    :param text_qa_template: the user turn after the cached texts (default: the mode's own).
    :param callback_manager: LlamaIndex callback manager (default: `Settings.callback_manager`).
    :param streaming: answers stream (`StreamingResponse.response_gen` yields text pieces).
    :param generate_kwargs: generation overrides for every answer (as for `GritLLM.complete`).
    """

    def __init__(self, llm: Optional[GritLLM] = None, *, cache_mode: str = "doc", cache_source: str = "embedding",
                 order: str = "doc_first", text_qa_template: Optional[BasePromptTemplate] = None,
                 callback_manager: Optional[CallbackManager] = None, streaming: bool = False,
                 **generate_kwargs: Any) -> None:
        llm = llm if llm is not None else Settings.llm
        if not isinstance(llm, GritLLM):
            raise TypeError(f"GritCacheSynthesizer needs a GritLLM (llm=...), not {type(llm).__name__}")
        # The prompt helpers repack text for stock synthesizers; this one never does, and building them from
        # `llm.metadata` would load the model now.
        super().__init__(llm=llm, callback_manager=callback_manager, streaming=streaming,
                         prompt_helper=PromptHelper(), chat_prompt_helper=ChatPromptHelper())
        self._cache_mode = check_mode(cache_mode, "cache_mode").value
        self._cache_source = check_choice("cache_source", cache_source, SOURCES)
        self._order = check_choice("order", order, ORDERS)
        self._text_qa_template = text_qa_template
        llm.generator.options(generate_kwargs)  # bad keys fail here
        self._generate_kwargs = generate_kwargs

    @property
    def llm(self) -> GritLLM:
        return self._llm  # type: ignore[return-value]

    # -- prompts -------------------------------------------------------------------------------------------

    def _default_template(self) -> PromptTemplate:
        return PromptTemplate(templates.rag_user_content(self._cache_mode, "{query_str}", "{context_str}",
                                                         order=self._order))

    def _get_prompts(self) -> Dict[str, BasePromptTemplate]:
        return {"text_qa_template": self._text_qa_template or self._default_template()}

    def _update_prompts(self, prompts: Dict[str, BasePromptTemplate]) -> None:
        if "text_qa_template" in prompts:
            self._text_qa_template = prompts["text_qa_template"]

    # -- answering -----------------------------------------------------------------------------------------

    def _call(self, query_str: str, text_chunks: Sequence[str], response_kwargs: Dict[str, Any]) -> Dict[str, Any]:
        """The arguments of `GritLLM.answer` for this question, and the record `Response.metadata` will show."""
        if not isinstance(query_str, str) or not query_str.strip():
            raise ValueError("query must be a non-empty str")
        texts = [text for text in text_chunks if text and text.strip()]
        mode = self._cache_mode if texts else "none"  # nothing to read: answer without retrieval
        template = self._get_prompts()["text_qa_template"]
        prompt = template.format(query_str=query_str,
                                 context_str=templates.RAG_DOCUMENT_SEPARATOR.join(texts)) if texts else query_str
        record: Dict[str, Any] = {"cache_mode": mode, "cache_source": self._cache_source}
        _ANSWER.set(record)
        return {"prompt": prompt, "query": query_str, "documents": texts, "mode": mode, "source": self._cache_source,
                "order": self._order, **self._generate_kwargs, **response_kwargs}

    def get_response(self, query_str: str, text_chunks: Sequence[str], **response_kwargs: Any) -> RESPONSE_TEXT_TYPE:
        call = self._call(query_str, text_chunks, response_kwargs)
        record = _ANSWER.get()
        prompt = call.pop("prompt")
        if self._streaming:
            return _text_stream(self.llm.stream_answer(prompt, **call), record)
        response = self.llm.answer(prompt, **call)
        record.update(response.raw or {})
        return response.text

    async def aget_response(self, query_str: str, text_chunks: Sequence[str],
                            **response_kwargs: Any) -> RESPONSE_TEXT_TYPE:
        call = self._call(query_str, text_chunks, response_kwargs)
        record = _ANSWER.get()
        prompt = call.pop("prompt")
        if self._streaming:  # starting a stream only starts its generation thread
            return _async_text_stream(_to_async(self.llm.stream_answer(prompt, **call)), record)
        response = await self.llm.aanswer(prompt, **call)
        record.update(response.raw or {})
        return response.text

    def _prepare_response_output(self, response_str: Optional[RESPONSE_TEXT_TYPE],
                                 source_nodes: List[NodeWithScore]) -> RESPONSE_TYPE:
        response = super()._prepare_response_output(response_str, source_nodes)
        record = _ANSWER.get()
        _ANSWER.set(None)
        if record is not None:
            response.metadata = {**(response.metadata or {}), "grit": record}  # the same dict a stream fills
        return response


def _text_stream(responses: Any, record: Dict[str, Any]) -> Generator[str, None, None]:
    for response in responses:
        if response.delta:
            yield response.delta
        if response.raw:
            record.update(response.raw)


async def _async_text_stream(responses: Any, record: Dict[str, Any]) -> AsyncGenerator[str, None]:
    async for response in responses:
        if response.delta:
            yield response.delta
        if response.raw:
            record.update(response.raw)
