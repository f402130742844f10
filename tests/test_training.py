"""GRIT training: loss values, batch format (same tokens as inference), GradCache gradients, a short
training run that learns, LoRA save/reload into every component, record validation and the config."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from benchmarks.host import CPU_FLAGS
from grit_components.embedding import DEFAULT_QUERY_INSTRUCTION, build_inputs
from grit_components.grit_model import GritModel
from grit_components.models import load_weights
from grit_components.training import (
    BadRecordsWarning,
    ChatRecord,
    EmbeddingRecord,
    GritCollator,
    RecordError,
    chunked_info_nce_backward,
    encode_chat,
    generative_loss,
    info_nce_loss,
    load_chat_records,
    load_embedding_records,
    mine_hard_negatives,
)
from grit_components.training.config import TrainConfig, from_dict, load_config
from grit_components.training.run import build_trainer
from grit_components.training.trainer import GritTrainingModel, SameDatasetSampler
from tests._models import write_corpus_source

SHIPPED_RECIPE = "grit-smollm2-135m-v7.yaml"  # the (last) recipe that made the shipped adapter

pytest.importorskip("peft")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run on one torch thread


@pytest.fixture()
def fresh_tiny(tiny_llama_dir):
    """A trainable copy of the tiny random llama (not the shared registry object) and its GritModel view."""
    model, tokenizer, resolved = load_weights(str(tiny_llama_dir), device="cpu", dtype=torch.float32)
    return GritModel(model, tokenizer, name=str(tiny_llama_dir), key=resolved.key)


def toy_records(n: int = 64, seed: int = 0, dataset: str = "toy") -> list[EmbeddingRecord]:
    """Query i shares two rare words with passage i; passages are otherwise random words."""
    rng = random.Random(seed)
    words = [f"{a}{b}" for a in "bcdfghklmnprstvz" for b in ("ar", "en", "ol", "ux", "im", "ep")]
    records = []
    for i in range(n):
        key = rng.sample(words, 2)
        filler = rng.sample(words, 6)
        records.append(EmbeddingRecord((None, f"{key[0]} {key[1]}"), ((None, " ".join(filler[:3] + key + filler[3:])),),
                                       (), dataset))
    return records


def config(tmp_path, tiny_dir, **sections) -> TrainConfig:
    data = {"model": str(tiny_dir), "output_dir": str(tmp_path / "out"), "data": {"embedding": [{"path": "unused"}]},
            "training": {"batch_size": 8, "learning_rate": 2e-3, "max_steps": 30, "logging_steps": 1,
                         "progress_bar": False}}
    for key, value in sections.items():
        data.setdefault(key, {}).update(value) if isinstance(value, dict) else data.__setitem__(key, value)
    return from_dict(TrainConfig, data)


# --- loss ----------------------------------------------------------------------------------------------

def test_info_nce_equals_direct_computation():
    # two queries, their positives (rows 0, 1 of p), then two hard negatives; near-ties make the loss non-trivial
    q = torch.nn.functional.normalize(torch.tensor([[1.0, 0.2, 0.0], [0.1, 1.0, 0.3]]), dim=-1)
    p = torch.nn.functional.normalize(torch.tensor([[0.9, 0.2, 0.05], [0.1, 1.0, 0.28], [1.0, 0.21, 0.0], [0.12, 1.0, 0.3]]), dim=-1)
    expected = 0.0
    for i in range(2):
        sims = [sum(a * b for a, b in zip(q[i].tolist(), p[j].tolist())) / 0.02 for j in range(4)]
        expected += -(sims[i] - math.log(sum(math.exp(s) for s in sims)))
    assert expected / 2 > 0.5
    assert info_nce_loss(q, p).item() == pytest.approx(expected / 2, rel=1e-4)
    assert info_nce_loss(q, p, temperature=1.0).item() != pytest.approx(info_nce_loss(q, p).item())
    with pytest.raises(ValueError, match="temperature"):
        info_nce_loss(q, p, temperature=0.0)
    with pytest.raises(ValueError, match="positive"):
        info_nce_loss(q, p[:1])


def test_generative_loss_token_and_sample_averaging():
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 3, 4, 1], [-100, -100, -100, -100, 6]])
    logp = torch.log_softmax(logits, dim=-1)
    # position t predicts labels[t + 1]
    row0 = [-logp[0, 1, 3], -logp[0, 2, 4], -logp[0, 3, 1]]
    row1 = [-logp[1, 3, 6]]
    token = (sum(row0) + sum(row1)) / 4
    sample = (sum(row0) / 3 + row1[0]) / 2
    assert generative_loss(logits, labels).item() == pytest.approx(token.item(), rel=1e-5)
    assert generative_loss(logits, labels, averaging="sample").item() == pytest.approx(sample.item(), rel=1e-5)
    with pytest.raises(ValueError, match="averaging"):
        generative_loss(logits, labels, averaging="mean")


# --- batches ---------------------------------------------------------------------------------------------

def test_sampler_batches_never_mix_datasets():
    names = ["a"] * 20 + ["b"] * 13 + ["c"] * 3
    random.Random(1).shuffle(names)
    sampler = SameDatasetSampler(names, 4, seed=3)
    order = list(sampler)
    assert len(order) == len(sampler) == (5 + 3) * 4  # remainders and the too-small dataset are dropped
    blocks = [order[i : i + 4] for i in range(0, len(order), 4)]
    assert all(len({names[i] for i in block}) == 1 for block in blocks)
    assert {names[block[0]] for block in blocks} == {"a", "b"}
    assert list(sampler) != order  # a new shuffle each epoch
    with pytest.raises(ValueError, match="batch_size"):
        SameDatasetSampler(["a", "b"], 2)


def test_trainer_dataloader_batches_come_from_one_dataset(tmp_path, tiny_llama_dir, fresh_tiny):
    records = toy_records(24, dataset="first") + toy_records(16, seed=1, dataset="second")
    trainer = build_trainer(config(tmp_path, tiny_llama_dir, training={"batch_size": 8}), model=fresh_tiny.model,
                            grit=fresh_tiny, records=(records, []))
    seen = []
    original = trainer.data_collator.embedding_batch
    trainer.data_collator.embedding_batch = lambda recs: seen.append({r.dataset for r in recs}) or original(recs)
    batches = list(trainer.get_train_dataloader())
    assert len(batches) == 5 and all(len(s) == 1 for s in seen)
    # positives first (in query order), then hard negatives: in-batch negatives are the batch's own passages
    assert batches[0]["query_input_ids"].shape[0] == 8 and batches[0]["passage_input_ids"].shape[0] == 8
    with pytest.raises(ValueError, match="mixes datasets"):
        trainer.data_collator.embedding_batch([records[0], records[-1]])


def test_collator_builds_the_inference_format(fresh_tiny):
    collator = GritCollator(fresh_tiny, query_instruction="Find it", num_hard_negatives=1)
    record = EmbeddingRecord((None, "a query"), ((None, "the positive passage"),), ((None, "a negative"),), "d")
    other = EmbeddingRecord(("Own instruction", "second query"), ((None, "second positive text"),), (), "d")
    batch = collator.embedding_batch([record, other])
    expected = build_inputs(fresh_tiny, ["a query"], instruction="Find it", max_length=64)[0]
    row = batch["query_input_ids"][0, : len(expected.ids)].tolist()
    assert row == expected.ids
    assert batch["query_pooling"][0, : expected.text_start].sum() == 0
    assert batch["query_pooling"][0].sum().item() == pytest.approx(1.0)
    own = build_inputs(fresh_tiny, ["second query"], instruction="Own instruction", max_length=64)[0]
    assert batch["query_input_ids"][1, : len(own.ids)].tolist() == own.ids
    # passages: positive 0, positive 1, then record 0's negative
    assert batch["passage_input_ids"].shape[0] == 3
    negative = build_inputs(fresh_tiny, ["a negative"], instruction="", max_length=256)[0]
    assert batch["passage_input_ids"][2, : len(negative.ids)].tolist() == negative.ids
    # the training forward embeds exactly like GritModel.embed
    wrapper = GritTrainingModel(fresh_tiny.model).eval()
    with torch.no_grad():
        trained_view = wrapper(batch["query_input_ids"], batch["query_attention_mask"], batch["query_pooling"])
    inference = fresh_tiny.embed(["a query"], instruction="Find it")
    np.testing.assert_allclose(trained_view[0].numpy(), inference[0], atol=1e-5)


def test_instruction_tokens_get_no_gradient_through_pooling(fresh_tiny):
    collator = GritCollator(fresh_tiny, query_instruction=DEFAULT_QUERY_INSTRUCTION)
    records = [EmbeddingRecord((None, "short"), ((None, "p"),), (), "d"),
               EmbeddingRecord((None, "a much longer query text here"), ((None, "p2"),), (), "d")]
    batch = collator.embedding_batch(records)
    body = fresh_tiny.model.get_decoder()
    from grit_components.attention import bidirectional_forward
    from grit_components.training.loss import pool

    hidden = bidirectional_forward(fresh_tiny.model, batch["query_input_ids"], batch["query_attention_mask"]).last_hidden_state
    hidden.retain_grad()
    pool(hidden, batch["query_pooling"]).sum().backward()
    grad = hidden.grad.abs().sum(dim=-1)  # (B, T)
    pooled = batch["query_pooling"] > 0
    assert torch.all(grad[~pooled] == 0)  # BOS, instruction and padding: no gradient through pooling
    assert torch.all(grad[pooled] > 0)
    assert body.embed_tokens.weight.grad is not None  # instruction tokens still matter through attention


def test_chat_labels_cover_assistant_tokens_only(fresh_tiny, tiny_llama_dir):
    messages = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "Name a colour"}, {"role": "assistant", "content": "Blue"}]
    tok = fresh_tiny.tokenizer
    for view in (fresh_tiny, GritModel(fresh_tiny.model, tok, name="x", chat_format="grit")):
        ids, labels = encode_chat(view, messages, max_length=512)
        targets = [t for t in labels if t != -100]
        assert tok.decode(targets) == f"Hello!{tok.eos_token}Blue{tok.eos_token}"
        from grit_components.generation import chat_prompt_ids

        prompt = chat_prompt_ids(view, messages[:3])
        assert ids[: len(prompt)] == prompt  # the same prompt generation builds
        assert ids[len(prompt):] == view.tokenize("Blue") + [tok.eos_token_id]
    batch = GritCollator(fresh_tiny).generative_batch([ChatRecord(tuple(messages)), ChatRecord(tuple(messages[:2]))])
    assert (batch["gen_labels"][1][batch["gen_attention_mask"][1] == 0] == -100).all()  # padding is never a target


# --- GradCache -------------------------------------------------------------------------------------------

def test_chunked_contrastive_gradient_equals_full_gradient(fresh_tiny):
    records = toy_records(6)
    records = [EmbeddingRecord(r.query, r.pos, ((None, f"negative text {i}"),), r.dataset) for i, r in enumerate(records)]
    batch = GritCollator(fresh_tiny, num_hard_negatives=1).embedding_batch(records)
    wrapper = GritTrainingModel(fresh_tiny.model)
    query = (batch["query_input_ids"], batch["query_attention_mask"], batch["query_pooling"])
    passage = (batch["passage_input_ids"], batch["passage_attention_mask"], batch["passage_pooling"])
    params = [p for p in wrapper.parameters() if p.requires_grad]

    wrapper.zero_grad()
    full = info_nce_loss(wrapper(*query), wrapper(*passage), temperature=0.05)
    full.backward()
    expected = [p.grad.clone() for p in params]
    wrapper.zero_grad()
    chunked = chunked_info_nce_backward(wrapper, query, passage, chunk_size=4, temperature=0.05)
    assert chunked.item() == pytest.approx(full.item(), rel=1e-5)
    for want, param in zip(expected, params):
        torch.testing.assert_close(param.grad, want, rtol=1e-3, atol=1e-5)


# --- training --------------------------------------------------------------------------------------------

def accuracy(grit: GritModel, records: list[EmbeddingRecord]) -> float:
    queries = grit.embed([r.query[1] for r in records], instruction=DEFAULT_QUERY_INSTRUCTION)
    passages = grit.embed([r.pos[0][1] for r in records])
    return float(np.mean((queries @ passages.T).argmax(axis=1) == np.arange(len(records))))


def test_thirty_steps_lower_the_loss_and_raise_retrieval_accuracy(tmp_path, tiny_llama_dir, fresh_tiny):
    torch.manual_seed(0)
    records = toy_records(64)
    before = accuracy(fresh_tiny, records)
    trainer = build_trainer(config(tmp_path, tiny_llama_dir, loss={"temperature": 0.05}), model=fresh_tiny.model,
                            grit=fresh_tiny, records=(records, []))
    trainer.train()
    losses = [log["loss_rep"] for log in trainer.state.log_history if "loss_rep" in log]
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    after = accuracy(fresh_tiny, records)
    assert after > before + 0.1, (before, after)


def test_lora_run_saves_and_loads_in_every_component(tmp_path, tiny_llama_dir, fresh_tiny):
    records = toy_records(16)
    chats = [ChatRecord(({"role": "user", "content": f"What is {i}?"}, {"role": "assistant", "content": f"It is {i}."}))
             for i in range(8)]
    cfg = config(tmp_path, tiny_llama_dir, lora={"enabled": True, "r": 4, "alpha": 8},
                 training={"max_steps": 3, "batch_size": 4}, loss={"gradcache_chunk_size": 3})
    from grit_components.training.run import load_training_model

    model, grit = load_training_model(cfg)
    assert hasattr(model, "peft_config")
    trainer = build_trainer(cfg, model=model, grit=grit, records=(records, chats))
    trainer.train()
    assert any("loss_gen" in log and "loss_rep" in log for log in trainer.state.log_history)
    out = tmp_path / "saved"
    trainer.save_model(str(out))
    assert (out / "adapter" / "adapter_config.json").exists() and (out / "config.json").exists()
    info = json.loads((out / "grit_training.json").read_text())
    assert info["query_instruction"] == DEFAULT_QUERY_INSTRUCTION

    expected = grit.embed(["It is 3."])
    from grit_components.components import GritEmbedder, GritGenerator
    from grit_components.registry import ModelRegistry

    registry = ModelRegistry()
    embedder = GritEmbedder(str(out), registry=registry)
    np.testing.assert_allclose(embedder.embed_documents(["It is 3."]), expected, atol=1e-4)
    assert not np.allclose(expected, fresh_tiny.embed(["It is 3."]), atol=1e-4)  # the LoRA weights were merged
    generator = GritGenerator(str(out), generation_kwargs={"max_new_tokens": 4}, registry=registry)
    assert isinstance(generator.generate("What is 3?").text, str)

    # the adapter reloads with peft on top of the base model and gives the same embeddings
    from peft import PeftModel

    base, tok, _ = load_weights(str(tiny_llama_dir), device="cpu", dtype=torch.float32)
    reloaded = GritModel(PeftModel.from_pretrained(base, str(out / "adapter")), tok, name="adapter")
    np.testing.assert_allclose(reloaded.embed(["It is 3."]), expected, atol=1e-4)

    haystack = pytest.importorskip("haystack_integrations.components.embedders.grit")
    text_embedder = haystack.GritTextEmbedder(model=str(out))
    text_embedder.warm_up()
    assert len(text_embedder.run("It is 3.")["embedding"]) == expected.shape[1]
    from haystack.dataclasses import ChatMessage
    from haystack_integrations.components.generators.grit import GritChatGenerator

    chat = GritChatGenerator(model=str(out), generation_kwargs={"max_new_tokens": 4})
    chat.warm_up()
    assert len(chat.run([ChatMessage.from_user("What is 3?")])["replies"]) == 1
    llama = pytest.importorskip("llama_index.embeddings.grit")
    from llama_index.llms.grit import GritLLM

    assert len(llama.GritEmbedding(str(out)).get_text_embedding("It is 3.")) == expected.shape[1]
    assert isinstance(GritLLM(model_name=str(out), max_new_tokens=4).complete("What is 3?").text, str)


# --- data and config -------------------------------------------------------------------------------------

def test_bad_records_are_reported_by_line(tmp_path):
    path = tmp_path / "emb.jsonl"
    lines = [
        {"query": "ok", "pos": ["fine"], "neg": ["n"]},
        {"query": "no positives"},
        {"query": "", "pos": ["x"]},
        {"query": "q", "pos": [3]},
        "not json",
        {"query": ["instruction", "text"], "pos": "one passage", "dataset": "named"},
    ]
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    with pytest.raises(RecordError, match=r"emb\.jsonl:2: missing 'pos'"):
        load_embedding_records(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = load_embedding_records(path, on_error="skip")
    assert [r.query for r in records] == [(None, "ok"), ("instruction", "text")]
    assert records[1].dataset == "named" and records[0].dataset == "emb"
    message = str([w for w in caught if w.category is BadRecordsWarning][0].message)
    assert "skipped 4" in message
    for line, what in ((2, "missing 'pos'"), (3, "empty"), (4, "must be a str"), (5, "not valid JSON")):
        assert f"emb.jsonl:{line}: " in message and what in message

    chats = tmp_path / "gen.jsonl"
    chats.write_text("\n".join(json.dumps(x) for x in [
        {"turns": ["hi", "hello"]},
        {"messages": [{"role": "user", "content": "q"}]},
        {"turns": ["odd"]},
        {"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]},
    ]) + "\n")
    with pytest.raises(RecordError, match=r"gen\.jsonl:2: the last message must be an assistant turn"):
        load_chat_records(chats)
    with pytest.warns(BadRecordsWarning, match=r"gen\.jsonl:4: message 0 has role 'robot'"):
        assert len(load_chat_records(chats, on_error="skip")) == 1
    with pytest.raises(ValueError, match="on_error"):
        load_embedding_records(path, on_error="ignore")

    datasets = pytest.importorskip("datasets")
    table = datasets.Dataset.from_list([{"query": "q", "pos": ["p"]}, {"query": "q2", "pos": []}])
    with pytest.raises(RecordError, match="row 1: 'pos' must hold at least one text"):
        load_embedding_records(table)


def test_unknown_config_key_is_an_error_naming_it(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("model: x\noutput_dir: out\ndata: {embedding: [{path: a.jsonl}]}\ntrainig: {max_steps: 3}\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) in config: 'trainig' \(did you mean 'training'\?\)"):
        load_config(path)
    path.write_text("model: x\noutput_dir: out\ndata: {embedding: [{path: a.jsonl, mine: 3}]}\n")
    with pytest.raises(ValueError, match=r"config\.data\.embedding\[0\]: 'mine'"):
        load_config(path)
    path.write_text("model: x\noutput_dir: out\ndata: {embedding: [{path: a.jsonl}]}\ntraining: {batch_size: many}\n")
    with pytest.raises(TypeError, match="config.training.batch_size must be int"):
        load_config(path)
    path.write_text("model: x\noutput_dir: out\ndata: {embedding: [{path: a.jsonl}]}\ntraining: {learning_rate: 1e-4}\n")
    assert load_config(path, overrides={"training.max_steps": 7}).training.max_steps == 7

    from grit_components.cli import app

    path.write_text("model: x\noutput_dir: out\ndata: {embedding: [{path: a.jsonl}]}\nloss: {temprature: 0.1}\n")
    result = CliRunner().invoke(app, ["train", str(path)])
    assert result.exit_code == 2 and "temprature" in result.output


def test_recipe_config_loads():

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "wikidesc-smollm2.yaml"
    cfg = load_config(recipe)
    assert cfg.model == "smollm2-135m-instruct" and cfg.data.embedding[0].mine_negatives.method == "bm25"
    assert cfg.loss.temperature == 0.02


def test_every_recipe_loads_and_the_shipped_recipe_declares_the_shipped_metadata():
    """Every training recipe in recipes/ is a valid config, and the recipe that makes the shipped
    grit-smollm2-135m declares exactly the metadata shipped beside its adapter (instruction, chat format,
    capabilities, judged passage length, RAG formats): re-running it gives a model that says the same
    about itself, and a recipe edit that would change what the model declares fails here."""
    from dataclasses import replace
    from types import SimpleNamespace

    from grit_components.metadata import ModelMetadata
    from grit_components.models import adapter_dir
    from grit_components.training.run import training_metadata

    recipes = {p.name: load_config(p) for p in sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
               if not p.name.startswith("accelerate")}  # accelerate-*.yaml are accelerate's own configs
    assert SHIPPED_RECIPE in recipes and len(recipes) >= 2
    shipped = ModelMetadata.read(adapter_dir("grit-smollm2-135m"))
    declared = training_metadata(recipes[SHIPPED_RECIPE], SimpleNamespace(uses_grit_chat_format=False))
    # the answerability gate is fitted after training (benchmarks/answerability.py --save-weights), not declared by it
    assert declared.answerability is None and shipped.answerability is not None
    assert declared == replace(shipped, answerability=None)
    assert declared.extra["base_model"] == shipped.extra["base_model"] == recipes[SHIPPED_RECIPE].model


def test_a_run_from_an_earlier_adapter_declares_the_capabilities_it_keeps_of_it():
    from types import SimpleNamespace

    from grit_components.training.run import training_metadata

    data = {"embedding": [{"beir": "d"}], "generative": [
        {"beir": "d", "task": "rag_formats", "formats": ["doc_first", "multi_doc"]}]}
    grit = SimpleNamespace(uses_grit_chat_format=False)
    alone = training_metadata(from_dict(TrainConfig, {"model": "m", "output_dir": "o", "data": data}), grit)
    assert alone.capabilities == ("embedding", "generation", "rag_cache_formats")
    assert alone.pointwise_max_passage_tokens is None
    lora = {"enabled": True, "init_adapter": "stage-1/adapter", "init_adapter_capabilities": ["query_likelihood_rerank"]}
    kept = training_metadata(from_dict(TrainConfig, {"model": "m", "output_dir": "o", "data": data, "lora": lora}), grit)
    assert kept.capabilities == ("embedding", "generation", "query_likelihood_rerank", "rag_cache_formats")
    assert kept.pointwise_max_passage_tokens == 256  # the relevance prompts' passage length (data.rerank_passage_tokens)
    for bad, message in (({**lora, "init_adapter_capabilities": ["reading_minds"]}, "unknown"),
                         ({"enabled": True, "init_adapter_capabilities": ["embedding"]}, "needs lora.enabled and")):
        with pytest.raises(ValueError, match=f"init_adapter_capabilities.*{message}"):
            from_dict(TrainConfig, {"model": "m", "output_dir": "o", "data": data, "lora": bad})


def test_beir_records_and_hard_negative_mining(tmp_path, fresh_tiny):
    from grit_components.training import beir_embedding_records, beir_rag_records

    (tmp_path / "train").mkdir()
    corpus = [("d1", "Parthenon", "The Parthenon is a former temple on the Athenian Acropolis."),
              ("d2", "Erechtheion", "The Erechtheion is a temple on the Acropolis of Athens."),
              ("d3", "Knife", "A knife is a tool with a cutting edge."),
              ("d4", "Sword", "A sword is a weapon with a long cutting blade."),
              ("d5", "Vitamin", "A vitamin is a nutrient needed in small amounts.")]
    (tmp_path / "corpus.jsonl").write_text("\n".join(json.dumps({"_id": i, "title": t, "text": x}) for i, t, x in corpus))
    (tmp_path / "train" / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in [
        {"_id": "q1", "text": "Temple on the Athenian Acropolis"}, {"_id": "q2", "text": "Tool with a cutting edge"}]))
    (tmp_path / "train" / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t1\n")
    records, texts = beir_embedding_records(tmp_path)
    assert len(records) == 2 and records[0].pos == ((None, "Parthenon The Parthenon is a former temple on the Athenian Acropolis."),)
    mined = mine_hard_negatives(records, texts, num_negatives=1)
    assert mined[0].neg[0][1].startswith("Erechtheion") and mined[1].neg[0][1].startswith("Sword")
    by_model = mine_hard_negatives(records, texts, method="grit", model=fresh_tiny, num_negatives=2)
    for record in by_model:
        assert len(record.neg) == 2 and not {t for _, t in record.neg} & {t for _, t in record.pos}
    with pytest.raises(ValueError, match="model"):
        mine_hard_negatives(records, texts, method="grit")
    rag = beir_rag_records(tmp_path)
    assert rag[0].messages[1]["content"] == "Parthenon"
    assert "What is described as 'Temple on the Athenian Acropolis'?" in rag[0].messages[0]["content"]


def test_fact_cloze_source_builds_rag_answers_outside_the_excluded_corpus(tmp_path):
    from grit_components.training.run import build_records
    from grit_components.training.tasks import CLOZE_BLANK, CLOZE_QUESTION

    corpus = [(f"d{i}", f"Entity {i}", f"It was founded by Marcus Aurelius in the year {1000 + i} near the river bank. "
               f"It stands on a hill and has about {20 + i} rooms for the many guests.") for i in range(8)]
    config = write_corpus_source(tmp_path, corpus, excluded=3, qrel_doc="d1", task="fact_cloze")
    _, records = build_records(config)
    assert len(records) == 5  # one question per passage, none from the three excluded ones
    excluded = {f"Entity {i}" for i in range(3)}
    for record in records:
        blanked = record.question[len(CLOZE_QUESTION.split("{query}")[0]):-len(CLOZE_QUESTION.split("{query}")[1])]
        gold = [d for d in record.documents if blanked.replace(CLOZE_BLANK, record.answer) in d]
        assert len(gold) == 1 and not any(d.startswith(tuple(excluded)) for d in gold)
        assert record.fmt in ("doc_first", "multi_doc") and record.source == "causal"
        assert len(record.documents) >= (2 if record.fmt == "multi_doc" else 1)
    assert {r.answer for r in records} <= {"Marcus Aurelius", *map(str, range(1000, 1008)), *map(str, range(20, 28))}
    bad = (tmp_path / "train.yaml").read_text().replace("task: fact_cloze,", "task: fact_cloze, question: 'no field',")
    (tmp_path / "bad.yaml").write_text(bad)
    with pytest.raises(ValueError, match="question"):
        load_config(tmp_path / "bad.yaml")


def test_ranking_metrics_of_the_periodic_evaluation():
    from grit_components.training.evaluate import ranking_metrics

    scores = np.array([[0.9, 0.5, 0.1], [0.1, 0.2, 0.9]])
    metrics = ranking_metrics(scores, [{1: 1}, {2: 1}], k=10)
    assert metrics["ndcg@10"] == pytest.approx((1 / math.log2(3) + 1) / 2)
    assert metrics["recall@10"] == 1.0
    assert ranking_metrics(scores, [{1: 1}, {2: 1}], k=1) == {"ndcg@1": 0.5, "recall@1": 0.5}


def test_grit_train_command_runs_a_config_with_jsonl_sources(tmp_path, tiny_llama_dir):
    from grit_components.cli import app
    from grit_components.training import write_jsonl

    write_jsonl(toy_records(16), tmp_path / "emb.jsonl")
    (tmp_path / "gen.jsonl").write_text("\n".join(json.dumps({"turns": [f"Say {i}", f"{i}"]}) for i in range(4)) + "\n")
    (tmp_path / "train.yaml").write_text(
        f"model: {tiny_llama_dir}\noutput_dir: {tmp_path / 'run'}\n"
        "data: {embedding: [{path: emb.jsonl}], generative: [{path: gen.jsonl}]}\n"
        "training: {batch_size: 4, max_steps: 50, logging_steps: 1, progress_bar: false}\n")
    result = CliRunner().invoke(app, ["train", str(tmp_path / "train.yaml"), "--max-steps", "2",
                                      "--set", "training.learning_rate=1e-3"])
    assert result.exit_code == 0, result.output
    state = json.loads((tmp_path / "run" / "grit_training.json").read_text())
    assert state["config"]["training"]["max_steps"] == 2 and state["config"]["training"]["learning_rate"] == 1e-3
    bad = CliRunner().invoke(app, ["train", str(tmp_path / "train.yaml"), "--set", "training.learning_rate"])
    assert bad.exit_code != 0 and "expected key=value" in bad.output
    history = json.loads((tmp_path / "run" / "trainer_state.json").read_text())["log_history"]
    assert [log["step"] for log in history if "loss" in log] == [1, 2]  # the learning curve is kept
    from grit_components.registry import ModelRegistry

    registry = ModelRegistry()
    trained = registry.acquire(str(tmp_path / "run"))
    assert trained.embed(["hello"]).shape == (1, 64)
    registry.release(trained)


def test_second_stage_keeps_training_the_first_stage_adapter(tmp_path, tiny_llama_dir):
    """lora.init_adapter: stage 2 starts from stage 1's adapter (same LoRA, still one adapter over the base)."""
    records = toy_records(16)
    chats = [ChatRecord(({"role": "user", "content": f"What is {i}?"}, {"role": "assistant", "content": f"It is {i}."}))
             for i in range(8)]
    from grit_components.training.run import load_training_model

    first = config(tmp_path, tiny_llama_dir, lora={"enabled": True, "r": 4, "alpha": 8},
                   training={"max_steps": 2, "batch_size": 4})
    model, grit = load_training_model(first)
    trainer = build_trainer(first, model=model, grit=grit, records=(records, chats))
    trainer.train()
    trainer.save_model(str(tmp_path / "stage1"))
    stage1 = {k: v.clone() for k, v in model.state_dict().items() if "lora_" in k}

    second = config(tmp_path, tiny_llama_dir, lora={"enabled": True, "init_adapter": str(tmp_path / "stage1" / "adapter")},
                    training={"max_steps": 2, "batch_size": 4})
    model2, grit2 = load_training_model(second)
    loaded = {k: v for k, v in model2.state_dict().items() if "lora_" in k}
    assert loaded.keys() == stage1.keys() and all(torch.equal(loaded[k], stage1[k]) for k in stage1)
    assert model2.peft_config["default"].r == 4  # from the adapter, not the settings' default 16
    assert any(p.requires_grad for n, p in model2.named_parameters() if "lora_" in n)
    trainer2 = build_trainer(second, model=model2, grit=grit2, records=(records, chats))
    trainer2.train()
    changed = {k: v for k, v in model2.state_dict().items() if "lora_" in k}
    assert any(not torch.equal(changed[k], stage1[k]) for k in stage1)

    missing = config(tmp_path, tiny_llama_dir, lora={"enabled": True, "init_adapter": str(tmp_path / "nowhere")})
    with pytest.raises(FileNotFoundError, match="init_adapter"):
        load_training_model(missing)


