"""Build a GRIT training run from a `TrainConfig` and run it (what `grit train config.yaml` does)."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import torch

from grit_components.training.config import TrainConfig
from grit_components.training.data import (
    ChatRecord,
    EmbeddingRecord,
    beir_embedding_records,
    beir_rag_records,
    load_chat_records,
    load_embedding_records,
    mine_hard_negatives,
)

logger = logging.getLogger(__name__)


def load_training_model(config: TrainConfig):
    """(HF model, possibly wrapped by peft; `GritModel` view of it) for training."""
    from grit_components.models import GritModel, load_weights, normalize_device, normalize_dtype

    device = normalize_device(None)
    dtype = normalize_dtype(config.training.dtype, device)
    # The Trainer (accelerate) places the model; load on CPU so a multi-GPU launch does not fill GPU 0.
    model, tokenizer, resolved = load_weights(config.model, device="cpu", dtype=dtype)
    if config.lora.enabled:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha,
                                                 lora_dropout=config.lora.dropout,
                                                 target_modules=config.lora.target_modules, task_type="CAUSAL_LM"))
    grit = GritModel(model, tokenizer, name=config.model, key=resolved.key, chat_format=config.chat_format)
    return model, grit


def build_records(config: TrainConfig, grit=None) -> tuple[list[EmbeddingRecord], list[ChatRecord]]:
    """Load every configured source (validating records) and mine hard negatives where asked."""
    data = config.data
    embedding: list[EmbeddingRecord] = []
    for source in data.embedding:
        if source.path is not None:
            embedding += load_embedding_records(source.path, on_error=data.on_error, dataset=source.name,
                                                max_records=source.max_records)
            continue
        records, corpus = beir_embedding_records(source.beir, split=source.split, corpus_file=source.corpus_file,
                                                 dataset=source.name, max_records=source.max_records)
        if source.mine_negatives is not None:
            mining = source.mine_negatives
            started = time.perf_counter()
            records = mine_hard_negatives(records, corpus, method=mining.method, num_negatives=mining.num_negatives,
                                          skip_top=mining.skip_top, model=grit, query_instruction=data.query_instruction,
                                          max_length=mining.max_length, seed=config.training.seed)
            logger.info("mined hard negatives for %d queries in %.1fs", len(records), time.perf_counter() - started)
        embedding += records
    generative: list[ChatRecord] = []
    for source in data.generative:
        if source.path is not None:
            generative += load_chat_records(source.path, on_error=data.on_error, dataset=source.name,
                                            max_records=source.max_records)
        else:
            generative += beir_rag_records(source.beir, split=source.split, corpus_file=source.corpus_file,
                                           dataset=source.name, max_records=source.max_records, skip=source.skip,
                                           question=source.question, max_passage_words=source.max_passage_words)
    return embedding, generative


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
    dataset = GritTrainDataset(embedding, generative)
    data = config.data
    collator = GritCollator(grit, query_instruction=data.query_instruction, passage_instruction=data.passage_instruction,
                            num_hard_negatives=data.num_hard_negatives, query_max_length=data.query_max_length,
                            passage_max_length=data.passage_max_length,
                            generative_max_length=data.generative_max_length, seed=settings.seed)
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
        bf16=grit.dtype == torch.bfloat16 and grit.device.type != "cpu",
        fp16=False,
        disable_tqdm=not settings.progress_bar,
        remove_unused_columns=False,
        report_to=settings.report_to or "none",
        dataloader_drop_last=False,
        use_cpu=not torch.cuda.is_available(),
    )
    info = {"base_model": config.model, "chat_format": "grit" if grit.uses_grit_chat_format else "template",
            "query_instruction": data.query_instruction, "passage_instruction": data.passage_instruction,
            "query_max_length": data.query_max_length, "passage_max_length": data.passage_max_length,
            "config": dataclasses.asdict(config)}
    return GritTrainer(
        model=GritTrainingModel(model), args=args, train_dataset=dataset, data_collator=collator,
        eval_dataset=dataset if evaluating else None,
        grit_model=grit, temperature=config.loss.temperature, rep_weight=config.loss.rep_weight,
        gen_weight=config.loss.gen_weight, gen_averaging=config.loss.gen_averaging,
        gradcache_chunk_size=config.loss.gradcache_chunk_size, retrieval_eval=retrieval_eval,
        generative_eval=generative_eval, merge_lora=config.lora.merge_on_save, save_info=info,
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
    evaluated_last = any("eval_ndcg@10" in log and log.get("step") == trainer.state.global_step
                         for log in trainer.state.log_history)
    if trainer.retrieval_eval is not None and not evaluated_last:
        trainer.evaluate()
    trainer.save_model(config.output_dir)
    if trainer.is_world_process_zero():  # the learning curve: every logged loss and evaluation, by step
        trainer.state.save_to_json(str(Path(config.output_dir) / "trainer_state.json"))
    return Path(config.output_dir)
