"""What a model says it was trained for: `grit_model.json` beside its weights.

A GRIT-trained model declares its own query instruction, its chat format and which jobs it was trained
for, so components pick the right defaults for it: `GritEmbedder` embeds queries with the model's own
instruction, and `GritReranker` uses the pointwise cross-encoder only for a model trained to judge
relevance (for any other model the bi-encoder stage alone is the better default). `grit train` writes
the file; a model without one (any plain Hugging Face model) gets `ModelMetadata()`, which declares nothing.

```json
{"format": 1, "query_instruction": "Given a query, retrieve relevant passages that answer it",
 "document_instruction": "", "chat_format": "template",
 "capabilities": ["embedding", "generation", "pointwise_rerank", "rag_cache_formats"],
 "pointwise_max_passage_tokens": 160, "rag_formats": ["doc_first", "doc", ...],
 "answerability": {"query_likelihood_gain": 1.35, "cosine": 3.53, "bias": -4.14, "max_passage_tokens": 160}}
```

`answerability` is the model's fitted answerability gate (`AnswerabilityWeights`): whether retrieved passages
can answer a question, decided before generating (`grit_components.answerability`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METADATA_FILE = "grit_model.json"
FORMAT = 1
CAPABILITIES = ("embedding", "generation", "pointwise_rerank", "query_likelihood_rerank", "listwise_rerank",
                "rag_cache_formats")
_KEYS = {"format", "query_instruction", "document_instruction", "chat_format", "capabilities",
         "pointwise_max_passage_tokens", "rag_formats", "base_model", "adapter_sha256", "trained_with", "answerability"}
_GATE_KEYS = {"query_likelihood_gain", "cosine", "bias", "max_passage_tokens", "fitted_on"}


@dataclass(frozen=True)
class AnswerabilityWeights:
    """A logistic decision whether passages hold a question's answer, from two signals the retrieval
    components already compute: the best query-likelihood gain over the passages (how much a passage raises
    the query's mean log-probability per token above an empty passage) and the best cosine similarity of
    query and passage embeddings. `score = query_likelihood_gain * gain + cosine * cos + bias`; a set of
    passages with a score below 0 does not answer the question. `benchmarks/answerability.py` fits one (its
    bias puts 0 at 5 % false refusals of answerable questions) and writes it into a model's `grit_model.json`.

    :param query_likelihood_gain: weight of the best query-likelihood gain.
    :param cosine: weight of the best cosine similarity.
    :param bias: the constant term.
    :param max_passage_tokens: passage length the gains were computed with when it was fitted.
    :param fitted_on: what it was fitted on (informative).
    """

    query_likelihood_gain: float
    cosine: float
    bias: float
    max_passage_tokens: int = 160
    fitted_on: str = ""

    def score(self, gain: float, cosine: float) -> float:
        return self.query_likelihood_gain * gain + self.cosine * cosine + self.bias

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "answerability") -> AnswerabilityWeights:
        if not isinstance(data, dict):
            raise ValueError(f"{where} must be an object, not {type(data).__name__}")
        unknown = sorted(set(data) - _GATE_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {unknown}; known: {sorted(_GATE_KEYS)}")
        values = {}
        for key in ("query_likelihood_gain", "cosine", "bias"):
            value = data.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{where}: {key} must be a finite number, got {value!r}")
            values[key] = float(value)
        tokens = data.get("max_passage_tokens", 160)
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
            raise ValueError(f"{where}: max_passage_tokens must be a positive int, got {tokens!r}")
        fitted_on = data.get("fitted_on", "")
        if not isinstance(fitted_on, str):
            raise ValueError(f"{where}: fitted_on must be a str")
        return cls(**values, max_passage_tokens=tokens, fitted_on=fitted_on)

    def to_dict(self) -> dict[str, Any]:
        out = {"query_likelihood_gain": self.query_likelihood_gain, "cosine": self.cosine, "bias": self.bias,
               "max_passage_tokens": self.max_passage_tokens}
        return {**out, "fitted_on": self.fitted_on} if self.fitted_on else out


@dataclass(frozen=True)
class ModelMetadata:
    """A model's declaration of its own formats and trained capabilities (all optional).

    :param query_instruction: the instruction its queries were trained with (None: not declared).
    :param document_instruction: the instruction of its documents ("" as in GRIT).
    :param chat_format: "grit" or "template" (None: decided as for any model).
    :param capabilities: jobs it was trained for, from `CAPABILITIES`.
    :param pointwise_max_passage_tokens: passage length its relevance judgements were trained with.
    :param rag_formats: RAG prompt formats its answers were trained in.
    :param answerability: its fitted answerability gate (None: it has none).
    :param extra: the remaining informative fields (base model, adapter checksum, training summary).
    """

    query_instruction: str | None = None
    document_instruction: str = ""
    chat_format: str | None = None
    capabilities: tuple[str, ...] = ()
    pointwise_max_passage_tokens: int | None = None
    rag_formats: tuple[str, ...] = ()
    answerability: AnswerabilityWeights | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def declares(self, capability: str) -> bool:
        return capability in self.capabilities

    @classmethod
    def from_dict(cls, data: Any, *, where: str = METADATA_FILE) -> ModelMetadata:
        """Validate a metadata dict; anything unknown or malformed is a ValueError naming `where`."""
        if not isinstance(data, dict):
            raise ValueError(f"{where} must hold a JSON object, not {type(data).__name__}")
        unknown = sorted(set(data) - _KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {unknown}; known: {sorted(_KEYS)}")
        if data.get("format", FORMAT) != FORMAT:
            raise ValueError(f"{where}: format {data.get('format')!r} is not supported (this version reads {FORMAT}); "
                             "upgrade grit-components")
        capabilities = data.get("capabilities", [])
        if not isinstance(capabilities, list) or not all(isinstance(c, str) for c in capabilities):
            raise ValueError(f"{where}: capabilities must be a list of str")
        bad = [c for c in capabilities if c not in CAPABILITIES]
        if bad:
            raise ValueError(f"{where}: unknown capability {bad[0]!r}; known capabilities: {list(CAPABILITIES)}")
        for key in ("query_instruction", "document_instruction"):
            if key in data and data[key] is not None and not isinstance(data[key], str):
                raise ValueError(f"{where}: {key} must be a str")
        if data.get("chat_format") not in (None, "grit", "template"):
            raise ValueError(f"{where}: chat_format must be 'grit' or 'template', not {data['chat_format']!r}")
        tokens = data.get("pointwise_max_passage_tokens")
        if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1):
            raise ValueError(f"{where}: pointwise_max_passage_tokens must be a positive int")
        formats = data.get("rag_formats", [])
        if not isinstance(formats, list) or not all(isinstance(f, str) for f in formats):
            raise ValueError(f"{where}: rag_formats must be a list of str")
        gate = data.get("answerability")
        gate = None if gate is None else AnswerabilityWeights.from_dict(gate, where=f"{where}: answerability")
        extra = {k: data[k] for k in ("base_model", "adapter_sha256", "trained_with") if k in data}
        return cls(data.get("query_instruction"), data.get("document_instruction") or "", data.get("chat_format"),
                   tuple(capabilities), tokens, tuple(formats), gate, extra)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "query_instruction": self.query_instruction,
                "document_instruction": self.document_instruction, "chat_format": self.chat_format,
                "capabilities": list(self.capabilities),
                "pointwise_max_passage_tokens": self.pointwise_max_passage_tokens,
                "rag_formats": list(self.rag_formats),
                **({"answerability": self.answerability.to_dict()} if self.answerability else {}), **self.extra}

    @classmethod
    def read(cls, directory: str | Path) -> ModelMetadata:
        """The metadata in `directory`, or an empty `ModelMetadata()` when it has no metadata file."""
        path = Path(directory) / METADATA_FILE
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path} is not valid JSON ({error}); fix or delete it") from error
        return cls.from_dict(data, where=str(path))

    def write(self, directory: str | Path) -> Path:
        path = Path(directory) / METADATA_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path
