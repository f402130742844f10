"""Write a loaded model as a GGUF file for llama.cpp: the packaged GRIT adapter merged into its base, or any
Llama-architecture model whose tokenizer a GGUF file already holds.

llama.cpp reads only GGUF files, and the packaged base is one (4.5-bit weights). This writes the weights the
torch path actually uses (the merged float32 model) at float32, float16 or 8-bit, and copies everything else
(tokenizer, chat template) from a GGUF of the same base, with the hyperparameters from the model's config, so
a small model built from a config with that tokenizer works as well as the real one. llama.cpp and the torch
path can then be compared on the same weights (`benchmarks/llama_cpp_grit.py`), and `decode_backend="llama_cpp"`
runs on them.

    grit export-gguf grit-smollm2-135m.f16.gguf --model grit-smollm2-135m --dtype f16

Hugging Face checkpoints of other architectures are the job of llama.cpp's own `convert_hf_to_gguf.py`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from grit_components._checks import check_choice
from grit_components.models import PACKAGED_ADAPTERS, PACKAGED_MODELS, LoadedModel, _packaged_gguf

GGUF_DTYPES = ("f32", "f16", "q8_0")


def base_gguf_of(spec: str) -> Path:
    """The packaged GGUF a packaged alias (a base or an adapter over one) comes from."""
    alias = spec.lower()
    if alias in PACKAGED_ADAPTERS:
        alias = PACKAGED_ADAPTERS[alias].base.lower()
    if alias not in PACKAGED_MODELS:
        raise ValueError(f"base_gguf: {spec!r} is not a packaged model ({', '.join(sorted([*PACKAGED_MODELS, *PACKAGED_ADAPTERS]))}); "
                         "pass the GGUF file of its base model")
    return _packaged_gguf(alias)[0]


def _permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """transformers' rotary layout of a query/key projection -> llama.cpp's (interleaved pairs per head)."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _field(reader, key: str):
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def _rope_theta(config) -> float:
    parameters = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    kind = parameters.get("rope_type", parameters.get("type", "default"))
    if kind not in ("default", None):
        raise ValueError(f"model: rope scaling {kind!r} is not written here; use llama.cpp's convert_hf_to_gguf.py")
    theta = parameters.get("rope_theta", getattr(config, "rope_theta", None))
    if theta is None:
        raise ValueError("model: its config has no rope_theta")
    return float(theta)


def _kv_heads(config) -> int:
    return getattr(config, "num_key_value_heads", None) or config.num_attention_heads


def _write_hyperparameters(writer, config) -> None:
    """llama.cpp's llama.* keys, from the model's config (what convert_hf_to_gguf.py writes for a llama)."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(_kv_heads(config))
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)


def export_gguf(model: LoadedModel, path: str | os.PathLike, *, dtype: str = "f16",
                base_gguf: str | os.PathLike | None = None) -> Path:
    """Write `model`'s weights (adapter merged, as loaded) as a GGUF file llama.cpp loads.

    :param model: a loaded Llama-architecture model (`load_model(spec)`).
    :param path: the GGUF file to write (its folder is created; an existing file is replaced atomically).
    :param dtype: "f32", "f16" or "q8_0" for the matrices (norms stay float32, as llama.cpp's converter does).
    :param base_gguf: a GGUF file with the model's tokenizer (its `tokenizer.*` and `general.*` keys are copied;
        the hyperparameters are the model's config); None for a packaged alias (its packaged GGUF).
    :returns: the written path.
    """
    import gguf

    if not isinstance(model, LoadedModel):
        raise TypeError(f"model must be a loaded model (load_model(spec)), got {type(model).__name__}")
    check_choice("dtype", dtype, GGUF_DTYPES)
    config = model.model.config
    if config.model_type not in ("llama",):
        raise ValueError(f"model: only the llama architecture is written here (this one is {config.model_type!r}); "
                         "use llama.cpp's convert_hf_to_gguf.py")
    base = Path(base_gguf) if base_gguf is not None else base_gguf_of(model.name)
    if not base.is_file():
        raise ValueError(f"base_gguf: no such file: {base}")
    reader = gguf.GGUFReader(str(base))
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"base_gguf: a llama GGUF is needed, {base.name} is {arch!r}")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    if tokens is None or len(tokens.data) != config.vocab_size:
        raise ValueError(f"base_gguf: its tokenizer has {0 if tokens is None else len(tokens.data)} tokens, "
                         f"the model {config.vocab_size}: not this model's tokenizer")
    _rope_theta(config)  # a rope the file cannot say fails before anything is written

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), arch)
    _write_hyperparameters(writer, config)
    for field in reader.fields.values():
        if not field.name.startswith(("general.", "tokenizer.")) or field.name in (
                "general.architecture", "general.file_type", "general.name"):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype]
    writer.add_file_type(file_type)
    writer.add_string("general.name", f"{model.name} ({dtype}, written by grit-components)")

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    heads, kv_heads = config.num_attention_heads, _kv_heads(config)
    state = model.model.state_dict()
    if getattr(config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # llama.cpp reuses token_embd for the output, as the base file does
    for hf_name, tensor in state.items():
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ValueError(f"model: no GGUF name for tensor {hf_name!r}")
        data = tensor.detach().to(torch.float32).cpu().numpy()
        if hf_name.endswith("q_proj.weight"):
            data = _permute(data, heads)
        elif hf_name.endswith("k_proj.weight"):
            data = _permute(data, kv_heads)
        if data.ndim == 1 or dtype == "f32":
            writer.add_tensor(name, data.astype(np.float32))
        elif dtype == "f16":
            writer.add_tensor(name, data.astype(np.float16))
        else:
            quantized = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, quantized, raw_shape=quantized.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, path)
    return path
