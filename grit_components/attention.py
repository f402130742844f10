"""Bidirectional and causal forward passes that are safe to run concurrently on one model, and attention
over a cache kept in another dtype than the model's.

transformers' `is_causal=False` kwarg flips `config.is_causal` for the duration of a call, so a causal
forward running at the same moment in another thread sees bidirectional attention. We never use it:
bidirectional attention is requested with an explicit 4D mask, which is per call and stateless.
"""

from __future__ import annotations

import threading

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

CACHE_DTYPE_ATTENTION = "grit_sdpa"
_switch_lock = threading.Lock()


def sdpa_in_cache_dtype(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask, **kwargs):
    """transformers' sdpa attention, run in the dtype of the keys and values when it differs from the query's.

    A bfloat16 cache under a float32 model: the query (a few positions) is rounded to bfloat16 and the
    output returned in float32, so the long cache is read as stored instead of being converted at every
    step. With equal dtypes this is exactly transformers' sdpa.
    """
    if key.dtype == query.dtype:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.to(key.dtype)
    output, weights = sdpa_attention_forward(module, query.to(key.dtype), key, value, attention_mask, **kwargs)
    return output.to(query.dtype), weights


AttentionInterface.register(CACHE_DTYPE_ATTENTION, sdpa_in_cache_dtype)
AttentionMaskInterface.register(CACHE_DTYPE_ATTENTION, sdpa_mask)  # same masks as sdpa


def enable_cache_dtype_attention(model) -> bool:
    """Let `model` (a `GritModel`) attend over caches in another dtype; False if its attention cannot.

    Switches a model using sdpa to `sdpa_in_cache_dtype` (once; idempotent). The switch is safe while
    other threads run forwards: for equal dtypes both functions compute the same thing with the same masks.
    """
    hf_model = model.model
    with _switch_lock:
        current = hf_model.config._attn_implementation
        if current == CACHE_DTYPE_ATTENTION:
            return True
        if current != "sdpa":
            return False
        hf_model.set_attn_implementation(CACHE_DTYPE_ATTENTION)
        return hf_model.config._attn_implementation == CACHE_DTYPE_ATTENTION


def bidirectional_mask(attention_mask: torch.Tensor, attn_implementation: str | None, dtype: torch.dtype) -> torch.Tensor:
    """4D mask letting every position attend to every non-pad position of its row.

    `attention_mask` is (B, T) with 1 for real tokens. Pad *query* rows also attend to the real keys,
    so no row is fully masked (a fully masked row gives NaN under sdpa); their outputs are never used.
    Returns (B, 1, T, T): bool for sdpa/flex (True = attend), additive float (0 / min) for eager.
    """
    batch, length = attention_mask.shape
    keys = attention_mask.bool()[:, None, None, :].expand(batch, 1, length, length)
    if attn_implementation == "eager":
        mask = torch.zeros(batch, 1, length, length, dtype=dtype, device=attention_mask.device)
        return mask.masked_fill(~keys, torch.finfo(dtype).min)
    return keys


def bidirectional_forward(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, use_cache: bool = False):
    """Run the decoder body (no LM head) with bidirectional attention over non-pad tokens.

    `model` is a `*ForCausalLM`; its `.model` is the decoder body. Returns the body's output
    (`last_hidden_state`, and `past_key_values` when `use_cache`). Real tokens must be left-aligned
    (right padding) so that their positions are 0..L-1, as in an unpadded forward.
    """
    body = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    mask = bidirectional_mask(attention_mask, model.config._attn_implementation, model.dtype)
    return body(input_ids=input_ids, attention_mask=mask, use_cache=use_cache)


def causal_forward(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, use_cache: bool = False):
    """Run the decoder body with the model's own causal attention (padding from the 2D mask)."""
    body = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    return body(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache)
