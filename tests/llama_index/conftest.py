"""Fixtures for the LlamaIndex integration tests: tiny random models whose greedy output varies.

The shared tiny models repeat one token forever, which makes "same text" checks vacuous; these use a
larger init range. `tiny_grit_dir`'s name contains "gritlm", so `chat_format="auto"` picks the GRIT
chat format for it (as for real GritLM checkpoints).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def build_varied_model(directory: Path, *, seed: int = 0) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tests._models import base_model_dir

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir())
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True, initializer_range=0.2)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_grit_dir(tmp_path_factory) -> str:
    """A tiny random Llama in a folder named like a GritLM checkpoint (GRIT chat format under "auto")."""
    return str(build_varied_model(tmp_path_factory.mktemp("li-models") / "tiny-gritlm"))


@pytest.fixture(scope="session")
def tiny_template_dir(tmp_path_factory) -> str:
    """A tiny random Llama that keeps the SmolLM2 chat template ("auto" picks the template)."""
    return str(build_varied_model(tmp_path_factory.mktemp("li-models") / "tiny-template", seed=1))

