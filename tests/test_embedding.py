"""GRIT embedding: bidirectional attention, instruction-excluded mean pooling, batching, bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from grit_components import TruncationWarning, templates
from grit_components.attention import bidirectional_forward, causal_forward

MIXED = [
    "short",
    "A somewhat longer sentence about the Parthenon on the Athenian Acropolis.",
    "Alum is a family of double sulfate salts. " * 6,
    "🙂 emoji and 中文字符 mixed with text",
    "x",
    "The quick brown fox jumps over the lazy dog, again and again, " * 3,
]


@pytest.fixture(scope="module", params=["llama", "mistral", "qwen2"])
def arch_model(request, tiny_model_dirs):
    from grit_components import load_model

    return load_model(str(tiny_model_dirs[request.param]))


def test_bidirectional_last_token_changes_first_hidden_state(tiny_model):
    ids = torch.tensor([tiny_model.bos_ids + tiny_model.tokenize("one two three four five")])
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 7) % tiny_model.model.config.vocab_size
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        first = bidirectional_forward(tiny_model.model, ids, mask).last_hidden_state[0, 0]
        first_changed = bidirectional_forward(tiny_model.model, changed, mask).last_hidden_state[0, 0]
        causal_first = causal_forward(tiny_model.model, ids, mask).last_hidden_state[0, 0]
        causal_first_changed = causal_forward(tiny_model.model, changed, mask).last_hidden_state[0, 0]
    assert not torch.allclose(first, first_changed, atol=1e-6)  # the first token sees the last one
    assert torch.allclose(causal_first, causal_first_changed)  # ...but not under causal attention


def test_generation_after_embedding_matches_fresh_model(tiny_llama_dir):
    from grit_components import ModelRegistry

    shared = ModelRegistry().acquire(str(tiny_llama_dir))
    fresh = ModelRegistry().acquire(str(tiny_llama_dir))
    assert shared is not fresh
    prompt = "Tell me about temples."
    shared.embed(["embedding first, bidirectionally", "and a second text"], instruction="Represent it")
    after = shared.generate(prompt, max_new_tokens=12)
    before = fresh.generate(prompt, max_new_tokens=12)
    assert after.text == before.text and after.completion_tokens == before.completion_tokens
    assert getattr(shared.model.config, "is_causal", True) is not False


def test_batched_equals_one_at_a_time(arch_model):
    batched = arch_model.embed(MIXED, batch_size=4, instruction="Represent the text")
    single = np.stack([arch_model.embed([t], batch_size=1, instruction="Represent the text")[0] for t in MIXED])
    assert batched.dtype == np.float32 and batched.shape == (len(MIXED), arch_model.embedding_dim)
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_input_order_restored_after_length_sorting(tiny_model):
    forward = tiny_model.embed(MIXED, batch_size=2)
    backward = tiny_model.embed(MIXED[::-1], batch_size=2)
    np.testing.assert_allclose(forward, backward[::-1], atol=1e-5)


def test_instruction_tokens_excluded_from_pooling(tiny_model):
    instruction, text = "Retrieve passages about temples", "The Parthenon is a temple."
    prefix = tiny_model.bos_ids + tiny_model.tokenize(templates.embed_prefix(instruction))
    text_ids = tiny_model.tokenize(text)
    ids = torch.tensor([prefix + text_ids])
    with torch.inference_mode():  # an independent path: transformers' own bidirectional switch
        hidden = tiny_model.model.model(input_ids=ids, is_causal=False).last_hidden_state[0].float()
    expected = torch.nn.functional.normalize(hidden[len(prefix):].mean(dim=0), dim=0).numpy()
    all_tokens = torch.nn.functional.normalize(hidden.mean(dim=0), dim=0).numpy()
    got = tiny_model.embed([text], instruction=instruction)[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert not np.allclose(got, all_tokens, atol=1e-3)


def test_instruction_changes_embedding_and_format(tiny_model):
    assert templates.embed_prefix("") == "<|embed|>\n"
    assert templates.embed_prefix("Do X") == "<|user|>\nDo X\n<|embed|>\n"
    plain = tiny_model.embed(["a text"])[0]
    instructed = tiny_model.embed(["a text"], instruction="Represent it")[0]
    assert not np.allclose(plain, instructed, atol=1e-4)


def test_normalize_flag(tiny_model):
    raw = tiny_model.embed(MIXED, normalize=False)
    unit = tiny_model.embed(MIXED)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), unit, atol=1e-5)


def test_pooling_variants_differ_and_are_unit_norm(tiny_model):
    variants = [tiny_model.embed(MIXED[:3], attention=a, pooling=p)
                for a, p in [("bidirectional", "mean"), ("causal", "weighted_mean"), ("causal", "last")]]
    for vectors in variants:
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(variants[0], variants[1], atol=1e-3)
    assert not np.allclose(variants[1], variants[2], atol=1e-3)


def test_truncation_counts_instruction_and_warns(tiny_model):
    long_text = "word " * 400
    with pytest.warns(TruncationWarning, match="1 of 2 texts"):
        cut = tiny_model.embed([long_text, "short"], instruction="An instruction", max_length=64)
    explicit = tiny_model.embed([long_text], instruction="An instruction", max_length=64, truncation="warn")
    np.testing.assert_allclose(cut[0], explicit[0], atol=1e-5)
    from grit_components.embedding import build_inputs

    (item,) = build_inputs(tiny_model, [long_text], instruction="An instruction", max_length=64)
    assert len(item.ids) == 64 and item.truncated
    with pytest.raises(ValueError, match="max_length=64"):
        tiny_model.embed([long_text], max_length=64, truncation="error")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny_model.embed(["short"], max_length=64)  # no warning when nothing is cut


def test_very_long_and_unicode_texts(tiny_model):
    huge = "Lorem ipsum dolor sit amet. " * 3600  # ~100k characters
    assert len(huge) > 100_000
    with pytest.warns(TruncationWarning):
        vectors = tiny_model.embed([huge, "🙂🙂🙂", "中文字符测试", "   "])
    assert np.isfinite(vectors).all()


def test_empty_texts_are_embedded_without_content_when_allowed(tiny_model):
    from grit_components.embedding import EmptyTextWarning

    with pytest.warns(EmptyTextWarning, match=r"2 of 3 texts are empty \(first: texts\[0\]\)"):
        vectors = tiny_model.embed(["", "Paris is the capital of France.", ""], allow_empty=True)
    assert vectors.shape == (3, tiny_model.embedding_dim) and np.isfinite(vectors).all()
    np.testing.assert_allclose(vectors[0], vectors[2])  # every empty text alike
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # the batch around an empty text is embedded as without it
    np.testing.assert_allclose(vectors[1], tiny_model.embed(["Paris is the capital of France."])[0], atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1])


def test_empty_list_returns_empty_array(tiny_model):
    out = tiny_model.embed([])
    assert out.shape == (0, tiny_model.embedding_dim) and out.dtype == np.float32


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"texts": None}, TypeError, "texts"),
        ({"texts": "a single string"}, TypeError, "texts"),
        ({"texts": ["ok", 3]}, TypeError, r"texts\[1\]"),
        ({"texts": ["ok", ""]}, ValueError, r"texts\[1\]"),
        ({"texts": ["ok"], "batch_size": 0}, ValueError, "batch_size"),
        ({"texts": ["ok"], "batch_size": 2.5}, TypeError, "batch_size"),
        ({"texts": ["ok"], "batch_size": True}, TypeError, "batch_size"),
        ({"texts": ["ok"], "max_length": 0}, ValueError, "max_length"),
        ({"texts": ["ok"], "max_length": 10**9}, ValueError, "max_length"),
        ({"texts": ["ok"], "max_length": "512"}, TypeError, "max_length"),
        ({"texts": ["ok"], "max_length": 4, "instruction": "a long instruction here"}, ValueError, "max_length"),
        ({"texts": ["ok"], "instruction": None}, TypeError, "instruction"),
        ({"texts": ["ok"], "truncation": "silent"}, ValueError, "truncation"),
        ({"texts": ["ok"], "pooling": "max"}, ValueError, "pooling"),
        ({"texts": ["ok"], "attention": "sideways"}, ValueError, "attention"),
        ({"texts": ["ok"], "normalize": "yes"}, TypeError, "normalize"),
        ({"texts": ["ok", "caf\udce9"]}, ValueError, r"texts\[1\] contains an unpaired surrogate"),
        ({"texts": ["ok"], "instruction": "\ud800"}, ValueError, "instruction contains an unpaired surrogate"),
    ],
)
def test_bad_inputs_name_the_parameter(tiny_model, kwargs, error, match):
    texts = kwargs.pop("texts")
    with pytest.raises(error, match=match):
        tiny_model.embed(texts, **kwargs)


@pytest.mark.integration
def test_smollm2_embeddings_rank_relevant_passage_first(smol):
    instruction = "Given a short description, retrieve the Wikipedia passage about the entity it describes"
    passages = [
        "The Parthenon is a former temple on the Athenian Acropolis, Greece, dedicated to the goddess Athena.",
        "Alum is a family of double sulfate salts, used in water purification and dyeing.",
        "Eric Hobsbawm was a British historian of the rise of industrial capitalism and socialism.",
    ]
    queries = ["Temple on the Athenian Acropolis, Greece", "Family of double sulfate salts of aluminium",
               "British Marxist historian (1917-2012)"]
    scores = smol.embed(queries, instruction=instruction) @ smol.embed(passages).T
    assert list(scores.argmax(axis=1)) == [0, 1, 2]