@pytest.mark.parametrize("lora", [False, True])
def test_resume_from_checkpoint(tmp_path, tiny_llama_dir, lora):
    from grit_components.training.run import load_training_model

    records = toy_records(16)
    cfg = config(tmp_path, tiny_llama_dir, lora={"enabled": lora, "r": 4},
                 training={"max_steps": 2, "batch_size": 4, "save_steps": 2})
    model, grit = load_training_model(cfg)
    build_trainer(cfg, model=model, grit=grit, records=(records, [])).train()
    checkpoint = tmp_path / "out" / "checkpoint-2"
    assert (checkpoint / "model.safetensors").exists() and (checkpoint / "optimizer.pt").exists()
    expected = grit.embed(["resume me"])

    cfg.training.max_steps = 3
    model, grit = load_training_model(cfg)
    assert not np.allclose(grit.embed(["resume me"]), expected, atol=1e-5)  # a fresh start differs
    trainer = build_trainer(cfg, model=model, grit=grit, records=(records, []))
    from transformers import TrainerCallback

    loaded = {}

    class RecordWeights(TrainerCallback):  # the weights right after loading the checkpoint, before step 3
        def on_train_begin(self, args, state, control, **kwargs):
            loaded["emb"] = grit.embed(["resume me"])

    trainer.add_callback(RecordWeights())
    trainer.train(resume_from_checkpoint=str(checkpoint))
    np.testing.assert_allclose(loaded["emb"], expected, atol=1e-5)
    assert trainer.state.global_step == 3


