"""Shared fixtures: tiny random models built from configs (mechanics) and the packaged SmolLM2 (behaviour)."""

from __future__ import annotations

import os

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may come from the hub at test time
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest
import torch

from tests._models import ARCHITECTURES, SHARED_DATA, build_tiny_model


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
def grit_smol():
    """The shipped GRIT-trained default (LoRA adapter merged into the packaged SmolLM2)."""
    from grit_components import load_model

    return load_model("grit-smollm2-135m")


@pytest.fixture(scope="session")
def wikidesc_dir() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"WikiDesc data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a shared machine extra threads mostly wait (a module
    asks for it with `pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
