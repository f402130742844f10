"""Batches in GRIT format, token for token what inference builds.

Embedding side: each text becomes `BOS + embed_prefix(instruction) + text` through
`grit_components.embedding.build_inputs` (the function `GritModel.embed` uses), right-padded by
`pad_batch`, with `pooling_weights` that are zero on BOS, instruction and padding. The forward that
consumes these runs with bidirectional attention (`attention.bidirectional_forward`).
Generative side: the chat prompt comes from `generation.chat_prompt_ids` (GRIT chat format or the
tokenizer's template, as the model generates; with the record's tools), followed by the assistant answer
(tool calls as `<tool_call>` blocks) and EOS; labels are -100 everywhere except the assistant tokens (and
their EOS). That forward is causal. Relevance
judgements and RAG answers (`training.tasks`) use the reranker's and the RAG engine's own prompt
builders; a RAG answer from cached texts brings its own attention layout, and a batch holding one gets
a 4D mask and explicit positions (`gen_position_ids`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from grit_components.embedding import EmbeddingInput, build_inputs, pad_batch, pooling_weights
from grit_components.generation import assistant_text, chat_prompt_ids
from grit_components.training.data import ChatRecord, EmbeddingRecord, Text
from grit_components.training.tasks import (GenerativeSequence, PointwiseRecord, RagRecord, RankingGroup,
                                            encode_pointwise, encode_rag, sequence_mask)

if TYPE_CHECKING:
    from grit_components.grit_model import GritModel

IGNORE_INDEX = -100


def encode_texts(model: GritModel, items: Sequence[Text], *, default_instruction: str,
                 max_length: int) -> list[EmbeddingInput]:
    """GRIT embedding inputs of (instruction, text) items, in order; None instruction = the default."""
    out: list[EmbeddingInput | None] = [None] * len(items)
    groups: dict[str, list[int]] = {}
    for i, (instruction, _) in enumerate(items):
        groups.setdefault(default_instruction if instruction is None else instruction, []).append(i)
    for instruction, rows in groups.items():
        for row, item in zip(rows, build_inputs(model, [items[i][1] for i in rows], instruction=instruction,
                                                max_length=max_length)):
            out[row] = item
    return out  # type: ignore[return-value]


def embedding_tensors(model: GritModel, inputs: Sequence[EmbeddingInput]) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask (B, T), right-padded, and pooling (B, T) weights over the text tokens."""
    ids, mask = pad_batch([item.ids for item in inputs], model.pad_token_id, "cpu")
    return {"input_ids": ids, "attention_mask": mask,
            "pooling": pooling_weights(mask, [item.text_start for item in inputs], "mean")}


def encode_chat(model: GritModel, messages: Sequence[dict[str, Any]], *, max_length: int,
                tools: Sequence[dict[str, Any]] | None = None) -> tuple[list[int], list[int]]:
    """(ids, labels) of a conversation ending with an assistant turn; labels only on assistant tokens.

    The prompt before each assistant turn is `chat_prompt_ids(model, messages[:turn], tools)`, what
    generation builds; an assistant turn's target is its text as the model writes it
    (`generation.assistant_text`: the content and, for a turn with `tool_calls`, one
    `templates.tool_call_text` block per call) followed by EOS. `tool` messages are context only.
    The last assistant turn is always a target. An earlier assistant turn is a target too when the
    chat format renders it as the same tokens it would generate (true for the GRIT format, ChatML
    templates and the JSON-in-text tool format); otherwise it is context only. Sequences longer than
    `max_length` are cut at the end.
    """
    messages = list(messages)
    eos = model.tokenizer.eos_token_id
    tools = list(tools) if tools else None
    answer_turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    last = answer_turns[-1]

    def answer_ids(message) -> list[int]:
        return model.tokenize(assistant_text(message)) + ([eos] if eos is not None else [])

    prompt = chat_prompt_ids(model, messages[:last], tools)
    answer = answer_ids(messages[last])
    ids = prompt + answer
    labels = [IGNORE_INDEX] * len(prompt) + answer
    for turn in answer_turns[:-1]:
        earlier_prompt = chat_prompt_ids(model, messages[:turn], tools)
        earlier = answer_ids(messages[turn])
        end = len(earlier_prompt) + len(earlier)
        if ids[:end] == earlier_prompt + earlier:
            labels[len(earlier_prompt):end] = earlier
    return ids[:max_length], labels[:max_length]