@pytest.mark.parametrize("score", ["pointwise", "query_likelihood"])
def test_ranking_groups_train_the_rerankers_score(tmp_path, tiny_llama_dir, fresh_tiny, score):
    """Tasks pointwise_ranking / query_likelihood_ranking: thirty steps of the ranking loss make the reranker's
    own score (what `pointwise_scores` / `query_likelihood_scores` compute) prefer the relevant passages, and
    the trained model declares the matching capability.
    A 2-layer random model cannot learn word matching in 30 steps, so relevant passages carry a cue word."""
    from grit_components.rerank import pointwise_scores, query_likelihood_scores
    from grit_components.training.run import training_metadata
    from grit_components.training.tasks import ranking_groups

    torch.manual_seed(0)
    records = toy_records(48)
    records = [EmbeddingRecord(r.query, ((None, "relevant " + r.pos[0][1]),),
                               tuple(records[(i + k) % 48].pos[0] for k in (1, 2, 3)), r.dataset)
               for i, r in enumerate(records)]
    groups = ranking_groups(records, group_size=4, seed=0, score=score)
    scorer = pointwise_scores if score == "pointwise" else query_likelihood_scores

    def pairwise_accuracy():
        wins = []
        for group in groups[:24]:
            scores = scorer(fresh_tiny, group.query, list(group.passages), max_passage_tokens=32)
            wins += [scores[0] > s for s in scores[1:]]
        return float(np.mean(wins))

    before = pairwise_accuracy()
    settings = config(tmp_path, tiny_llama_dir, data={"rerank_passage_tokens": 32, "ranking_batch_size": 4},
                      training={"learning_rate": 3e-3})
    trainer = build_trainer(settings, model=fresh_tiny.model, grit=fresh_tiny, records=([], groups))
    trainer.train()
    losses = [log["loss_rank"] for log in trainer.state.log_history if "loss_rank" in log]
    assert len(losses) == 30 and np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
    after = pairwise_accuracy()
    assert after > before + 0.2, (before, after)

    task, capability = {"pointwise": ("pointwise_ranking", "pointwise_rerank"),
                        "query_likelihood": ("query_likelihood_ranking", "query_likelihood_rerank")}[score]
    declared = from_dict(TrainConfig, {"model": "m", "output_dir": "o", "data": {"generative": [
        {"beir": "d", "task": task, "group_size": 3}]}})
    metadata = training_metadata(declared, fresh_tiny)
    assert capability in metadata.capabilities and metadata.pointwise_max_passage_tokens == 256
    assert len([c for c in metadata.capabilities if c.endswith("_rerank")]) == 1
    with pytest.raises(ValueError, match="group_size"):
        from_dict(TrainConfig, {"model": "m", "output_dir": "o",
                                "data": {"generative": [{"beir": "d", "task": task, "group_size": 1}]}})
    with pytest.raises(ValueError, match=task):
        from_dict(TrainConfig, {"model": "m", "output_dir": "o", "data": {"generative": [{"path": "x.jsonl", "task": task}]}})
    with pytest.raises(ValueError, match="one ranking task"):
        from_dict(TrainConfig, {"model": "m", "output_dir": "o", "data": {"generative": [
            {"beir": "d", "task": "pointwise_ranking"}, {"beir": "d", "task": "query_likelihood_ranking"}]}})


