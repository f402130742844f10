"""Answer a query from retrieved documents, reusing cached key/value states (GRIT RAG caching).

A cache mode says which texts come from the KV store and what is left for the uncached suffix:

| mode        | cached prefix (each `BOS <|embed|>\\n{text}`) | uncached suffix (user turn content)          |
|-------------|-----------------------------------------------|----------------------------------------------|
| `none`      | nothing: plain RAG prompt, doc-first or query-first (`order`); no documents = no retrieval |
| `query`     | the query                                     | documents + "Optionally using the prior ..." |
| `doc`       | the documents (joined into one text)          | query + "Answer the prior query ..."         |
| `query_doc` | query, then documents                         | "Optionally using the prior context ..."     |
| `doc_query` | documents, then query                         | "Answer the prior query ..."                 |
| `multi_doc` | each document on its own, then composed       | query + "Answer the prior query ..."         |

The suffix is a newline plus one user turn in the model's chat format. Every cached text is looked up
in the model's `KVStore` by its exact token ids and computed on a miss. Texts after the first lose
their BOS (a prompt has one BOS) and are re-rotated to their place (RoPE shift), so the prompt a
cached answer continues is exactly `RagPrompt.prompt_ids()`; with the causal source and greedy
decoding, `doc`, `query` and one-document `multi_doc` answers are token-identical to generating from
those ids without any cache.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from grit_components import templates
from grit_components._checks import check_choice, check_str, check_texts
from grit_components.embedding import build_inputs
from grit_components.generation import (
    GenerationResult,
    StreamingCallback,
    chat_prompt_ids,
    check_streaming_callback,
    generate_ids,
    generate_llama_cpp,
)
from grit_components.kv_cache import (SOURCES, CacheLayout, DocumentKVCache, KVStore, check_composable, compose,
                                      compose_states, compute_cache)
from grit_components.options import GenerationOptions, as_generation_options

if TYPE_CHECKING:
    from transformers import Cache

    from grit_components.grit_model import GritModel

ORDERS = ("doc_first", "query_first")


class CacheMode(str, Enum):
    """Which parts of a RAG prompt are served from cached key/value states."""

    NONE = "none"
    QUERY = "query"
    DOC = "doc"
    QUERY_DOC = "query_doc"
    DOC_QUERY = "doc_query"
    MULTI_DOC = "multi_doc"

    def __str__(self) -> str:
        return self.value


def says_no_answer(text: str) -> bool:
    """Whether a RAG answer says its passages do not hold the answer (`templates.NO_ANSWER`, which models
    trained with unanswerable questions reply), in any case and with or without a trailing sentence."""
    check_str("text", text)
    return templates.NO_ANSWER.rstrip(".").lower() in " ".join(text.lower().split())


def check_mode(mode, name: str = "mode") -> CacheMode:
    """`mode` as a `CacheMode`; errors call it `name` (components take it as `cache_mode`)."""
    if isinstance(mode, CacheMode):
        return mode
    if not isinstance(mode, str):
        raise TypeError(f"{name} must be a str or CacheMode, not {type(mode).__name__}")
    try:
        return CacheMode(mode)
    except ValueError:
        raise ValueError(f"{name} must be one of {[m.value for m in CacheMode]}, got {mode!r}") from None


def cached_text_ids(model: GritModel, text: str) -> list[int]:
    """Token ids whose states a cache of `text` holds: the GRIT document input of `text` (no instruction,
    not cut; `embedding.EmbeddingInput`), so caches captured while embedding documents are found here."""
    return build_inputs(model, [text], instruction="", max_length=None)[0].ids


def chat_turn_text(model: GritModel, content: str) -> str:
    """One user turn ready for the answer, as text without a leading BOS (it follows a cached prefix)."""
    messages = [{"role": "user", "content": content}]
    if model.uses_grit_chat_format:
        return templates.grit_chat_prompt(messages, eos_token=model.tokenizer.eos_token or "</s>")
    text = model.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    bos = model.tokenizer.bos_token
    # Templates that print `bos_token` themselves start with it; mid-prompt it must not appear again.
    if bos and "bos_token" in (model.tokenizer.chat_template or "") and text.startswith(bos):
        text = text[len(bos):]
    return text


@dataclass
class RagPrompt:
    """A RAG prompt split into cached texts and the uncached suffix.

    `segments[i]` are the full token ids of cached text i (each starts with BOS, as computed at
    position 0); `prompt_ids()` is the whole prompt they stand for.
    """

    mode: CacheMode
    cached_texts: list[str]
    segments: list[list[int]]
    suffix_ids: list[int]
    drop_leading: int  # BOS tokens dropped from every segment after the first

    def prompt_ids(self) -> list[int]:
        """The full prompt as plain token ids (the uncached equivalent of the cached answer)."""
        ids: list[int] = []
        for i, segment in enumerate(self.segments):
            ids.extend(segment if i == 0 else segment[self.drop_leading:])
        return ids + self.suffix_ids

    @property
    def cached_length(self) -> int:
        return len(self.prompt_ids()) - len(self.suffix_ids)


def build_prompt(model: GritModel, query: str, documents: Sequence[str], mode: CacheMode | str = "none", *,
                 order: str = "doc_first", user_content: str | None = None) -> RagPrompt:
    """Split the RAG prompt of `mode` into cached texts and suffix ids (no model call).

    `user_content` replaces the mode's own user turn (`templates.rag_user_content`).
    """
    mode = check_mode(mode)
    check_str("query", query, allow_empty=False)
    documents = check_texts("documents", documents)
    check_choice("order", order, ORDERS)
    if user_content is not None:
        check_str("user_content", user_content, allow_empty=False)
    joined = templates.RAG_DOCUMENT_SEPARATOR.join(documents)
    if mode is CacheMode.NONE:
        content = user_content or templates.rag_user_content("none", query, joined, order=order)
        ids = chat_prompt_ids(model, content)
        return RagPrompt(mode, [], [], ids, len(model.bos_ids))
    if not documents:
        raise ValueError(f"mode {mode.value!r} needs at least one document; use mode 'none' for no retrieval")
    cached = {CacheMode.QUERY: [query], CacheMode.DOC: [joined], CacheMode.QUERY_DOC: [query, joined],
              CacheMode.DOC_QUERY: [joined, query], CacheMode.MULTI_DOC: list(documents)}[mode]
    uncached_document = joined if mode is CacheMode.QUERY else ""
    content = user_content or templates.rag_user_content(mode.value, query, uncached_document)
    suffix = model.tokenize(templates.RAG_SUFFIX_LEAD + chat_turn_text(model, content))
    return RagPrompt(mode, cached, [cached_text_ids(model, t) for t in cached], suffix, len(model.bos_ids))


@dataclass
class RagResult(GenerationResult):
    """A `GenerationResult` plus what the cache did.

    `stats`: mode, source, cache_hits, cache_misses, cached_tokens (prompt tokens served from caches,
    hit or freshly filled), prefill_tokens (prompt tokens computed during this call: misses plus suffix).
    `timings` (seconds): cache_lookup, cache_fill, compose, generate, time_to_first_token (from the
    start of the call), total.
    """

    stats: dict = field(default_factory=dict)


def _resolve_store(model: GritModel, store: KVStore | None) -> KVStore:
    if store is None:
        if model.kv_store is None:
            raise ValueError("this GritModel has no KV store (it was not loaded through the registry): load it "
                             "with grit_components.load_model, or pass store=KVStore()")
        return model.kv_store
    if not isinstance(store, KVStore):
        raise TypeError(f"store must be a KVStore, not {type(store).__name__}")
    return store


def get_or_compute(model: GritModel, token_ids: Sequence[int], source: str, store: KVStore) -> tuple[DocumentKVCache, bool]:
    """The cache of `token_ids` from `store`, computing and storing it on a miss. Returns (cache, hit)."""
    entry = store.get(model.fingerprint, source, token_ids, layout=CacheLayout.of(model, store.dtype))
    if entry is not None:
        return entry, True
    return store.put(compute_cache(model, token_ids, source)), False


def cache_documents(model: GritModel, texts: Sequence[str], *, source: str = "embedding",
                    store: KVStore | None = None) -> dict[str, int]:
    """Fill the store with the caches of `texts` (as `answer` looks them up). Returns {"hits", "computed"}."""
    texts = check_texts("texts", texts)
    check_choice("source", source, SOURCES)
    store = _resolve_store(model, store)
    counts = {"hits": 0, "computed": 0}
    for text in texts:
        ids = cached_text_ids(model, text)
        if len(ids) >= model.context_length:
            raise ValueError(f"a text has {len(ids)} tokens; the model's context length is {model.context_length}")
        _, hit = get_or_compute(model, ids, source, store)
        counts["hits" if hit else "computed"] += 1
    return counts


def answer(
    model: GritModel,
    query: str,
    documents: Sequence[str],
    *,
    mode: CacheMode | str = CacheMode.NONE,
    source: str = "embedding",
    order: str = "doc_first",
    options: GenerationOptions | Mapping[str, Any] | None = None,
    streaming_callback: StreamingCallback | None = None,
    store: KVStore | None = None,
    user_content: str | None = None,
    **generation_kwargs: Any,
) -> RagResult:
    """Answer `query` from `documents` with the cache mode `mode`.

    :param model: the shared `GritModel`.
    :param query: the question.
    :param documents: retrieved document texts, best first (may be empty for mode "none": no retrieval).
    :param mode: a `CacheMode` or its value: "none", "query", "doc", "query_doc", "doc_query", "multi_doc".
    :param source: where cached states come from: "embedding" (bidirectional embedding pass, as in the
        GRIT paper; approximate) or "causal" (causal prefill; exact). Ignored for mode "none".
    :param order: for mode "none": "doc_first" or "query_first" prompt.
    :param options: generation parameters (`GenerationOptions` or a dict: any Hugging Face `GenerationConfig`
        key, plus `stop_words` and `seed`), as for `generation.generate`.
    :param streaming_callback: called with each new piece of text.
    :param store: the KV store to use; default: the model's own (`model.kv_store`).
    :param user_content: the user turn after the cached texts, instead of the mode's own wording
        (`templates.rag_user_content`); it must contain whatever the mode does not cache.
    :param generation_kwargs: generation parameters as keywords; they win over `options`.
    :returns: a `RagResult` (text, finish_reason, usage, timings, stats).
    """
    start = time.perf_counter()
    mode = check_mode(mode)
    check_choice("source", source, SOURCES)
    check_streaming_callback(streaming_callback)
    options = as_generation_options(options).merged(generation_kwargs)  # checked before any compute
    store = _resolve_store(model, store)
    prompt = build_prompt(model, query, documents, mode, order=order, user_content=user_content)
    total_tokens = len(prompt.prompt_ids())
    if total_tokens >= model.context_length:
        raise ValueError(f"the RAG prompt has {total_tokens} tokens; the model's context length is {model.context_length}")

    if len(prompt.segments) > 1:
        check_composable(model)  # before any compute: a non-RoPE model fails fast
    stats = {"mode": mode.value, "source": source if prompt.segments else None, "cache_hits": 0, "cache_misses": 0,
             "cached_tokens": 0, "prefill_tokens": len(prompt.suffix_ids)}
    timings = {"cache_lookup": 0.0, "cache_fill": 0.0, "compose": 0.0}
    # llama_cpp keeps its own saved states of single cached texts (llama_engine); several texts, and an
    # "embedding"-source text longer than one llama.cpp batch, come from `store` as in the torch path (composed)
    # and are written into its cells
    llama_cpp = options.decode_backend == "llama_cpp"
    cache = states = None
    if prompt.segments and not llama_cpp:
        reserve = len(prompt.suffix_ids) + min(options.max_new_tokens, model.context_length - total_tokens)
        cache = _cached_prefix(model, prompt, source, store, stats, timings, reserve=reserve)
    elif len(prompt.segments) > 1 or (prompt.segments and source == "embedding"
                                      and len(prompt.segments[0]) > _llama_cpp_batch(model)):
        states = _cached_prefix(model, prompt, source, store, stats, timings)

    before_generate = time.perf_counter() - start
    if states is not None:
        result, _ = generate_llama_cpp(model, prompt.suffix_ids, options, prefix_ids=states[0], prefix_states=states[1],
                                       streaming_callback=streaming_callback)
    elif llama_cpp:
        prefix = prompt.segments[0] if prompt.segments else None
        result, hit = generate_llama_cpp(model, prompt.suffix_ids, options, prefix_ids=prefix, source=source,
                                         streaming_callback=streaming_callback)
        if prefix:
            stats.update(cache_hits=int(hit), cache_misses=int(not hit), cached_tokens=len(prefix),
                         prefill_tokens=len(prompt.suffix_ids) + (0 if hit else len(prefix)))
    else:
        result = generate_ids(model, prompt.suffix_ids, options, past_key_values=cache,
                              streaming_callback=streaming_callback)
    timings["generate"] = result.timings["total"]
    timings["time_to_first_token"] = before_generate + result.timings["time_to_first_token"]
    timings["total"] = time.perf_counter() - start
    return RagResult(text=result.text, finish_reason=result.finish_reason, prompt_tokens=result.prompt_tokens,
                     completion_tokens=result.completion_tokens, timings=timings, stats=stats)


def _llama_cpp_batch(model: GritModel) -> int:
    """The longest text llama.cpp's engine runs as one batch (an "embedding"-source text must be one)."""
    from grit_components.llama_engine import engine_for

    return engine_for(model).batch


