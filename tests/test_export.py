"""`grit_components.export`: a loaded model written as a GGUF file llama.cpp reads (issue 28)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from grit_components.export import _permute, base_gguf_of, export_gguf
from grit_components.models import _packaged_gguf


def test_rejects_bad_input(tiny_model, tiny_model_dirs, tmp_path):
    from grit_components import load_model

    with pytest.raises(TypeError, match="model"):
        export_gguf("smollm2-135m-instruct", tmp_path / "x.gguf")
    with pytest.raises(ValueError, match="dtype"):
        export_gguf(tiny_model, tmp_path / "x.gguf", dtype="bf16")
    with pytest.raises(TypeError, match="dtype"):
        export_gguf(tiny_model, tmp_path / "x.gguf", dtype=16)
    base = _packaged_gguf("smollm2-135m-instruct")[0]
    other = tmp_path / "other-vocab.gguf"
    _gguf_with_tokens(other, 3)
    with pytest.raises(ValueError, match="base_gguf: its tokenizer has 3 tokens"):
        export_gguf(tiny_model, tmp_path / "x.gguf", base_gguf=other)
    other.unlink()
    with pytest.raises(ValueError, match="base_gguf: no such file"):
        export_gguf(tiny_model, tmp_path / "x.gguf", base_gguf=tmp_path / "missing.gguf")
    with pytest.raises(ValueError, match="base_gguf: .* not a packaged model"):
        export_gguf(tiny_model, tmp_path / "x.gguf")  # a local directory has no packaged base
    with pytest.raises(ValueError, match="only the llama architecture"):
        export_gguf(load_model(str(tiny_model_dirs["qwen2"])), tmp_path / "x.gguf", base_gguf=base)
    assert not list(tmp_path.iterdir())  # nothing half-written
    assert base_gguf_of("grit-smollm2-135m") == base == base_gguf_of("SmolLM2-135M-Instruct")


def _gguf_with_tokens(path, count):
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_token_list([f"t{i}" for i in range(count)])
    writer.add_tensor("x", np.zeros(1, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_tiny_model_round_trips_through_transformers(tiny_model, tmp_path):
    """A model built from a config, with the packaged tokenizer: the GGUF loads back (transformers' GGUF reader
    undoes the rotary permutation) as exactly its weights, and its hyperparameters are its config's."""
    from transformers import AutoModelForCausalLM

    path = export_gguf(tiny_model, tmp_path / "tiny.f32.gguf", dtype="f32",
                       base_gguf=_packaged_gguf("smollm2-135m-instruct")[0])
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name, dtype=torch.float32)
    assert loaded.config.num_hidden_layers == tiny_model.model.config.num_hidden_layers
    assert loaded.config.num_key_value_heads == tiny_model.model.config.num_key_value_heads
    theirs = loaded.state_dict()
    for name, tensor in tiny_model.model.state_dict().items():
        if name != "lm_head.weight":
            assert torch.equal(theirs[name], tensor), name
    f16 = export_gguf(tiny_model, tmp_path / "tiny.f16.gguf", dtype="f16",
                      base_gguf=_packaged_gguf("smollm2-135m-instruct")[0])
    q8 = export_gguf(tiny_model, tmp_path / "tiny.q8_0.gguf", dtype="q8_0",
                     base_gguf=_packaged_gguf("smollm2-135m-instruct")[0])
    assert q8.stat().st_size < f16.stat().st_size < path.stat().st_size


def test_permute_is_llama_cpps_rotary_layout():
    """Row r of head h in transformers' half-split layout (pairs i and i + d/2) goes to the interleaved place."""
    heads, dim = 2, 8
    weight = np.arange(heads * dim * 3, dtype=np.float32).reshape(heads * dim, 3)
    out = _permute(weight, heads)
    for h in range(heads):
        for i in range(dim // 2):
            assert (out[h * dim + 2 * i] == weight[h * dim + i]).all()
            assert (out[h * dim + 2 * i + 1] == weight[h * dim + dim // 2 + i]).all()


@pytest.mark.integration
def test_merged_model_round_trips_through_transformers(grit_smol, tmp_path):
    """The GGUF of the merged GRIT model loads back (transformers' GGUF reader, which undoes the rotary
    permutation) as exactly the weights the torch path uses: the adapter is in it, nothing is moved."""
    from transformers import AutoModelForCausalLM

    path = export_gguf(grit_smol, tmp_path / "grit.f32.gguf", dtype="f32")
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name, dtype=torch.float32)
    ours = grit_smol.model.state_dict()
    theirs = loaded.state_dict()
    for name, tensor in ours.items():
        if name == "lm_head.weight":
            continue  # tied to the token embeddings
        assert torch.equal(theirs[name], tensor), name
    base = _packaged_gguf("smollm2-135m-instruct")[0]
    import gguf

    reader = gguf.GGUFReader(str(path))
    assert reader.fields["tokenizer.chat_template"].contents() == gguf.GGUFReader(str(base)).fields[
        "tokenizer.chat_template"].contents()
    assert len(reader.tensors) == len(gguf.GGUFReader(str(base)).tensors)


@pytest.mark.integration
def test_llama_cpp_serves_the_grit_modes_from_the_exported_file(grit_smol, tmp_path):
    """llama.cpp on the float32 GGUF of the merged GRIT model: the torch path's greedy RAG answer, its
    bidirectional embeddings (causal mask off, our pooling) and its embedding-source doc caching
    ([llama-cpp] extra; skipped without it)."""
    pytest.importorskip("llama_cpp")
    from benchmarks.llama_cpp_grit import compare

    report = compare("grit-smollm2-135m", ["f32"], queries=2, threads=1, new_tokens=8,
                     output=tmp_path / "report.json")
    entry = report["dtypes"]["f32"]
    assert entry["generation_same_answer_as_torch"] == 1.0
    assert entry["restored_state_same_answer_as_uncached"] == 1.0
    assert entry["embedding_cosine_to_torch"]["min"] > 0.9999
    assert entry["embedding_source_doc_cache_same_answer_as_torch"] == 1.0


def test_cli_rejects_a_bad_dtype(tmp_path):
    from grit_components.cli import app

    result = CliRunner().invoke(app, ["export-gguf", str(tmp_path / "x.gguf"), "--dtype", "bf16"])
    assert result.exit_code == 2 and "--dtype 'bf16'" in result.output