def lora_deltas(model) -> dict[str, torch.Tensor]:
    """B @ A of every LoRA pair of a peft model (its scaling is the same for all pairs of one adapter)."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model)
    return {k: state[k.replace("lora_A", "lora_B")].double() @ state[k].double() for k in state if "lora_A" in k}


def randomize_lora(model, seed: int, scale: float = 0.1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)


def test_interpolate_adapter_mixes_the_starting_adapter_back_in(tmp_path, tiny_llama_dir):
    """WiSE-FT: weight * init + (1 - weight) * trained, re-fitted to the adapter's rank by a truncated SVD."""
    from grit_components.training.run import load_training_model
    from grit_components.training.trainer import interpolate_adapter, save_grit_model

    first = config(tmp_path, tiny_llama_dir, lora={"enabled": True, "r": 4, "alpha": 8})
    model, grit = load_training_model(first)
    randomize_lora(model, seed=1)
    save_grit_model(model, grit.tokenizer, tmp_path / "stage1", merge_lora=False)
    init = lora_deltas(model)
    second = config(tmp_path, tiny_llama_dir, lora={"enabled": True, "init_adapter": str(tmp_path / "stage1" / "adapter"),
                                                    "init_adapter_weight": 0.3})

    def trained(seed):
        model2, _ = load_training_model(second)
        randomize_lora(model2, seed=seed)
        return model2, lora_deltas(model2)

    for weight, expected in ((0.0, "trained"), (1.0, "init")):  # the ends are rank r: fitted exactly
        model2, deltas = trained(seed=2)
        assert interpolate_adapter(model2, tmp_path / "stage1" / "adapter", weight) < 1e-9
        target = deltas if expected == "trained" else init
        assert all(torch.allclose(lora_deltas(model2)[k], target[k], atol=1e-5) for k in target)

    model2, deltas = trained(seed=3)
    lost = interpolate_adapter(model2, tmp_path / "stage1" / "adapter", 0.3)
    assert 1e-4 < lost < 1  # two random rank-4 deltas mix to rank 8: the re-fit keeps the top 4 directions
    for key, fitted in lora_deltas(model2).items():
        mixture = 0.3 * init[key] + 0.7 * deltas[key]
        singular = torch.linalg.svdvals(mixture)
        best = (singular[4:] ** 2).sum()  # Eckart-Young: no rank-4 matrix is closer to the mixture
        assert torch.isclose(((fitted - mixture) ** 2).sum(), best, rtol=1e-6)
        assert float(best / (singular**2).sum()) <= lost + 1e-12

    other = config(tmp_path, tiny_llama_dir, lora={"enabled": True, "r": 2, "alpha": 4})
    model3, _ = load_training_model(other)
    with pytest.raises(ValueError, match="does not match"):
        interpolate_adapter(model3, tmp_path / "stage1" / "adapter", 0.5)
    with pytest.raises(ValueError, match="weight"):
        interpolate_adapter(model2, tmp_path / "stage1" / "adapter", 1.5)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        interpolate_adapter(model2, tmp_path / "nowhere", 0.5)
    from peft import LoraConfig, get_peft_model

    dora, _, _ = load_weights(str(tiny_llama_dir), device="cpu", dtype=torch.float32)
    dora = get_peft_model(dora, LoraConfig(r=4, lora_alpha=8, use_dora=True, target_modules="all-linear"))
    with pytest.raises(ValueError, match="DoRA"):
        interpolate_adapter(dora, tmp_path / "stage1" / "adapter", 0.5)


