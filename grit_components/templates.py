"""Every prompt format of the GRIT method, in one place.

Embedding inputs, chat prompts and the RAG cache-mode prompts all come from here, so a format is
written once and every component (core, Haystack, LlamaIndex) uses the same text.
Formats follow the GRIT paper and its reference code (ContextualAI/gritlm); `<|user|>`, `<|embed|>`
and `<|assistant|>` are plain text, not added tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

USER = "<|user|>\n"
EMBED = "<|embed|>\n"
ASSISTANT = "<|assistant|>\n"


def embed_prefix(instruction: str) -> str:
    """Text placed before the text to embed (after BOS); it is attended to but never pooled.

    With an instruction: `<|user|>\\n{instruction}\\n<|embed|>\\n`; without: `<|embed|>\\n`.
    """
    if instruction:
        return f"{USER}{instruction}\n{EMBED}"
    return EMBED


def fold_system_messages(messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """Fold system messages into the next user turn (GritLM has no system role).

    Several system messages are joined; a system message with no user turn after it becomes a user turn.
    """
    folded: list[dict[str, str]] = []
    pending: list[str] = []
    for message in messages:
        role, content = message["role"], message["content"]
        if role == "system":
            pending.append(content)
            continue
        if role == "user" and pending:
            content = "\n\n".join([*pending, content])
            pending = []
        folded.append({"role": role, "content": content})
    if pending:
        folded.append({"role": "user", "content": "\n\n".join(pending)})
    return folded


def grit_chat_prompt(messages: Sequence[Mapping[str, str]], *, eos_token: str) -> str:
    """GRIT chat format without BOS: `<|user|>\\n{m}\\n<|assistant|>\\n{a}</s>` ... ending ready to answer."""
    parts: list[str] = []
    for message in fold_system_messages(messages):
        if message["role"] == "user":
            parts.append(f"{USER}{message['content']}\n")
        elif message["role"] == "assistant":
            parts.append(f"{ASSISTANT}{message['content']}{eos_token}\n")
        else:
            raise ValueError(f"messages: unsupported role {message['role']!r} (use system, user or assistant)")
    parts.append(ASSISTANT)
    return "".join(parts)


# Reranking prompts (reference: ContextualAI/gritlm rerank.py), used by rerank.py.
POINTWISE_RERANK = (
    "Given a query and a passage, judge whether the passage is relevant to the query or not.\n\n"
    "Query: {query}\nPassage: {passage}\n\n"
    "Answer with yes if the passage is relevant to the query, and no otherwise."
)

# Query-likelihood reranking (UPR, Sachan et al. 2022): the passage, then a request for a query it answers;
# the score is how likely the model finds the user's query as the answer to it.
QUERY_LIKELIHOOD_RERANK = "Passage: {passage}\n\nWrite a search query that this passage is relevant to."


# RAG prompts (reference: ContextualAI/gritlm rag/eval.py). A cached text is `BOS + embed_prefix("") +
# text`, exactly what GRIT embeds for a document; the uncached suffix after it starts with a newline
# and then a user turn (GRIT chat format, or the model's own chat template) whose content is below.
RAG_ANSWER_QUERY_FIRST = "Optionally using the prior context answer the query prior to it"
RAG_ANSWER_DOC_FIRST = "Answer the prior query while optionally using the context prior to it"
RAG_SUFFIX_LEAD = "\n"
# What a RAG answer says when its passages do not hold the answer (the trained reply of unanswerable questions).
NO_ANSWER = "The passages do not say."
RAG_DOCUMENT_SEPARATOR = "\n\n"


def rag_user_content(mode: str, query: str, document: str, *, order: str = "doc_first") -> str:
    """Content of the user turn for a RAG cache mode (see `grit_components.rag.CacheMode`).

    `document` is the (joined) document text that is NOT cached in this mode ("" when all are cached).
    Mode "none" is uncached RAG (`order` "doc_first" or "query_first"), or no retrieval when `document`
    is empty.
    """
    sep = RAG_DOCUMENT_SEPARATOR
    if mode == "none":
        if not document:
            return query
        if order == "query_first":
            return f"{query}{sep}{document}{sep}{RAG_ANSWER_QUERY_FIRST}"
        return f"{document}{sep}{query}{sep}{RAG_ANSWER_DOC_FIRST}"
    if mode == "query":  # query cached, documents in the suffix
        return f"{document}{sep}{RAG_ANSWER_QUERY_FIRST}"
    if mode in ("doc", "multi_doc"):  # documents cached, query in the suffix
        return f"{query}{sep}{RAG_ANSWER_DOC_FIRST}"
    if mode == "query_doc":
        return RAG_ANSWER_QUERY_FIRST
    if mode == "doc_query":
        return RAG_ANSWER_DOC_FIRST
    raise ValueError(f"unknown RAG cache mode {mode!r}")

# Listwise (RankGPT-style) reranking prompt, used by rerank.py. Identifiers are 1-based: [1] ... [num].
LISTWISE_RERANK = (
    "I will provide you with {num} passages, each indicated by a numerical identifier []. "
    "Rank the passages based on their relevance to the search query: {query}.\n\n"
    "{passages}\n\n"
    "Search Query: {query}.\n"
    "Rank the {num} passages above based on their relevance to the search query. All the passages should be "
    "included and listed using identifiers, in descending order of relevance. The output format should be "
    "[] > [], e.g., [2] > [1]. Only respond with the ranking results, do not say any word or explain."
)
LISTWISE_PASSAGE = "[{number}] {passage}"
# The answer is started with this text, so even a small model begins with an identifier.
LISTWISE_ANSWER_PREFIX = "["


# Tool calling, JSON in text (the Hermes format Qwen2.5, SmolLM3 and many open models are trained on).
# Used when the tokenizer's chat template cannot render tools, and always with the GRIT chat format:
# the tool list goes into the system text, calls are `<tool_call>{json}</tool_call>` in the assistant
# turn, and tool results come back as a user turn of `<tool_response>` blocks.
TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
TOOL_RESPONSE_OPEN = "<tool_response>"
TOOL_RESPONSE_CLOSE = "</tool_response>"
TOOLS_SYSTEM = (
    "You may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n{{\"name\": <function-name>, \"arguments\": <args-json-object>}}\n"
    "</tool_call>"
)


def tools_system_text(tools: Sequence[Mapping]) -> str:
    """The system text listing `tools` (OpenAI function specs: {"type": "function", "function": {...}})."""
    import json

    return TOOLS_SYSTEM.format(tools="\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools))


def tool_call_text(name: str, arguments: Mapping) -> str:
    """One call as the model writes it: `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`."""
    import json

    payload = json.dumps({"name": name, "arguments": dict(arguments)}, ensure_ascii=False)
    return f"{TOOL_CALL_OPEN}\n{payload}\n{TOOL_CALL_CLOSE}"


def tool_response_text(content: str) -> str:
    """One tool result as the model reads it."""
    return f"{TOOL_RESPONSE_OPEN}\n{content}\n{TOOL_RESPONSE_CLOSE}"
