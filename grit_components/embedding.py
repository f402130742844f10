"""Batched GRIT embedding: bidirectional attention, mean pooling over the text tokens only.

Input of one text: `BOS + embed_prefix(instruction) + text`, tokenised as two pieces and concatenated,
so the boundary between instruction (attended, not pooled) and text (pooled) is exact. Batches are
built from texts sorted by length, so little compute goes to padding, and results come back in input
order. `max_length` counts BOS and instruction; longer texts are cut at the end with a warning (or an
error, `truncation="error"`), never silently. An empty text (allowed with `allow_empty=True`) has no
text tokens, so it is pooled over its format tokens, as stock embedders pool an empty input's special
tokens: every empty text gets the same embedding, and the batch goes on.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from grit_components import templates
from grit_components._checks import check_choice, check_int, check_str, check_texts
from grit_components._compat import output_cache
from grit_components.attention import bidirectional_forward, causal_forward

if TYPE_CHECKING:
    from grit_components.models import LoadedModel

DEFAULT_QUERY_INSTRUCTION = "Given a query, retrieve relevant passages that answer it"

# Called once per text with (index in input, its `EmbeddingInput`, per-layer (key, value) of shape
# (1, kv_heads, len(input.ids), head_dim)): how the KV cache store captures the embedding pass.
KVCallback = Callable[[int, "EmbeddingInput", list[tuple[torch.Tensor, torch.Tensor]]], None]


class TruncationWarning(UserWarning):
    """A text was longer than `max_length` tokens (instruction included) and its end was cut."""


class EmptyTextWarning(UserWarning):
    """A text to embed was empty: its embedding carries no content (the same vector for every empty text)."""


@dataclass(frozen=True)
class EmbeddingInput:
    """Token ids of one embedding input; pooling covers `ids[text_start:]`.

    This is the one description of the GRIT input layout: `BOS + embed_prefix(instruction) + text`, the
    prefix and the text tokenised as separate pieces. A document cache (`rag.cached_text_ids`) holds
    the states of exactly these ids with no instruction; `truncated` says the text was cut to fit.
    """

    ids: list[int]
    text_start: int
    truncated: bool


def build_inputs(model: LoadedModel, texts: Sequence[str], *, instruction: str,
                 max_length: int | None, allow_empty: bool = False) -> list[EmbeddingInput]:
    """The embedding inputs of `texts`, each cut to `max_length` tokens (None: never cut). A text without
    tokens is a ValueError unless `allow_empty` (its input is then the prefix alone)."""
    prefix = model.bos_ids + model.tokenize(templates.embed_prefix(instruction))
    if max_length is not None and len(prefix) >= max_length:
        raise ValueError(
            f"max_length={max_length} leaves no room for text: BOS and instruction already take {len(prefix)} tokens"
        )
    encoded = model.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    inputs = []
    for i, ids in enumerate(encoded):
        if not ids and not allow_empty:
            raise ValueError(f"texts[{i}] has no tokens; there is nothing to embed")
        budget = len(ids) if max_length is None else max_length - len(prefix)
        inputs.append(EmbeddingInput(prefix + ids[:budget], len(prefix), len(ids) > budget))
    return inputs


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first (a memory error shows up at once)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, T) ids and (B, T) mask: real tokens keep positions 0..L-1."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids.to(device), mask.to(device)


def pooling_weights(mask: torch.Tensor, text_starts: Sequence[int], pooling: str) -> torch.Tensor:
    """(B, T) weights summing to 1 per row, non-zero on text tokens only (never instruction or padding).
    A row without text tokens (an empty text) is pooled over all its real tokens instead of dividing by 0."""
    weights = mask.clone().float()
    for row, start in enumerate(text_starts):
        if start < int(mask[row].sum()):
            weights[row, :start] = 0
    if pooling == "weighted_mean":  # weight grows with position: later tokens have seen more text
        weights = weights * torch.arange(1, mask.shape[1] + 1, dtype=torch.float32, device=mask.device)
    elif pooling == "last":
        last = mask.sum(dim=1) - 1  # right padding: last real token
        weights = torch.zeros_like(weights)
        weights[torch.arange(len(last)), last] = 1.0
    return weights / weights.sum(dim=1, keepdim=True)


def embed(
    model: LoadedModel,
    texts: Sequence[str],
    *,
    instruction: str = "",
    batch_size: int = 32,
    max_length: int = 512,
    normalize: bool = True,
    progress_bar: bool = False,
    truncation: str = "warn",
    attention: str = "bidirectional",
    pooling: str = "mean",
    kv_callback: KVCallback | None = None,
    allow_empty: bool = False,
) -> np.ndarray:
    """Embed `texts` in GRIT format.

    :param model: the shared `GritModel` (any `models.LoadedModel`).
    :param texts: list of non-empty strings.
    :param instruction: task instruction (queries usually get one, documents none). Attended to, never pooled.
    :param batch_size: texts per forward pass.
    :param max_length: longest input in tokens, counting BOS and the instruction (the GRIT reference uses 512).
    :param normalize: L2-normalise the embeddings (cosine similarity becomes a dot product).
    :param progress_bar: show a tqdm bar over batches.
    :param truncation: what to do with a text longer than `max_length`: "warn" (cut it and emit a
        `TruncationWarning` saying how many) or "error" (raise ValueError).
    :param attention: "bidirectional" (GRIT) or "causal" (for comparison with decoder-only embedders).
    :param pooling: "mean" over text tokens (GRIT), "weighted_mean" (position-weighted, SGPT-style, meant
        for causal attention) or "last" (the last text token).
    :param kv_callback: receives each text's key/value states (used by the KV cache store).
    :param allow_empty: embed empty texts (pooled over their format tokens, with an `EmptyTextWarning`)
        instead of raising ValueError.
    :returns: float32 array of shape (len(texts), embedding_dim), in input order.
    """
    texts = check_texts("texts", texts, allow_empty_strings=allow_empty)
    check_str("instruction", instruction)
    check_int("batch_size", batch_size, minimum=1)
    check_int("max_length", max_length, minimum=2, maximum=model.context_length)
    check_choice("truncation", truncation, ("warn", "error"))
    check_choice("attention", attention, ("bidirectional", "causal"))
    check_choice("pooling", pooling, ("mean", "weighted_mean", "last"))
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be a bool, not {type(normalize).__name__}")
    if not texts:
        return np.zeros((0, model.embedding_dim), dtype=np.float32)

    inputs = build_inputs(model, texts, instruction=instruction, max_length=max_length, allow_empty=allow_empty)
    empty = [i for i, item in enumerate(inputs) if item.text_start == len(item.ids)]
    if empty:
        warnings.warn(f"{len(empty)} of {len(texts)} texts are empty (first: texts[{empty[0]}]); they are embedded "
                      "without content, all alike", EmptyTextWarning, stacklevel=3)
    cut = [i for i, item in enumerate(inputs) if item.truncated]
    if cut:
        message = (f"{len(cut)} of {len(texts)} texts are longer than max_length={max_length} tokens "
                   f"(instruction included) and were cut at the end (first: texts[{cut[0]}])")
        if truncation == "error":
            raise ValueError(message)
        warnings.warn(message, TruncationWarning, stacklevel=3)

    result = np.empty((len(texts), model.embedding_dim), dtype=np.float32)
    batches = length_sorted_batches([len(item.ids) for item in inputs], batch_size)
    with torch.inference_mode():
        for batch in tqdm(batches, desc="Embedding", unit="batch", disable=not progress_bar):
            ids, mask = pad_batch([inputs[i].ids for i in batch], model.pad_token_id, model.device)
            forward = bidirectional_forward if attention == "bidirectional" else causal_forward
            out = forward(model.model, ids, mask, use_cache=kv_callback is not None)
            hidden = out.last_hidden_state.float()  # (B, T, H), pooled in fp32
            pooled = (hidden * pooling_weights(mask, [inputs[i].text_start for i in batch], pooling)[..., None]).sum(dim=1)
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
            result[batch] = pooled.cpu().numpy()
            if kv_callback is not None:
                layers = output_cache(out).layers
                for row, i in enumerate(batch):
                    length = len(inputs[i].ids)  # pad tokens never enter a cache
                    kv = [(layer.keys[row : row + 1, :, :length].clone(), layer.values[row : row + 1, :, :length].clone())
                          for layer in layers]
                    kv_callback(i, inputs[i], kv)
    return result
