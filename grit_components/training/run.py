"""Build a GRIT training run from a `TrainConfig` and run it (what `grit train config.yaml` does)."""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import random
import time
import warnings
from pathlib import Path

import torch

from grit_components.evaluation.data import load_beir
from grit_components.metadata import CAPABILITIES, ModelMetadata
from grit_components.models import SlowPrecisionWarning, cpu_bf16_is_fast
from grit_components.training.config import RANKING_TASKS, TrainConfig
from grit_components.training.data import (
    DEFAULT_RAG_QUESTION,
    EmbeddingRecord,
    beir_embedding_records,
    beir_rag_records,
    load_chat_records,
    load_embedding_records,
    mine_hard_negatives,
)
from grit_components.training.tasks import (CLOZE_QUESTION, RankingGroup, fact_cloze_records, inverse_cloze_records,
                                            pointwise_records, rag_records, ranking_groups, wh_cloze_question)

logger = logging.getLogger(__name__)


def training_precision(config: TrainConfig) -> bool:
    """Whether to train with bf16 autocast: `training.mixed_precision: bf16`, except on a CPU without native
    bfloat16 matrix products, where every step would be tens of times slower (warns and trains in float32)."""
    if config.training.mixed_precision != "bf16":
        return False
    if torch.cuda.is_available() or cpu_bf16_is_fast():
        return True
    warnings.warn("training.mixed_precision: bf16 asks for bfloat16 autocast, but this CPU has no native bfloat16 "
                  "matrix products (AVX512-BF16 or AMX), so every step would run tens of times slower; training in "
                  "float32 instead (same model up to rounding, more memory). Set training.mixed_precision: null "
                  "to silence this.", SlowPrecisionWarning, stacklevel=2)
    return False


def load_training_model(config: TrainConfig):
    """(HF model, possibly wrapped by peft; `GritModel` view of it) for training."""
    from grit_components.grit_model import GritModel
    from grit_components.models import load_weights, normalize_device, normalize_dtype, quiet_peft_wrapping

    device = normalize_device(None)
    dtype = normalize_dtype(config.training.dtype, device)
    # The Trainer (accelerate) places the model; load on CPU so a multi-GPU launch does not fill GPU 0.
    model, tokenizer, resolved = load_weights(config.model, device="cpu", dtype=dtype)
    if config.lora.enabled and config.lora.init_adapter:
        from peft import PeftModel

        adapter = Path(config.lora.init_adapter).expanduser()
        if not (adapter / "adapter_config.json").is_file():
            raise FileNotFoundError(f"lora.init_adapter={str(adapter)!r} has no adapter_config.json; give the folder "
                                    "of an earlier stage's adapter (its output_dir/adapter)")
        with quiet_peft_wrapping():
            model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
    elif config.lora.enabled:
        from peft import LoraConfig, get_peft_model

        with quiet_peft_wrapping():
            model = get_peft_model(model, LoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha,
                                                     lora_dropout=config.lora.dropout,
                                                     target_modules=config.lora.target_modules, task_type="CAUSAL_LM"))
    grit = GritModel(model, tokenizer, name=config.model, key=resolved.key, chat_format=config.chat_format)
    return model, grit


def _mine(records, corpus, mining, config: TrainConfig, grit):
    started = time.perf_counter()
    records = mine_hard_negatives(records, corpus, method=mining.method, num_negatives=mining.num_negatives,
                                  skip_top=mining.skip_top, model=grit, query_instruction=config.data.query_instruction,
                                  max_length=mining.max_length, seed=config.training.seed)
    logger.info("mined hard negatives for %d queries in %.1fs", len(records), time.perf_counter() - started)
    return records


def _excluded_ids(source) -> set[str]:
    """Passage ids of the source's `exclude_corpus_file` (e.g. the evaluation corpus), never trained on."""
    if not source.exclude_corpus_file:
        return set()
    return set(load_beir(source.beir, split=source.split, corpus_file=source.exclude_corpus_file).corpus)