def _cached_prefix(model: GritModel, prompt: RagPrompt, source: str, store: KVStore, stats: dict, timings: dict, *,
                   reserve: int | None = None):
    """The cached texts of `prompt` from `store` (computed and stored on a miss), composed into one cache with
    room for `reserve` more tokens, or without `reserve` into (token ids, per layer (keys, values)) for
    llama.cpp; counts hits, misses and times into `stats` and `timings`."""
    entries = []
    layout = CacheLayout.of(model, store.dtype)
    for ids in prompt.segments:
        t0 = time.perf_counter()
        entry = store.get(model.fingerprint, source, ids, layout=layout)
        t1 = time.perf_counter()
        timings["cache_lookup"] += t1 - t0
        if entry is None:
            entry = store.put(compute_cache(model, ids, source))  # as stored: the same states as later hits
            timings["cache_fill"] += time.perf_counter() - t1
            stats["cache_misses"] += 1
            stats["prefill_tokens"] += len(ids)
        else:
            stats["cache_hits"] += 1
        entries.append(entry)
    t0 = time.perf_counter()
    if reserve is None:
        composed = compose_states(model, entries, drop_leading=prompt.drop_leading)
    else:
        composed = compose(model, entries, drop_leading=prompt.drop_leading, reserve=reserve)
    timings["compose"] = time.perf_counter() - t0
    stats["cached_tokens"] = len(composed[0])
    return composed if reserve is None else composed[1]
