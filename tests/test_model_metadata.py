"""What a model declares (grit_model.json), packaged adapters (checksummed, merged once) and the defaults
components take from a model: the query instruction and the cross-encoder of the reranker."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch

from grit_components import GritEmbedder, GritReranker, load_model
from grit_components.embedding import DEFAULT_QUERY_INSTRUCTION
from grit_components.metadata import METADATA_FILE, ModelMetadata
from grit_components.models import PACKAGED_ADAPTERS, PackagedAdapter, load_weights
from grit_components.registry import ModelRegistry
from grit_components.rerank import UntrainedCrossEncoderWarning

pytest.importorskip("peft")

DECLARED = {"format": 1, "query_instruction": "Find the passage", "document_instruction": "",
            "chat_format": "template", "capabilities": ["embedding", "generation", "pointwise_rerank"],
            "pointwise_max_passage_tokens": 96, "rag_formats": ["doc_first", "doc"]}


@pytest.fixture()
def declared_dir(tiny_llama_dir, tmp_path):
    """A copy of the tiny model that declares an instruction and a trained pointwise cross-encoder."""
    target = tmp_path / "declared"
    shutil.copytree(tiny_llama_dir, target)
    (target / METADATA_FILE).write_text(json.dumps(DECLARED))
    return target


def test_metadata_round_trip_and_validation(tmp_path):
    metadata = ModelMetadata.from_dict(DECLARED)
    assert metadata.declares("pointwise_rerank") and not metadata.declares("listwise_rerank")
    metadata.write(tmp_path)
    assert ModelMetadata.read(tmp_path) == metadata
    assert ModelMetadata.read(tmp_path / "nowhere") == ModelMetadata()  # nothing declared
    with pytest.raises(ValueError, match="unknown capability 'telepathy'"):
        ModelMetadata.from_dict({**DECLARED, "capabilities": ["embedding", "telepathy"]})
    with pytest.raises(ValueError, match="unknown field"):
        ModelMetadata.from_dict({**DECLARED, "colour": "blue"})
    with pytest.raises(ValueError, match="format"):
        ModelMetadata.from_dict({**DECLARED, "format": 9})


def test_unknown_capability_in_a_model_directory_is_an_error_at_load(tiny_llama_dir, tmp_path):
    target = tmp_path / "bad"
    shutil.copytree(tiny_llama_dir, target)
    (target / METADATA_FILE).write_text(json.dumps({**DECLARED, "capabilities": ["mind_reading"]}))
    with pytest.raises(ValueError, match="unknown capability 'mind_reading'"):
        ModelRegistry().acquire(str(target))


def test_components_take_the_models_own_defaults(declared_dir, tiny_llama_dir):
    registry = ModelRegistry()
    embedder = GritEmbedder(str(declared_dir), registry=registry)
    assert embedder.query_instruction == "Find the passage"
    assert GritEmbedder(str(tiny_llama_dir), registry=registry).query_instruction == DEFAULT_QUERY_INSTRUCTION
    assert GritEmbedder(str(declared_dir), query_instruction="Mine", registry=registry).query_instruction == "Mine"
    declared = GritReranker(str(declared_dir), registry=registry)
    assert declared.cross_encoder == "pointwise" and declared.max_passage_tokens == 96
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a declared model never warns
        declared.rerank("temple", ["a temple", "a banana"])
    plain = GritReranker(str(tiny_llama_dir), registry=registry)
    assert plain.cross_encoder == "none" and plain.max_passage_tokens == 256


def test_the_reranker_defaults_to_the_cross_encoder_the_model_declares(declared_dir):
    """A model declaring query_likelihood_rerank gets it by default (before pointwise); an explicit choice wins."""
    metadata = json.loads((declared_dir / METADATA_FILE).read_text())
    metadata["capabilities"].append("query_likelihood_rerank")
    (declared_dir / METADATA_FILE).write_text(json.dumps(metadata))
    registry = ModelRegistry()
    assert GritReranker(str(declared_dir), registry=registry).cross_encoder == "query_likelihood"
    assert GritReranker(str(declared_dir), cross_encoder="pointwise", registry=registry).cross_encoder == "pointwise"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # declared: no warning
        GritReranker(str(declared_dir), registry=registry).rerank("temple", ["a temple", "a banana"])


def test_pointwise_on_an_undeclared_model_warns_once(tiny_llama_dir):
    reranker = GritReranker(str(tiny_llama_dir), cross_encoder="pointwise", registry=ModelRegistry())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reranker.rerank("temple", ["a temple", "a banana"])
        reranker.rerank("temple", ["a temple", "a banana"])
    untrained = [w for w in caught if issubclass(w.category, UntrainedCrossEncoderWarning)]
    assert len(untrained) == 1 and "does not declare" in str(untrained[0].message)


def make_adapter(base_dir, folder, *, seed: int):
    """A LoRA adapter over `base_dir` saved as a packaged adapter folder (with its checksum declared)."""
    from peft import LoraConfig, get_peft_model

    from grit_components.training.trainer import save_grit_model

    model, tokenizer, _ = load_weights(str(base_dir), device="cpu", dtype=torch.float32)
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    save_grit_model(peft_model, tokenizer, folder, merge_lora=False, metadata=ModelMetadata.from_dict(DECLARED))
    return folder / "adapter"


@pytest.fixture()
def adapter_alias(tiny_llama_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("GRIT_CACHE_DIR", str(tmp_path / "cache"))
    folder = make_adapter(tiny_llama_dir, tmp_path / "run", seed=1)
    monkeypatch.setitem(PACKAGED_ADAPTERS, "tiny-adapter", PackagedAdapter(str(tiny_llama_dir), str(folder)))
    return folder


def test_adapter_alias_merges_once_and_changes_the_fingerprint(adapter_alias, tiny_llama_dir, tmp_path, monkeypatch):
    registry = ModelRegistry()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        merged = registry.acquire("tiny-adapter")
    # the first load merges the adapter; peft's read of a deprecated transformers property stays quiet
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]
    base = registry.acquire(str(tiny_llama_dir))
    assert merged.metadata.declares("pointwise_rerank") and merged.metadata.query_instruction == "Find the passage"
    assert merged.fingerprint != base.fingerprint
    assert not torch.equal(merged.model.model.layers[0].self_attn.q_proj.weight, base.model.model.layers[0].self_attn.q_proj.weight)
    assert len(list((tmp_path / "cache" / "models").glob("tiny-adapter-*"))) == 1  # merged into the user cache once
    again = ModelRegistry().acquire("tiny-adapter")
    assert again.fingerprint == merged.fingerprint
    other = make_adapter(tiny_llama_dir, tmp_path / "run2", seed=2)  # another adapter: another model
    monkeypatch.setitem(PACKAGED_ADAPTERS, "tiny-adapter", PackagedAdapter(str(tiny_llama_dir), str(other)))
    assert ModelRegistry().acquire("tiny-adapter").fingerprint != merged.fingerprint


def test_an_alias_declares_what_its_packaged_adapter_declares_now(adapter_alias):
    """The merged copy in the user cache is made once; the adapter folder's grit_model.json stays the truth."""
    assert ModelRegistry().acquire("tiny-adapter").metadata.declares("pointwise_rerank")
    path = adapter_alias / "grit_model.json"
    data = json.loads(path.read_text())
    data["capabilities"] = ["embedding", "generation"]
    path.write_text(json.dumps(data))
    assert not ModelRegistry().acquire("tiny-adapter").metadata.declares("pointwise_rerank")