def _embedding_source(source, config: TrainConfig, grit) -> list[EmbeddingRecord]:
    data = config.data
    if source.path is not None:
        return load_embedding_records(source.path, on_error=data.on_error, dataset=source.name,
                                      max_records=source.max_records)
    if source.task == "inverse_cloze":
        beir = load_beir(source.beir, split=source.split, corpus_file=source.corpus_file)
        excluded = _excluded_ids(source)
        corpus = [beir.document_text(d) for d in beir.corpus if d not in excluded]
        passages = corpus[:]
        random.Random(config.training.seed).shuffle(passages)
        records = inverse_cloze_records(passages, seed=config.training.seed, dataset=source.name or "inverse-cloze")
        records = records[: source.max_records] if source.max_records else records
    elif source.task == "qa_forms":
        records, corpus = _qa_forms_pairs(source, config)
    else:
        records, corpus = beir_embedding_records(source.beir, split=source.split, corpus_file=source.corpus_file,
                                                 dataset=source.name, max_records=source.max_records)
    if source.mine_negatives is not None:
        records = _mine(records, corpus, source.mine_negatives, config, grit)
    return records


def _shuffled_documents(beir, texts: dict[str, str], excluded: set[str], seed: int) -> list[tuple[str, str, str]]:
    """(document as indexed, body, title) of every passage outside `excluded`, in a seeded random order."""
    ids = [d for d in beir.corpus if d not in excluded]
    random.Random(seed).shuffle(ids)
    return [(texts[d], beir.corpus[d]["text"], beir.corpus[d].get("title") or "") for d in ids]


def _qa_forms_pairs(source, config: TrainConfig) -> tuple[list[EmbeddingRecord], list[str]]:
    """Templated questions of `source.kinds` (`training.questions`), each paired with the passage it is asked
    of, from the corpus minus `exclude_corpus_file`; and that corpus (for mining)."""
    from grit_components.training.questions import interleave_kinds, passage_questions

    beir = load_beir(source.beir, split=source.split, corpus_file=source.corpus_file)
    excluded = _excluded_ids(source)
    texts = {d: beir.document_text(d) for d in beir.corpus if d not in excluded}
    documents = _shuffled_documents(beir, texts, excluded, config.training.seed)[source.skip:]
    questions = interleave_kinds(passage_questions(documents, kinds=source.kinds, seed=config.training.seed,
                                                   per_passage=1))
    name = source.name or "qa-forms"
    records = [EmbeddingRecord((None, q.question), ((None, q.document),), (), name) for q in questions]
    records = records[: source.max_records] if source.max_records else records
    logger.info("qa_forms embedding source %s: %d question-passage pairs", name, len(records))
    return records, list(texts.values())


def _generative_source(source, config: TrainConfig, grit) -> list:
    data = config.data
    if source.path is not None:
        return load_chat_records(source.path, on_error=data.on_error, dataset=source.name, max_records=source.max_records)
    question = source.question or (CLOZE_QUESTION if source.task == "fact_cloze" else DEFAULT_RAG_QUESTION)
    if source.task == "rag":
        return beir_rag_records(source.beir, split=source.split, corpus_file=source.corpus_file, dataset=source.name,
                                max_records=source.max_records, skip=source.skip, question=question,
                                max_passage_words=source.max_passage_words)
    beir = load_beir(source.beir, split=source.split, corpus_file=source.corpus_file)
    if source.task == "fact_cloze":
        return _fact_cloze_source(source, beir, question, config, grit)
    if source.task == "qa_forms":
        return _qa_forms_source(source, beir, config, grit)
    records, corpus = beir_embedding_records(source.beir, split=source.split, corpus_file=source.corpus_file)
    records = records[source.skip:]
    records = records[: source.max_records] if source.max_records else records
    if source.mine_negatives is not None:
        records = _mine(records, corpus, source.mine_negatives, config, grit)
    seed = config.training.seed
    if source.task in RANKING_TASKS:
        return ranking_groups(records, group_size=source.group_size, seed=seed, dataset=source.name or "ranking",
                              score=RANKING_TASKS[source.task])
    if source.task == "pointwise":
        return pointwise_records(records, negatives_per_positive=source.negatives_per_positive, seed=seed,
                                 dataset=source.name or "pointwise")
    titles = _titles(beir)
    answers = [titles.get(record.pos[0][1], "") for record in records]
    kept = [(r, a) for r, a in zip(records, answers) if a]
    return _rag_format_records(source, [r for r, _ in kept], [a for _, a in kept], question, titles, config, "rag")


def _titles(beir) -> dict[str, str]:
    """Passage as indexed ("title text") -> its title."""
    return {beir.document_text(d): doc["title"] for d, doc in beir.corpus.items() if doc.get("title")}


