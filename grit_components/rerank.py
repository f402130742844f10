"""Two-stage reranking with one GRIT model: bi-encoder first, then the same model as a cross-encoder.

Stage 1 (bi-encoder): the query is embedded with the query instruction and every document is scored
by cosine similarity; a document's stored embedding is reused when the caller passes it, else it is
embedded here. Stage 2 (cross-encoder) rescores the stage-1 top hits with the model's causal LM head:

- pointwise (default): the relevance prompt `templates.POINTWISE_RERANK` in the model's chat format;
  score = log p("yes") - log p("no") at the first answer position (a log-odds, so scores of different
  calls are comparable; `GritReranker` maps it through a sigmoid to p(yes | yes or no) in [0, 1] unless
  `scale_score=False`). Every
  candidate gets one forward pass, in length-sorted right-padded batches; the logit is read at each
  row's last real token, so a batch gives the same scores as one passage at a time.
- listwise: a RankGPT-style permutation prompt (`templates.LISTWISE_RERANK`) over a sliding window,
  greedy generation, and a tolerant parser (`parse_ranking`): repeated, out-of-range or missing
  identifiers are dropped or appended in their previous order. Score = 1 / (1 + final rank).

Passages are cut by tokens (`max_passage_tokens`), never by characters.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from grit_components import templates
from grit_components._checks import check_bool, check_choice, check_float, check_int, check_str, check_unicode
from grit_components.components import ModelComponent
from grit_components.embedding import length_sorted_batches, pad_batch
from grit_components.generation import chat_prompt_ids, generate_ids
from grit_components.grit_model import GritModel
from grit_components.models import DEFAULT_MODEL
from grit_components.options import LoadingOptions
from grit_components.registry import ModelRegistry

FIRST_STAGES = ("bi_encoder", "none")


class UntrainedCrossEncoderWarning(UserWarning):
    """A cross-encoder was asked of a model that does not declare it was trained for it."""

CROSS_ENCODERS = ("query_likelihood", "pointwise", "listwise", "none")

# The answer words as a chat model writes them at the start of its turn (no leading space); both
# capitalisations count, since instruct models often answer "Yes"/"No".
YES_WORDS = ("yes", "Yes")
NO_WORDS = ("no", "No")


@dataclass(frozen=True)
class RankedDocument:
    """One reranked document.

    :param index: position of the document in the list given to `rerank`.
    :param score: final score (cross-encoder score, or the first-stage score when there is no
        cross-encoder); higher is more relevant.
    :param first_stage_score: cosine similarity of the bi-encoder stage (None with `first_stage="none"`).
    """

    index: int
    score: float
    first_stage_score: float | None = None


# ---------------------------------------------------------------------------------------------------
# Building blocks (module functions: the evaluation harness and tests use them directly)


def truncate_tokens(model: GritModel, text: str, max_tokens: int) -> str:
    """`text` cut to its first `max_tokens` tokens (decoded back to text); unchanged when shorter."""
    ids = model.tokenize(text)
    if len(ids) <= max_tokens:
        return text
    return model.tokenizer.decode(ids[:max_tokens], skip_special_tokens=True)


def answer_token_ids(model: GritModel, words: Sequence[str]) -> list[int]:
    """Distinct first-token ids of `words` as produced at the start of an answer."""
    ids: list[int] = []
    for word in words:
        tokens = model.tokenize(word)
        if tokens and tokens[0] not in ids:
            ids.append(tokens[0])
    return ids


def pointwise_prompt_ids(model: GritModel, query: str, passage: str, *, max_passage_tokens: int = 256) -> list[int]:
    """Chat prompt ids of the pointwise relevance question, ending where the answer starts."""
    text = templates.POINTWISE_RERANK.format(query=query, passage=truncate_tokens(model, passage, max_passage_tokens))
    return chat_prompt_ids(model, text)


def _decoder_batches(model: GritModel, sequences: Sequence[list[int]], batch_size: int):
    """(row indices, ids, mask, last hidden states) of `sequences` in length-sorted, right-padded batches.

    With right padding the real tokens keep positions 0..L-1 and never attend to padding, so each row
    equals an unpadded forward. Run it under `torch.inference_mode()`.
    """
    body = model.model.get_decoder()
    for batch in length_sorted_batches([len(seq) for seq in sequences], batch_size):
        ids, mask = pad_batch([sequences[i] for i in batch], model.pad_token_id, model.device)  # (B, T)
        yield batch, ids, mask, body(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, H)


def pointwise_scores(model: GritModel, query: str, passages: Sequence[str], *, batch_size: int = 8,
                     max_passage_tokens: int = 256) -> np.ndarray:
    """log p(yes) - log p(no) at the first answer position for each passage, shape (n,), float64.

    "yes" and "no" each sum the probability of their capitalisations (`YES_WORDS`, `NO_WORDS`).
    Prompts are run in length-sorted, right-padded batches; with right padding the real tokens keep
    positions 0..L-1 and never attend to padding, so each row equals an unpadded forward.
    """
    if not passages:
        return np.zeros(0, dtype=np.float64)
    yes_ids, no_ids = answer_token_ids(model, YES_WORDS), answer_token_ids(model, NO_WORDS)
    if not yes_ids or not no_ids or set(yes_ids) & set(no_ids):
        raise ValueError(f"the tokenizer of {model.name!r} cannot tell 'yes' from 'no' at the answer start")
    prompts = [pointwise_prompt_ids(model, query, p, max_passage_tokens=max_passage_tokens) for p in passages]
    too_long = [i for i, p in enumerate(prompts) if len(p) >= model.context_length]
    if too_long:
        raise ValueError(f"pointwise prompt for passages[{too_long[0]}] exceeds the context length; lower max_passage_tokens")
    scores = np.empty(len(prompts), dtype=np.float64)
    lm_head = model.model.get_output_embeddings()
    with torch.inference_mode():
        for batch, ids, mask, hidden in _decoder_batches(model, prompts, batch_size):
            last = mask.sum(dim=1) - 1  # (B,) index of each row's last real token
            logits = lm_head(hidden[torch.arange(len(batch), device=hidden.device), last]).float()  # (B, V)
            log_probs = torch.log_softmax(logits, dim=-1)
            yes = torch.logsumexp(log_probs[:, yes_ids], dim=-1)
            no = torch.logsumexp(log_probs[:, no_ids], dim=-1)
            scores[batch] = (yes - no).double().cpu().numpy()
    return scores


def query_likelihood_prompt_ids(model: GritModel, passage: str, *, max_passage_tokens: int = 256) -> list[int]:
    """Chat prompt ids asking for a query the passage is relevant to, ending where the answer starts."""
    text = templates.QUERY_LIKELIHOOD_RERANK.format(passage=truncate_tokens(model, passage, max_passage_tokens))
    return chat_prompt_ids(model, text)


def query_likelihood_sequences(model: GritModel, query: str, passages: Sequence[str], *,
                               max_passage_tokens: int = 256) -> tuple[list[list[int]], list[int]]:
    """(prompt + query ids per passage, where the query starts in each): what `query_likelihood_scores`
    runs and what training on ranking groups scores."""
    query_ids = model.tokenize(query)
    if not query_ids:
        raise ValueError("query has no tokens to score")
    prompts = [query_likelihood_prompt_ids(model, p, max_passage_tokens=max_passage_tokens) for p in passages]
    return [prompt + query_ids for prompt in prompts], [len(prompt) for prompt in prompts]


def query_likelihood_scores(model: GritModel, query: str, passages: Sequence[str], *, batch_size: int = 8,
                            max_passage_tokens: int = 256) -> np.ndarray:
    """Mean log p(query token | passage prompt, earlier query tokens) for each passage, shape (n,), float64.

    Query likelihood (UPR, Sachan et al. 2022): a passage is as relevant as the query is likely as the
    model's answer to "write a query this passage is relevant to". The mean over the query's tokens is a
    log-probability per token (<= 0; its exp is the geometric-mean token probability), so scores of
    different queries are comparable; within one query it ranks exactly as the total log-likelihood does.
    Right-padded, length-sorted batches; only the query positions go through the LM head.
    """
    if not passages:
        return np.zeros(0, dtype=np.float64)
    sequences, starts = query_likelihood_sequences(model, query, passages, max_passage_tokens=max_passage_tokens)
    too_long = [i for i, seq in enumerate(sequences) if len(seq) > model.context_length]
    if too_long:
        raise ValueError(f"query-likelihood prompt for passages[{too_long[0]}] exceeds the context length; "
                         "lower max_passage_tokens or shorten the query")
    scores = np.empty(len(sequences), dtype=np.float64)
    lm_head = model.model.get_output_embeddings()
    with torch.inference_mode():
        for batch, ids, _, hidden in _decoder_batches(model, sequences, batch_size):
            for row, i in enumerate(batch):
                start, end = starts[i], len(sequences[i])
                # position t predicts token t + 1: the query tokens [start, end) come from [start - 1, end - 1)
                log_probs = torch.log_softmax(lm_head(hidden[row, start - 1 : end - 1]).float(), dim=-1)
                targets = ids[row, start:end]
                scores[i] = float(log_probs.gather(1, targets[:, None]).mean())
    return scores


def cosine_scores(model: GritModel, query: str, documents: Sequence[str], *, query_instruction: str,
                  document_instruction: str = "", max_length: int = 512, batch_size: int = 8, query_embedding=None,
                  document_embeddings=None) -> np.ndarray:
    """Cosine similarity of the query to each document, shape (n,), float64.

    Given embeddings are reused when they have the model's dimension (entries may be None); the
    rest are embedded here. Use embeddings made by this model with the same settings.
    """
    dim = model.embedding_dim
    query_vector = _as_vector(query_embedding, dim, "query_embedding")
    if query_vector is None:
        query_vector = model.embed([query], instruction=query_instruction, max_length=max_length)[0]
    given = list(document_embeddings) if document_embeddings is not None else [None] * len(documents)
    if len(given) != len(documents):
        raise ValueError(f"document_embeddings has {len(given)} entries for {len(documents)} documents")
    vectors: list[np.ndarray | None] = [_as_vector(v, dim, f"document_embeddings[{i}]") for i, v in enumerate(given)]
    missing = [i for i, v in enumerate(vectors) if v is None]
    if missing:
        embedded = model.embed([documents[i] for i in missing], instruction=document_instruction,
                               max_length=max_length, batch_size=batch_size)
        for i, vector in zip(missing, embedded):
            vectors[i] = vector
    matrix = np.stack(vectors).astype(np.float32)
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    query_vector = query_vector / max(float(np.linalg.norm(query_vector)), 1e-12)
    return (matrix @ query_vector.astype(np.float32)).astype(np.float64)


_IDENTIFIER = re.compile(r"\[\s*(\d+)\s*\]")
_BARE_NUMBER = re.compile(r"\d+")


def parse_ranking(text: str, count: int) -> list[int]:
    """A full permutation of range(count) read from a model's `[2] > [1] > [3]` answer.

    Identifiers are 1-based. Bracketed identifiers are read when there are any, else bare numbers.
    Out-of-range and repeated identifiers are dropped (the first mention counts); identifiers the
    model left out follow in their previous order. An empty or unreadable answer keeps the order.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    found = _IDENTIFIER.findall(text or "") or _BARE_NUMBER.findall(text or "")
    order: list[int] = []
    seen: set[int] = set()
    for token in found:
        index = int(token) - 1
        if 0 <= index < count and index not in seen:
            seen.add(index)
            order.append(index)
    return order + [i for i in range(count) if i not in seen]


