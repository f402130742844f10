"""Test tooling shared by every test folder: the packaged model's directory and tiny random models.

Test modules import from here (`from tests._models import ...`), never from a conftest: there are
several conftest files and importing one by name picks whichever comes first on `sys.path`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from grit_components.models import packaged_model_dir

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikidesc"
ARCHITECTURES = ("llama", "mistral", "qwen2")
BASE_ALIAS = "smollm2-135m-instruct"


def base_model_dir() -> Path:
    """Converted SmolLM2-135M-Instruct directory (converted once per machine, in the user cache)."""
    return packaged_model_dir(BASE_ALIAS)


def build_tiny_model(arch: str, directory: Path, *, seed: int = 0, hidden_size: int = 64, layers: int = 2) -> Path:
    """Save a random decoder of `arch` with the SmolLM2 tokenizer into `directory`; returns it."""
    from transformers import (AutoTokenizer, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM,
                              Qwen2Config, Qwen2ForCausalLM)

    classes = {"llama": (LlamaConfig, LlamaForCausalLM), "mistral": (MistralConfig, MistralForCausalLM),
               "qwen2": (Qwen2Config, Qwen2ForCausalLM)}
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir())
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


def index_folders(data_dir, folders, *, model: str | None = None, pipeline: str = "indexing", **options):
    """Index `folders` with a bundled Haystack indexing pipeline into `data_dir`, then close it (releasing the
    embedded Qdrant folder); `options` go to `index_files`. Returns its report."""
    from haystack_integrations.common.grit import pipelines as hp

    built = hp.load_pipeline(pipeline, data_dir=data_dir, model=model)
    try:
        return hp.index_files(built, hp.collect_files(list(folders)), **options)
    finally:
        hp.close_pipeline(built)


def write_corpus_source(directory: Path, corpus, *, excluded: int, qrel_doc: str, task: str):
    """A BEIR folder in `directory` whose corpus is `corpus` ((id, title, text) triples) with its first `excluded`
    passages in eval.jsonl, one train query judged on `qrel_doc`, and a recipe with one generative source of
    `task` built outside eval.jsonl (2 BM25 distractors, doc-first and multi_doc, causal); returns its config."""
    from grit_components.training.config import load_config

    def lines(passages) -> str:
        return "\n".join(json.dumps({"_id": i, "title": t, "text": x}) for i, t, x in passages)

    (directory / "train").mkdir()
    (directory / "corpus.jsonl").write_text(lines(corpus))
    (directory / "eval.jsonl").write_text(lines(corpus[:excluded]))
    (directory / "train" / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "x"}))
    (directory / "train" / "qrels.tsv").write_text(f"query-id\tcorpus-id\tscore\nq1\t{qrel_doc}\t1\n")
    (directory / "train.yaml").write_text(
        "model: none\noutput_dir: run\ndata:\n  generative:\n"
        f"    - {{beir: {directory}, task: {task}, corpus_file: corpus.jsonl, exclude_corpus_file: eval.jsonl,\n"
        "       formats: [doc_first, multi_doc], sources: [causal], max_documents: 3, untitled: 0,\n"
        "       mine_negatives: {method: bm25, num_negatives: 2}}\n")
    return load_config(directory / "train.yaml")
