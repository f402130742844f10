"""GRIT training on the Hugging Face Trainer (so accelerate, DDP/FSDP/DeepSpeed, logging and checkpoints
come from there): a dataset pairing embedding and generative records, a sampler keeping each batch within
one embedding dataset, a model wrapper whose forward does either pass, and a Trainer subclass with the
GRIT loss, optional GradCache, periodic retrieval evaluation and checkpoints every component loads.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import random
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import Dataset, Sampler
from transformers import Trainer, TrainerCallback

from grit_components.attention import bidirectional_forward
from grit_components.embedding import TruncationWarning
from grit_components.metadata import ModelMetadata
from grit_components.training.data import ChatRecord, EmbeddingRecord
from grit_components.training.loss import (chunked_generative_loss, chunked_info_nce_backward, info_nce_loss,
                                           length_chunks, pool, ranking_loss, selected_generative_loss)
from grit_components.training.tasks import RankingGroup

if TYPE_CHECKING:
    from grit_components.grit_model import GritModel
    from grit_components.training.evaluate import RetrievalEvalSet

TRAINING_INFO_FILE = "grit_training.json"


class GritTrainDataset(Dataset):
    """Item i = {"embedding": embedding record i, "generative": generative record i mod n_generative,
    "ranking": ranking group i mod n_ranking}.

    The first non-empty stream (embedding, then generative, then ranking) sets the length; the others cycle.
    """

    def __init__(self, embedding: Sequence[EmbeddingRecord] = (), generative: Sequence[ChatRecord] = (),
                 ranking: Sequence[RankingGroup] = ()) -> None:
        if not embedding and not generative and not ranking:
            raise ValueError("training needs embedding records, generative records, ranking groups, or some of them")
        self.embedding = list(embedding)
        self.generative = list(generative)
        self.ranking = list(ranking)

    def __len__(self) -> int:
        return len(self.embedding) or len(self.generative) or len(self.ranking)

    def __getitem__(self, index: int) -> dict:
        def cycle(records):
            return records[index % len(records)] if records else None

        item = {"embedding": cycle(self.embedding), "generative": cycle(self.generative)}
        if self.ranking:
            item["ranking"] = cycle(self.ranking)
        return item

    def dataset_names(self) -> list[str]:
        """Per item, the name batches must not mix (the embedding record's dataset)."""
        if not self.embedding:
            return ["generative"] * len(self)
        return [r.dataset for r in self.embedding]


class SameDatasetSampler(Sampler[int]):
    """Indices in blocks of `batch_size` from one dataset each (so in-batch negatives share a dataset).

    Each epoch: shuffle every dataset's indices, cut them into full batches (a dataset's remainder is
    dropped), shuffle the batches, and yield them one after the other. The DataLoader's plain batching
    (and accelerate's per-process batch sharding) then sees single-dataset batches.
    """

    def __init__(self, names: Sequence[str], batch_size: int, *, seed: int = 0) -> None:
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.groups: dict[str, list[int]] = {}
        for index, name in enumerate(names):
            self.groups.setdefault(name, []).append(index)
        if all(len(g) < batch_size for g in self.groups.values()):
            raise ValueError(f"batch_size={batch_size} is larger than every dataset "
                             f"({ {k: len(v) for k, v in self.groups.items()} }); lower training.batch_size")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        batches = []
        for indices in self.groups.values():
            shuffled = indices[:]
            rng.shuffle(shuffled)
            batches += [shuffled[s : s + self.batch_size] for s in range(0, len(shuffled) - self.batch_size + 1, self.batch_size)]
        rng.shuffle(batches)
        return batches

    def __iter__(self):
        self.epoch_batches = self.batches()
        self.epoch += 1
        for batch in self.epoch_batches:
            yield from batch

    def __len__(self) -> int:
        return sum(len(g) // self.batch_size for g in self.groups.values()) * self.batch_size


class GritTrainingModel(torch.nn.Module):
    """Wraps the causal LM (or its peft model) so both GRIT passes go through one `forward` (DDP/FSDP safe).

    `forward(input_ids, attention_mask, pooling)` returns normalised embeddings (bidirectional attention,
    pooled with `pooling` weights); without `pooling` it returns the causal LM logits.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    @property
    def config(self):
        return self.model.config

    @property
    def is_activation_checkpointing(self) -> bool:
        return bool(getattr(self.model, "is_activation_checkpointing", False))

    def activation_checkpointing_enable(self, **kwargs) -> None:
        self.model.activation_checkpointing_enable(**kwargs)
        if hasattr(self.model, "enable_input_require_grads"):  # LoRA: frozen embeddings still need grad flow
            self.model.enable_input_require_grads()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pooling: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                last: torch.Tensor | None = None, float_head: bool = False):
        if last is not None:  # the next-token logits at one position per row (a relevance prompt's end): (B, V)
            hidden = self.model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                              use_cache=False).last_hidden_state  # (B, T, H)
            return self._head(hidden[torch.arange(hidden.shape[0], device=hidden.device), last], True)
        if pooling is not None:
            hidden = bidirectional_forward(self.model, input_ids, attention_mask).last_hidden_state  # (B, T, H)
            return pool(hidden, pooling)  # (B, H)
        if labels is None:
            return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              use_cache=False).logits  # (B, T, V)
        # Logits only where a label is predicted: the LM head over every position of a long prompt would
        # cost more than the decoder itself on a small model. `attention_mask` may be a 4D layout mask.
        body = self.model.get_decoder()
        hidden = body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      use_cache=False).last_hidden_state  # (B, T, H)
        predicts = labels[:, 1:] != -100  # (B, T-1): position t predicts token t+1
        return self._head(hidden[:, :-1][predicts], float_head)  # (N, V)

    def _head(self, hidden: torch.Tensor, float_head: bool) -> torch.Tensor:
        """The LM head; with `float_head` in float32 even under autocast (bf16 logits are coarse: a score that
        is a difference of log-probabilities would move in steps of 0.25)."""
        head = self.model.get_output_embeddings()
        if not float_head:
            return head(hidden)
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            return head(hidden.float())


def save_grit_model(model: torch.nn.Module, tokenizer, output_dir, *, merge_lora: bool = True, info: dict | None = None,
                    metadata: ModelMetadata | None = None) -> Path:
    """Save a trained model so that `load_model(output_dir)` (and every component) loads it.

    A peft (LoRA) model is saved merged into full weights (a copy is merged: training can go on) with its
    adapter in `output_dir/adapter/`; with `merge_lora=False` only the adapter is saved there (load it
    with peft on top of the base model; `load_model` then needs the merged form). `info` goes to
    `grit_training.json` (instructions and chat format the model was trained with); `metadata` goes to
    `grit_model.json` (what the model declares to the components; in `adapter/` too).
    """
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "peft_config"):
        model.save_pretrained(output / "adapter")
        if merge_lora:
            merged = copy.deepcopy(model).merge_and_unload()
            merged.save_pretrained(output)
    else:
        model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    if info is not None:
        (output / TRAINING_INFO_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")
    if metadata is not None:
        metadata.write(output)
        weights = output / "adapter" / "adapter_model.safetensors"
        if weights.is_file():  # the adapter alone declares itself too, with the checksum of its weights
            digest = hashlib.sha256(weights.read_bytes()).hexdigest()
            dataclasses.replace(metadata, extra={**metadata.extra, "adapter_sha256": digest}).write(output / "adapter")
    return output


class ReleaseFreedMemory(TrainerCallback):
    """Hands freed heap memory back to the OS every `every` steps (glibc `malloc_trim`).

    Batches of ever-different shapes leave glibc's heap fragmented: on a CPU run of the recipe the
    resident size grew from 12 to over 19 GB of mostly freed memory in 60 steps, which a 24 GB machine
    cannot afford. A no-op where glibc is not the allocator.
    """

    def __init__(self, every: int = 10) -> None:
        import ctypes
        import ctypes.util

        self.every = every
        try:
            self._trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            self._trim = None

    def on_step_end(self, args, state, control, **kwargs):
        if self._trim is not None and state.global_step % self.every == 0:
            self._trim(0)


class GritTrainer(Trainer):
    """`transformers.Trainer` with the GRIT loss.

    :param grit_model: the `GritModel` view of the model being trained (tokenizer, formats, evaluation).
    :param temperature: InfoNCE temperature.
    :param rep_weight: weight of L_rep.
    :param gen_weight: weight of L_gen.
    :param gen_averaging: "token" or "sample" averaging of L_gen (see `training.loss`).
    :param rank_weight: weight of L_rank, the ranking loss over the relevance scores of ranking groups.
    :param rank_bce_weight: weight of the pointwise (binary cross-entropy) term inside L_rank (yes/no groups).
    :param rank_lm_weight: weight of the relevant passage's query NLL per token inside L_rank (query-likelihood
        groups: the query-generation term).
    :param gradcache_chunk_size: embed the contrastive batch in chunks of this many texts (GradCache).
    :param sequence_chunk_size: run generative and query-likelihood sequences through the model this many at
        a time, longest first, each chunk cut to its own longest row (None: the whole padded batch at once).
        The loss is the same; the padding of mixed-length batches is not computed.
    :param retrieval_eval: a `RetrievalEvalSet` scored at every evaluation (nDCG@10, Recall@10).
    :param generative_eval: dev `ChatRecord`s whose L_gen is reported at every evaluation.
    :param eval_settings: query/passage instructions and lengths for the retrieval evaluation.
    :param merge_lora: save LoRA runs as merged full weights (plus the adapter in `adapter/`).
    :param save_info: written to `grit_training.json` in every checkpoint.
    """

    def __init__(self, *args, grit_model: GritModel, temperature: float = 0.02, rep_weight: float = 1.0,
                 gen_weight: float = 1.0, gen_averaging: str = "token", rank_weight: float = 1.0,
                 rank_bce_weight: float = 0.0, rank_lm_weight: float = 0.0, gradcache_chunk_size: int | None = None,
                 sequence_chunk_size: int | None = None, retrieval_eval: RetrievalEvalSet | None = None,
                 generative_eval: Sequence[ChatRecord] = (), eval_settings: dict | None = None,
                 merge_lora: bool = True, save_info: dict | None = None, metadata: ModelMetadata | None = None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.grit_model = grit_model
        self.temperature = temperature
        self.rep_weight = rep_weight
        self.gen_weight = gen_weight
        self.gen_averaging = gen_averaging
        self.rank_weight = rank_weight
        self.rank_bce_weight = rank_bce_weight
        self.rank_lm_weight = rank_lm_weight
        self._answer_ids: tuple[list[int], list[int]] | None = None
        self.gradcache_chunk_size = gradcache_chunk_size
        self.sequence_chunk_size = sequence_chunk_size
        self.retrieval_eval = retrieval_eval
        self.generative_eval = list(generative_eval)
        self.eval_settings = eval_settings or {}
        self.merge_lora = merge_lora
        self.save_info = save_info
        self.metadata = metadata
        self._parts: dict[str, list[float]] = {"loss_rep": [], "loss_gen": [], "loss_rank": [], "step_seconds": [], "step_cpu_seconds": []}
        if self.args.use_cpu or not torch.cuda.is_available():
            self.add_callback(ReleaseFreedMemory())

    def train(self, *args, **kwargs):
        """`Trainer.train`, leaving the model in eval mode (no dropout) for use right after."""
        try:
            return super().train(*args, **kwargs)
        finally:
            self.model.eval()

    # --- data -----------------------------------------------------------------------------------
    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return SameDatasetSampler(dataset.dataset_names(), self.args.per_device_train_batch_size, seed=self.args.seed)

    # --- loss -----------------------------------------------------------------------------------
    def grit_losses(self, model, inputs, *, backward_scale: float | None = None) -> dict[str, torch.Tensor]:
        """{"loss_rep", "loss_gen"} of a batch (absent parts are missing).

        With GradCache (and `backward_scale` given) L_rep's gradient, scaled, is accumulated right away.
        """
        losses = {}
        if "query_input_ids" in inputs and self.rep_weight > 0:
            query = (inputs["query_input_ids"], inputs["query_attention_mask"], inputs["query_pooling"])
            passage = (inputs["passage_input_ids"], inputs["passage_attention_mask"], inputs["passage_pooling"])
            if self.gradcache_chunk_size and backward_scale is not None:
                losses["loss_rep"] = chunked_info_nce_backward(
                    lambda ids, mask, weights: model(ids, mask, weights), query, passage,
                    chunk_size=self.gradcache_chunk_size, temperature=self.temperature,
                    scale=backward_scale * self.rep_weight, backward=self.accelerator.backward)
            else:
                losses["loss_rep"] = info_nce_loss(model(*query), model(*passage), temperature=self.temperature)
        if "gen_input_ids" in inputs and self.gen_weight > 0:
            parts = [(model(ids, mask, labels=labels, position_ids=positions), labels)
                     for _, ids, mask, labels, positions in self._sequence_chunks(inputs, "gen")]
            losses["loss_gen"] = chunked_generative_loss(parts, averaging=self.gen_averaging)
        if "rank_input_ids" in inputs and self.rank_weight > 0:
            groups = len(inputs["rank_group_size"])
            if "rank_labels" in inputs:  # query likelihood: log p(query | passage prompt), summed over the query
                labels = inputs["rank_labels"]
                totals = torch.zeros(labels.shape[0], device=labels.device)  # (Q * G,) summed query log-probs
                for index, ids, mask, part, _ in self._sequence_chunks(inputs, "rank"):
                    logits = model(ids, mask, labels=part, float_head=True)  # (N_c, V)
                    predicts = part[:, 1:] != -100
                    targets = part[:, 1:][predicts]
                    token_log_probs = logits.float().log_softmax(dim=-1).gather(1, targets[:, None])[:, 0]  # (N_c,)
                    rows = torch.nonzero(predicts)[:, 0]  # the chunk's row of each target
                    totals = totals.index_add(0, rows if index is None else index[rows], token_log_probs)
                scores = totals.view(groups, -1)  # (Q, G): within a query, the order of the reranker's mean
                counts = (labels[:, 1:] != -100).sum(dim=1).view(groups, -1)[:, 0].clamp(min=1)
                lm = -(scores[:, 0] / counts).mean()  # the relevant passage's query, per token (query generation)
                losses["loss_rank"] = ranking_loss(scores) + self.rank_lm_weight * lm
            else:
                logits = model(inputs["rank_input_ids"], inputs["rank_attention_mask"], last=inputs["rank_last"])
                scores = self.relevance_scores(logits).view(groups, -1)  # (Q, G)
                losses["loss_rank"] = ranking_loss(scores, bce_weight=self.rank_bce_weight)
        return losses

    def _sequence_chunks(self, inputs: dict[str, torch.Tensor], prefix: str):
        """(row indices, input_ids, attention_mask, labels, position_ids) of each chunk of the `prefix`
        sequences (`sequence_chunk_size` rows, longest first, cut to the chunk's longest row; a 4D layout
        mask (B, 1, T, T) is cut on both sequence axes). Without chunking: one chunk, indices None."""
        ids, mask, labels = inputs[f"{prefix}_input_ids"], inputs[f"{prefix}_attention_mask"], inputs[f"{prefix}_labels"]
        positions = inputs.get(f"{prefix}_position_ids")
        lengths = inputs.get(f"{prefix}_lengths")
        chunks = length_chunks(lengths, self.sequence_chunk_size) if lengths is not None else None
        if chunks is None:
            yield None, ids, mask, labels, positions
            return
        for index in chunks:
            width = int(lengths[index].max())
            cut = mask[index][..., :width, :width] if mask.dim() == 4 else mask[index, :width]
            yield (index, ids[index, :width], cut, labels[index, :width],
                   None if positions is None else positions[index, :width])

    def relevance_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """log p(yes) - log p(no) from next-token logits (N, V), as `rerank.pointwise_scores` computes it."""
        if self._answer_ids is None:
            from grit_components.rerank import NO_WORDS, YES_WORDS, answer_token_ids

            self._answer_ids = (answer_token_ids(self.grit_model, YES_WORDS), answer_token_ids(self.grit_model, NO_WORDS))
        yes, no = self._answer_ids
        log_probs = logits.float().log_softmax(dim=-1)
        return torch.logsumexp(log_probs[:, yes], dim=-1) - torch.logsumexp(log_probs[:, no], dim=-1)

    def _combine(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        total = 0.0
        if "loss_rep" in losses:
            total = total + self.rep_weight * losses["loss_rep"]
        if "loss_gen" in losses:
            total = total + self.gen_weight * losses["loss_gen"]
        if "loss_rank" in losses:
            total = total + self.rank_weight * losses["loss_rank"]
        return total if isinstance(total, torch.Tensor) else torch.tensor(0.0)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = self._combine(self.grit_losses(model, inputs))
        return (loss, None) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        started_wall, started_cpu = time.perf_counter(), time.process_time()
        try:
            return self._grit_training_step(model, inputs)
        finally:
            # process CPU seconds (all threads) say what a step costs even on a shared machine
            self._parts["step_seconds"].append(time.perf_counter() - started_wall)
            self._parts["step_cpu_seconds"].append(time.process_time() - started_cpu)

    def _grit_training_step(self, model, inputs):
        model.train()
        inputs = self._prepare_inputs(inputs)
        scale = 1.0 / self.current_gradient_accumulation_steps
        with self.compute_loss_context_manager():
            losses = self.grit_losses(model, inputs, backward_scale=scale)
        for name, value in losses.items():
            self._parts[name].append(float(value.detach()))
        if self.gradcache_chunk_size and "loss_rep" in losses:
            # L_rep's gradient is already accumulated; back-propagate the rest.
            rest = self._combine({k: v for k, v in losses.items() if k != "loss_rep"})
            if rest.requires_grad:
                self.accelerator.backward(rest * scale)
        else:
            self.accelerator.backward(self._combine(losses) * scale)
        return self._combine({k: v.detach() for k, v in losses.items()}).detach() * scale

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: add the mean of each part since the last one
            for name, values in self._parts.items():
                if values:
                    logs[name] = round(sum(values) / len(values), 4)
                    values.clear()
        super().log(logs, start_time)

    # --- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """nDCG@10 / Recall@10 on the dev sample (through `GritModel.embed`, as at inference) and dev L_gen."""
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        metrics: dict[str, float] = {}
        try:
            if self.retrieval_eval is not None:
                from grit_components.training.evaluate import evaluate_retrieval

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", TruncationWarning)
                    scores = evaluate_retrieval(self.grit_model, self.retrieval_eval, **self.eval_settings)
                metrics.update({f"{metric_key_prefix}_{k}": v for k, v in scores.items()})
            if self.generative_eval:
                collate = self.data_collator
                total, count = 0.0, 0
                size = self.args.per_device_eval_batch_size
                for start in range(0, len(self.generative_eval), size):
                    batch = collate.generative_batch(self.generative_eval[start : start + size])
                    batch = {k: v.to(self.args.device) for k, v in batch.items()}
                    logits = model(batch["gen_input_ids"], batch["gen_attention_mask"], labels=batch["gen_labels"],
                                   position_ids=batch.get("gen_position_ids"))
                    part = self.generative_eval[start : start + size]
                    total += float(selected_generative_loss(logits, batch["gen_labels"],
                                                            averaging=self.gen_averaging)) * len(part)
                    count += len(part)
                metrics[f"{metric_key_prefix}_loss_gen"] = total / count
        finally:
            model.train(was_training)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    @property
    def inner_model(self) -> torch.nn.Module:
        """The causal LM (or its peft model) inside the accelerate/DDP wrappers and `GritTrainingModel`."""
        return self.accelerator.unwrap_model(self.model).model

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None) -> None:
        # Checkpoints hold the inner model (loadable by every component), not this wrapper's state dict.
        load_checkpoint_weights(self.accelerator.unwrap_model(model or self.model).model, resume_from_checkpoint)

    # --- saving ---------------------------------------------------------------------------------
    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        if not self.args.should_save:
            return
        output_dir = output_dir or self.args.output_dir
        save_grit_model(self.inner_model, self.grit_model.tokenizer, output_dir, merge_lora=self.merge_lora,
                        info=self.save_info, metadata=self.metadata)
        torch.save(self.args, Path(output_dir) / "training_args.bin")


@torch.no_grad()
def interpolate_adapter(model: torch.nn.Module, init_adapter, weight: float) -> float:
    """Mix the adapter a stage started from back into the trained one, in place (WiSE-FT, Wortsman et al. 2022).

    Every LoRA pair of `model` (a peft model whose adapter was initialised from `init_adapter`, so both share
    rank and scaling) becomes the rank-r fit of ``weight * B_init @ A_init + (1 - weight) * B @ A``: the exact
    mixture has rank up to 2r, so it is re-fitted by a truncated SVD to keep the adapter's size; other tensors
    of the adapter (`modules_to_save` copies) are mixed element-wise. DoRA adapters are refused. Returns the
    largest share of a mixture's energy (squared Frobenius norm) the re-fit lost, 0 when the mixture fits exactly.
    """
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file

    if not hasattr(model, "peft_config"):
        raise TypeError("interpolate_adapter needs a peft (LoRA) model")
    if not 0 <= weight <= 1:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    if any(getattr(config, "use_dora", False) for config in model.peft_config.values()):
        raise ValueError("interpolate_adapter mixes plain LoRA adapters; a DoRA adapter's magnitudes do not mix "
                         "linearly with its directions")
    weights = Path(init_adapter).expanduser() / "adapter_model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"init_adapter={str(init_adapter)!r} has no adapter_model.safetensors")
    init = load_file(str(weights))
    trained = get_peft_model_state_dict(model)
    if set(init) != set(trained) or any(init[k].shape != v.shape for k, v in trained.items()):
        raise ValueError(f"the adapter in {init_adapter} does not match the trained one (tensor names or shapes differ); "
                         "give the adapter the trained one was initialised from")
    mixed, lost = {}, 0.0
    for key_a in [k for k in trained if "lora_A" in k]:
        key_b = key_a.replace("lora_A", "lora_B")
        a, b = trained[key_a], trained[key_b]
        delta = ((1 - weight) * b.double() @ a.double() + weight * init[key_b].double() @ init[key_a].double())
        u, singular, vh = torch.linalg.svd(delta, full_matrices=False)
        rank = a.shape[0]
        energy = (singular**2).sum()
        if energy > 0:
            lost = max(lost, float((singular[rank:] ** 2).sum() / energy))
        root = singular[:rank].sqrt()
        mixed[key_a] = (root[:, None] * vh[:rank]).to(a.dtype)
        mixed[key_b] = (u[:, :rank] * root[None, :]).to(b.dtype)
    # anything else the adapter holds (modules_to_save copies, biases) is a full tensor: mixed element-wise
    mixed.update({k: (weight * init[k].to(v.dtype) + (1 - weight) * v) if v.is_floating_point() else v
                  for k, v in trained.items() if k not in mixed})
    result = set_peft_model_state_dict(model, mixed)
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"could not set the interpolated adapter: unexpected keys {result.unexpected_keys[:3]}")
    return lost


def load_checkpoint_weights(model: torch.nn.Module, checkpoint) -> None:
    """Load the weights `save_grit_model` wrote into the model being trained (to resume a run).

    A LoRA model gets its adapter back from `checkpoint/adapter`; a full model its `model.safetensors`
    (single file; sharded checkpoints are not handled).
    """
    from safetensors.torch import load_file

    checkpoint = Path(checkpoint)
    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        weights = checkpoint / "adapter" / "adapter_model.safetensors"
        if not weights.exists():
            raise FileNotFoundError(f"no LoRA adapter at {weights}; was the checkpoint written by a LoRA run?")
        set_peft_model_state_dict(model, load_file(str(weights)))
        return
    weights = checkpoint / "model.safetensors"
    if not weights.exists():
        raise FileNotFoundError(f"no model.safetensors in {checkpoint} (sharded checkpoints cannot be resumed yet)")
    missing, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or []) | {"lm_head.weight"}
    if unexpected or [k for k in missing if k not in tied]:
        raise ValueError(f"checkpoint {checkpoint} does not match the model: missing {missing}, unexpected {unexpected}")