def _rag_format_records(source, records, answers, question: str, titles, config: TrainConfig, dataset: str,
                        evidence=None) -> list:
    """`records` answered with `answers` in every prompt format and cache source of `source`."""
    return rag_records(records, answers, question=question, formats=source.formats, sources=source.sources,
                       max_documents=source.max_documents, min_documents=source.min_documents,
                       max_passage_words=source.max_passage_words, titles=titles, untitled=source.untitled,
                       unanswerable=source.unanswerable, unanswerable_twins=source.unanswerable_twins,
                       evidence=evidence, seed=config.training.seed,
                       dataset=source.name or dataset)


def _fact_cloze_source(source, beir, question: str, config: TrainConfig, grit) -> list:
    """Cloze fact questions from the corpus (minus `exclude_corpus_file`), over their passage and mined
    distractors, in every prompt format of the source."""
    texts = {d: beir.document_text(d) for d in beir.corpus}
    documents = _shuffled_documents(beir, texts, _excluded_ids(source), config.training.seed)
    pairs = fact_cloze_records(documents[source.skip:], max_words=source.max_passage_words, seed=config.training.seed,
                               dataset=source.name or "fact-cloze")
    pairs = pairs[: source.max_records] if source.max_records else pairs
    records, answers = [r for r, _ in pairs], [a for _, a in pairs]
    if source.mine_negatives is not None:
        records = _mine(records, list(texts.values()), source.mine_negatives, config, grit)
    return _rag_format_records(source, records, answers, question, _titles(beir), config, "fact-cloze")


def _qa_forms_source(source, beir, config: TrainConfig, grit) -> list:
    """Questions of every kind in `source.kinds` from the corpus (minus `exclude_corpus_file`), balanced across
    kinds, over their passage and mined distractors in every prompt format of the source; a share
    `source.unanswerable` without their passage."""
    from grit_components.training.questions import TEMPLATED_KINDS, interleave_kinds, passage_questions, passage_subject

    texts = {d: beir.document_text(d) for d in beir.corpus}
    documents = _shuffled_documents(beir, texts, _excluded_ids(source), config.training.seed)[source.skip:]
    name = source.name or "qa-forms"
    templated = [k for k in source.kinds if k in TEMPLATED_KINDS]
    questions = passage_questions(documents, max_words=source.max_passage_words, kinds=templated,
                                  seed=config.training.seed) if templated else []
    items = [(EmbeddingRecord((None, q.question), ((None, q.document),), (), name), q.target, q.answer, q.kind)
             for q in interleave_kinds(questions)]
    # cloze questions (as written, and asked as wh-questions) as kinds of their own: after every len(templated)
    # templated questions one of each, so any prefix stays balanced
    queues = []
    for offset, kind in enumerate(k for k in ("cloze", "wh_cloze") if k in source.kinds):
        cloze = fact_cloze_records(documents, max_words=source.max_passage_words,
                                   seed=config.training.seed + offset, dataset=name)  # other sentences per kind
        if kind == "cloze":
            asked = [(CLOZE_QUESTION.format(query=r.query[1]), r, a) for r, a in cloze]
        else:
            subjects = {document: passage_subject(title) for document, _, title in documents}
            asked = [(wh_cloze_question(r.query[1], a, subjects.get(r.pos[0][1])), r, a) for r, a in cloze]
        queues.append(collections.deque((EmbeddingRecord((None, q), r.pos, (), name), a, a, kind)
                                        for q, r, a in asked if q is not None))
    if queues:
        block, merged = max(len(templated), 1), []
        for start in itertools.count(0, block):
            if start >= len(items) and not any(queues):
                break
            merged += items[start:start + block]
            merged += [queue.popleft() for queue in queues if queue]
        items = merged
    items = items[: source.max_records] if source.max_records else items
    records = [item[0] for item in items]
    if source.mine_negatives is not None:
        records = _mine(records, list(texts.values()), source.mine_negatives, config, grit)
    kinds = {}
    for item in items:
        kinds[item[3]] = kinds.get(item[3], 0) + 1
    logger.info("qa_forms source %s: %d questions by kind %s", name, len(items), kinds)
    return _rag_format_records(source, records, [item[1] for item in items], "{query}", _titles(beir), config, name,
                               evidence=[item[2] for item in items])


