"""The GRIT loss: L = rep_weight * L_rep + gen_weight * L_gen.

L_rep is InfoNCE over cosine similarity / temperature: query i's positive is passage i, every other
passage in the batch (other queries' positives and all hard negatives) is a negative. L_gen is the
next-token cross-entropy on assistant tokens (labels != -100), averaged per token or per sample.
`chunked_info_nce_backward` computes L_rep and its gradient for a batch larger than fits in memory
(GradCache, Gao et al. 2021): embeddings without grad in chunks, the loss gradient w.r.t. the
embeddings, then each chunk again with grad, back-propagating that gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from grit_components._checks import check_choice, check_float

# encode(input_ids, attention_mask, pooling) -> (B, H) L2-normalised embeddings
Encoder = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def pool(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean of (B, T, H) hidden states in fp32, L2-normalised: (B, H). Weights from `pooling_weights`."""
    pooled = (hidden.float() * weights[..., None].float()).sum(dim=1)
    return F.normalize(pooled, p=2, dim=-1)


def info_nce_loss(queries: torch.Tensor, passages: torch.Tensor, *, temperature: float = 0.02) -> torch.Tensor:
    """Mean over queries of -log softmax(q_i . p / temperature)[i].

    `queries` (B, H) and `passages` (N >= B, H) are normalised; passage i is query i's positive.
    """
    check_float("temperature", temperature, minimum=0.0, exclusive_minimum=True)
    if passages.shape[0] < queries.shape[0]:
        raise ValueError(f"passages ({passages.shape[0]}) must hold at least one positive per query ({queries.shape[0]})")
    scores = queries.float() @ passages.float().T / temperature  # (B, N)
    return F.cross_entropy(scores, torch.arange(queries.shape[0], device=scores.device))


def generative_loss(logits: torch.Tensor, labels: torch.Tensor, *, averaging: str = "token") -> torch.Tensor:
    """Next-token cross-entropy where labels != -100; logits (B, T, V), labels (B, T) (not shifted).

    averaging "token": mean over every target token of the batch (long answers weigh more);
    "sample": mean over samples of each sample's mean (every answer weighs the same).
    """
    check_choice("averaging", averaging, ("token", "sample"))
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    per_token = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100,
                                reduction="none").view(labels.shape)
    targets = (labels != -100).float()
    if averaging == "token":
        return (per_token * targets).sum() / targets.sum().clamp(min=1)
    counts = targets.sum(dim=1)
    has = counts > 0
    per_sample = (per_token * targets).sum(dim=1)[has] / counts[has]
    return per_sample.mean() if per_sample.numel() else per_token.sum() * 0


def selected_generative_loss(logits: torch.Tensor, labels: torch.Tensor, *, averaging: str = "token") -> torch.Tensor:
    """`generative_loss` from the logits of the predicting positions only.

    `logits` (N, V) are those of the positions t with `labels[:, t + 1] != -100`, in row-major order
    (what `GritTrainingModel` returns when given labels); equals `generative_loss` of the full logits.
    """
    return chunked_generative_loss([(logits, labels)], averaging=averaging)


def chunked_generative_loss(parts: Sequence[tuple[torch.Tensor, torch.Tensor]], *,
                            averaging: str = "token") -> torch.Tensor:
    """`selected_generative_loss` of a batch whose rows went through the model in several chunks.

    `parts` are (logits (N_c, V), labels (B_c, T_c)) of each chunk (a set of the batch's rows, padding
    columns no row of it needs dropped): the loss is the one of the whole batch, token- or sample-averaged
    over all chunks, not a mean of per-chunk losses.
    """
    check_choice("averaging", averaging, ("token", "sample"))
    per_token, per_sample = [], []
    for logits, labels in parts:
        shifted = labels[:, 1:]
        predicts = shifted != -100  # (B_c, T_c - 1)
        if not bool(predicts.any()):
            continue
        losses = F.cross_entropy(logits.float(), shifted[predicts], reduction="none")  # (N_c,)
        if averaging == "token":
            per_token.append(losses)
            continue
        rows = torch.nonzero(predicts)[:, 0]  # (N_c,) row of each target
        counts = predicts.sum(dim=1)
        has = counts > 0
        sums = torch.zeros(labels.shape[0], dtype=losses.dtype, device=losses.device).index_add_(0, rows, losses)
        per_sample.append(sums[has] / counts[has])
    kept = per_token or per_sample
    if not kept:  # no target anywhere: a zero that keeps the graph
        return sum(logits.sum() for logits, _ in parts) * 0
    return torch.cat(kept).mean()


