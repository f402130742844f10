"""Can these passages answer the question? Decided before generating, from the retrieval signals.

A small generator trained to reply "The passages do not say." learns to refuse a share of everything or
nothing (three training runs: docs/training.md, "Refusing before generating"). The model's own relevance
signals carry the decision better: per passage, the query-likelihood gain (how much the passage raises the
mean log-probability per query token over an empty passage: query likelihood made comparable across
questions) and the embedding cosine. A model's `grit_model.json` holds a logistic gate on the best of each
over the passages (`metadata.AnswerabilityWeights`, fitted by `benchmarks/answerability.py`), and
`GritAnswerabilityGate` applies it, so a RAG pipeline answers `templates.NO_ANSWER` without generating when
the passages fail it (`pipelines/rag_answerability.yaml`; LlamaIndex: `GritAnswerabilityPostprocessor`).

Usage:
    >>> gate = GritAnswerabilityGate("grit-smollm2-135m")
    >>> verdict = gate.judge("Who wrote Hamlet?", ["Hamlet is a tragedy by William Shakespeare."])
    >>> verdict.answerable, round(verdict.score, 2)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from grit_components._checks import check_float, check_int, check_str, check_unicode
from grit_components.components import ModelComponent
from grit_components.grit_model import GritModel
from grit_components.metadata import AnswerabilityWeights
from grit_components.models import DEFAULT_MODEL
from grit_components.options import LoadingOptions
from grit_components.registry import ModelRegistry
from grit_components.rerank import cosine_scores, query_likelihood_scores


def query_likelihood_gains(model: GritModel, query: str, passages: Sequence[str], *, batch_size: int = 8,
                           max_passage_tokens: int = 256) -> np.ndarray:
    """Query likelihood of each passage minus that of an empty passage, shape (n,), float64.

    Within one query it ranks exactly as `rerank.query_likelihood_scores`; across queries it measures what
    the passage adds rather than how predictable the query is on its own (a short common query is likely
    whatever the passage).
    """
    scores = query_likelihood_scores(model, query, [*passages, ""], batch_size=batch_size,
                                     max_passage_tokens=max_passage_tokens)
    return scores[:-1] - scores[-1]


@dataclass(frozen=True)
class Answerability:
    """The gate's verdict on one question and its passages.

    :param answerable: `score >= threshold`: generate an answer; False: reply `templates.NO_ANSWER`.
    :param score: the gate's logistic score (its log-odds; 0 is the fitted 5 %-false-refusal point).
    :param threshold: the threshold it was compared with.
    :param gain: the best query-likelihood gain over the passages (None without passages).
    :param cosine: the best cosine similarity over the passages (None without passages).
    :param gains: per passage, in the given order (empty texts are left out of the decision: NaN).
    :param cosines: per passage, likewise.
    """

    answerable: bool
    score: float
    threshold: float
    gain: float | None
    cosine: float | None
    gains: tuple[float, ...] = ()
    cosines: tuple[float, ...] = ()


class GritAnswerabilityGate(ModelComponent):
    """Decide whether retrieved passages can answer a question, before any generation.

    :param model: hub id, local directory, GGUF file or packaged alias (shared through the registry).
    :param threshold: refuse when the gate's score is below this (default 0: the point fitted at 5 % false
        refusals of answerable questions; higher refuses more, lower answers more).
    :param weights: the gate (`metadata.AnswerabilityWeights` or its dict form); None = the one the model
        declares in its `grit_model.json` (a model without one is a ValueError on first use: fit one with
        `benchmarks/answerability.py --save-weights`).
    :param query_instruction: instruction for the query embedding; None = the model's own, else
        `DEFAULT_QUERY_INSTRUCTION`. The gate was fitted with the model's own: change it only with `weights`.
    :param document_instruction: instruction for documents embedded here ("" as in the GRIT paper).
    :param embedding_max_length: longest embedding input in tokens.
    :param batch_size: prompts / texts per forward pass.
    Loading options (`loading`, `registry`, `device="cpu"`, ...) as in `ModelComponent`.
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, threshold: float = 0.0,
                 weights: AnswerabilityWeights | Mapping[str, Any] | None = None, query_instruction: str | None = None,
                 document_instruction: str = "", embedding_max_length: int = 512, batch_size: int = 8,
                 loading: LoadingOptions | None = None, registry: ModelRegistry | None = None,
                 **loading_kwargs: Any) -> None:
        super().__init__(model, loading, registry=registry, **loading_kwargs)
        self.threshold = check_float("threshold", threshold)
        if weights is not None and not isinstance(weights, (AnswerabilityWeights, Mapping)):
            raise TypeError(f"weights must be an AnswerabilityWeights or a dict, not {type(weights).__name__}")
        self._weights = (AnswerabilityWeights.from_dict(dict(weights), where="weights")
                         if isinstance(weights, Mapping) else weights)
        self._query_instruction = None if query_instruction is None else check_str("query_instruction",
                                                                                    query_instruction)
        self.document_instruction = check_str("document_instruction", document_instruction)
        self.embedding_max_length = check_int("embedding_max_length", embedding_max_length, minimum=2)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)

    @property
    def weights(self) -> AnswerabilityWeights:
        """The gate in use: the one given, else the model's own."""
        if self._weights is not None:
            return self._weights
        declared = self.model.metadata.answerability
        if declared is None:
            raise ValueError(f"model {self.model.name!r} declares no answerability gate (no 'answerability' in its "
                             "grit_model.json): pass weights=..., or fit them for it with "
                             "`python benchmarks/answerability.py --model ... --save-weights`")
        return declared

    @property
    def query_instruction(self) -> str:
        """The query instruction: the one given, else the model's own, else the generic default."""
        return self._query_instruction_or_declared(self._query_instruction)

    def warm_up(self) -> None:
        """Load the shared model and check it has a gate (a missing one fails here, not on the first query)."""
        super().warm_up()
        self.weights  # noqa: B018 - raises the ValueError above

    def judge(self, query: str, documents: Sequence[str | None], *, threshold: float | None = None,
              query_embedding: Sequence[float] | np.ndarray | None = None,
              document_embeddings: Sequence[Sequence[float] | np.ndarray | None] | None = None) -> Answerability:
        """The verdict on `documents` (passage texts) for `query`.

        :param query: the question.
        :param documents: the passages the answer would be generated from. Empty (or None) texts hold no
            evidence and are left out; with none left the verdict is not answerable (score -inf).
        :param threshold: this call's threshold (default: the instance's).
        :param query_embedding: the query's embedding from this model with its query instruction, if
            already computed (skips one embedding).
        :param document_embeddings: the documents' stored embeddings (None entries are embedded here).
        """
        check_str("query", query, allow_empty=False)
        threshold = self.threshold if threshold is None else check_float("threshold", threshold)
        if isinstance(documents, str) or not isinstance(documents, Sequence):
            raise TypeError(f"documents must be a list of str, not {type(documents).__name__}")
        for i, text in enumerate(documents):
            if text is not None and not isinstance(text, str):
                raise TypeError(f"documents[{i}] must be a str, not {type(text).__name__}")
            if text:
                check_unicode(f"documents[{i}]", text)
        if document_embeddings is not None and len(document_embeddings) != len(documents):
            raise ValueError(f"document_embeddings has {len(document_embeddings)} entries for {len(documents)} "
                             "documents")
        weights = self.weights
        kept = [i for i, text in enumerate(documents) if text is not None and text.strip()]
        gains = [math.nan] * len(documents)
        cosines = [math.nan] * len(documents)
        if not kept:
            return Answerability(False, -math.inf, threshold, None, None, tuple(gains), tuple(cosines))
        texts = [documents[i] for i in kept]
        model = self.model
        kept_gains = query_likelihood_gains(model, query, texts, batch_size=self.batch_size,
                                            max_passage_tokens=weights.max_passage_tokens)
        embeddings = None if document_embeddings is None else [document_embeddings[i] for i in kept]
        kept_cosines = cosine_scores(model, query, texts, query_instruction=self.query_instruction,
                                     document_instruction=self.document_instruction,
                                     max_length=self.embedding_max_length, batch_size=self.batch_size,
                                     query_embedding=query_embedding, document_embeddings=embeddings)
        for j, i in enumerate(kept):
            gains[i], cosines[i] = float(kept_gains[j]), float(kept_cosines[j])
        gain, cosine = float(kept_gains.max()), float(kept_cosines.max())
        score = weights.score(gain, cosine)
        return Answerability(score >= threshold, score, threshold, gain, cosine, tuple(gains), tuple(cosines))


__all__ = ["Answerability", "GritAnswerabilityGate", "query_likelihood_gains"]