def build_records(config: TrainConfig, grit=None) -> tuple[list[EmbeddingRecord], list]:
    """Load every configured source (validating records) and mine hard negatives where asked.

    Generative records of all sources are shuffled together (seeded), so every step mixes the tasks;
    ranking groups (`pointwise_ranking` sources) are among them (`build_trainer` gives them their own stream).
    """
    embedding: list[EmbeddingRecord] = []
    for source in config.data.embedding:
        embedding += _embedding_source(source, config, grit)
    generative: list = []
    for source in config.data.generative:
        generative += _generative_source(source, config, grit)
    if len(config.data.generative) > 1:
        random.Random(config.training.seed).shuffle(generative)
    return embedding, generative


def training_metadata(config: TrainConfig, grit) -> ModelMetadata:
    """What the trained model will declare (`grit_model.json`): its instruction, chat format and the jobs
    its data trained (embedding with a contrastive source, relevance judgements with a pointwise or ranking source,
    cache formats with a rag_formats source that has cache modes), and what it keeps of the adapter it started
    from (`lora.init_adapter_capabilities`)."""
    data = config.data
    capabilities = ["generation"]
    if data.embedding and config.loss.rep_weight > 0:
        capabilities.insert(0, "embedding")
    generative = data.generative if config.loss.gen_weight > 0 else []
    ranking = {s.task for s in data.generative if s.task in RANKING_TASKS} if config.loss.rank_weight > 0 else set()
    if "pointwise_ranking" in ranking or any(s.task == "pointwise" for s in generative):
        capabilities.append("pointwise_rerank")
    if "query_likelihood_ranking" in ranking:
        capabilities.append("query_likelihood_rerank")
    # what it keeps of lora.init_adapter (the config checks there is one)
    capabilities += [c for c in config.lora.init_adapter_capabilities if c not in capabilities]
    judges = any(c.endswith("_rerank") for c in capabilities)  # its relevance prompts' passage length is declared
    formats = list(dict.fromkeys(f for s in generative if s.task == "rag_formats" for f in s.formats))
    if any(s.task == "rag" for s in generative):
        formats = list(dict.fromkeys(["doc_first", *formats]))
    if set(formats) - {"doc_first", "query_first", "no_retrieval"}:
        capabilities.append("rag_cache_formats")
    return ModelMetadata(query_instruction=data.query_instruction if "embedding" in capabilities else None,
                         document_instruction=data.passage_instruction,
                         chat_format="grit" if grit.uses_grit_chat_format else "template",
                         capabilities=tuple(sorted(capabilities, key=CAPABILITIES.index)),
                         pointwise_max_passage_tokens=data.rerank_passage_tokens if judges else None,
                         rag_formats=tuple(formats), extra={"base_model": config.model})