def length_chunks(lengths: torch.Tensor, size: int | None) -> list[torch.Tensor] | None:
    """Row indices of a right-padded batch grouped `size` at a time by decreasing length (None: one chunk).

    Each chunk then runs cut to its own longest row, so short rows do not pay for a long one's padding;
    the rows' results are the same as in the padded batch (up to float rounding).
    """
    if not size or lengths.numel() <= 1:
        return None
    order = torch.argsort(lengths, descending=True, stable=True)
    return list(order.split(size))


def ranking_loss(scores: torch.Tensor, *, bce_weight: float = 0.0) -> torch.Tensor:
    """Listwise softmax cross-entropy over groups of relevance scores, plus an optional pointwise term.

    `scores` (Q, G) are log-odds (log p(yes) - log p(no)) of G passages per query, the relevant one in
    column 0. The ranking term is -log softmax(scores)[0] averaged over queries; with `bce_weight` > 0
    the binary cross-entropy of sigmoid(score) against the labels (1 for column 0, else 0) is added, so the
    scores also stay calibrated as p(yes | yes or no) across queries.
    """
    check_float("bce_weight", bce_weight, minimum=0.0)
    if scores.dim() != 2 or scores.shape[1] < 2:
        raise ValueError(f"scores must be (queries, group size >= 2), got shape {tuple(scores.shape)}")
    scores = scores.float()
    loss = F.cross_entropy(scores, torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device))
    if bce_weight:
        labels = torch.zeros_like(scores)
        labels[:, 0] = 1.0
        loss = loss + bce_weight * F.binary_cross_entropy_with_logits(scores, labels)
    return loss


def _rng_state():
    return (torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)


def _set_rng_state(state) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])


def _chunks(inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor], size: int):
    ids, mask, weights = inputs
    for start in range(0, ids.shape[0], size):
        part = slice(start, start + size)
        width = int(mask[part].sum(dim=1).max())  # drop padding columns no row of this chunk needs
        yield ids[part, :width], mask[part, :width], weights[part, :width]


def chunked_info_nce_backward(encode: Encoder, queries, passages, *, chunk_size: int, temperature: float = 0.02,
                              scale: float = 1.0, backward: Callable[[torch.Tensor], None] | None = None) -> torch.Tensor:
    """InfoNCE of the whole batch with memory for one chunk of `chunk_size` texts (GradCache).

    `queries` and `passages` are (input_ids, attention_mask, pooling) triples. Gradients of
    `scale * loss` are accumulated into the parameters (via `backward`, default `Tensor.backward`);
    they equal the unchunked gradient up to float rounding. Dropout masks are replayed exactly (the RNG
    state of each chunk is restored for its second pass). Returns the (unscaled) loss, detached.
    """
    backward = backward or (lambda tensor: tensor.backward())
    states, embedded = [], []
    with torch.no_grad():
        for side in (queries, passages):
            for chunk in _chunks(side, chunk_size):
                states.append(_rng_state())
                embedded.append(encode(*chunk))
    n_query_chunks = len(range(0, queries[0].shape[0], chunk_size))
    q = torch.cat(embedded[:n_query_chunks]).detach().requires_grad_(True)
    p = torch.cat(embedded[n_query_chunks:]).detach().requires_grad_(True)
    loss = info_nce_loss(q, p, temperature=temperature)
    (loss * scale).backward()
    grads = list(q.grad.split(chunk_size)) + list(p.grad.split(chunk_size))
    chunks = [*_chunks(queries, chunk_size), *_chunks(passages, chunk_size)]
    for chunk, grad, state in zip(chunks, grads, states):
        _set_rng_state(state)
        backward((encode(*chunk) * grad).sum())  # d(sum e*g)/d theta = g . de/d theta
    return loss.detach()