def listwise_prompt_ids(model: GritModel, query: str, passages: Sequence[str], *, max_passage_tokens: int = 128) -> list[int]:
    """Chat prompt ids of the permutation prompt, ending after `LISTWISE_ANSWER_PREFIX`."""
    listed = "\n".join(templates.LISTWISE_PASSAGE.format(number=i + 1, passage=truncate_tokens(model, p, max_passage_tokens))
                       for i, p in enumerate(passages))
    text = templates.LISTWISE_RERANK.format(num=len(passages), query=query, passages=listed)
    return chat_prompt_ids(model, text) + model.tokenize(templates.LISTWISE_ANSWER_PREFIX)


def listwise_order(model: GritModel, query: str, passages: Sequence[str], *, window_size: int = 10, step: int = 5,
                   max_passage_tokens: int = 128, max_new_tokens: int | None = None,
                   trace: list[dict] | None = None) -> list[int]:
    """Indices of `passages`, most relevant first, by RankGPT's sliding window (back to front).

    Each window is ranked with one greedy generation and the parsed permutation is applied to it,
    so the best passages bubble up to the front window. With `trace`, one record per window is
    appended to it: the window's passage indices, the model's raw answer and the parsed permutation.
    """
    order = list(range(len(passages)))
    if len(order) <= 1:
        return order
    end = len(order)
    start = max(0, end - window_size)
    while True:
        window = order[start:end]
        prompt = listwise_prompt_ids(model, query, [passages[i] for i in window], max_passage_tokens=max_passage_tokens)
        budget = max_new_tokens or 6 * len(window) + 4  # "[10] > " is about 5 tokens per identifier
        answer = templates.LISTWISE_ANSWER_PREFIX + generate_ids(model, prompt, max_new_tokens=budget,
                                                                 temperature=0.0).text
        permutation = parse_ranking(answer, len(window))
        if trace is not None:
            trace.append({"window": list(window), "answer": answer, "permutation": permutation})
        order[start:end] = [window[i] for i in permutation]
        if start == 0:
            return order
        end -= step
        start = max(0, end - window_size)


