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