@dataclass
class GritCollator:
    """Turns dataset items into one GRIT training batch.

    Items are dicts with "embedding" (an `EmbeddingRecord` or None), "generative" (a `ChatRecord`,
    `PointwiseRecord`, `RagRecord` or None) and optionally "ranking" (a `RankingGroup` or None). The batch
    holds `query_*` and `passage_*` tensors (passages: every query's positive first, in query order, then
    all hard negatives, so query i's positive is passage i and every other passage is an in-batch
    negative), `gen_*` tensors (input_ids, attention_mask, labels, and lengths: each row's tokens without
    padding) and `rank_*` tensors (the reranker's pointwise prompts of each group, row-major: group g's
    passage j is row g * group_size + j; `rank_last` is the position of each prompt's last token, where the
    answer is read; query-likelihood groups have `rank_labels` and `rank_lengths` instead).

    :param model: the `GritModel` being trained (its tokenizer, BOS and chat format are used).
    :param query_instruction: instruction of queries given as plain str.
    :param passage_instruction: instruction of passages given as plain str ("" = none, as in GRIT).
    :param num_hard_negatives: hard negatives sampled per query (fewer when a record has fewer).
    :param query_max_length: token limit of queries (BOS and instruction count).
    :param passage_max_length: token limit of passages.
    :param generative_max_length: token limit of generative sequences (cut at the end).
    :param generative_batch_size: generative records used per batch (None: one per item).
    :param rerank_passage_tokens: passages of relevance judgements are cut to this many tokens, as the
        reranker's `max_passage_tokens` does.
    :param ranking_batch_size: ranking groups used per batch (None: one per item that has one).
    :param seed: seed of positive and negative sampling.
    """

    model: Any
    query_instruction: str = ""
    passage_instruction: str = ""
    num_hard_negatives: int = 1
    query_max_length: int = 64
    passage_max_length: int = 256
    generative_max_length: int = 512
    generative_batch_size: int | None = None
    rerank_passage_tokens: int = 256
    ranking_batch_size: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def __call__(self, items: Sequence[dict]) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {}
        records: list[EmbeddingRecord] = [item["embedding"] for item in items if item.get("embedding") is not None]
        if records:
            batch.update(self.embedding_batch(records))
        chats = [item["generative"] for item in items if item.get("generative") is not None]
        chats = chats[: self.generative_batch_size] if self.generative_batch_size is not None else chats
        if chats:
            batch.update(self.generative_batch(chats))
        groups = [item["ranking"] for item in items if item.get("ranking") is not None]
        groups = groups[: self.ranking_batch_size] if self.ranking_batch_size is not None else groups
        if groups:
            batch.update(self.ranking_batch(groups))
        return batch

    def embedding_batch(self, records: Sequence[EmbeddingRecord]) -> dict[str, torch.Tensor]:
        if len({r.dataset for r in records}) > 1:
            raise ValueError("an embedding batch mixes datasets "
                             f"{sorted({r.dataset for r in records})}; use SameDatasetBatchSampler")
        queries = [r.query for r in records]
        positives = [self._rng.choice(r.pos) for r in records]
        negatives = [t for r in records for t in self._rng.sample(r.neg, min(self.num_hard_negatives, len(r.neg)))]
        q = embedding_tensors(self.model, encode_texts(self.model, queries, default_instruction=self.query_instruction,
                                                       max_length=self.query_max_length))
        p = embedding_tensors(self.model, encode_texts(self.model, positives + negatives,
                                                       default_instruction=self.passage_instruction,
                                                       max_length=self.passage_max_length))
        return {**{f"query_{k}": v for k, v in q.items()}, **{f"passage_{k}": v for k, v in p.items()}}

    def encode_generative(self, record: ChatRecord | PointwiseRecord | RagRecord) -> GenerativeSequence:
        """One record as a training sequence, cut to `generative_max_length` tokens."""
        if isinstance(record, PointwiseRecord):
            sequence = encode_pointwise(self.model, record, max_passage_tokens=self.rerank_passage_tokens)
        elif isinstance(record, RagRecord):
            sequence = encode_rag(self.model, record)
        else:
            sequence = GenerativeSequence(*encode_chat(self.model, record.messages, max_length=self.generative_max_length,
                                                        tools=record.tools))
        limit = self.generative_max_length
        if len(sequence.ids) > limit:
            blocks = None if sequence.blocks is None else [
                (start, min(end, limit), min(visible, limit), kind) for start, end, visible, kind in sequence.blocks
                if start < limit]
            sequence = GenerativeSequence(sequence.ids[:limit], sequence.labels[:limit],
                                          None if sequence.positions is None else sequence.positions[:limit], blocks)
        return sequence

    def generative_batch(self, chats: Sequence[ChatRecord | PointwiseRecord | RagRecord]) -> dict[str, torch.Tensor]:
        encoded = [self.encode_generative(c) for c in chats]
        ids, mask = pad_batch([e.ids for e in encoded], self.model.pad_token_id, "cpu")  # (B, T)
        labels = torch.full_like(ids, IGNORE_INDEX)
        for row, sequence in enumerate(encoded):
            labels[row, : len(sequence.labels)] = torch.tensor(sequence.labels, dtype=torch.long)
        batch = {"gen_input_ids": ids, "gen_attention_mask": mask, "gen_labels": labels,
                 "gen_lengths": torch.tensor([len(e.ids) for e in encoded], dtype=torch.long)}  # (B,) without padding
        if any(e.blocks for e in encoded):  # a layout of cached texts: a 4D mask and explicit positions
            width = ids.shape[1]
            positions = torch.arange(width).repeat(len(encoded), 1)  # (B, T)
            for row, sequence in enumerate(encoded):
                if sequence.positions is not None:
                    positions[row, : len(sequence.positions)] = torch.tensor(sequence.positions, dtype=torch.long)
            batch["gen_attention_mask"] = torch.stack([sequence_mask(e, width) for e in encoded])[:, None]  # (B, 1, T, T)
            batch["gen_position_ids"] = positions
        return batch

    def ranking_batch(self, groups: Sequence[RankingGroup]) -> dict[str, torch.Tensor]:
        """Every group's passages as the reranker scores them, right-padded, token for token what
        `rerank.pointwise_scores` (with `rank_last`, the position of each prompt's last token) or
        `rerank.query_likelihood_scores` (with `rank_labels`, the query tokens) runs."""
        from grit_components.rerank import pointwise_prompt_ids, query_likelihood_sequences

        sizes = {len(g.passages) for g in groups}
        if len(sizes) != 1:
            raise ValueError(f"ranking groups of one batch must have the same size, got sizes {sorted(sizes)}")
        kinds = {g.score for g in groups}
        if len(kinds) != 1:
            raise ValueError(f"ranking groups of one batch must train one score, got {sorted(kinds)}")
        out = {"rank_group_size": torch.full((len(groups),), sizes.pop(), dtype=torch.long)}  # (Q,)
        if kinds.pop() == "query_likelihood":
            sequences, starts = [], []
            for g in groups:
                rows, begins = query_likelihood_sequences(self.model, g.query, g.passages,
                                                          max_passage_tokens=self.rerank_passage_tokens)
                sequences += rows
                starts += begins
            ids, mask = pad_batch(sequences, self.model.pad_token_id, "cpu")  # (Q * G, T)
            labels = torch.full_like(ids, IGNORE_INDEX)
            for row, (sequence, start) in enumerate(zip(sequences, starts)):
                labels[row, start : len(sequence)] = torch.tensor(sequence[start:], dtype=torch.long)
            return {**out, "rank_input_ids": ids, "rank_attention_mask": mask, "rank_labels": labels,
                    "rank_lengths": torch.tensor([len(s) for s in sequences], dtype=torch.long)}
        prompts = [pointwise_prompt_ids(self.model, g.query, passage, max_passage_tokens=self.rerank_passage_tokens)
                   for g in groups for passage in g.passages]
        ids, mask = pad_batch(prompts, self.model.pad_token_id, "cpu")  # (Q * G, T)
        return {**out, "rank_input_ids": ids, "rank_attention_mask": mask,
                "rank_last": torch.tensor([len(p) - 1 for p in prompts], dtype=torch.long)}