def build_trainer(config: TrainConfig, *, model=None, grit=None, records=None):
    """A ready `GritTrainer` for `config` (model and records are loaded unless given)."""
    from transformers import TrainingArguments

    from grit_components.training.collator import GritCollator
    from grit_components.training.evaluate import RetrievalEvalSet
    from grit_components.training.trainer import GritTrainDataset, GritTrainer, GritTrainingModel

    settings = config.training
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    if model is None:
        model, grit = load_training_model(config)
    embedding, generative = records if records is not None else build_records(config, grit)
    ranking = [r for r in generative if isinstance(r, RankingGroup)]
    generative = [r for r in generative if not isinstance(r, RankingGroup)]
    dataset = GritTrainDataset(embedding, generative, ranking)
    data = config.data
    collator = GritCollator(grit, query_instruction=data.query_instruction, passage_instruction=data.passage_instruction,
                            num_hard_negatives=data.num_hard_negatives, query_max_length=data.query_max_length,
                            passage_max_length=data.passage_max_length,
                            generative_max_length=data.generative_max_length,
                            generative_batch_size=data.generative_batch_size,
                            rerank_passage_tokens=data.rerank_passage_tokens,
                            ranking_batch_size=data.ranking_batch_size, seed=settings.seed)
    retrieval_eval, generative_eval = None, []
    if config.eval.beir is not None:
        retrieval_eval = RetrievalEvalSet.from_beir(config.eval.beir, split=config.eval.split,
                                                    corpus_file=config.eval.corpus_file,
                                                    max_queries=config.eval.max_queries, max_corpus=config.eval.max_corpus)
        if config.eval.generative_records:
            generative_eval = beir_rag_records(config.eval.beir, split=config.eval.split,
                                               corpus_file=config.eval.corpus_file,
                                               max_records=config.eval.generative_records)
    evaluating = retrieval_eval is not None and config.eval.every_steps is not None
    bf16 = training_precision(config) or (grit.dtype == torch.bfloat16 and grit.device.type != "cpu")
    args = TrainingArguments(
        output_dir=config.output_dir,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=config.eval.batch_size,
        learning_rate=settings.learning_rate,
        max_steps=settings.max_steps,
        num_train_epochs=settings.num_epochs,
        warmup_steps=settings.warmup_ratio,
        weight_decay=settings.weight_decay,
        lr_scheduler_type=settings.lr_scheduler,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        activation_checkpointing=settings.gradient_checkpointing,
        logging_steps=settings.logging_steps,
        save_strategy="steps" if settings.save_steps else "no",
        save_steps=settings.save_steps or 500,
        save_total_limit=settings.save_total_limit,
        eval_strategy="steps" if evaluating else "no",
        eval_steps=config.eval.every_steps if evaluating else None,
        eval_on_start=config.eval.on_start and evaluating,
        seed=settings.seed,
        bf16=bf16,
        fp16=False,
        disable_tqdm=not settings.progress_bar,
        remove_unused_columns=False,
        report_to=settings.report_to or "none",
        dataloader_drop_last=False,
        use_cpu=not torch.cuda.is_available(),
    )
    metadata = training_metadata(config, grit)
    info = {"base_model": config.model, "chat_format": "grit" if grit.uses_grit_chat_format else "template",
            "query_instruction": data.query_instruction, "passage_instruction": data.passage_instruction,
            "query_max_length": data.query_max_length, "passage_max_length": data.passage_max_length,
            "bf16_autocast": bf16, "config": dataclasses.asdict(config)}
    return GritTrainer(
        model=GritTrainingModel(model), args=args, train_dataset=dataset, data_collator=collator,
        eval_dataset=dataset if evaluating else None,
        grit_model=grit, temperature=config.loss.temperature, rep_weight=config.loss.rep_weight,
        gen_weight=config.loss.gen_weight, gen_averaging=config.loss.gen_averaging,
        rank_weight=config.loss.rank_weight, rank_bce_weight=config.loss.rank_bce_weight,
        rank_lm_weight=config.loss.rank_lm_weight,
        gradcache_chunk_size=config.loss.gradcache_chunk_size,
        sequence_chunk_size=config.loss.sequence_chunk_size, retrieval_eval=retrieval_eval,
        generative_eval=generative_eval, merge_lora=config.lora.merge_on_save, save_info=info, metadata=metadata,
        eval_settings={"query_instruction": data.query_instruction, "passage_instruction": data.passage_instruction,
                       "query_max_length": data.query_max_length, "passage_max_length": data.passage_max_length,
                       "batch_size": config.eval.batch_size},
    )


def train(config: TrainConfig, *, resume_from_checkpoint: str | None = None) -> Path:
    """Run the whole training (evaluating at the end when a dev set is configured); returns the output dir
    holding the final model, loadable with `load_model(<dir>)` and every component's `model=<dir>`.

    :param resume_from_checkpoint: a `checkpoint-N` folder of an earlier run of the same config.
    """
    trainer = build_trainer(config)
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    mixing = config.lora.init_adapter_weight is not None
    if mixing:  # WiSE-FT: mix the starting adapter back in (the evaluation below then measures the mix)
        from grit_components.training.trainer import interpolate_adapter

        inner = trainer.inner_model
        lost = interpolate_adapter(inner, config.lora.init_adapter, config.lora.init_adapter_weight)
        logger.info("saved adapter = %.2f x %s + %.2f x trained (rank-%d re-fit lost at most %.2g of a module's energy)",
                    config.lora.init_adapter_weight, config.lora.init_adapter, 1 - config.lora.init_adapter_weight,
                    inner.peft_config["default"].r, lost)
        trainer.log({"init_adapter_weight": config.lora.init_adapter_weight, "interpolation_energy_lost": lost})
    evaluated_last = not mixing and any("eval_ndcg@10" in log and log.get("step") == trainer.state.global_step
                                        for log in trainer.state.log_history)
    if trainer.retrieval_eval is not None and not evaluated_last:
        trainer.evaluate()
    trainer.save_model(config.output_dir)
    if trainer.is_world_process_zero():  # the learning curve: every logged loss and evaluation, by step
        trainer.state.save_to_json(str(Path(config.output_dir) / "trainer_state.json"))
    return Path(config.output_dir)