def test_a_damaged_or_missing_adapter_file_is_a_clear_error(adapter_alias):
    weights = adapter_alias / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"12345678")  # same size, other bytes
    with pytest.raises(ValueError, match="adapter_model.safetensors does not match the checksum.*reinstall"):
        ModelRegistry().acquire("tiny-adapter")
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors is missing.*reinstall"):
        ModelRegistry().acquire("tiny-adapter")


@pytest.mark.integration
def test_the_shipped_default_model_loads_offline_and_declares_its_training():
    from grit_components.models import DEFAULT_MODEL, adapter_dir

    assert DEFAULT_MODEL == "grit-smollm2-135m"
    folder = adapter_dir(DEFAULT_MODEL)
    assert (folder / "adapter_model.safetensors").stat().st_size <= 25 * 1024**2
    assert (folder / "README.md").is_file()  # the model card
    model = load_model(DEFAULT_MODEL)
    base = load_model("smollm2-135m-instruct")
    assert model.fingerprint != base.fingerprint
    # it declares what it was trained for: embedding, RAG formats and the query-likelihood cross-encoder (its
    # yes/no judgement did not learn, docs/training.md, so not pointwise_rerank); GritReranker follows it
    assert model.metadata.declares("embedding") and model.metadata.declares("rag_cache_formats")
    assert model.metadata.declares("query_likelihood_rerank") and not model.metadata.declares("pointwise_rerank")
    assert GritReranker(DEFAULT_MODEL).cross_encoder == "query_likelihood"
    assert model.metadata.query_instruction
    assert model.generate("What is the capital of France?", max_new_tokens=12).text.strip()