# ---------------------------------------------------------------------------------------------------


class GritReranker(ModelComponent):
    """Rerank documents for a query with one GRIT model: bi-encoder, then cross-encoder on the top hits.

    Usage:
        >>> reranker = GritReranker("smollm2-135m-instruct", top_k=3)
        >>> docs = ["Paris is the capital of France.", "Bananas are yellow.", "Berlin is in Germany."]
        >>> [(r.index, round(r.score, 2)) for r in reranker.rerank("capital of France", docs)]

    :param model: hub id, local directory, GGUF file or packaged alias (shared through the registry).
    :param top_k: how many documents `rerank` returns by default.
    :param first_stage: "bi_encoder" (cosine similarity of GRIT embeddings) or "none" (the input order
        is the first-stage ranking).
    :param first_stage_top_k: how many first-stage hits go to the cross-encoder (None = all). Only those
        are returned, so at most `min(top_k, first_stage_top_k)` documents come back.
    :param cross_encoder: "query_likelihood" (how likely the model finds the query given the passage),
        "pointwise" (yes/no log-odds), "listwise" (permutation prompt) or "none"; None (default) = the
        one the model declares it was trained for in its `grit_model.json` ("query_likelihood" for the
        default `grit-smollm2-135m`, "pointwise" for a model that declares yes/no judgements), else "none"
        (with first_stage="none": "query_likelihood"): an untrained model's judgements are worse than its
        bi-encoder ranking (measured in docs/reranking.md). Asking for "pointwise" or "query_likelihood" on a model that does not declare
        it works but warns once (`UntrainedCrossEncoderWarning`).
    :param query_instruction: instruction for the query embedding; None = the model's own, else
        `DEFAULT_QUERY_INSTRUCTION` (use the task's own instruction for a model without one).
    :param document_instruction: instruction for documents embedded here ("" as in the GRIT paper).
    :param embedding_max_length: longest embedding input in tokens (longer documents are cut, with a warning).
    :param max_passage_tokens: passages are cut to this many tokens in cross-encoder prompts
        (None = the length the model's relevance judgements were trained with, else 256 for pointwise,
        128 for listwise).
    :param batch_size: prompts / texts per forward pass.
    :param window_size: listwise: passages per prompt.
    :param step: listwise: how far the window moves towards the front each time.
    :param scale_score: map scores to [0, 1] (default, as stock rankers do): pointwise log-odds by the
        sigmoid, which gives p(yes) / (p(yes) + p(no)); bi-encoder-only cosine by (1 + cos) / 2; listwise
        scores (1 / (1 + rank)) are already in (0, 1]. False returns the raw log-odds (or cosine).
    :param score_threshold: leave out documents whose (scaled, if `scale_score`) score is below this.
    :param deduplicate: leave out a document whose text repeats an earlier one (off by default: every
        document is scored and returned, repeated texts are scored once).
    Loading options (`loading`, `registry`, `device="cpu"`, ...) as in `ModelComponent`.
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, top_k: int = 10, first_stage: str = "bi_encoder",
                 first_stage_top_k: int | None = 10, cross_encoder: str | None = None,
                 query_instruction: str | None = None, document_instruction: str = "",
                 embedding_max_length: int = 512, max_passage_tokens: int | None = None, batch_size: int = 8,
                 window_size: int = 10, step: int = 5, scale_score: bool = True, score_threshold: float | None = None,
                 deduplicate: bool = False, loading: LoadingOptions | None = None,
                 registry: ModelRegistry | None = None, **loading_kwargs: Any) -> None:
        super().__init__(model, loading, registry=registry, **loading_kwargs)
        self.top_k = check_int("top_k", top_k, minimum=1)
        self.first_stage = check_choice("first_stage", first_stage, FIRST_STAGES)
        self.first_stage_top_k = None if first_stage_top_k is None else check_int("first_stage_top_k", first_stage_top_k, minimum=1)
        self._cross_encoder = None if cross_encoder is None else check_choice("cross_encoder", cross_encoder,
                                                                              CROSS_ENCODERS)
        if first_stage == "none" and cross_encoder == "none":
            raise ValueError("first_stage and cross_encoder cannot both be 'none': nothing would score the documents")
        self._query_instruction = None if query_instruction is None else check_str("query_instruction",
                                                                                    query_instruction)
        self.document_instruction = check_str("document_instruction", document_instruction)
        self.embedding_max_length = check_int("embedding_max_length", embedding_max_length, minimum=2)
        self._max_passage_tokens = None if max_passage_tokens is None else check_int(
            "max_passage_tokens", max_passage_tokens, minimum=1)
        self._warned_untrained = False
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.window_size = check_int("window_size", window_size, minimum=2)
        self.step = check_int("step", step, minimum=1, maximum=window_size)
        self.scale_score = check_bool("scale_score", scale_score)
        self.score_threshold = None if score_threshold is None else check_float("score_threshold", score_threshold)
        self.deduplicate = check_bool("deduplicate", deduplicate)

    # -- defaults the model decides -----------------------------------------------------------------

    @property
    def cross_encoder(self) -> str:
        """The cross-encoder in use: the one given, else the one the model declares ("query_likelihood" or
        "pointwise"), else "query_likelihood" when there is no first stage (an untrained model's query
        likelihood ranks better than its yes/no judgement: docs/reranking.md), else "none"."""
        metadata = self.model.metadata
        if self._cross_encoder is not None:
            chosen = self._cross_encoder
        elif metadata.declares("query_likelihood_rerank"):
            chosen = "query_likelihood"
        elif metadata.declares("pointwise_rerank"):
            chosen = "pointwise"
        else:
            chosen = "query_likelihood" if self.first_stage == "none" else "none"
        capability = {"pointwise": "pointwise_rerank", "query_likelihood": "query_likelihood_rerank"}.get(chosen)
        if capability and not self._warned_untrained and not metadata.declares(capability):
            self._warned_untrained = True
            warnings.warn(
                f"cross_encoder={chosen!r} with {self.model.name!r}, a model that does not declare it was trained "
                f"for it (no {capability!r} in its grit_model.json): an untrained model's relevance "
                "scores can rank worse than its embeddings (docs/reranking.md). Use a GRIT-trained model such as "
                "'grit-smollm2-135m', or cross_encoder='none'.", UntrainedCrossEncoderWarning, stacklevel=3)
        return chosen

    @property
    def query_instruction(self) -> str:
        """The query instruction: the one given, else the model's own, else the generic default."""
        return self._query_instruction_or_declared(self._query_instruction)

    @property
    def max_passage_tokens(self) -> int:
        if self._max_passage_tokens is not None:
            return self._max_passage_tokens
        if self.cross_encoder == "listwise":
            return 128
        return self.model.metadata.pointwise_max_passage_tokens or 256

    # -- stages ------------------------------------------------------------------------------------

    def first_stage_scores(self, query: str, documents: Sequence[str], *, query_embedding=None,
                           document_embeddings=None) -> np.ndarray:
        """Cosine similarity of the query to each document, shape (n,) (`cosine_scores` with this
        reranker's instructions and lengths)."""
        return cosine_scores(self.model, query, documents, query_instruction=self.query_instruction,
                             document_instruction=self.document_instruction, max_length=self.embedding_max_length,
                             batch_size=self.batch_size, query_embedding=query_embedding,
                             document_embeddings=document_embeddings)

    def cross_encoder_scores(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """Cross-encoder scores of `documents` (in their given order, which listwise treats as the prior ranking)."""
        if self.cross_encoder == "pointwise":
            return pointwise_scores(self.model, query, documents, batch_size=self.batch_size,
                                    max_passage_tokens=self.max_passage_tokens)
        if self.cross_encoder == "query_likelihood":
            return query_likelihood_scores(self.model, query, documents, batch_size=self.batch_size,
                                           max_passage_tokens=self.max_passage_tokens)
        if self.cross_encoder == "listwise":
            order = listwise_order(self.model, query, documents, window_size=self.window_size, step=self.step,
                                   max_passage_tokens=self.max_passage_tokens)
            scores = np.empty(len(documents), dtype=np.float64)
            for rank, index in enumerate(order):
                scores[index] = 1.0 / (1 + rank)
            return scores
        raise ValueError("cross_encoder is 'none'")

    # -- the public call ---------------------------------------------------------------------------

    def rerank(self, query: str, documents: Sequence[str | None], *, top_k: int | None = None,
               scale_score: bool | None = None, score_threshold: float | None = None,
               query_embedding: Sequence[float] | np.ndarray | None = None,
               document_embeddings: Sequence[Sequence[float] | np.ndarray | None] | None = None) -> list[RankedDocument]:
        """Rank `documents` for `query`, best first.

        :param query: the search query.
        :param documents: document texts. Every one is scored and returned (a text that repeats an earlier
            one is scored once and both come back; `deduplicate=True` keeps only the first). Empty (or None)
            texts cannot be scored: they are left out with a warning.
        :param top_k: how many to return (default: the instance's `top_k`); must be > 0.
        :param scale_score: scale scores to [0, 1] for this call (default: the instance's `scale_score`).
        :param score_threshold: leave out scores below this for this call (default: the instance's).
        :param query_embedding: the query's embedding from this model, if already computed (skips one embedding).
        :param document_embeddings: stored embeddings, one per document (None entries are embedded here).
        :returns: `RankedDocument`s (index into `documents`, score, first-stage score), best first; equal
            scores keep first-stage order.
        """
        check_str("query", query, allow_empty=False)
        top_k = self.top_k if top_k is None else check_int("top_k", top_k, minimum=1)
        scale_score = self.scale_score if scale_score is None else check_bool("scale_score", scale_score)
        if score_threshold is None:
            score_threshold = self.score_threshold
        else:
            score_threshold = check_float("score_threshold", score_threshold)
        if isinstance(documents, str) or not isinstance(documents, Sequence):
            raise TypeError(f"documents must be a list of str, not {type(documents).__name__}")
        kept: list[int] = []
        first_of_text: dict[str, int] = {}
        skipped = []
        for i, text in enumerate(documents):
            if text is not None and not isinstance(text, str):
                raise TypeError(f"documents[{i}] must be a str, not {type(text).__name__}")
            if text is None or not text.strip():
                skipped.append(i)
            else:
                check_unicode(f"documents[{i}]", text)
                if not (self.deduplicate and text in first_of_text):
                    first_of_text.setdefault(text, i)
                    kept.append(i)
        if skipped:
            warnings.warn(f"{len(skipped)} of {len(documents)} documents have no text and were skipped "
                          f"(first: documents[{skipped[0]}])", UserWarning, stacklevel=2)
        if not kept:
            return []
        texts = [documents[i] for i in kept]

        # Stage 1: order of candidates (positions into `kept`) and their first-stage scores.
        if self.first_stage == "bi_encoder":
            embeddings = None if document_embeddings is None else _select(document_embeddings, kept, len(documents))
            first = self.first_stage_scores(query, texts, query_embedding=query_embedding, document_embeddings=embeddings)
            order = sorted(range(len(kept)), key=lambda j: -first[j])  # stable: ties keep input order
        else:
            first = None
            order = list(range(len(kept)))
        if self.first_stage_top_k is not None:
            order = order[: self.first_stage_top_k]

        # Stage 2: rescore the candidates (ties keep first-stage order: the sort below is stable).
        if self.cross_encoder == "none":
            scores = [float(first[j]) for j in order]
        else:
            scores = self._cross_encoder_scores_once(query, [texts[j] for j in order])
        ranked = sorted(range(len(order)), key=lambda r: -scores[r])
        results = []
        for r in ranked:
            score = self._scale(scores[r]) if scale_score else scores[r]
            if score_threshold is not None and score < score_threshold:
                continue
            j = order[r]
            results.append(RankedDocument(index=kept[j], score=score,
                                          first_stage_score=None if first is None else float(first[j])))
        return results[:top_k]

    def _cross_encoder_scores_once(self, query: str, texts: list[str]) -> list[float]:
        """Cross-encoder scores of `texts`, each distinct text scored once (a repeated text gets its first
        occurrence's score; listwise ranks the distinct texts, so a copy cannot take two ranks)."""
        distinct = list(dict.fromkeys(texts))
        scores = dict(zip(distinct, (float(s) for s in self.cross_encoder_scores(query, distinct))))
        return [scores[text] for text in texts]

    def _scale(self, score: float) -> float:
        if self.cross_encoder == "listwise":
            return score
        if self.cross_encoder == "none":
            return (1.0 + score) / 2.0
        if self.cross_encoder == "query_likelihood":
            return math.exp(score)  # the geometric-mean probability of the query's tokens, in (0, 1]
        return 1.0 / (1.0 + math.exp(-score)) if score >= 0 else math.exp(score) / (1.0 + math.exp(score))


def _as_vector(value, dim: int, name: str) -> np.ndarray | None:
    """A usable embedding as a float32 vector, or None when absent or made by another model (other dimension)."""
    if value is None:
        return None
    try:
        vector = np.asarray(value, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a sequence of floats") from error
    if vector.shape[0] != dim or not np.all(np.isfinite(vector)) or not np.any(vector):
        return None
    return vector


def _select(embeddings, kept: list[int], count: int) -> list:
    embeddings = list(embeddings)
    if len(embeddings) != count:
        raise ValueError(f"document_embeddings has {len(embeddings)} entries for {count} documents")
    return [embeddings[i] for i in kept]


__all__ = ["GritReranker", "RankedDocument", "UntrainedCrossEncoderWarning", "listwise_order", "parse_ranking",
           "pointwise_scores", "query_likelihood_scores", "truncate_tokens", "cosine_scores"]
