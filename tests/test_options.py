"""The option objects: generation keys and values, loading options, and what makes two models distinct."""

from __future__ import annotations

import pytest
import torch

from grit_components import GenerationOptions, GritEmbedder, GritGenerator, LoadingOptions, ModelRegistry
from grit_components.options import OWNED_GENERATION_KEYS, valid_generation_keys

# -- GenerationOptions --------------------------------------------------------------------------------


def test_every_generation_config_key_is_valid():
    from transformers import GenerationConfig

    public = {key for key in GenerationConfig().to_dict() if not key.startswith("_")}
    assert set(valid_generation_keys()) == (public - set(OWNED_GENERATION_KEYS)) | {"stop_words", "seed", "decode_backend"}
    assert {"repetition_penalty", "no_repeat_ngram_size", "min_p", "num_beams"} <= set(valid_generation_keys())


def test_options_keep_what_was_given_and_merge_overrides():
    options = GenerationOptions({"max_new_tokens": 8, "repetition_penalty": 1.2})
    assert options.to_dict() == {"max_new_tokens": 8, "repetition_penalty": 1.2} == options
    merged = options.merged({"temperature": 0.7}, seed=1)
    assert merged.to_dict() == {"max_new_tokens": 8, "repetition_penalty": 1.2, "temperature": 0.7, "seed": 1}
    assert options.to_dict() == {"max_new_tokens": 8, "repetition_penalty": 1.2}  # unchanged
    assert GenerationOptions().max_new_tokens == 256 and GenerationOptions().sampling is False


def test_greedy_silences_sampling_defaults_and_sampling_turns_top_k_off():
    greedy = GenerationOptions(repetition_penalty=1.2).generate_kwargs()
    assert greedy == {"repetition_penalty": 1.2, "do_sample": False, "temperature": None, "top_p": None,
                      "top_k": None}
    sampled = GenerationOptions(temperature=0.7, seed=3).generate_kwargs()
    assert sampled == {"temperature": 0.7, "do_sample": True, "top_p": 1.0, "top_k": 0}
    assert GenerationOptions(temperature=0.7, top_k=5).generate_kwargs()["top_k"] == 5


@pytest.mark.parametrize(("options", "error", "match"), [
    ({"max_tokens": 3}, ValueError, r"unknown generation_kwargs \['max_tokens'\]; valid keys .*'top_p'"),
    ({"num_return_sequences": 2}, ValueError, "num_return_sequences.*one text"),
    ({"stop_strings": ["x"]}, ValueError, "use stop_words"),
    ({"max_new_tokens": 0}, ValueError, "max_new_tokens"),
    ({"max_new_tokens": 2.5}, TypeError, "max_new_tokens"),
    ({"temperature": -0.1}, ValueError, "temperature"),
    ({"top_p": 0}, ValueError, "top_p"),
    ({"repetition_penalty": 0}, ValueError, "repetition_penalty"),
    ({"top_k": -1}, ValueError, "top_k"),
    ({"num_beams": "2"}, TypeError, "num_beams"),
    ({"seed": "1"}, TypeError, "seed"),
    ({"stop_words": "x"}, TypeError, "stop_words"),
    ({"do_sample": True, "temperature": 0}, ValueError, "temperature > 0"),
    ({"cache_implementation": "nope"}, ValueError, "cache_implementation"),
])
def test_bad_generation_options_name_the_key(options, error, match):
    with pytest.raises(error, match=match):
        GenerationOptions(options)


def test_error_names_the_parameter_it_came_from():
    with pytest.raises(ValueError, match=r"generate_kwargs\['top_p'\]"):
        GenerationOptions({"top_p": 2}, name="generate_kwargs")
    with pytest.raises(TypeError, match="generation_kwargs must be a dict"):
        GenerationOptions([("top_p", 1)])


# -- LoadingOptions -----------------------------------------------------------------------------------


