"""Typed configuration of `grit train`: nested dataclasses read from YAML; an unknown key is an error.

See docs/training.md for the reference of every field, and recipes/wikidesc-smollm2.yaml for an example.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from grit_components.embedding import DEFAULT_QUERY_INSTRUCTION
from grit_components.metadata import CAPABILITIES
from grit_components.training.questions import ALL_KINDS, QUESTION_KINDS, TEMPLATED_KINDS
from grit_components.training.tasks import RAG_FORMATS

# generative tasks; the ranking ones train a reranker score with L_rank (task -> score)
RANKING_TASKS = {"pointwise_ranking": "pointwise", "query_likelihood_ranking": "query_likelihood"}
EMBEDDING_TASKS = ("qrels", "inverse_cloze", "qa_forms")
GENERATIVE_TASKS = ("rag", "rag_formats", "fact_cloze", "qa_forms", "pointwise", *RANKING_TASKS)


@dataclass
class MiningConfig:
    """Hard-negative mining over the corpus of a BEIR source."""

    method: str = "bm25"  # "bm25" or "grit" (the model being trained, before training)
    num_negatives: int = 7
    skip_top: int = 0
    max_length: int = 256  # method "grit": tokens per text


@dataclass
class EmbeddingSourceConfig:
    """One embedding dataset: a JSONL file (`path`) or a BEIR folder (`beir` + `split`).

    `task` "qrels" (default) pairs the split's queries with their relevant passages; "inverse_cloze" builds
    self-supervised pairs from the corpus alone (a sentence as the query for the rest of its passage),
    leaving out the passages of `exclude_corpus_file` (e.g. the evaluation corpus); "qa_forms" pairs the
    templated questions of many forms (`training.questions`, the generative task of that name; `kinds` picks
    them) with the passage they are asked of, so queries written as questions ("Who ...?", "Is ...?") retrieve
    as well as the split's own queries. `skip` passes over the first N passages (after the seeded shuffle).
    """

    path: Optional[str] = None
    beir: Optional[str] = None
    split: str = "train"
    corpus_file: Optional[str] = None
    name: Optional[str] = None  # dataset name (batches never mix two names)
    max_records: Optional[int] = None
    mine_negatives: Optional[MiningConfig] = None
    task: str = "qrels"
    exclude_corpus_file: Optional[str] = None
    kinds: list[str] = field(default_factory=lambda: list(TEMPLATED_KINDS))  # qa_forms: question kinds (no cloze)
    skip: int = 0  # qa_forms: passages skipped


@dataclass
class GenerativeSourceConfig:
    """One generative dataset: a JSONL file (`path`) or records built from a BEIR folder (`beir`).

    BEIR tasks: "rag" (the question with its gold passage, doc-first, answered with the title),
    "rag_formats" (the same answers in every prompt format in `formats`: uncached doc-first and
    query-first, no retrieval, and the cache modes with each source in `sources`, with up to
    `max_documents` passages: the gold one and mined distractors), "pointwise" (the reranker's
    relevance prompt over a positive and `negatives_per_positive` mined negatives, answered yes/no) and
    "pointwise_ranking" (that prompt over groups of a positive and `group_size - 1` mined negatives, trained
    with the ranking loss `loss.rank_weight` weighs: the scores the reranker sorts by, compared per query)
    and "query_likelihood_ranking" (the same groups scored by query likelihood, `GritReranker`'s
    "query_likelihood" cross-encoder). "fact_cloze" builds fact questions from the corpus alone, in the
    prompt formats of "rag_formats": a sentence of a passage with a number or a name blanked out, asked
    about over that passage and mined distractors, answered with the blanked words; passages of
    `exclude_corpus_file` are left out. "qa_forms" builds questions of many forms from the corpus alone
    (`training.questions`: definitions, who / when / where, why, how, numbers, superlatives, yes/no, and the
    cloze questions of "fact_cloze"; `kinds` picks them; "wh_cloze", cloze sentences asked as wh-questions, only
    when listed), over their passage and mined distractors in the
    same prompt formats, a share `unanswerable` of them without their passage, answered `templates.NO_ANSWER`.
    `min_documents` .. `max_documents` passages go into each prompt. `question` defaults to the task's own
    template.
    """

    path: Optional[str] = None
    beir: Optional[str] = None
    split: str = "train"
    corpus_file: Optional[str] = None
    name: Optional[str] = None
    max_records: Optional[int] = None
    skip: int = 0  # BEIR: skip the first N queries (fact_cloze: N passages)
    question: Optional[str] = None  # a template with {query}; None: the task's own (DEFAULT_RAG_QUESTION, CLOZE_QUESTION)
    exclude_corpus_file: Optional[str] = None  # fact_cloze: never build questions from these passages
    max_passage_words: Optional[int] = 150
    task: str = "rag"
    formats: list[str] = field(default_factory=lambda: list(RAG_FORMATS))
    sources: list[str] = field(default_factory=lambda: ["embedding", "causal"])
    max_documents: int = 3
    min_documents: int = 1
    unanswerable: float = 0.0  # rag_formats / fact_cloze / qa_forms: share of records without their passage
    unanswerable_twins: bool = False  # each refusal followed by its twin: the same passages, one replaced by the gold
    kinds: list[str] = field(default_factory=lambda: list(QUESTION_KINDS))  # qa_forms: question kinds
    untitled: float = 0.5  # rag_formats: share of records whose passages lose their leading title
    negatives_per_positive: int = 1
    group_size: int = 4  # pointwise_ranking: passages per group (1 positive + group_size - 1 negatives)
    mine_negatives: Optional[MiningConfig] = None


@dataclass
class DataConfig:
    embedding: list[EmbeddingSourceConfig] = field(default_factory=list)
    generative: list[GenerativeSourceConfig] = field(default_factory=list)
    on_error: str = "raise"  # or "skip"
    query_instruction: str = DEFAULT_QUERY_INSTRUCTION
    passage_instruction: str = ""
    num_hard_negatives: int = 1  # per query per batch
    query_max_length: int = 64
    passage_max_length: int = 256
    generative_max_length: int = 512
    generative_batch_size: Optional[int] = None  # generative records per step (None: training.batch_size)
    rerank_passage_tokens: int = 256  # passages of relevance prompts are cut like GritReranker's max_passage_tokens
    ranking_batch_size: Optional[int] = None  # ranking groups per step (None: training.batch_size)


@dataclass
class LossConfig:
    temperature: float = 0.02
    rep_weight: float = 1.0
    gen_weight: float = 1.0
    gen_averaging: str = "token"  # or "sample"
    rank_weight: float = 1.0  # L_rank: softmax cross-entropy over each ranking group's relevance scores
    rank_bce_weight: float = 0.0  # pointwise groups: plus this weight of binary cross-entropy (calibration)
    rank_lm_weight: float = 0.0  # query-likelihood groups: plus this weight of the relevant passage's query NLL
    gradcache_chunk_size: Optional[int] = None  # set to embed the batch in chunks of this many texts
    # Run generative and query-likelihood sequences this many at a time, longest first, each chunk cut to its
    # longest row: the same loss without computing the padding of mixed-length batches (null: all at once).
    sequence_chunk_size: Optional[int] = None


@dataclass
class LoraSettings:
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: Any = "all-linear"  # "all-linear" or a list of module names
    merge_on_save: bool = True  # checkpoints are full models (loadable by every component); adapter kept in adapter/
    # Keep training this adapter (a folder with adapter_config.json, e.g. an earlier stage's output_dir/adapter)
    # instead of starting a new one: r, alpha and target_modules then come from it. One adapter over the base
    # model, so a multi-stage recipe still ships a single LoRA.
    init_adapter: Optional[str] = None
    # Weight-space ensemble with the adapter the stage started from (WiSE-FT, Wortsman et al. 2022): the saved
    # adapter is init_adapter_weight * init_adapter + (1 - init_adapter_weight) * the trained one, re-fitted to
    # rank r (`interpolate_adapter`). Keeps more of the earlier stage's skills than the trained adapter alone.
    init_adapter_weight: Optional[float] = None
    # Capabilities of init_adapter this run keeps by replay and so declares as well (e.g. query_likelihood_rerank
    # when the run has no ranking groups of its own): listed by hand, as a run can also lose one (measure it).
    init_adapter_capabilities: list[str] = field(default_factory=list)


@dataclass
class TrainingSettings:
    batch_size: int = 8  # queries (and generative samples) per device per step
    learning_rate: float = 2e-5
    max_steps: int = -1  # > 0 overrides num_epochs
    num_epochs: float = 1.0
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    lr_scheduler: str = "linear"
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    logging_steps: int = 10
    save_steps: Optional[int] = None  # None: save only at the end
    save_total_limit: Optional[int] = 2
    seed: int = 42
    dtype: Optional[str] = None  # float32 (CPU default), bfloat16 (accelerator default), float16
    # "bf16": fp32 weights, bf16 autocast (fast on GPUs and on CPUs with AMX/AVX512-BF16; on a CPU without them
    # the run trains in float32 with a SlowPrecisionWarning, as bfloat16 products there are ~60x slower)
    mixed_precision: Optional[str] = None
    torch_threads: Optional[int] = None
    progress_bar: bool = True
    report_to: list[str] = field(default_factory=list)  # e.g. ["tensorboard"]


@dataclass
class EvalConfig:
    """Periodic evaluation: nDCG@10 / Recall@10 on a BEIR dev split and L_gen on dev RAG answers."""

    beir: Optional[str] = None
    split: str = "dev"
    corpus_file: Optional[str] = None
    max_queries: Optional[int] = 100
    max_corpus: Optional[int] = 500  # the qrels' passages plus the first others up to this size
    every_steps: Optional[int] = None  # None: only at the end
    on_start: bool = False
    generative_records: int = 32  # dev RAG answers for the generative loss (0 = none)
    batch_size: int = 16


@dataclass
class TrainConfig:
    model: str
    output_dir: str
    chat_format: str = "auto"  # "auto", "grit" or "template": how generative data is formatted
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        checks = [
            (self.chat_format in ("auto", "grit", "template"), "chat_format must be 'auto', 'grit' or 'template'"),
            (self.data.on_error in ("raise", "skip"), "data.on_error must be 'raise' or 'skip'"),
            (self.loss.gen_averaging in ("token", "sample"), "loss.gen_averaging must be 'token' or 'sample'"),
            (self.loss.temperature > 0, "loss.temperature must be > 0"),
            (min(self.loss.rep_weight, self.loss.gen_weight, self.loss.rank_weight, self.loss.rank_bce_weight,
                 self.loss.rank_lm_weight) >= 0, "loss weights must be >= 0"),
            (self.data.ranking_batch_size is None or self.data.ranking_batch_size >= 1,
             "data.ranking_batch_size must be >= 1"),
            (self.loss.gradcache_chunk_size is None or self.loss.gradcache_chunk_size >= 1,
             "loss.gradcache_chunk_size must be >= 1"),
            (self.loss.sequence_chunk_size is None or self.loss.sequence_chunk_size >= 1,
             "loss.sequence_chunk_size must be >= 1"),
            (self.training.batch_size >= 1, "training.batch_size must be >= 1"),
            (0 <= self.training.warmup_ratio < 1, "training.warmup_ratio must be in [0, 1)"),
            (bool(self.data.embedding or self.data.generative), "data needs at least one embedding or generative source"),
        ]
        checks.append((self.training.mixed_precision in (None, "bf16"), "training.mixed_precision must be null or 'bf16'"))
        weight = self.lora.init_adapter_weight
        has_init = bool(self.lora.enabled and self.lora.init_adapter)
        needs_init = "{} needs lora.enabled and lora.init_adapter (the adapter {})"
        if weight is not None:
            checks.append((0 <= weight <= 1, f"lora.init_adapter_weight must be in [0, 1], got {weight}"))
            checks.append((has_init, needs_init.format("lora.init_adapter_weight", "to mix in")))
        if self.lora.init_adapter_capabilities:
            unknown = [c for c in self.lora.init_adapter_capabilities if c not in CAPABILITIES]
            checks.append((not unknown, f"lora.init_adapter_capabilities: unknown {unknown}; choose from "
                                        f"{list(CAPABILITIES)}"))
            checks.append((has_init, needs_init.format("lora.init_adapter_capabilities",
                                                       "whose capabilities the run keeps")))
        for source in self.data.embedding:
            checks.append((source.task in EMBEDDING_TASKS,
                           f"embedding task must be one of {list(EMBEDDING_TASKS)}, got {source.task!r}"))
            checks.append((source.task == "qrels" or source.beir is not None, f"task {source.task!r} needs a 'beir' source"))
            unknown_kinds = set(source.kinds) - set(TEMPLATED_KINDS)
            checks.append((not unknown_kinds and bool(source.kinds),
                           f"kinds must be a non-empty list from {list(TEMPLATED_KINDS)}, got {sorted(unknown_kinds)}"))
            checks.append((source.skip >= 0, f"skip must be >= 0, got {source.skip}"))
        for source in self.data.generative:
            checks.append((source.task in GENERATIVE_TASKS,
                           f"generative task must be one of {list(GENERATIVE_TASKS)}, got {source.task!r}"))
            checks.append((source.group_size >= 2, "group_size must be >= 2 (a positive and at least one negative)"))
            checks.append((source.task not in RANKING_TASKS or source.beir is not None,
                           f"task {source.task!r} needs a 'beir' source"))
            unknown = set(source.formats) - set(RAG_FORMATS) - {"no_retrieval"}
            checks.append((not unknown, f"unknown RAG formats {sorted(unknown)}; choose from "
                                        f"{[*RAG_FORMATS, 'no_retrieval']}"))
            checks.append((set(source.sources) <= {"embedding", "causal"} and bool(source.sources),
                           "sources must be a non-empty list of 'embedding' and 'causal'"))
            checks.append((source.max_documents >= 1, "max_documents must be >= 1"))
            checks.append((1 <= source.min_documents <= source.max_documents,
                           "min_documents must be >= 1 and <= max_documents"))
            checks.append((0 <= source.unanswerable < 1, "unanswerable must be in [0, 1)"))
            unknown_kinds = set(source.kinds) - set(ALL_KINDS)
            checks.append((not unknown_kinds and bool(source.kinds),
                           f"kinds must be a non-empty list from {list(ALL_KINDS)}, got {sorted(unknown_kinds)}"))
            checks.append((source.question is None or "{query}" in source.question,
                           "question must contain a '{query}' field"))
            checks.append((source.task not in ("fact_cloze", "qa_forms") or source.beir is not None,
                           f"task {source.task!r} needs a 'beir' source"))
        ranking_tasks = {s.task for s in self.data.generative if s.task in RANKING_TASKS}
        checks.append((len(ranking_tasks) <= 1, f"one ranking task per run, got {sorted(ranking_tasks)}"))
        for source in [*self.data.embedding, *self.data.generative]:
            checks.append(((source.path is None) != (source.beir is None),
                           "every data source needs exactly one of 'path' or 'beir'"))
            mining = getattr(source, "mine_negatives", None)
            if mining is not None:
                checks.append((mining.method in ("bm25", "grit"), "mine_negatives.method must be 'bm25' or 'grit'"))
                checks.append((source.beir is not None, "mine_negatives needs a 'beir' source (its corpus is mined)"))
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, where)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise TypeError(f"{where} must be a list, not {type(value).__name__}")
        (item,) = typing.get_args(tp)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML reads 2e-5 as a str
        try:
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise TypeError(f"{where} must be {tp.__name__}, not {type(value).__name__} ({value!r})")
    return value


def from_dict(cls, data: Any, where: str = "config"):
    """Build dataclass `cls` from a dict; unknown keys raise ValueError naming them (with a suggestion)."""
    if not isinstance(data, dict):
        raise TypeError(f"{where} must be a mapping, not {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [key for key in data if key not in names]
    if unknown:
        hints_text = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), names, n=1)
            hints_text.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"unknown key(s) in {where}: {', '.join(hints_text)}; known keys: {', '.join(names)}")
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"missing key(s) in {where}: {', '.join(missing)}")
    return cls(**{key: _convert(hints[key], value, f"{where}.{key}") for key, value in data.items()})


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """`--set key.path=value` items as `load_config`'s overrides (each value read as YAML)."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected key=value, e.g. --set training.learning_rate=1e-4")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def load_config(path: str | Path, *, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML training config. Relative data paths are resolved against the config's folder.

    :param overrides: dotted keys to set after reading, e.g. {"training.max_steps": 10}.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    config = from_dict(TrainConfig, data)
    base = path.resolve().parent

    def resolve(value: str | None) -> str | None:
        if value is None or Path(value).expanduser().is_absolute():
            return value
        candidate = base / value
        return str(candidate) if candidate.exists() else value

    for source in [*config.data.embedding, *config.data.generative]:
        source.path, source.beir = resolve(source.path), resolve(source.beir)
    config.eval.beir = resolve(config.eval.beir)
    config.lora.init_adapter = resolve(config.lora.init_adapter)
    return config
