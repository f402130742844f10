"""GritTextEmbedder: init, serialization, input checks, and a run on a tiny model."""

from __future__ import annotations

import asyncio
import copy

import pytest
import torch
from haystack import Document
from haystack.utils import ComponentDevice, Secret

from grit_components import DEFAULT_MODEL, LoadingOptions, default_registry
from haystack_integrations.components.embedders.grit import GritTextEmbedder

TOKEN_DICT = {"type": "env_var", "env_vars": ["HF_API_TOKEN", "HF_TOKEN"], "strict": False}

TYPE = "haystack_integrations.components.embedders.grit.text_embedder.GritTextEmbedder"


def test_init_defaults():
    embedder = GritTextEmbedder()
    assert embedder.model == DEFAULT_MODEL
    assert embedder.instruction is None  # the model's own, decided when it is loaded
    assert embedder.max_length == 512
    assert embedder.normalize_embeddings is True
    assert embedder.truncation == "warn"
    assert embedder.device is None
    assert embedder.model_kwargs is None and embedder.tokenizer_kwargs is None
    assert embedder.loading_options() == LoadingOptions()
    assert embedder.token == Secret.from_env_var(["HF_API_TOKEN", "HF_TOKEN"], strict=False)
    assert embedder._core is None  # nothing loaded in __init__


def test_init_with_parameters(tiny):
    embedder = GritTextEmbedder(tiny, instruction="Find it", max_length=64, normalize_embeddings=False,
                                truncation="error", device=ComponentDevice.from_str("cpu"), token=None,
                                model_kwargs={"torch_dtype": "float32", "revision": "main", "trust_remote_code": True},
                                tokenizer_kwargs={"model_max_length": 64})
    assert (embedder.model, embedder.instruction, embedder.max_length) == (tiny, "Find it", 64)
    assert embedder.normalize_embeddings is False and embedder.truncation == "error"
    assert embedder.device == ComponentDevice.from_str("cpu") and embedder.token is None
    assert embedder.loading_options() == LoadingOptions(device="cpu", dtype="float32", revision="main",
                                                        trust_remote_code=True,
                                                        tokenizer_kwargs={"model_max_length": 64})
    assert embedder._get_telemetry_data() == {"model": tiny}


def test_to_dict_defaults():
    assert GritTextEmbedder().to_dict() == {
        "type": TYPE,
        "init_parameters": {
            "model": DEFAULT_MODEL,
            "instruction": None,
            "max_length": 512,
            "normalize_embeddings": True,
            "truncation": "warn",
            "device": None,
            "token": TOKEN_DICT,
            "model_kwargs": None,
            "tokenizer_kwargs": None,
        },
    }


def test_from_dict_round_trip(tiny):
    embedder = GritTextEmbedder(tiny, instruction="Find it", max_length=64, normalize_embeddings=False,
                                truncation="error", device=ComponentDevice.from_str("cpu"),
                                token=Secret.from_env_var("MY_TOKEN", strict=False),
                                model_kwargs={"torch_dtype": torch.bfloat16, "attn_implementation": "eager"},
                                tokenizer_kwargs={"model_max_length": 64})
    data = embedder.to_dict()
    assert data["init_parameters"]["device"] == {"type": "single", "device": "cpu"}
    assert data["init_parameters"]["model_kwargs"] == {"torch_dtype": "torch.bfloat16", "attn_implementation": "eager"}
    restored = GritTextEmbedder.from_dict(copy.deepcopy(data))
    assert restored.to_dict() == data
    assert restored.device == ComponentDevice.from_str("cpu")
    assert restored.token == Secret.from_env_var("MY_TOKEN", strict=False)
    assert restored.model_kwargs["torch_dtype"] is torch.bfloat16
    assert embedder.model_kwargs["torch_dtype"] is torch.bfloat16  # serialising did not change the component


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"model": 3}, TypeError), ({"instruction": 3}, TypeError), ({"max_length": "64"}, TypeError),
    ({"max_length": 1}, ValueError), ({"normalize_embeddings": "yes"}, TypeError),
    ({"truncation": "drop"}, ValueError), ({"device": "cpu"}, TypeError), ({"token": "hf_x"}, TypeError),
    ({"model_kwargs": "eager"}, TypeError), ({"model_kwargs": {"dtype": "float16", "torch_dtype": "float32"}}, ValueError),
])
def test_init_rejects_bad_values(kwargs, error):
    with pytest.raises(error):
        GritTextEmbedder(**kwargs)


def test_run(tiny):
    embedder = GritTextEmbedder(tiny)
    embedder.warm_up()
    embedder.warm_up()  # idempotent
    vector = embedder.run("What is the capital of France?")["embedding"]
    assert isinstance(vector, list) and len(vector) == 64 and all(isinstance(x, float) for x in vector)
    assert abs(sum(x * x for x in vector) - 1.0) < 1e-4  # normalised
    assert asyncio.run(embedder.run_async("What is the capital of France?"))["embedding"] == pytest.approx(vector, abs=1e-5)


def test_run_wrong_input_type(tiny):
    embedder = GritTextEmbedder(tiny)
    with pytest.raises(TypeError, match="GritDocumentEmbedder"):
        embedder.run([Document(content="text")])
    with pytest.raises(TypeError):
        embedder.run(None)


def test_run_empty_string(tiny):
    with pytest.raises(ValueError):
        GritTextEmbedder(tiny).run("")


def test_embedders_share_one_model(tiny):
    from haystack_integrations.components.embedders.grit import GritDocumentEmbedder
    from haystack_integrations.components.generators.grit import GritChatGenerator
    from haystack_integrations.components.rankers.grit import GritRanker

    components = [GritTextEmbedder(tiny), GritDocumentEmbedder(tiny), GritChatGenerator(tiny), GritRanker(tiny)]
    before = default_registry.loads
    for component in components:
        component.warm_up()
    models = [c.embedder.model for c in components[:2]] + [components[2].generator.model, components[3].reranker.model]
    assert all(m is models[0] for m in models)
    assert default_registry.loads - before <= 1
