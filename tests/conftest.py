"""Shared fixtures: tiny random models built from configs (mechanics) and the packaged SmolLM2 (behaviour)."""

from __future__ import annotations

import os

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may come from the hub at test time
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest
import torch

from grit_components.models import PACKAGED_MODELS, _packaged_gguf, convert_gguf

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikidesc"
ARCHITECTURES = ("llama", "mistral", "qwen2")


def packaged_model_dir() -> Path:
    """Converted SmolLM2 directory (converted once per machine, in the user cache)."""
    gguf, name = _packaged_gguf(next(iter(PACKAGED_MODELS)))
    return convert_gguf(gguf, name)


def build_tiny_model(arch: str, directory: Path, *, seed: int = 0, hidden_size: int = 64, layers: int = 2) -> Path:
    """Save a random decoder of `arch` with the SmolLM2 tokenizer into `directory`; returns it."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

    classes = {"llama": (LlamaConfig, LlamaForCausalLM), "mistral": (MistralConfig, MistralForCausalLM),
               "qwen2": (Qwen2Config, Qwen2ForCausalLM)}
    tokenizer = AutoTokenizer.from_pretrained(packaged_model_dir())
    config_cls, model_cls = classes[arch]
    config = config_cls(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
                        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                        max_position_embeddings=4096, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                        tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = model_cls(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict[str, Path]:
    """{"llama"|"mistral"|"qwen2": directory of a tiny random model}."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {arch: build_tiny_model(arch, root / arch) for arch in ARCHITECTURES}


@pytest.fixture(scope="session")
def tiny_model_builder():
    """`build_tiny_model` as a fixture (test modules must not import from conftest: there are several)."""
    return build_tiny_model


@pytest.fixture(scope="session")
def tiny_llama_dir(tiny_model_dirs) -> Path:
    return tiny_model_dirs["llama"]


@pytest.fixture(scope="session")
def tiny_model(tiny_llama_dir):
    from grit_components import load_model

    return load_model(str(tiny_llama_dir))


@pytest.fixture(scope="session")
def smol():
    """The packaged SmolLM2-135M-Instruct (real weights)."""
    from grit_components import load_model

    return load_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def wikidesc_dir() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"WikiDesc data not found at {SHARED_DATA}")
    return SHARED_DATA