def test_hugging_face_keys_in_model_kwargs_move_to_their_option():
    options = LoadingOptions(model_kwargs={"torch_dtype": torch.bfloat16, "attn_implementation": "eager",
                                           "device_map": "auto"}, tokenizer_kwargs={"revision": "v1"})
    assert options.dtype == torch.bfloat16 and options.device_map == "auto" and options.revision == "v1"
    assert options.model_kwargs == {"attn_implementation": "eager"} and options.tokenizer_kwargs == {}
    with pytest.raises(ValueError, match=r"model_kwargs\['dtype'\]='float16' conflicts with dtype='float32'"):
        LoadingOptions(dtype="float32", model_kwargs={"dtype": "float16"})


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"device": "cpu", "device_map": "auto"}, ValueError, "not both"),
    ({"model_kwargs": ["x"]}, TypeError, "model_kwargs must be a dict"),
    ({"tokenizer_kwargs": {1: 2}}, TypeError, "tokenizer_kwargs keys"),
    ({"device_map": 3}, TypeError, "device_map"),
    ({"trust_remote_code": "yes"}, TypeError, "trust_remote_code"),
    ({"chat_format": "chatml"}, ValueError, "chat_format"),
    ({"kv_cache_max_bytes": -1}, ValueError, "kv_cache_max_bytes"),
    ({"device": 0}, TypeError, "device"),
])
def test_bad_loading_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        LoadingOptions(**kwargs)


def test_token_is_not_shown_and_a_path_is_a_folder():
    from pathlib import Path

    assert "secret" not in repr(LoadingOptions(token="secret"))
    assert LoadingOptions(kv_cache_directory=Path("/tmp/kv")).kv_cache_directory == "/tmp/kv"


def test_different_loading_options_never_share_a_model(tiny_llama_dir):
    registry = ModelRegistry()
    default = registry.acquire(str(tiny_llama_dir))
    eager = registry.acquire(str(tiny_llama_dir), model_kwargs={"attn_implementation": "eager"})
    assert eager is not default and registry.loads == 2
    assert eager.model.config._attn_implementation == "eager"
    assert default.model.config._attn_implementation != "eager"
    assert registry.acquire(str(tiny_llama_dir), LoadingOptions(model_kwargs={"attn_implementation": "eager"})) is eager
    # the token and the KV store settings do not change the weights: same model
    assert registry.acquire(str(tiny_llama_dir), token="t", kv_cache_max_bytes=2**20) is default
    assert registry.loads == 2


def test_components_pass_loading_options_to_the_registry(tiny_llama_dir):
    registry = ModelRegistry()
    options = LoadingOptions(model_kwargs={"attn_implementation": "eager"}, tokenizer_kwargs={"model_max_length": 77})
    embedder = GritEmbedder(str(tiny_llama_dir), loading=options, registry=registry)
    generator = GritGenerator(str(tiny_llama_dir), registry=registry, model_kwargs={"attn_implementation": "eager"},
                              tokenizer_kwargs={"model_max_length": 77})
    assert embedder.loading == generator.loading
    assert embedder.model is generator.model and registry.loads == 1
    assert embedder.model.model.config._attn_implementation == "eager"
    assert embedder.model.tokenizer.model_max_length == 77
    # the bidirectional embedding pass works with the eager attention's additive mask too
    assert embedder.embed_documents(["It is 3."]).shape == (1, embedder.model.embedding_dim)


def test_device_map_and_model_kwargs_reach_from_pretrained(tiny_llama_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    seen: list[dict] = []
    real = AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.append(kwargs)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    registry = ModelRegistry()
    device_map = {"model": "cpu", "lm_head": "cpu"}
    mapped = registry.acquire(str(tiny_llama_dir), device_map=device_map, model_kwargs={"low_cpu_mem_usage": True})
    assert seen[-1]["device_map"] == device_map and seen[-1]["low_cpu_mem_usage"] is True
    assert seen[-1]["dtype"] == torch.float32  # no accelerator: float32, as for device="cpu"
    assert mapped is not registry.acquire(str(tiny_llama_dir), device="cpu")
    assert "device_map" not in seen[-1]
    assert mapped.generate("Hi", max_new_tokens=2).completion_tokens <= 2