def test_interpolate_adapter_mixes_modules_to_save_element_wise(tmp_path, tiny_llama_dir):
    """Full copies an adapter trains (peft `modules_to_save`) are mixed element-wise, not kept as trained."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    from grit_components.training.trainer import interpolate_adapter

    def adapted(seed: int):
        base, _, _ = load_weights(str(tiny_llama_dir), device="cpu", dtype=torch.float32)
        model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                modules_to_save=["model.norm"]))
        randomize_lora(model, seed=seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "modules_to_save" in name:
                    param.copy_(torch.full_like(param, float(seed)))
        return model

    first = adapted(seed=1)
    first.save_pretrained(str(tmp_path / "stage1"))
    init = {k: v.clone() for k, v in get_peft_model_state_dict(first).items()}
    saved = [k for k in init if "lora_" not in k]
    assert saved, "the adapter should hold the modules_to_save copy"
    model = adapted(seed=5)
    trained = {k: v.clone() for k, v in get_peft_model_state_dict(model).items()}
    interpolate_adapter(model, tmp_path / "stage1", 0.25)
    mixed = get_peft_model_state_dict(model)
    for key in saved:  # 0.25 * 1 + 0.75 * 5
        assert torch.allclose(mixed[key], 0.25 * init[key] + 0.75 * trained[key])
        assert torch.allclose(mixed[key], torch.full_like(mixed[key], 4.0))
    deltas = lora_deltas(model)
    assert deltas and all(not torch.allclose(deltas[k], trained[k.replace("lora_A", "lora_B")].double()
                                             @ trained[k].double()) for k in deltas)


def test_init_adapter_weight_is_checked_and_applied_by_grit_train(tmp_path, tiny_llama_dir):
    from grit_components.cli import app
    from grit_components.training import write_jsonl

    with pytest.raises(ValueError, match="init_adapter_weight needs"):
        config(tmp_path, tiny_llama_dir, lora={"enabled": True, "init_adapter_weight": 0.5})
    with pytest.raises(ValueError, match=r"init_adapter_weight must be in \[0, 1\]"):
        config(tmp_path, tiny_llama_dir, lora={"enabled": True, "init_adapter": "x", "init_adapter_weight": 1.5})
    with pytest.raises(TypeError, match="init_adapter_weight"):
        config(tmp_path, tiny_llama_dir, lora={"enabled": True, "init_adapter": "x", "init_adapter_weight": "half"})

    write_jsonl(toy_records(16), tmp_path / "emb.jsonl")
    (tmp_path / "gen.jsonl").write_text("\n".join(json.dumps({"turns": [f"Say {i}", f"{i}"]}) for i in range(4)) + "\n")
    common = ("data: {embedding: [{path: emb.jsonl}], generative: [{path: gen.jsonl}]}\n"
              "training: {batch_size: 4, max_steps: 2, learning_rate: 1.0e-2, logging_steps: 1, progress_bar: false}\n")
    (tmp_path / "one.yaml").write_text(f"model: {tiny_llama_dir}\noutput_dir: {tmp_path / 'one'}\n"
                                       "lora: {enabled: true, r: 4, alpha: 8}\n" + common)
    (tmp_path / "two.yaml").write_text(f"model: {tiny_llama_dir}\noutput_dir: {tmp_path / 'two'}\n"
                                       f"lora: {{enabled: true, init_adapter: {tmp_path / 'one' / 'adapter'}, "
                                       "init_adapter_weight: 1.0}\n" + common)
    for name in ("one", "two"):
        result = CliRunner().invoke(app, ["train", str(tmp_path / f"{name}.yaml")])
        assert result.exit_code == 0, result.output
    from safetensors.torch import load_file

    one, two = (load_file(str(tmp_path / n / "adapter" / "adapter_model.safetensors")) for n in ("one", "two"))
    pairs = [k for k in one if "lora_A" in k]
    assert pairs and any(one[k.replace("lora_A", "lora_B")].abs().max() > 0 for k in pairs)  # stage 1 learned
    for key in pairs:  # weight 1: stage 2's training is undone, stage 1's adapter is what is saved
        b = key.replace("lora_A", "lora_B")
        assert torch.allclose(two[b] @ two[key], one[b] @ one[key], atol=1e-6)
    history = json.loads((tmp_path / "two" / "trainer_state.json").read_text())["log_history"]
    assert any(log.get("init_adapter_weight") == 1.0 and log["interpolation_energy_lost"] < 1e-9 for log in history)


def _step_recipe(tmp_path, tiny_llama_dir) -> Path:
    """A tiny recipe for benchmarks/training_step.py: generative records of mixed lengths (3-66 words)."""
    (tmp_path / "emb.jsonl").write_text("".join(
        json.dumps({"query": f"question {i}", "pos": [f"answer passage {i}"], "neg": [f"other passage {i}"]}) + "\n"
        for i in range(8)))
    (tmp_path / "gen.jsonl").write_text("".join(
        json.dumps({"turns": [f"say {i}", " ".join(["word"] * (3 + 9 * i))]}) + "\n" for i in range(8)))
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(f"model: {tiny_llama_dir}\noutput_dir: out\n"
                      "data: {embedding: [{path: emb.jsonl}], generative: [{path: gen.jsonl}], generative_batch_size: 4}\n"
                      "training: {batch_size: 4, max_steps: 2, progress_bar: false}\n")
    return recipe


def test_training_step_benchmark_compares_chunked_and_padded_steps_on_a_recipe(tmp_path, tiny_llama_dir):
    """benchmarks/training_step.py on a tiny recipe with generative records of mixed lengths: every setting's
    step has the padded step's losses, and the report says so next to the time ratios."""
    recipe = _step_recipe(tmp_path, tiny_llama_dir)
    output = tmp_path / "report.json"
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "benchmarks" / "training_step.py"), str(recipe), "--steps", "2",
                           "--chunk-size", "1", "--output", str(output)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(output.read_text())
    assert set(report["summary"]) == {"padded", "chunks_of_1"} and report["steps"] == 2
    chunked = report["summary"]["chunks_of_1"]
    assert chunked["sequence_chunk_size"] == 1 and chunked["wall_ratio_to_padded"] > 0
    assert chunked["max_loss_difference"] < 1e-4
    assert all(len(run["losses"]) == 2 and "loss_gen" in run["losses"][0] for run in report["per_batch"].values())
    bad = subprocess.run([sys.executable, str(root / "benchmarks" / "training_step.py"), str(recipe), "--steps", "0"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--steps must be >= 1" in bad.stderr


def test_training_step_benchmark_compares_precisions_on_a_recipe(tmp_path, tiny_llama_dir):
    """benchmarks/training_step.py --precisions float32,bf16: the same batches in both precisions, float32 the
    baseline (its losses are the reference), bf16 losses close to them but computed in bfloat16."""
    recipe = _step_recipe(tmp_path, tiny_llama_dir)
    output = tmp_path / "report.json"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "training_step.py"
    done = subprocess.run([sys.executable, str(script), str(recipe), "--steps", "2", "--precisions", "float32,bf16",
                           "--output", str(output)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(output.read_text())
    assert list(report["summary"]) == ["float32", "bf16"] and report["steps"] == 2
    assert report["summary"]["float32"]["wall_ratio_to_float32"] == 1.0
    assert report["summary"]["float32"]["max_loss_difference"] == 0.0
    bf16 = report["summary"]["bf16"]
    assert bf16["precision"] == "bf16" and bf16["wall_ratio_to_float32"] > 0
    assert 0.0 < bf16["max_loss_difference"] < 0.5  # bfloat16 arithmetic: close, not equal
    assert set(report["cpu_flags"]) <= set(CPU_FLAGS)
    for wrong, message in ((["--precisions", "float32,fp8"], "--precisions must list distinct values"),
                           (["--precisions", "bf16", "--chunk-size", "2"], "give one of them")):
        bad = subprocess.run([sys.executable, str(script), str(recipe), *wrong], capture_output=True, text=True,
                             timeout=120)
        assert bad.returncode == 2 and message in bad.stderr


def test_bf16_autocast_falls_back_to_float32_on_a_cpu_without_native_bf16(tmp_path, tiny_llama_dir, fresh_tiny,
                                                                         monkeypatch):
    """On a CPU without AVX512-BF16/AMX a bfloat16 matrix product takes PyTorch's generic kernel (about 60x
    slower than float32 on an AVX2 host): `mixed_precision: bf16` then trains in float32 and says so once;
    where bfloat16 is native, bf16 autocast is kept."""
    from grit_components.training import run

    monkeypatch.setattr(run.torch.cuda, "is_available", lambda: False)
    cfg = config(tmp_path, tiny_llama_dir, training={"max_steps": 1, "mixed_precision": "bf16"})
    records = (toy_records(8), [])
    monkeypatch.setattr(run, "cpu_bf16_is_fast", lambda: False)
    with pytest.warns(run.SlowPrecisionWarning, match=r"training\.mixed_precision: bf16.*float32"):
        trainer = build_trainer(cfg, model=fresh_tiny.model, grit=fresh_tiny, records=records)
    assert trainer.args.bf16 is False and trainer.save_info["bf16_autocast"] is False
    monkeypatch.setattr(run, "cpu_bf16_is_fast", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", run.SlowPrecisionWarning)
        trainer = build_trainer(cfg, model=fresh_tiny.model, grit=fresh_tiny, records=records)
    assert trainer.args.bf16 is True and trainer.save_info["bf16_autocast"] is True


def test_cpu_bf16_probe_matches_this_machine():
    """The probe is oneDNN's: native bfloat16 (AVX512-BF16 or AMX) is fast, no AVX-512 at all is not."""
    from grit_components.training.run import cpu_bf16_is_fast

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo")
    flags = set(cpuinfo.read_text().split())
    if {"avx512_bf16", "amx_bf16"} & flags:
        assert cpu_bf16_is_fast() is True
    elif "avx512f" not in flags:
        assert cpu_bf16_is_fast() is False
    else:
        pytest.skip("AVX-512 without native bfloat16: oneDNN may emulate it")
